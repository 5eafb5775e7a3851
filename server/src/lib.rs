//! # contrail-server
//!
//! The `contrail` binary: configuration, the Flight SQL service, auth, TLS,
//! sessions, and the single place where errors become gRPC statuses.
//!
//! ```text
//!   Flight SQL client (ADBC, JDBC, pyarrow)
//!          │ gRPC (HTTP/2, optional TLS)
//!          ▼
//!   flight::ContrailFlight   authenticate, resolve session, Set-Cookie
//!          ▼
//!   service::SqlService      decode command -> planner -> encode FlightData
//!          │  exec::Executor: DataFusion on its own CPU runtime,
//!          │  results through a bounded channel (backpressure)
//!          ▼
//!   contrail_planner::Engine  SQL -> plan -> stream / count; Delta tables
//! ```
//!
//! Tickets and prepared-statement handles ([`handle`]) are self-contained and
//! signed, so they survive a restart of the server.

pub mod auth;
pub mod config;
pub mod error;
pub mod exec;
pub mod flight;
pub mod handle;
pub mod metadata;
pub mod service;
pub mod session;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use contrail_planner::{Engine, EngineOptions};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::config::{Sample, ServeConfig};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::flight::ContrailFlight;
use crate::handle::Signer;
use crate::service::SqlService;
use crate::session::Sessions;

/// Largest gRPC message accepted or sent (Flight batches are ~1-8 MB).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
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
    let executor = Arc::new(Executor::new(config.cpu_threads)?);
    let mut options = EngineOptions::new(&config.data_dir);
    options.target_partitions = config.target_partitions;
    options.memory_limit = config.memory_limit;
    let engine = executor.run(async move { Ok(Engine::open(options).await?) }).await?;

    if let Some((Sample::Tpch, sf)) = config.sample {
        let e = engine.clone();
        let rows = executor
            .run(async move { Ok(contrail_planner::sample::load_tpch(&e, sf).await?) })
            .await?;
        info!(rows, scale_factor = sf, "TPC-H sample ready in schema 'tpch'");
    }

    let signer = Signer::new(&load_or_create_secret(&config.data_dir)?);
    let auth = Authenticator::new(&config.users, signer.clone(), config.token_ttl)?;
    let sessions = Sessions::new(Duration::from_secs(3600));
    let service = Arc::new(SqlService::new(engine, executor.clone(), signer, auth.clone())?);
    let flight = FlightServiceServer::new(ContrailFlight::new(service, sessions.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal { message: e.to_string() })?;

    let mut builder = Server::builder();
    let tls = config.tls.is_some();
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
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                sessions.evict_idle();
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
    info!("stopped");
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

/// The server secret signs tickets, handles and tokens; it lives in the data
/// directory so they stay valid across restarts.
fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>> {
    let path = data_dir.join("server.key");
    match std::fs::read(&path) {
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
    let secret: [u8; 32] = rand::random();
    write_atomically(&path, &secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(secret.to_vec())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::invalid(format!("cannot write {}: {e}", path.display())))
}
