//! A Rust Flight SQL client for `benches/run.py`: what Contrail and its peers
//! deliver when the client is not the bottleneck. pyarrow's client spends about
//! 0.7 CPU-s per GB of results and ~0.7 ms per round trip whoever serves; this one
//! (arrow-flight over tonic, 1 MiB HTTP/2 frames, 16 MiB windows, no message size
//! limit) shows the server's side.
//!
//! ```text
//! flight_client roundtrip <uri> <sql> <n>  n × (GetFlightInfo + DoGet) on one connection
//!                                          -> {"lat": [seconds, ...]}
//! flight_client scan <uri> <sql>           connect, run, decode every batch (and drop it)
//!                                          -> {"s": seconds, "rows": n, "batches": n, "peak_rss": bytes}
//! flight_client get <uri> <ticket>         the same for a plain Flight server: DoGet(ticket)
//! ```
//!
//! `uri` is `grpc://host:port` (pyarrow's spelling) or `http://host:port`.

use std::time::Instant;

use arrow_flight::Ticket;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Client = FlightSqlServiceClient<Channel>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow::anyhow!("usage: flight_client roundtrip|scan|get <uri> <sql|ticket> [n]"))
    };
    let (mode, uri, text) = (arg(0)?, arg(1)?, arg(2)?.to_string());
    let out = match mode {
        "roundtrip" => {
            let n: usize = arg(3)?.parse()?;
            // One thread: a round trip is latency, and a cross-thread wakeup costs
            // tens of microseconds on a small VM.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(roundtrip(uri, &text, n))?
        }
        "scan" | "get" => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(scan(uri, &text, mode == "get"))?
        }
        other => anyhow::bail!("unknown mode '{other}' (roundtrip, scan, get)"),
    };
    println!("{out}");
    Ok(())
}

async fn connect(uri: &str) -> anyhow::Result<Client> {
    let uri = match uri.split_once("://") {
        Some(("grpc" | "grpc+tcp", rest)) => format!("http://{rest}"),
        _ => uri.to_string(),
    };
    let channel = Endpoint::from_shared(uri)?
        .tcp_nodelay(true)
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        .connect()
        .await?;
    let inner = FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    Ok(FlightSqlServiceClient::new_from_inner(inner))
}

/// Read `ticket`'s stream, decoding each batch and dropping it, as a consumer
/// that processes batches as they arrive does; returns (rows, batches).
async fn fetch(client: &mut Client, ticket: Ticket) -> anyhow::Result<(usize, usize)> {
    let mut stream = client.do_get(ticket).await?;
    let (mut rows, mut batches) = (0, 0);
    while let Some(batch) = stream.try_next().await? {
        rows += batch.num_rows();
        batches += 1;
    }
    Ok((rows, batches))
}

/// `sql`'s result: GetFlightInfo, then DoGet of every endpoint on this connection.
async fn query(client: &mut Client, sql: &str) -> anyhow::Result<(usize, usize)> {
    let info = client.execute(sql.to_string(), None).await?;
    let (mut rows, mut batches) = (0, 0);
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .ok_or_else(|| anyhow::anyhow!("an endpoint without a ticket"))?;
        let (r, b) = fetch(client, ticket).await?;
        rows += r;
        batches += b;
    }
    Ok((rows, batches))
}

async fn roundtrip(uri: &str, sql: &str, n: usize) -> anyhow::Result<serde_json::Value> {
    let mut client = connect(uri).await?;
    query(&mut client, sql).await?; // the connection's first call is not a round trip's
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let (rows, _) = query(&mut client, sql).await?;
        lat.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(rows > 0, "'{sql}' returned no row");
    }
    Ok(serde_json::json!({ "lat": lat }))
}

async fn scan(uri: &str, text: &str, plain_ticket: bool) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let mut client = connect(uri).await?;
    let (rows, batches) = if plain_ticket {
        fetch(&mut client, Ticket::new(text.to_string())).await?
    } else {
        query(&mut client, text).await?
    };
    let seconds = start.elapsed().as_secs_f64();
    Ok(serde_json::json!({ "s": seconds, "rows": rows, "batches": batches, "peak_rss": peak_rss() }))
}

/// This process's peak resident set in bytes (Linux `VmHWM`), 0 where unknown.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
