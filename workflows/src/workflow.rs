//! `QueryWorkflow`: one statement's stages, run as fragment activities.
//!
//! ```text
//! QueryInput { stages (plans, fragment counts, dependencies) }
//!   loop: run every fragment whose input stages are complete, concurrently
//!         (FragmentActivities::run_fragment on any worker) -> FragmentTicket
//!         a fragment that finds an input gone (UpstreamLost) -> recompute that
//!         input, then run the fragment again
//!   -> QueryOutput { the final stage's tickets }
//!   a write: then ONE commit_write activity (the commit point)
//! ```
//!
//! Cancellation (CancelFlightInfo, a statement timeout, DROP PIPELINE): before the
//! commit point, fragments stop and the workflow ends CANCELED with nothing
//! committed; once the commit is scheduled it is shielded: it finishes, and the
//! workflow completes with its version (or fails with its error), not CANCELED.
//! Status and table always agree.
//!
//! Only plans and tickets enter the history: no rows. The `progress` query reports
//! fragments done and the final fragments finished so far (PollFlightInfo).
//!
//! Workflow code must be deterministic: it uses only the workflow context, ordered
//! collections and the SDK's `join_all`.
#![allow(unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use contrail_planner::SessionSettings;
use contrail_planner::distributed::FragmentRef;
use contrail_planner::error::ErrorKind;
use serde::{Deserialize, Serialize};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflows::join_all;
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ApplicationFailure, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult, WorkflowTermination,
};

use crate::activities::{CommitActivities, CommitTask, DiscardTask, FragmentActivities};
use crate::fragment::{FragmentTask, FragmentTicket, StagePlan};
use contrail_planner::sink::{Sink, StagedFile};

/// Failure type of an activity whose input fragment is gone; its message is the
/// JSON of the lost [`FragmentRef`].
pub const UPSTREAM_LOST: &str = "UpstreamLost";
/// Failure type of an activity whose fragment failed deterministically (bad data,
/// a plan error): retrying cannot help. Followed by `.` and the error's
/// [`ErrorKind::name`], which the client turns back into the kind.
pub const FRAGMENT_FAILED: &str = "FragmentFailed";

/// The failure type of a fragment that failed for good with an error of `kind`.
pub fn fragment_failed_type(kind: ErrorKind) -> String {
    format!("{FRAGMENT_FAILED}.{}", kind.name())
}

/// The kind of error a failure type names (see [`fragment_failed_type`]).
pub fn kind_of_failure_type(type_name: &str) -> Option<ErrorKind> {
    type_name
        .strip_prefix(FRAGMENT_FAILED)?
        .strip_prefix('.')
        .and_then(ErrorKind::from_name)
}

/// How often one fragment may be recomputed after its output was lost.
const MAX_RECOMPUTES: usize = 5;

/// Heartbeat timeout of fragment activities: a killed worker's fragment is retried
/// about this long (+1 s) after the kill.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

/// One stage, as the workflow sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSpec {
    pub id: u32,
    pub plan: StagePlan,
    pub fragments: u32,
    pub buckets: u32,
    /// Stages whose outputs this one reads.
    pub inputs: Vec<u32>,
}

/// The workflow's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryInput {
    pub query_id: String,
    pub settings: SessionSettings,
    /// In dependency order; the last is final.
    pub stages: Vec<StageSpec>,
    /// A write: the final fragments write data files here, then one commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<Sink>,
}

impl QueryInput {
    /// The input of a workflow running `query` (plans over 16 KiB are stored in
    /// `spool` and carried by reference).
    pub fn new(
        query_id: String,
        query: contrail_planner::FragmentedQuery,
        spool: &crate::Spool,
        sink: Option<Sink>,
    ) -> crate::Result<Self> {
        let stages = query
            .stages
            .into_iter()
            .map(|stage| {
                Ok(StageSpec {
                    id: stage.id,
                    fragments: stage.fragments() as u32,
                    buckets: stage.buckets() as u32,
                    inputs: stage.inputs.clone(),
                    plan: StagePlan::encode(stage.plan, spool, &query_id, stage.id)?,
                })
            })
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Self {
            query_id,
            settings: query.settings,
            stages,
            sink,
        })
    }
}

/// What the `progress` query returns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryProgress {
    /// Fragment runs completed (recomputations count again).
    pub done: u32,
    /// Fragments in the plan.
    pub total: u32,
    /// Final-stage outputs finished so far, by fragment index.
    pub results: Vec<Option<FragmentTicket>>,
}

impl QueryProgress {
    /// Completed fraction in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        (f64::from(self.done) / f64::from(self.total)).min(1.0)
    }
}

/// The workflow's result: where the final outputs are (a write: what it wrote).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryOutput {
    pub results: Vec<FragmentTicket>,
    /// A write: the Delta table version its commit made (a `COPY`: files written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<u64>,
}

impl QueryOutput {
    /// Rows of the result (a write: rows written).
    pub fn rows(&self) -> u64 {
        self.results.iter().map(|t| t.rows).sum()
    }
}

/// A statement run as stages of fragments. Workflow id = query id.
#[workflow]
#[derive(Default)]
pub struct QueryWorkflow {
    progress: QueryProgress,
}

/// Fragments: long, heartbeating; lost inputs and deterministic failures are not retried.
fn activity_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(6 * 3600))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .retry_policy(retry_policy(10, &[UPSTREAM_LOST]))
        .build()
}

/// The commit: short, idempotent, so retried more.
fn commit_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .retry_policy(retry_policy(20, &[]))
        .build()
}

/// `options` on a cancellation token of their own: the workflow's cancellation
/// does not reach the activity, and the workflow waits for its result.
pub(crate) fn shielded(mut options: ActivityOptions) -> ActivityOptions {
    options.cancellation_token = Some(WorkflowCancellationToken::new());
    options
}

/// Retries 200 ms apart, doubling up to 2 s. Failures marked non-retryable (a
/// fragment that failed for good) are never retried, whatever their type.
pub(crate) fn retry_policy(attempts: u32, non_retryable: &[&str]) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(200))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(2))
        .maximum_attempts(attempts)
        .non_retryable_error_types(non_retryable.iter().copied())
        .build()
}

/// A `COPY` whose final fragments failed for good: the files the others staged.
fn staged_files_of_failed_copy(
    input: &QueryInput,
    finished: &[((u32, u32), Result<FragmentTicket, ActivityExecutionError>)],
) -> Option<Vec<StagedFile>> {
    if !matches!(input.sink, Some(Sink::Files(_))) {
        return None;
    }
    let fatal = finished
        .iter()
        .any(|(_, r)| r.as_ref().is_err_and(|e| lost_input(e).is_none()));
    fatal.then(|| {
        finished
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|t| t.files.iter().cloned())
            .collect()
    })
}

/// The lost input named by a failed fragment activity, if that is why it failed.
fn lost_input(e: &ActivityExecutionError) -> Option<FragmentRef> {
    let ActivityExecutionError::Failed(failed) = e else {
        return None;
    };
    let temporalio_common::error::IncomingError::Application(app) = failed.cause()? else {
        return None;
    };
    if app.type_name() != Some(UPSTREAM_LOST) {
        return None;
    }
    let message = app.to_string();
    let json = &message[message.find('{')?..];
    serde_json::from_str(json).ok()
}

/// The workflow's failure when a fragment activity failed for good: the
/// fragment's own message and type (the innermost cause), not Temporal's wrappers.
fn fragment_failed(e: ActivityExecutionError) -> WorkflowTermination {
    use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
    let ActivityExecutionError::Failed(_) = &e else {
        return e.into(); // cancellation stays a cancellation
    };
    let Some(mut f) = e.failure() else {
        return e.into();
    };
    while let Some(cause) = f.cause.as_deref() {
        f = cause;
    }
    let type_name = match &f.failure_info {
        Some(FailureInfo::ApplicationFailureInfo(info)) if !info.r#type.is_empty() => info.r#type.clone(),
        _ => fragment_failed_type(ErrorKind::Internal),
    };
    ApplicationFailure::builder(f.message.clone())
        .type_name(type_name)
        .non_retryable(true)
        .build()
        .into()
}

#[workflow_methods]
impl QueryWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: QueryInput) -> WorkflowResult<QueryOutput> {
        let Some(last) = input.stages.last().map(|s| s.id as usize) else {
            return Err(ApplicationFailure::non_retryable("a query plan with no stages").into());
        };
        let total = input.stages.iter().map(|s| s.fragments).sum();
        let final_fragments = input.stages[last].fragments as usize;
        ctx.state_mut(|s| {
            s.progress.total = total;
            s.progress.results = vec![None; final_fragments];
        });

        let mut outputs: Vec<Vec<Option<FragmentTicket>>> =
            input.stages.iter().map(|s| vec![None; s.fragments as usize]).collect();
        let mut pending: BTreeSet<(u32, u32)> = input
            .stages
            .iter()
            .flat_map(|s| (0..s.fragments).map(move |f| (s.id, f)))
            .collect();
        let mut recomputes = 0usize;
        let mut reruns: BTreeMap<(u32, u32), u32> = BTreeMap::new();
        let options = activity_options();

        while !pending.is_empty() {
            let ready: Vec<(u32, u32)> = pending
                .iter()
                .copied()
                .filter(|&(stage, _)| {
                    input.stages[stage as usize]
                        .inputs
                        .iter()
                        .all(|i| outputs[*i as usize].iter().all(Option::is_some))
                })
                .collect();
            if ready.is_empty() {
                return Err(
                    ApplicationFailure::non_retryable("no fragment can run: the stage graph has a cycle").into(),
                );
            }
            let runs = ready.iter().map(|&(stage, fragment)| {
                pending.remove(&(stage, fragment));
                let spec = &input.stages[stage as usize];
                let task = FragmentTask {
                    query_id: input.query_id.clone(),
                    stage,
                    fragment,
                    buckets: spec.buckets,
                    is_final: stage as usize == last,
                    settings: input.settings.clone(),
                    plan: spec.plan.clone(),
                    inputs: spec
                        .inputs
                        .iter()
                        .map(|i| {
                            let refs = outputs[*i as usize]
                                .iter()
                                .flatten()
                                .map(|t| t.fragment.clone())
                                .collect();
                            (*i, refs)
                        })
                        .collect(),
                    rerun: reruns.get(&(stage, fragment)).copied().unwrap_or(0),
                    sink: input.sink.clone().filter(|_| stage as usize == last),
                };
                let (c, o) = (ctx.clone(), options.clone());
                async move {
                    let result = c.execute_activity(FragmentActivities::run_fragment, task, o).await;
                    if let Ok(ticket) = &result {
                        c.state_mut(|s| {
                            s.progress.done += 1;
                            if stage as usize == last {
                                if let Some(slot) = s.progress.results.get_mut(fragment as usize) {
                                    *slot = Some(ticket.clone());
                                }
                            }
                        });
                    }
                    ((stage, fragment), result)
                }
            });
            let runs: Vec<_> = runs.collect();
            let finished = join_all(runs).await;
            if let Some(files) = staged_files_of_failed_copy(&input, &finished) {
                // A COPY that fails leaves no files: discard what its fragments staged.
                // Best effort: the statement's own error is what the client gets.
                let task = DiscardTask { files };
                let _ = ctx
                    .execute_activity(CommitActivities::discard_files, task, shielded(commit_options()))
                    .await;
            }
            for ((stage, fragment), result) in finished {
                match result {
                    Ok(ticket) => outputs[stage as usize][fragment as usize] = Some(ticket),
                    Err(e) => {
                        let Some(lost) = lost_input(&e) else {
                            return Err(fragment_failed(e));
                        };
                        recomputes += 1;
                        if recomputes > MAX_RECOMPUTES * input.stages.len().max(1) {
                            return Err(ApplicationFailure::non_retryable(format!(
                                "gave up after recomputing lost fragment outputs {recomputes} times"
                            ))
                            .into());
                        }
                        // Recompute the lost output unless it already was.
                        let Some(slot) = outputs
                            .get_mut(lost.stage as usize)
                            .and_then(|s| s.get_mut(lost.fragment as usize))
                        else {
                            return Err(ApplicationFailure::non_retryable(format!(
                                "a fragment reported a lost input that is not in this query: {lost:?}"
                            ))
                            .into());
                        };
                        if slot.as_ref().is_some_and(|t| t.fragment == lost) {
                            *slot = None;
                            pending.insert((lost.stage, lost.fragment));
                            *reruns.entry((lost.stage, lost.fragment)).or_default() += 1;
                        }
                        pending.insert((stage, fragment));
                        *reruns.entry((stage, fragment)).or_default() += 1;
                    }
                }
            }
        }
        let mut results: Vec<FragmentTicket> = outputs.swap_remove(last).into_iter().flatten().collect();
        let Some(sink) = input.sink else {
            return Ok(QueryOutput {
                results,
                committed: None,
            });
        };
        // A write: every fragment's files in one commit, then the output keeps
        // only the counts.
        let task = CommitTask {
            query_id: input.query_id.clone(),
            sink,
            adds: results.iter_mut().flat_map(|t| std::mem::take(&mut t.adds)).collect(),
            files: results.iter_mut().flat_map(|t| std::mem::take(&mut t.files)).collect(),
        };
        // The commit point. Cancelled before it: nothing is committed and the
        // workflow ends cancelled (a COPY's staged files are removed).
        if ctx.cancellation_token().is_cancelled() {
            if !task.files.is_empty() {
                let discard = DiscardTask { files: task.files };
                let _ = ctx
                    .execute_activity(CommitActivities::discard_files, discard, shielded(commit_options()))
                    .await;
            }
            return Err(WorkflowTermination::cancelled());
        }
        // Past it, the commit is shielded from cancellation: a cancel that comes
        // while it runs waits for it, and the workflow ends with what it did (its
        // commit, or its failure), so its status never contradicts the table.
        let version = ctx
            .execute_activity(CommitActivities::commit_write, task, shielded(commit_options()))
            .await
            .map_err(fragment_failed)?;
        Ok(QueryOutput {
            results,
            committed: Some(version),
        })
    }

    /// Fragments done and final outputs so far.
    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> QueryProgress {
        self.progress.clone()
    }
}
