//! A test hook: hold a write workflow at a known point until the test lets it go.
//!
//! Inert unless the worker's environment sets [`HOLD_DIR_VAR`]
//! (`CONTRAIL_TEST_HOLD_DIR=<dir>`). When it is set, every write workflow this
//! worker runs (an `INSERT`/CTAS/`COPY` statement, a pipeline run) stops twice:
//!
//! ```text
//! <dir>/<query id>.fragments.waiting   a final fragment wrote its data files and holds
//!                                      before reporting them (the commit is not decided
//!                                      yet: a cancellation now stops the write)
//!     until <dir>/<query id>.fragments.go exists
//! <dir>/<query id>.commit.waiting      the commit activity started and holds before
//!                                      committing (a cancellation now no longer stops it)
//!     until <dir>/<query id>.commit.go exists
//! ```
//!
//! With a file `<dir>/started.on`, every fragment of any statement also holds
//! when it starts (its first attempt only, so a fragment that runs again after
//! its worker was lost passes), until `<dir>/<query id>.started.go` exists:
//! a test can kill the worker that is running a fragment, knowing it is.
//! Each `waiting` file holds the process id of the last worker that wrote it.
//!
//! While it holds, the activity heartbeats, and a cancellation that reaches it
//! ends the hold as a cancellation. A `go` file stays: retries pass straight on.
//! The query id of a pipeline run is `pipeline-<name>-<generation>-<seq>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, warn};

/// The environment variable naming the hold directory.
pub const HOLD_DIR_VAR: &str = "CONTRAIL_TEST_HOLD_DIR";

/// Where a write can be held.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HoldPoint {
    /// A final fragment of a write, its files written, before it reports them.
    Fragments,
    /// The commit activity, before it commits.
    Commit,
    /// Any fragment, as it starts (only with `started.on` in the directory).
    Started,
}

impl HoldPoint {
    fn name(self) -> &'static str {
        match self {
            Self::Fragments => "fragments",
            Self::Commit => "commit",
            Self::Started => "started",
        }
    }
}

/// The hold directory, when the hook is on.
fn hold_dir() -> Option<PathBuf> {
    std::env::var_os(HOLD_DIR_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Hold `query_id` at `point` if the hook is on (see the module docs); at once otherwise.
pub(crate) async fn hold(ctx: &ActivityContext, query_id: &str, point: HoldPoint) -> Result<(), ActivityError> {
    let Some(dir) = hold_dir() else {
        return Ok(());
    };
    hold_in(ctx, &dir, query_id, point).await
}

/// Hold a fragment of `query_id` as it starts, if the hook is on and asks for it.
pub(crate) async fn hold_started(ctx: &ActivityContext, query_id: &str) -> Result<(), ActivityError> {
    match hold_dir() {
        Some(dir) if dir.join("started.on").exists() => hold_in(ctx, &dir, query_id, HoldPoint::Started).await,
        _ => Ok(()),
    }
}

async fn hold_in(ctx: &ActivityContext, dir: &Path, query_id: &str, point: HoldPoint) -> Result<(), ActivityError> {
    let name = format!("{query_id}.{}", point.name());
    let go = dir.join(format!("{name}.go"));
    let waiting = dir.join(format!("{name}.waiting"));
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&waiting, std::process::id().to_string()))
    {
        warn!(file = %waiting.display(), error = %e, "test hold: could not write its waiting file");
    }
    info!(file = %waiting.display(), "test hold: waiting for its go file");
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            biased;
            () = ctx.cancelled() => {
                info!(file = %waiting.display(), "test hold: cancelled");
                return Err(ActivityError::cancelled());
            }
            _ = tick.tick() => {
                if go.exists() {
                    info!(file = %go.display(), "test hold: released");
                    return Ok(());
                }
                // The SDK throttles what it sends to Temporal.
                if let Err(e) = ctx.record_heartbeat(0u64).await {
                    warn!(error = %e, "heartbeat not recorded");
                }
            }
        }
    }
}
