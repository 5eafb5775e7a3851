//! # contrail-server
//!
//! The `contrail` binary: configuration, the Flight SQL service, auth, TLS,
//! sessions, and where errors become gRPC statuses (`error.rs`).
//!
//! ```text
//!   Flight SQL client (ADBC, JDBC, pyarrow)
//!          │ gRPC (HTTP/2, optional TLS)
//!          ▼
//!   wire::FlightRouter       DoGet on Contrail's own codec (results framed
//!          │                 from the columns), other methods on arrow-flight's
//!          ▼
//!   flight::ContrailFlight   authenticate, resolve session, Set-Cookie
//!          ▼
//!   service::SqlService      decode command -> planner -> encode FlightData
//!          │  exec::Executor: DataFusion on its own CPU runtimes (lanes),
//!          │  results through a bounded channel (backpressure)
//!          ▼
//!   contrail_planner::Engine  SQL -> plan -> stream / count; Delta tables
//! ```
//!
//! Statements routed to workflows run as fragments on Temporal workers
//! ([`distributed`], `contrail-workflows`); `contrail worker` runs extra workers.
//!
//! Tickets and prepared-statement handles ([`handle`]) are self-contained and
//! signed, so they survive a restart of the server.

pub mod auth;
mod coalesce;
pub mod config;
pub mod distributed;
pub mod error;
pub mod exec;
pub mod flight;
pub mod handle;
pub mod metadata;
pub mod pipelines;
mod plans;
pub mod service;
pub mod session;
pub mod wire;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use contrail_planner::{Engine, EngineOptions};
use contrail_workflows::dataplane::{DataPlane, FlightFetcher};
use contrail_workflows::embedded::{EmbeddedOptions, EmbeddedTemporal};
use contrail_workflows::worker::{WorkerHandle, spawn_worker, worker_client};
use contrail_workflows::{FragmentRunner, Spool, TemporalTarget, WorkflowClient};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::config::{Sample, ServeConfig, TemporalMode};
use crate::distributed::Workflows;
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::flight::ContrailFlight;
use crate::handle::Signer;
use crate::service::SqlService;
use crate::session::Sessions;
use crate::wire::FlightRouter;

/// Largest gRPC message accepted or sent (Flight batches are ~1-8 MB).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// HTTP/2 receive window per stream (the connection's is twice it).
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// How long in-flight streams may run after a shutdown signal before they are cancelled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Run `contrail serve` until `shutdown` resolves.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Two rustls crypto providers are linked (ring for gRPC, aws-lc via
    // deltalake's HTTP stack): pick one for the process, or TLS setup panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    contrail_planner::limits::configure(config.limits);
    let executor = Arc::new(Executor::new(config.cpu_threads, config.normal_nice)?);
    let mut options = EngineOptions::new(&config.data_dir);
    options.target_partitions = config.target_partitions;
    options.memory_limit = config.memory_limit;
    options.cache_limit = config.cache_max_bytes;
    let engine = executor.run(async move { Ok(Engine::open(options).await?) }).await?;
    // Tables cached before a restart load in the background; until they are in,
    // their scans read the tables.
    executor.handle().spawn({
        let engine = Arc::clone(&engine);
        async move { engine.load_cached_tables().await }
    });

    if let Some((Sample::Tpch, sf)) = config.sample {
        let e = engine.clone();
        let rows = executor
            .run(async move { Ok(contrail_planner::sample::load_tpch(&e, sf).await?) })
            .await?;
        info!(rows, scale_factor = sf, "TPC-H sample ready in schema 'tpch'");
    }

    let signer = Signer::new(&server_secret(&config.key_file)?);
    let auth = Authenticator::new(&config.users, signer.clone(), config.token_ttl)?;
    let sessions = Sessions::new(Duration::from_secs(3600), signer.clone());

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal { message: e.to_string() })?;
    let tls = config.tls.is_some();

    // Temporal: the embedded dev server (or a cluster), a client, and a worker in
    // this process whose data plane is this server's own Flight endpoint.
    let temporal = start_workflows(&config, &engine, &executor, addr, tls, &signer).await?;
    let workflows = temporal.as_ref().map(|t| Arc::clone(&t.workflows));

    let service = Arc::new(SqlService::new(
        engine,
        executor.clone(),
        signer,
        auth.clone(),
        workflows,
    )?);
    let flight = FlightRouter::new(ContrailFlight::new(Arc::clone(&service), sessions.clone()), MAX_MESSAGE);

    // Receive windows large enough for a whole ingest batch in flight: with
    // hyper's 1 MiB default a client's DoPut waits for our WINDOW_UPDATEs
    // every megabyte. SF 1 lineitem over ADBC: 3.35-3.43 s -> 2.80-3.02 s.
    // (A larger max frame size changes nothing: the Go client sends 16 KiB frames.)
    let mut builder = Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(2 * STREAM_WINDOW));
    if let Some((cert, key)) = &config.tls {
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::invalid(format!("cannot read {}: {e}", p.display())));
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::invalid(format!("TLS configuration: {e}")))?;
    }

    print_banner(addr, tls, auth.enabled());
    if let Some(path) = &config.port_file {
        write_atomically(path, addr.to_string().as_bytes())?;
    }

    let evictor = {
        let (sessions, service) = (sessions.clone(), Arc::clone(&service));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                sessions.evict_idle();
                service.evict_expired_plans();
            }
        })
    };

    // Shutdown: stop accepting, let running streams finish (up to the grace
    // period), then cancel what is left and stop, even if idle clients keep
    // their connections open.
    let exec2 = executor.clone();
    let on_shutdown = async move {
        shutdown.await;
        info!(
            running = exec2.running(),
            "shutting down: in-flight streams get up to {}s to finish",
            SHUTDOWN_GRACE.as_secs()
        );
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while exec2.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if exec2.running() > 0 {
            warn!(
                running = exec2.running(),
                "grace period over: cancelling running queries"
            );
            exec2.cancel_all();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let server = builder
        .add_service(flight)
        // The builder's tcp_nodelay only applies to listeners tonic binds itself;
        // without it small responses wait for the peer's delayed ACK (~40 ms).
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)));
    tokio::select! {
        result = server => result.map_err(|e| Error::Internal { message: format!("server error: {e}") })?,
        () = on_shutdown => {}
    }
    evictor.abort();
    if let Some(t) = temporal {
        t.stop().await;
    }
    info!("stopped");
    Ok(())
}

/// Workflow execution in a serving process.
struct Temporal {
    workflows: Arc<Workflows>,
    worker: Option<WorkerHandle>,
    embedded: Option<EmbeddedTemporal>,
    janitor: tokio::task::JoinHandle<()>,
}

impl Temporal {
    async fn stop(self) {
        self.janitor.abort();
        if let Some(worker) = self.worker {
            let _ = tokio::task::spawn_blocking(move || worker.shutdown()).await;
        }
        if let Some(e) = self.embedded {
            e.stop().await;
        }
    }
}

async fn start_workflows(
    config: &ServeConfig,
    engine: &Arc<Engine>,
    executor: &Arc<Executor>,
    addr: std::net::SocketAddr,
    tls: bool,
    signer: &Signer,
) -> Result<Option<Temporal>> {
    let w = &config.workflows;
    let (address, embedded) = match &w.temporal {
        TemporalMode::Off => return Ok(None),
        TemporalMode::Remote(address) => (address.clone(), None),
        TemporalMode::Embedded => {
            let bin = contrail_workflows::embedded::find_temporal_bin(w.temporal_bin.as_deref())?;
            let embedded = EmbeddedTemporal::start(EmbeddedOptions {
                bin,
                data_dir: config.data_dir.join("temporal"),
                namespace: w.namespace.clone(),
                port: w.temporal_port,
                ui_port: w.temporal_ui_port,
            })
            .await?;
            println!(
                "  Temporal:      {} (namespace {}, task queue {})",
                embedded.address(),
                w.namespace,
                w.task_queue
            );
            if let Some(ui) = embedded.ui() {
                println!("  Temporal UI:   {ui}");
            }
            (embedded.address().to_string(), Some(embedded))
        }
    };
    let target = TemporalTarget {
        address,
        namespace: w.namespace.clone(),
        task_queue: w.task_queue.clone(),
    };
    let scheme = if tls { "grpc+tls" } else { "grpc+tcp" };
    let location = format!("{scheme}://{}", w.advertise.clone().unwrap_or_else(|| advertised(addr)));
    let spool = Spool::open(&config.data_dir, w.spool_ttl)?;
    let runner = FragmentRunner {
        engine: Arc::clone(engine),
        spool: spool.clone(),
        fetcher: FlightFetcher::new(),
        location: location.clone(),
    };
    let slots = w
        .local_fragments
        .unwrap_or_else(|| config.cpu_threads.unwrap_or_else(num_cpus));
    // One connection for the worker and the serving side: eager workflow start.
    let shared = worker_client(&target, &location).await?;
    let worker = if slots > 0 {
        let worker = spawn_worker(target.clone(), shared.clone(), runner, executor.handle().clone(), slots).await?;
        Some(worker)
    } else {
        None
    };
    let client = WorkflowClient::sharing(shared, target);
    pipelines::reconcile(engine, &client).await?;
    let janitor = spool.spawn_janitor();
    let workflows = Arc::new(Workflows {
        client,
        spool,
        location,
        proxy_results: w.proxy_results,
        signer: signer.clone(),
    });
    Ok(Some(Temporal {
        workflows,
        worker,
        embedded,
        janitor,
    }))
}

/// The address others reach a listener at (`0.0.0.0` becomes loopback).
fn advertised(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// Run `contrail worker` until `shutdown` resolves: a Temporal worker and the
/// Flight data plane serving its spooled fragment outputs.
pub async fn worker(
    args: crate::config::WorkerArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let executor = Arc::new(Executor::new(args.cpu_threads, 0)?);
    let options = EngineOptions::new(&args.data_dir);
    let engine = executor.run(async move { Ok(Engine::open(options).await?) }).await?;
    let listen: std::net::SocketAddr = args
        .listen
        .parse()
        .map_err(|e| Error::invalid(format!("--listen '{}' is not host:port: {e}", args.listen)))?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal { message: e.to_string() })?;
    let location = format!(
        "grpc+tcp://{}",
        args.advertise.clone().unwrap_or_else(|| advertised(addr))
    );
    let spool = Spool::open(&args.data_dir, Duration::from_secs(args.spool_ttl_secs.unwrap_or(3600)))?;
    let runner = FragmentRunner {
        engine,
        spool: spool.clone(),
        fetcher: FlightFetcher::new(),
        location: location.clone(),
    };
    let target = TemporalTarget {
        address: args.temporal.clone(),
        namespace: args.temporal_namespace.clone(),
        task_queue: args.task_queue.clone(),
    };
    let slots = args.max_fragments.or(args.cpu_threads).unwrap_or_else(num_cpus);
    let client = worker_client(&target, &location).await?;
    let worker = spawn_worker(target, client, runner, executor.handle().clone(), slots).await?;
    let janitor = spool.spawn_janitor();
    let plane = FlightServiceServer::new(DataPlane::new(spool))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    println!(
        "Contrail worker {} serving fragment outputs at {location}",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(path) = &args.port_file {
        write_atomically(path, addr.to_string().as_bytes())?;
    }
    let server = Server::builder()
        .add_service(plane)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown);
    let result = server.await;
    janitor.abort();
    let _ = tokio::task::spawn_blocking(move || worker.shutdown()).await;
    result.map_err(|e| Error::Internal {
        message: format!("data plane error: {e}"),
    })?;
    info!("worker stopped");
    Ok(())
}

fn print_banner(addr: std::net::SocketAddr, tls: bool, auth: bool) {
    let (scheme, enc) = if tls { ("grpc+tls", "true") } else { ("grpc", "false") };
    let creds = if auth { "&user=USER&password=PASSWORD" } else { "" };
    let py_auth = if auth {
        ", db_kwargs={\"username\": \"USER\", \"password\": \"PASSWORD\"}"
    } else {
        ""
    };
    println!("Contrail {} listening on {addr}", env!("CARGO_PKG_VERSION"));
    println!("  ADBC (Python): adbc_driver_flightsql.dbapi.connect(\"{scheme}://{addr}\"{py_auth})");
    println!("  JDBC:          jdbc:arrow-flight-sql://{addr}/?useEncryption={enc}{creds}");
}

/// The variable that, when set, holds the server key (hex, at least 32 bytes).
pub const SERVER_KEY_VAR: &str = "CONTRAIL_SERVER_KEY";

/// The server secret signs tickets, handles, session ids and tokens. It comes
/// from [`SERVER_KEY_VAR`] if set, else from `path` (by default in the data
/// directory, created on first start), so they stay valid across restarts.
fn server_secret(path: &Path) -> Result<Vec<u8>> {
    if let Ok(hex) = std::env::var(SERVER_KEY_VAR) {
        let bytes =
            decode_hex(hex.trim()).ok_or_else(|| Error::invalid(format!("{SERVER_KEY_VAR} is not hexadecimal")))?;
        if bytes.len() < 32 {
            return Err(Error::invalid(format!(
                "{SERVER_KEY_VAR} is too short (need 32 bytes, 64 hex digits)"
            )));
        }
        return Ok(bytes);
    }
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes),
        Ok(_) => {
            return Err(Error::invalid(format!(
                "{} is too short (need 32 bytes)",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::invalid(format!("cannot read {}: {e}", path.display()))),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::invalid(format!("cannot create {}: {e}", dir.display())))?;
    }
    let secret: [u8; 32] = rand::random();
    write_private(path, &secret)?;
    Ok(secret.to_vec())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// Like [`write_atomically`], for a secret: readable by the owner only from
/// the moment the file exists.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    // A leftover temporary file would keep its own mode.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::invalid(format!("cannot write {}: {e}", path.display())))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::invalid(format!("cannot write {}: {e}", path.display())))
}
