//! The `contrail` command.

use clap::Parser;
use contrail_server::config::{Cli, Command, ServeConfig};
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password");
            println!("{}", contrail_server::auth::hash_password(password)?);
            Ok(())
        }
        Command::Worker(args) => {
            let log = args
                .log
                .clone()
                .unwrap_or_else(|| contrail_server::config::DEFAULT_LOG.into());
            init_logging(&log);
            io_runtime()?.block_on(contrail_server::worker(*args, shutdown_signal()))?;
            Ok(())
        }
        Command::Serve(args) => {
            let config = ServeConfig::try_from(*args)?;
            init_logging(&config.log);
            io_runtime()?.block_on(contrail_server::serve(config, shutdown_signal()))?;
            Ok(())
        }
    }
}

/// Logs go to stderr; colours only when it is a terminal (not in log files).
fn init_logging(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The runtime for network I/O (query execution has its own, see `exec`). Its
/// threads parse statements and plan light ones: they get the large stacks that
/// `contrail_planner::limits` sizes statements for.
fn io_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(contrail_planner::limits::THREAD_STACK_BYTES)
        .thread_name("contrail-io")
        .build()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
