//! SQL behaviour tests: every `server/tests/slt/*.slt` file runs over Flight SQL
//! against the real `contrail` binary (the pattern of DataFusion's
//! `datafusion/sqllogictest`, postgres engine: a network client as the engine).
//!
//! ```text
//!   tests/slt/foo.slt ──> sqllogictest::Runner ──> Contrail (AsyncDB)
//!                                                     │ FlightSqlServiceClient
//!                                                     │ GetFlightInfo + DoGet per endpoint
//!                                                     ▼
//!                       contrail serve --listen 127.0.0.1:0 --data-dir <tmp>/data
//! ```
//!
//! Run: `cargo test --release -p contrail-server --test sqllogictests [-- ARGS]`
//! - `FILTER...`   only the files whose name contains one of the filters
//!   (`--exact`: whose stem equals one; `--list` prints the files, as libtest does);
//! - `--complete`  rewrite the expected output of the selected files from what the
//!   server returns. Review every rewritten result by hand before committing it.
//!
//! Each file gets a fresh server and data directory; files run one after the
//! other; the server is killed when its file is done (also on panic). A file
//! goes on after a failing record and reports every failure; it also fails if
//! the server died or logged a panic (a clean SIGTERM shutdown included).
//!
//! Conventions of this engine:
//! - Results: NULL is `NULL`, the empty string `(empty)`, booleans `true`/`false`,
//!   floats and decimals rounded to 12 places with trailing zeros dropped (as
//!   DataFusion's runner); other types as Arrow pretty-prints them. Column types:
//!   `I` integers, `R` floats and decimals, `T` everything else (checked).
//! - A result whose schema is exactly `[count: Int64 NOT NULL]` is how Contrail
//!   answers DDL and DML: it becomes a statement completion with that count, so
//!   `statement count N` checks affected rows. (So do not write
//!   `SELECT count(*) AS count` in a `query`: alias it to anything else.)
//! - Errors read `{grpc code:?}: {message}`, e.g. `NotFound: table 'x' not found`,
//!   so `statement error NotFound: .*not found` checks both.
//! - `${DATA_DIR}` in SQL is replaced by the server's data directory (absolute);
//!   the directory is written back as `${DATA_DIR}` in results and errors.
//!   Put files under `${DATA_DIR}/files/`: `tables/` and `trash/` are the server's.
//! - `statement ok` + `RESTART SERVER` (alone, exactly) is not SQL: the runner
//!   stops the server with SIGTERM, waits for it to exit, starts it again on the
//!   same data directory and reconnects every connection. For durability tests.
//! - Each `connection` of a file is its own Flight SQL session (its own
//!   `arrow_flight_session_id` cookie), so `SET` lasts for the connection.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float16Type, Float32Type, Float64Type, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, DurationFormat, FormatOptions};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use async_trait::async_trait;
use bigdecimal::BigDecimal;
use futures::TryStreamExt;
use sqllogictest::{
    AsyncDB, DBOutput, DefaultColumnType, Record, Runner, default_normalizer, default_validator,
    strict_column_validator,
};
use tempfile::TempDir;
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// The statement that restarts the server (see the module docs).
const RESTART: &str = "RESTART SERVER";
/// Placeholder for the server's data directory in SQL and results.
const DATA_DIR_VAR: &str = "${DATA_DIR}";
/// How long the server may take to write its port file.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to exit after SIGTERM (its grace period is 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval of the start/stop condition polls.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// The server process

/// A `contrail serve` child process on a private data directory; killed on drop.
struct Server {
    child: Option<Child>,
    /// `host:port` it listens on.
    addr: String,
    /// Bumped by every restart, so connections know to reconnect.
    generation: u64,
    data_dir: PathBuf,
    port_file: PathBuf,
    log_file: PathBuf,
    /// Holds `data/`, `port` and `server.log`; removed after the child is killed.
    _dir: TempDir,
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("contrail-slt-").tempdir()?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        let data_dir = data_dir.canonicalize()?;
        let mut server = Self {
            child: None,
            addr: String::new(),
            generation: 0,
            port_file: dir.path().join("port"),
            log_file: dir.path().join("server.log"),
            data_dir,
            _dir: dir,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.port_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let log = File::options().create(true).append(true).open(&self.log_file)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_contrail"));
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--temporal", "off"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--port-file")
            .arg(&self.port_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The test must not pick up a developer's configuration.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONTRAIL_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().context("cannot start the contrail binary")?;

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&self.port_file) {
                let text = text.trim();
                if !text.is_empty() {
                    break text.to_string();
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "server exited before writing its port file ({status})\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "server wrote no port file within {START_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        self.child = Some(child);
        self.addr = addr;
        self.generation += 1;
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit.
    async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {} failed ({status})", child.id());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("server exited with {status} after SIGTERM\n{}", self.log_tail());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "server did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// `Some(status)` when the server has died on its own.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Panic reports in the server's log (any restart included), with the lines after each.
    fn panics(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let found: Vec<String> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("panicked at"))
            .map(|(i, _)| lines[i..(i + 3).min(lines.len())].join("\n"))
            .collect();
        (!found.is_empty()).then(|| found.join("\n"))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log_file.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// The sqllogictest engine

/// What a statement can fail with, as the `.slt` files see it.
#[derive(Debug)]
enum SltError {
    /// The server answered with a gRPC status.
    Status { code: tonic::Code, message: String },
    /// The client side failed (connecting, decoding, the runner's own work).
    Client(String),
}

impl fmt::Display for SltError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { code, message } => write!(f, "{code:?}: {message}"),
            Self::Client(message) => write!(f, "client error: {message}"),
        }
    }
}

impl std::error::Error for SltError {}

impl From<FlightError> for SltError {
    fn from(e: FlightError) -> Self {
        match e {
            FlightError::Tonic(status) => status.into(),
            other => Self::Client(other.to_string()),
        }
    }
}

impl From<Box<tonic::Status>> for SltError {
    fn from(status: Box<tonic::Status>) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

impl From<tonic::transport::Error> for SltError {
    fn from(e: tonic::transport::Error) -> Self {
        Self::Client(format!("cannot connect: {e}"))
    }
}

impl From<anyhow::Error> for SltError {
    fn from(e: anyhow::Error) -> Self {
        Self::Client(format!("{e:#}"))
    }
}

impl From<arrow::error::ArrowError> for SltError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::Client(e.to_string())
    }
}

/// One connection (= one session) to the server of the current file.
struct Contrail {
    server: Arc<Mutex<Server>>,
    client: FlightSqlServiceClient<Channel>,
    /// The server generation `client` is connected to.
    generation: u64,
    /// The session's cookie, minted by the server.
    session: String,
    data_dir: String,
}

impl Contrail {
    async fn connect(server: Arc<Mutex<Server>>) -> Result<Self, SltError> {
        let (addr, generation, data_dir) = {
            let s = server.lock().await;
            (s.addr.clone(), s.generation, s.data_dir.to_string_lossy().into_owned())
        };
        let (client, session) = flight_sql_client(&addr, None).await?;
        Ok(Self {
            server,
            client,
            generation,
            session,
            data_dir,
        })
    }

    /// Reconnect if the server was restarted since this connection was made.
    async fn reconnect_if_restarted(&mut self) -> Result<(), SltError> {
        let (addr, generation) = {
            let s = self.server.lock().await;
            (s.addr.clone(), s.generation)
        };
        if generation != self.generation {
            // The same session (its id stays valid across restarts; its settings do not).
            self.client = flight_sql_client(&addr, Some(&self.session)).await?.0;
            self.generation = generation;
        }
        Ok(())
    }

    async fn execute(&mut self, sql: String) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let info = self.client.execute(sql, None).await?;
        let mut schema: Option<SchemaRef> = match info.clone().try_decode_schema() {
            Ok(s) if !s.fields().is_empty() => Some(Arc::new(s)),
            _ => None,
        };
        let mut batches = Vec::new();
        // Contrail serves every endpoint itself, so endpoint locations are not followed.
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| SltError::Client("endpoint without a ticket".into()))?;
            let mut stream = self.client.do_get(ticket).await?;
            while let Some(batch) = stream.try_next().await? {
                batches.push(batch);
            }
            if schema.is_none() {
                schema = stream.schema().cloned();
            }
        }
        let schema = match (schema, batches.first()) {
            (Some(s), _) => s,
            (None, Some(b)) => b.schema(),
            (None, None) => Arc::new(Schema::empty()),
        };

        if is_count_schema(&schema) {
            let mut count = None;
            for batch in &batches {
                let col = batch.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                if let Some(v) = col.iter().flatten().next() {
                    count.get_or_insert(v);
                }
            }
            let count = count.ok_or_else(|| SltError::Client("statement returned no count".into()))?;
            let count = u64::try_from(count).map_err(|_| SltError::Client(format!("negative count {count}")))?;
            return Ok(DBOutput::StatementComplete(count));
        }

        let types = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(batch_rows(batch)?);
        }
        for cell in rows.iter_mut().flatten() {
            if cell.contains(&self.data_dir) {
                *cell = cell.replace(&self.data_dir, DATA_DIR_VAR);
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }
}

/// A client of `addr` in the session `cookie` (`arrow_flight_session_id=...`);
/// with none, in a new session the server mints (only the server makes session
/// ids: it announces one with `Set-Cookie`). Returns the client and its cookie.
async fn flight_sql_client(
    addr: &str,
    cookie: Option<&str>,
) -> Result<(FlightSqlServiceClient<Channel>, String), SltError> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| SltError::Client(format!("bad address {addr}: {e}")))?
        .connect()
        .await?;
    let mut inner = FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let cookie = match cookie {
        Some(cookie) => cookie.to_string(),
        None => {
            let response = inner
                .list_actions(arrow_flight::Empty {})
                .await
                .map_err(|e| SltError::Client(format!("list_actions: {e}")))?;
            response
                .metadata()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::to_string)
                .ok_or_else(|| SltError::Client("the server announced no session".into()))?
        }
    };
    let mut client = FlightSqlServiceClient::new_from_inner(inner);
    client.set_header("cookie", cookie.clone());
    Ok((client, cookie))
}

#[async_trait]
impl AsyncDB for Contrail {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if sql.trim() == RESTART {
            self.server.lock().await.restart().await?;
            self.reconnect_if_restarted().await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        self.reconnect_if_restarted().await?;
        let sql = sql.replace(DATA_DIR_VAR, &self.data_dir);
        self.execute(sql).await.map_err(|e| match e {
            SltError::Status { code, message } => SltError::Status {
                code,
                message: message.replace(&self.data_dir, DATA_DIR_VAR),
            },
            other => other,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "contrail"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Contrail's answer to DDL and DML: `[count: Int64 NOT NULL]`.
fn is_count_schema(schema: &Schema) -> bool {
    matches!(schema.fields().iter().collect::<Vec<_>>().as_slice(),
        [f] if f.name() == "count" && f.data_type() == &DataType::Int64 && !f.is_nullable())
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

/// Formatting of the types without a rule of their own (dates, lists, structs, ...).
const FORMAT: FormatOptions<'static> = FormatOptions::new()
    .with_null("NULL")
    .with_duration_format(DurationFormat::Pretty);

fn batch_rows(batch: &RecordBatch) -> Result<Vec<Vec<String>>, SltError> {
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &FORMAT))
        .collect::<Result<Vec<_>, _>>()?;
    (0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(col, fmt)| cell(col, fmt, row))
                .collect()
        })
        .collect()
}

/// One value, normalised as DataFusion's sqllogictest runner does.
fn cell(col: &ArrayRef, fmt: &ArrayFormatter<'_>, row: usize) -> Result<String, SltError> {
    if col.is_null(row) {
        return Ok("NULL".into());
    }
    Ok(match col.data_type() {
        DataType::Boolean => col.as_boolean().value(row).to_string(),
        DataType::Float16 => {
            let v = col.as_primitive::<Float16Type>().value(row);
            float_to_str(v.to_f64(), || v.to_string())
        }
        DataType::Float32 => {
            let v = col.as_primitive::<Float32Type>().value(row);
            float_to_str(f64::from(v), || v.to_string())
        }
        DataType::Float64 => {
            let v = col.as_primitive::<Float64Type>().value(row);
            float_to_str(v, || v.to_string())
        }
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            decimal_to_str(&fmt.value(row).to_string())?
        }
        DataType::Utf8 => varchar_to_str(col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => varchar_to_str(col.as_string::<i64>().value(row)),
        DataType::Utf8View => varchar_to_str(col.as_string_view().value(row)),
        _ => fmt.value(row).to_string(),
    })
}

fn varchar_to_str(s: &str) -> String {
    if s.is_empty() {
        "(empty)".into()
    } else {
        s.trim_end_matches('\n').to_string()
    }
}

/// `text` gives the shortest decimal text of the value in its own width.
fn float_to_str(v: f64, text: impl FnOnce() -> String) -> String {
    if v.is_nan() {
        if v.is_sign_positive() {
            "NaN".into()
        } else {
            "-NaN".into()
        }
    } else if v == f64::INFINITY {
        "Infinity".into()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        let text = text();
        decimal_to_str(&text).unwrap_or(text)
    }
}

/// Round to 12 places and drop trailing zeros: `1.500` -> `1.5`, `2.0` -> `2`.
fn decimal_to_str(text: &str) -> Result<String, SltError> {
    let d: BigDecimal = text
        .parse()
        .map_err(|e| SltError::Client(format!("bad decimal '{text}': {e}")))?;
    Ok(d.round(12).normalized().to_plain_string())
}

// ---------------------------------------------------------------------------
// The driver

struct Args {
    complete: bool,
    exact: bool,
    list: bool,
    filters: Vec<String>,
}

impl Args {
    fn parse() -> Self {
        let mut args = Self {
            complete: false,
            exact: false,
            list: false,
            filters: Vec::new(),
        };
        for a in std::env::args().skip(1) {
            match a.as_str() {
                "--complete" => args.complete = true,
                "--exact" => args.exact = true,
                "--list" => args.list = true,
                // Other libtest flags (--nocapture, --quiet, ...) mean nothing here.
                s if s.starts_with('-') => {}
                _ => args.filters.push(a),
            }
        }
        args
    }

    fn selects(&self, stem: &str) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| {
                if self.exact {
                    stem == f
                } else {
                    stem.contains(f.as_str())
                }
            })
    }
}

fn slt_files() -> anyhow::Result<Vec<PathBuf>> {
    // Read when run, not when built (a build may be reused from a clone at another path).
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").context("cargo test sets CARGO_MANIFEST_DIR")?;
    let dir = Path::new(&manifest_dir).join("tests").join("slt");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "slt") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Run every record of a file, going on after a failure (unlike
/// `Runner::run_file_async`) so that one known bug does not hide the rest of
/// the file; fail with all the mismatches.
async fn run_records<M>(runner: &mut Runner<Contrail, M>, path: &Path) -> anyhow::Result<()>
where
    M: sqllogictest::MakeConnection<Conn = Contrail>,
{
    let records = sqllogictest::parse_file::<DefaultColumnType>(path)?;
    let mut failures = Vec::new();
    for record in records {
        if let Record::Halt { .. } = record {
            break;
        }
        if let Err(e) = runner.run_async(record).await {
            failures.push(e.display(false).to_string());
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    bail!("{} failing record(s)\n\n{}", failures.len(), failures.join("\n"))
}

async fn run_file(path: &Path, complete: bool) -> anyhow::Result<()> {
    let server = Arc::new(Mutex::new(Server::start().await?));
    let result = {
        let srv = server.clone();
        let mut runner = Runner::new(move || Contrail::connect(srv.clone()));
        runner.with_column_validator(strict_column_validator);
        let result = if complete {
            runner
                .update_test_file(
                    path,
                    " ",
                    default_validator,
                    default_normalizer,
                    strict_column_validator,
                )
                .await
                .map_err(|e| anyhow!("{e}"))
        } else {
            run_records(&mut runner, path).await
        };
        runner.shutdown_async().await;
        result
    };
    let mut s = server.lock().await;
    if let Some(status) = s.exited() {
        let e = result.err().map(|e| format!("{e:#}\n")).unwrap_or_default();
        bail!("{e}the server died ({status})\n{}", s.log_tail());
    }
    // A panic is a bug even when the statements passed (e.g. during a restart's shutdown).
    if let Some(panics) = s.panics() {
        let e = result.err().map(|e| format!("{e:#}\n")).unwrap_or_default();
        bail!("{e}the server panicked:\n{panics}");
    }
    result
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let files = match slt_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let selected: Vec<&PathBuf> = files.iter().filter(|p| args.selects(&stem(p))).collect();
    if args.list {
        for path in selected {
            println!("{}: test", stem(path));
        }
        return ExitCode::SUCCESS;
    }

    let (mut passed, mut failed) = (0usize, 0usize);
    for path in selected {
        let name = stem(path);
        let started = Instant::now();
        match run_file(path, args.complete).await {
            Ok(()) => {
                passed += 1;
                let what = if args.complete { "completed" } else { "ok" };
                println!("{name}.slt ... {what} ({:.1}s)", started.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!(
                    "{name}.slt ... FAILED ({:.1}s)\n{e:#}\n",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
