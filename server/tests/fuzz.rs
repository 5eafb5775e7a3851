//! A fuzzer for the Flight SQL surface: mutated tickets, commands, actions and
//! DoPut streams against the real server, over raw gRPC (so a message need not
//! even be valid protobuf).
//!
//! After every request the server must still be there, and no answer may be
//! INTERNAL or UNKNOWN (those are our bugs: bad input is INVALID_ARGUMENT,
//! NOT_FOUND, UNIMPLEMENTED, ...). A failing input is written to
//! `server/tests/fuzz-corpus/` and every file there is replayed first, so a bug
//! once found stays a test.
//!
//! The run is deterministic: a fixed seed and a fixed number of requests in
//! `make test`; `make fuzz` runs many more from a random seed
//! (`CONTRAIL_FUZZ_SEED`, `CONTRAIL_FUZZ_ITERATIONS`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate, ProstMessageExt, TableDefinitionOptions,
    TableExistsOption, TableNotExistOption, TicketStatementQuery,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, Ticket};
use common::TestServer;
use common::raw;
use futures::TryStreamExt;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tonic::Code;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    GetFlightInfo,
    GetSchema,
    PollFlightInfo,
    DoGet,
    DoAction,
    DoPut,
}

impl Rpc {
    const ALL: [Rpc; 6] = [
        Rpc::GetFlightInfo,
        Rpc::GetSchema,
        Rpc::PollFlightInfo,
        Rpc::DoGet,
        Rpc::DoAction,
        Rpc::DoPut,
    ];

    fn name(self) -> &'static str {
        match self {
            Rpc::GetFlightInfo => "GetFlightInfo",
            Rpc::GetSchema => "GetSchema",
            Rpc::PollFlightInfo => "PollFlightInfo",
            Rpc::DoGet => "DoGet",
            Rpc::DoAction => "DoAction",
            Rpc::DoPut => "DoPut",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Rpc::GetFlightInfo => "/arrow.flight.protocol.FlightService/GetFlightInfo",
            Rpc::GetSchema => "/arrow.flight.protocol.FlightService/GetSchema",
            Rpc::PollFlightInfo => "/arrow.flight.protocol.FlightService/PollFlightInfo",
            Rpc::DoGet => "/arrow.flight.protocol.FlightService/DoGet",
            Rpc::DoAction => "/arrow.flight.protocol.FlightService/DoAction",
            Rpc::DoPut => "/arrow.flight.protocol.FlightService/DoPut",
        }
    }

    fn parse(name: &str) -> Option<Rpc> {
        Rpc::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One request: the RPC and its messages (one, except for DoPut).
#[derive(Debug, Clone)]
struct Case {
    rpc: Rpc,
    messages: Vec<Vec<u8>>,
}

impl Case {
    /// `<rpc>\n` then each message as a 4-byte little-endian length and its bytes.
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.rpc.name()).into_bytes();
        for m in &self.messages {
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Case> {
        let newline = bytes.iter().position(|b| *b == b'\n')?;
        let rpc = Rpc::parse(std::str::from_utf8(&bytes[..newline]).ok()?)?;
        let mut rest = &bytes[newline + 1..];
        let mut messages = Vec::new();
        while rest.len() >= 4 {
            let len = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
            let body = rest.get(4..4 + len)?;
            messages.push(body.to_vec());
            rest = &rest[4 + len..];
        }
        Some(Case { rpc, messages })
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fuzz-corpus")
}

fn descriptor(command: impl ProstMessageExt) -> Vec<u8> {
    FlightDescriptor::new_cmd(command.as_any().encode_to_vec()).encode_to_vec()
}

fn action(kind: &str, body: impl Message) -> Vec<u8> {
    Action {
        r#type: kind.to_string(),
        body: body.encode_to_vec().into(),
    }
    .encode_to_vec()
}

/// Valid requests the mutations start from.
async fn seeds(server: &TestServer) -> Vec<Case> {
    let one = |rpc, message| Case {
        rpc,
        messages: vec![message],
    };
    let query = |sql: &str| CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let mut cases = Vec::new();
    for rpc in [Rpc::GetFlightInfo, Rpc::GetSchema, Rpc::PollFlightInfo] {
        cases.push(one(rpc, descriptor(query("SELECT 1 AS one, 'x' AS s"))));
        cases.push(one(rpc, descriptor(query("SELECT * FROM fuzz_t WHERE id < 3"))));
        cases.push(one(
            rpc,
            descriptor(CommandGetTables {
                include_schema: true,
                ..Default::default()
            }),
        ));
        cases.push(one(rpc, descriptor(CommandGetDbSchemas::default())));
        cases.push(one(rpc, descriptor(CommandGetCatalogs::default())));
        cases.push(one(rpc, descriptor(CommandGetSqlInfo { info: vec![0, 1, 500] })));
        cases.push(one(rpc, descriptor(CommandGetXdbcTypeInfo { data_type: None })));
        cases.push(one(
            rpc,
            descriptor(CommandGetPrimaryKeys {
                table: "fuzz_t".into(),
                ..Default::default()
            }),
        ));
        cases.push(one(
            rpc,
            descriptor(CommandPreparedStatementQuery {
                prepared_statement_handle: b"not a handle".to_vec().into(),
            }),
        ));
    }
    // Tickets: a real one (signed by the server), and made-up ones.
    let mut client = server.client().await;
    let info = client
        .execute("SELECT id, name FROM fuzz_t".to_string(), None)
        .await
        .expect("info");
    for endpoint in info.endpoint {
        if let Some(ticket) = endpoint.ticket {
            cases.push(one(Rpc::DoGet, ticket.encode_to_vec()));
        }
    }
    cases.push(one(
        Rpc::DoGet,
        Ticket::new(
            TicketStatementQuery {
                statement_handle: b"garbage".to_vec().into(),
            }
            .as_any()
            .encode_to_vec(),
        )
        .encode_to_vec(),
    ));
    // Actions.
    cases.push(one(
        Rpc::DoAction,
        action(
            "CreatePreparedStatement",
            ActionCreatePreparedStatementRequest {
                query: "SELECT ? + 1".into(),
                transaction_id: None,
            }
            .as_any(),
        ),
    ));
    cases.push(one(
        Rpc::DoAction,
        action(
            "ClosePreparedStatement",
            ActionClosePreparedStatementRequest {
                prepared_statement_handle: b"h".to_vec().into(),
            }
            .as_any(),
        ),
    ));
    for kind in [
        "CancelFlightInfo",
        "SetSessionOptions",
        "GetSessionOptions",
        "CloseSession",
        "CancelQuery",
    ] {
        cases.push(one(Rpc::DoAction, action(kind, Vec::<u8>::new())));
    }
    // DoPut: an ingest, and an update.
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
        ),
        ("name", Arc::new(StringArray::from(vec!["a", "b", "c"])) as _),
    ])
    .expect("batch");
    let ingest = CommandStatementIngest {
        table: "fuzz_ingest".into(),
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Create as i32,
            if_exists: TableExistsOption::Append as i32,
        }),
        ..Default::default()
    };
    let frames: Vec<FlightData> = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(ingest.as_any().encode_to_vec())))
        .build(futures::stream::iter([Ok(batch)]))
        .try_collect()
        .await
        .expect("frames");
    cases.push(Case {
        rpc: Rpc::DoPut,
        messages: frames.iter().map(Message::encode_to_vec).collect(),
    });
    let update = FlightData {
        flight_descriptor: Some(FlightDescriptor::new_cmd(
            CommandStatementUpdate {
                query: "INSERT INTO fuzz_t VALUES (9, 'z')".into(),
                transaction_id: None,
            }
            .as_any()
            .encode_to_vec(),
        )),
        ..Default::default()
    };
    cases.push(Case {
        rpc: Rpc::DoPut,
        messages: vec![update.encode_to_vec()],
    });
    cases
}

/// One random change to `bytes`.
fn mutate_bytes(rng: &mut StdRng, bytes: &mut Vec<u8>, other: &[u8]) {
    match rng.gen_range(0..7) {
        0 if !bytes.is_empty() => {
            for _ in 0..rng.gen_range(1..=8) {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        1 if !bytes.is_empty() => {
            let i = rng.gen_range(0..bytes.len());
            bytes[i] = [0x00, 0xff, 0x7f, 0x80, 0x0a, 0x12, 0x1a][rng.gen_range(0..7)];
        }
        2 if !bytes.is_empty() => {
            let at = rng.gen_range(0..bytes.len());
            bytes.truncate(at);
        }
        3 => {
            let at = rng.gen_range(0..=bytes.len());
            let junk: Vec<u8> = (0..rng.gen_range(1..32)).map(|_| rng.r#gen()).collect();
            bytes.splice(at..at, junk);
        }
        4 if !bytes.is_empty() => {
            let start = rng.gen_range(0..bytes.len());
            let end = rng.gen_range(start..=bytes.len().min(start + 64));
            let copy = bytes[start..end].to_vec();
            let at = rng.gen_range(0..=bytes.len());
            bytes.splice(at..at, copy);
        }
        5 if !other.is_empty() => {
            // Splice another seed's tail onto this one's head.
            let head = rng.gen_range(0..=bytes.len());
            let tail = rng.gen_range(0..other.len());
            bytes.truncate(head);
            bytes.extend_from_slice(&other[tail..]);
        }
        _ => {
            // A protobuf length prefix changed to something large.
            if bytes.len() > 2 {
                let i = rng.gen_range(1..bytes.len());
                bytes[i] = 0xff;
            }
        }
    }
}

fn mutate(rng: &mut StdRng, seeds: &[Case]) -> Case {
    let mut case = seeds[rng.gen_range(0..seeds.len())].clone();
    let other = &seeds[rng.gen_range(0..seeds.len())];
    let other = other.messages.first().cloned().unwrap_or_default();
    let rounds = rng.gen_range(1..=3);
    for _ in 0..rounds {
        if case.messages.len() > 1 && rng.gen_bool(0.2) {
            // DoPut: drop, repeat or reorder a frame.
            let i = rng.gen_range(0..case.messages.len());
            match rng.gen_range(0..3) {
                0 => {
                    case.messages.remove(i);
                }
                1 => {
                    let copy = case.messages[i].clone();
                    case.messages.insert(i, copy);
                }
                _ => case.messages.swap(0, i),
            }
            continue;
        }
        if case.messages.is_empty() {
            case.messages.push(Vec::new());
        }
        let i = rng.gen_range(0..case.messages.len());
        mutate_bytes(rng, &mut case.messages[i], &other);
    }
    if rng.gen_bool(0.05) {
        // The same bytes to another RPC.
        case.rpc = Rpc::ALL[rng.gen_range(0..Rpc::ALL.len())];
        case.messages.truncate(1);
    }
    case
}

/// Send a case; `Err` describes a bug (INTERNAL, UNKNOWN, or no answer).
async fn send(channel: &Channel, case: &Case) -> Result<(), String> {
    let channel = channel.clone();
    let first = case.messages.first().cloned().unwrap_or_default();
    let call = async {
        match case.rpc {
            Rpc::GetFlightInfo | Rpc::GetSchema | Rpc::PollFlightInfo => {
                raw::unary(channel, case.rpc.path(), first).await.map(|_| ())
            }
            Rpc::DoGet | Rpc::DoAction => raw::server_streaming(channel, case.rpc.path(), first).await.map(|_| ()),
            Rpc::DoPut => raw::streaming(channel, case.rpc.path(), futures::stream::iter(case.messages.clone()))
                .await
                .map(|_| ()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Err(_) => Err(format!("{}: no answer in 60 s", case.rpc.name())),
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) if matches!(status.code(), Code::Internal | Code::Unknown) => Err(format!(
            "{}: {:?}: {}",
            case.rpc.name(),
            status.code(),
            status.message()
        )),
        Ok(Err(_)) => Ok(()),
    }
}

async fn alive(server: &TestServer) -> Result<(), String> {
    let mut client = server.client().await;
    let info = client
        .execute("SELECT count(*) FROM fuzz_t".to_string(), None)
        .await
        .map_err(|e| format!("the server stopped answering: {e}"))?;
    if info.endpoint.is_empty() {
        return Err("no endpoint".into());
    }
    Ok(())
}

fn save(case: &Case) -> PathBuf {
    let bytes = case.encode();
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    let dir = corpus_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{}-{hash:016x}.case", case.rpc.name()));
    let _ = std::fs::write(&path, bytes);
    path
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_crash_the_server_or_come_back_internal() {
    let server = TestServer::start_logged(&[]);
    let mut client = server.client().await;
    client
        .execute_update(
            "CREATE TABLE fuzz_t (id BIGINT, name VARCHAR) AS VALUES (1, 'a'), (2, 'b'), (3, 'c')".into(),
            None,
        )
        .await
        .expect("create");
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    let mut failures = Vec::new();
    // Every input that once failed, first.
    let mut kept: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    kept.sort();
    for path in &kept {
        let Some(case) = std::fs::read(path).ok().and_then(|b| Case::decode(&b)) else {
            continue;
        };
        if let Err(e) = send(&channel, &case).await {
            failures.push(format!("{} (kept case {})", e, path.display()));
        }
    }

    let seed = env_u64("CONTRAIL_FUZZ_SEED", 0x5eed);
    let iterations = env_u64("CONTRAIL_FUZZ_ITERATIONS", 20_000);
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = seeds(&server).await;
    for i in 0..iterations {
        let case = mutate(&mut rng, &seeds);
        if let Err(e) = send(&channel, &case).await {
            let path = save(&case);
            failures.push(format!("{e} (seed {seed}, request {i}, saved as {})", path.display()));
        }
        if i % 100 == 99 {
            if let Err(e) = alive(&server).await {
                let path = save(&case);
                failures.push(format!(
                    "{e} after request {i} (seed {seed}, saved as {})",
                    path.display()
                ));
                break;
            }
        }
    }
    alive(&server).await.expect("the server serves after the run");
    // A panic caught on the way (and answered with a proper code) is still a bug
    // in what reads client input; the server's log names it.
    // Panics of arrow's IPC decoder on a DoPut message are caught and refused
    // (`Unpanicked` in service.rs, which logs each): only those may appear.
    let log = server.log();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked at")).collect();
    let in_decoder = |l: &str| {
        ["/arrow-ipc-", "/arrow-buffer-", "/arrow-array-", "/arrow-data-"]
            .iter()
            .any(|c| l.contains(c))
    };
    let caught = log.matches("the IPC decoder could not read").count();
    let decoder = panics.iter().filter(|l| in_decoder(l)).count();
    let others: Vec<&str> = panics.iter().filter(|l| !in_decoder(l)).copied().collect();
    if decoder > caught || !others.is_empty() {
        failures.push(format!(
            "the server panicked ({decoder} in the IPC decoder, {caught} of them caught):\n{}",
            panics.join("\n")
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
