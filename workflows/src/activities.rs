//! The fragment activity: run one fragment on this worker and return its ticket.
#![allow(unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use contrail_planner::sink::{Sink, StagedFile};
use deltalake::kernel::Add;
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::fragment::{FragmentRunner, FragmentTask, FragmentTicket};
use crate::hold::{HoldPoint, hold, hold_started};
use crate::workflow::{HEARTBEAT_TIMEOUT, UPSTREAM_LOST, fragment_failed_type};

/// Activities a worker offers. Fragments run on `cpu`, not on the worker's poller.
pub struct FragmentActivities {
    pub runner: FragmentRunner,
    pub cpu: Handle,
}

#[activities]
impl FragmentActivities {
    /// Run one fragment; heartbeats rows written so far until it finishes.
    #[activity]
    pub async fn run_fragment(
        self: Arc<Self>,
        ctx: ActivityContext,
        task: FragmentTask,
    ) -> Result<FragmentTicket, ActivityError> {
        let what = format!("{}/{}/{}", task.query_id, task.stage, task.fragment);
        // A final fragment of a write: the test hook may hold it once its files are written.
        let held = (task.is_final && task.sink.is_some()).then(|| task.query_id.clone());
        let attempt = ctx.info().attempt;
        if attempt <= 1 && task.rerun == 0 {
            hold_started(&ctx, &task.query_id).await?;
        }
        if attempt > 1 || task.rerun > 0 {
            // Recovery from a lost worker or output: worth a line at the default level.
            info!(fragment = %what, attempt, rerun = task.rerun, "fragment runs again");
        } else {
            debug!(fragment = %what, "fragment starts");
        }
        let rows = Arc::new(AtomicU64::new(0));
        let runner = self.runner.clone();
        let counter = Arc::clone(&rows);
        let job = self
            .cpu
            .spawn(async move { runner.run(task, move |n| counter.store(n, Ordering::Relaxed)).await });
        let abort = job.abort_handle();
        tokio::pin!(job);
        // Heartbeat well inside the timeout; the SDK throttles what it sends.
        let mut beat = heartbeat_ticks();
        loop {
            tokio::select! {
                finished = &mut job => {
                    return match finished {
                        Ok(Ok(ticket)) => {
                            debug!(fragment = %what, rows = ticket.rows, "fragment done");
                            if let Some(query_id) = &held {
                                hold(&ctx, query_id, HoldPoint::Fragments).await?;
                            }
                            Ok(ticket)
                        }
                        Ok(Err(e)) => Err(failure(&what, e)),
                        Err(join) => Err(ActivityError::application(ApplicationFailure::new(format!(
                            "fragment {what} stopped: {join}"
                        )))),
                    };
                }
                _ = ctx.cancelled() => {
                    abort.abort();
                    return Err(ActivityError::cancelled());
                }
                _ = beat.tick() => {
                    if let Err(e) = ctx.record_heartbeat(rows.load(Ordering::Relaxed)).await {
                        warn!(fragment = %what, error = %e, "heartbeat not recorded");
                    }
                }
            }
        }
    }
}

/// The one commit of a write workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitTask {
    pub query_id: String,
    pub sink: Sink,
    pub adds: Vec<Add>,
    /// A `COPY`: the fragments' files to move into place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<StagedFile>,
}

#[activities]
impl CommitActivities {
    /// Commit a write's data files in one Delta transaction (idempotent: a retry
    /// after a commit that went through returns that commit's version), or move a
    /// `COPY`'s files into place (idempotent too; returns how many).
    #[activity]
    pub async fn commit_write(self: Arc<Self>, ctx: ActivityContext, task: CommitTask) -> Result<u64, ActivityError> {
        hold(&ctx, &task.query_id, HoldPoint::Commit).await?;
        let files = task.adds.len() + task.files.len();
        let job = self.cpu.spawn(async move {
            match &task.sink {
                Sink::Delta(sink) => contrail_planner::sink::commit(sink, &task.query_id, task.adds).await,
                Sink::Files(sink) => contrail_planner::sink::commit_files(sink, &task.files),
            }
        });
        match heartbeating(&ctx, job).await {
            Ok(Ok(version)) => {
                info!(version, files, "write committed");
                Ok(version)
            }
            Ok(Err(e @ contrail_planner::Error::AlreadyExists { .. })) => Err(ActivityError::application(
                ApplicationFailure::builder(e.to_string())
                    .type_name(fragment_failed_type(e.kind()))
                    .non_retryable(true)
                    .build(),
            )),
            Ok(Err(e)) => Err(ActivityError::application(ApplicationFailure::new(e.to_string()))),
            Err(join) => Err(ActivityError::application(ApplicationFailure::new(format!(
                "commit stopped: {join}"
            )))),
        }
    }

    /// Delete the staged files of a failed `COPY` (idempotent).
    #[activity]
    pub async fn discard_files(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: DiscardTask,
    ) -> Result<u64, ActivityError> {
        let discarded = contrail_planner::sink::discard_files(&task.files);
        debug!(discarded, "staged files of a failed COPY removed");
        Ok(discarded)
    }
}

/// The files a failed `COPY` staged, to delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscardTask {
    pub files: Vec<StagedFile>,
}

/// Activities that commit writes (on the CPU runtime: Delta log I/O and checkpoints).
pub struct CommitActivities {
    pub cpu: Handle,
}

/// Map a fragment error to a Temporal failure: lost inputs and deterministic
/// failures are not retried; I/O trouble is.
fn failure(what: &str, e: Error) -> ActivityError {
    let failure = match e {
        Error::UpstreamLost(lost) => {
            warn!(fragment = %what, input = ?lost.fragment, reason = %lost.reason, "input fragment lost");
            ApplicationFailure::builder(serde_json::to_string(&lost.fragment).unwrap_or_default())
                .type_name(UPSTREAM_LOST.to_owned())
                .non_retryable(true)
                .build()
        }
        Error::Spool { .. } | Error::NotSpooled { .. } => ApplicationFailure::new(e.to_string()),
        other => ApplicationFailure::builder(other.to_string())
            .type_name(fragment_failed_type(other.kind()))
            .non_retryable(true)
            .build(),
    };
    ActivityError::application(failure)
}

/// Run `job` while heartbeating, so that Temporal notices a worker that died
/// mid-activity within [`HEARTBEAT_TIMEOUT`] rather than at the start-to-close
/// timeout (activities whose options set a heartbeat timeout).
pub(crate) async fn heartbeating<T>(ctx: &ActivityContext, job: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(job);
    let mut beat = heartbeat_ticks();
    loop {
        tokio::select! {
            out = &mut job => return out,
            _ = beat.tick() => {
                if let Err(e) = ctx.record_heartbeat(0u64).await {
                    warn!(error = %e, "heartbeat not recorded");
                }
            }
        }
    }
}

/// Heartbeat ticks, four per timeout, the first one period after the start: an
/// activity that ends sooner (most fragments of interactive statements) sends none.
fn heartbeat_ticks() -> tokio::time::Interval {
    let period = HEARTBEAT_TIMEOUT / 4;
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

/// How long a worker waits for running fragments at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
