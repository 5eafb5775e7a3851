//! `PipelineWorkflow`: one run of a pipeline, started by its Temporal Schedule.
//!
//! ```text
//! Schedule contrail-pipeline-<name> (EVERY / CRON / none: triggered) ──> PipelineWorkflow(tick)
//!   attempt 1..=max_attempts:
//!     plan_run (any worker): definition from the store; committed (seq, watermark)
//!                            from the sink; bounds frozen; fragments planned
//!     child QueryWorkflow  id = pipeline-<name>-<generation>-<seq>
//!                          fragments, then ONE commit { rows, txn(app id, seq), watermark }
//!     finish_run: the run record (system.pipeline_runs)
//!   all attempts failed: on_error = 'fail' -> fail_pipeline (state failed, schedule paused)
//!                        on_error = 'skip' -> the next scheduled run starts from the same watermark
//! ```
//!
//! A `set_paused` signal (ALTER PIPELINE ... PAUSE / RESUME) holds the run before
//! its next step. Cancellation (DROP PIPELINE, CREATE OR REPLACE) reaches the child
//! query workflow and waits for it to end: cancelled before its commit point, the
//! run commits nothing and ends CANCELED (record: cancelled); a commit that started
//! finishes, and the run completes as succeeded (see `QueryWorkflow`). Only the
//! pipeline's name, bounds and tickets enter the history.
#![allow(unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use contrail_planner::pipeline::OnError;
use contrail_planner::pipeline_store::{PipelineState, RunRecord, RunState, now_ms};
use contrail_planner::{Engine, Error as PlannerError};
use serde::{Deserialize, Serialize};
use temporalio_client::Client;
use temporalio_client::schedules::PauseScheduleOptions;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, ChildWorkflowCancellationType, ChildWorkflowOptions, SyncWorkflowContext,
    WorkflowContext, WorkflowResult, WorkflowTermination,
};
use tokio::runtime::Handle;
use tracing::{info, warn};

use crate::activities::heartbeating;
use crate::spool::Spool;
use crate::workflow::{QueryInput, QueryWorkflow, shielded};

/// What a schedule starts: which pipeline (and which incarnation of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineTick {
    pub pipeline: String,
    /// A run of a replaced (or dropped and re-created) pipeline stops at once.
    pub generation: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    pub state: RunState,
    pub seq: Option<u64>,
    pub rows_written: u64,
}

/// The run's next step, as planned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PlannedRun {
    /// The pipeline is gone or was replaced.
    Stop {
        reason: String,
    },
    /// Nothing new in the source.
    NoData {
        seq: u64,
    },
    Run {
        seq: u64,
        input: QueryInput,
    },
    /// Planning failed (a source table dropped, a column gone): an attempt.
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRunTask {
    pub tick: PipelineTick,
    pub run_id: String,
    #[serde(default)]
    pub workflow_id: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRunOutput {
    pub planned: PlannedRun,
    pub max_attempts: u32,
    pub fail_pipeline: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishRunTask {
    pub pipeline: String,
    pub run_id: String,
    pub state: RunState,
    pub attempts: u32,
    pub rows_written: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailPipelineTask {
    pub tick: PipelineTick,
    pub error: String,
}

/// A pipeline run. Workflow id: the schedule's (`pipeline-<name>-<time>`); run id
/// in `system.pipeline_runs`: that and the end of Temporal's run id.
#[workflow]
#[derive(Default)]
pub struct PipelineWorkflow {
    paused: bool,
}

fn bookkeeping_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(300))
        .heartbeat_timeout(crate::workflow::HEARTBEAT_TIMEOUT)
        .retry_policy(crate::workflow::retry_policy(50, &[]))
        .build()
}

/// The innermost message of a failure chain.
fn root_message(failure: Option<&temporalio_common::protos::temporal::api::failure::v1::Failure>) -> Option<String> {
    let mut f = failure?;
    while let Some(cause) = f.cause.as_deref() {
        f = cause;
    }
    Some(f.message.clone())
}

#[workflow_methods]
impl PipelineWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, tick: PipelineTick) -> WorkflowResult<RunOutcome> {
        // The schedule names runs by the second: two RUNs within one second share
        // a workflow id, so the execution's run id tells them apart.
        let info = ctx.info();
        let workflow_id = info.workflow_id().to_string();
        let temporal_run = info.run_id();
        let run_id = format!(
            "{}-{}",
            info.workflow_id(),
            &temporal_run[temporal_run.len().saturating_sub(8)..] // the random end of a UUIDv7
        );
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            ctx.wait_condition(|s| !s.paused).await?;
            let task = PlanRunTask {
                tick: tick.clone(),
                run_id: run_id.clone(),
                workflow_id: workflow_id.clone(),
                attempt,
            };
            let plan = ctx
                .execute_activity(PipelineActivities::plan_run, task, bookkeeping_options())
                .await?;
            let (error, seq) = match plan.planned {
                PlannedRun::Stop { reason } => {
                    return Err(ApplicationFailure::non_retryable(format!("run stopped: {reason}")).into());
                }
                PlannedRun::NoData { seq } => {
                    return Ok(RunOutcome {
                        state: RunState::NoData,
                        seq: Some(seq),
                        rows_written: 0,
                    });
                }
                PlannedRun::Failed { error } => (error, None),
                PlannedRun::Run { seq, input } => {
                    ctx.wait_condition(|s| !s.paused).await?;
                    let options = ChildWorkflowOptions::builder()
                        .workflow_id(input.query_id.clone())
                        .id_reuse_policy(temporalio_sdk::WorkflowIdReusePolicy::AllowDuplicate)
                        // A worker killed mid-task: the next worker takes over in seconds.
                        .task_timeout(crate::schedule::RUN_TASK_TIMEOUT)
                        // Cancelled (DROP PIPELINE), the run waits for its query
                        // workflow to end: a commit that started finishes first.
                        .cancel_type(ChildWorkflowCancellationType::WaitCancellationCompleted)
                        .build();
                    let result = match ctx.start_child_workflow(QueryWorkflow::run, input, options).await {
                        Ok(started) => started
                            .result()
                            .await
                            .map_err(|e| root_message(e.failure()).unwrap_or_else(|| e.to_string())),
                        Err(e) => Err(e.to_string()),
                    };
                    match result {
                        Ok(output) => {
                            let rows = output.rows();
                            let finish = FinishRunTask {
                                pipeline: tick.pipeline.clone(),
                                run_id: run_id.clone(),
                                state: RunState::Succeeded,
                                attempts: attempt,
                                rows_written: Some(rows),
                                error: None,
                            };
                            // Committed: the run says so, even if it was cancelled
                            // while the commit ran (its record is written regardless).
                            ctx.execute_activity(
                                PipelineActivities::finish_run,
                                finish,
                                shielded(bookkeeping_options()),
                            )
                            .await?;
                            return Ok(RunOutcome {
                                state: RunState::Succeeded,
                                seq: Some(seq),
                                rows_written: rows,
                            });
                        }
                        Err(error) if ctx.cancellation_token().is_cancelled() => {
                            // Cancelled before its commit: nothing was committed.
                            let finish = FinishRunTask {
                                pipeline: tick.pipeline.clone(),
                                run_id: run_id.clone(),
                                state: RunState::Cancelled,
                                attempts: attempt,
                                rows_written: Some(0),
                                error: Some(format!("cancelled before its commit, nothing committed ({error})")),
                            };
                            ctx.execute_activity(
                                PipelineActivities::finish_run,
                                finish,
                                shielded(bookkeeping_options()),
                            )
                            .await?;
                            return Err(WorkflowTermination::cancelled());
                        }
                        Err(error) => (error, Some(seq)),
                    }
                }
            };
            let last = attempt >= plan.max_attempts;
            let finish = FinishRunTask {
                pipeline: tick.pipeline.clone(),
                run_id: run_id.clone(),
                state: if last { RunState::Failed } else { RunState::Running },
                attempts: attempt,
                rows_written: None,
                error: Some(error.clone()),
            };
            ctx.execute_activity(PipelineActivities::finish_run, finish, bookkeeping_options())
                .await?;
            if last {
                if plan.fail_pipeline {
                    let task = FailPipelineTask {
                        tick: tick.clone(),
                        error: error.clone(),
                    };
                    ctx.execute_activity(PipelineActivities::fail_pipeline, task, bookkeeping_options())
                        .await?;
                    return Err(ApplicationFailure::non_retryable(error).into());
                }
                return Ok(RunOutcome {
                    state: RunState::Failed,
                    seq,
                    rows_written: 0,
                });
            }
            // 1 s, 2 s, 4 s ... at most 30 s between attempts.
            let backoff = Duration::from_secs((1u64 << (attempt - 1).min(5)).min(30));
            let _ = ctx.timer(backoff).await;
        }
    }

    /// PAUSE (`true`) / RESUME (`false`): hold the run before its next step.
    #[signal]
    pub fn set_paused(&mut self, _ctx: &mut SyncWorkflowContext<Self>, paused: bool) {
        self.paused = paused;
    }
}

/// The activities of pipeline runs.
pub struct PipelineActivities {
    pub engine: Arc<Engine>,
    pub spool: Spool,
    pub cpu: Handle,
    /// Pauses the schedule of a pipeline that failed for good.
    pub client: Client,
}

impl PipelineActivities {
    async fn plan(&self, task: &PlanRunTask) -> Result<PlanRunOutput, PlannerError> {
        let store = Arc::clone(self.engine.pipelines());
        let tick = &task.tick;
        let stored = match store.get(&tick.pipeline)? {
            Some(p) if p.generation == tick.generation => p,
            Some(_) => return Ok(stop("the pipeline was replaced")),
            None => return Ok(stop("the pipeline was dropped")),
        };
        let max_attempts = stored.definition.options.max_attempts.max(1);
        let fail_pipeline = stored.definition.options.on_error == OnError::Fail;
        let previous = store.run(&tick.pipeline, &task.run_id)?;
        let mut record = RunRecord {
            run_id: task.run_id.clone(),
            workflow_id: task.workflow_id.clone(),
            pipeline: tick.pipeline.clone(),
            generation: tick.generation.clone(),
            seq: 0,
            state: RunState::Running,
            started_ms: previous.as_ref().map_or_else(now_ms, |r| r.started_ms),
            finished_ms: None,
            rows_read: None,
            rows_written: None,
            watermark_from: None,
            watermark_to: None,
            attempts: task.attempt,
            error: previous.and_then(|r| r.error),
        };
        let engine = Arc::clone(&self.engine);
        let planned = self
            .cpu
            .spawn(async move {
                engine.refresh_catalog().await?;
                engine.plan_pipeline_run(&stored).await
            })
            .await
            .map_err(|e| PlannerError::invalid("pipeline run", e.to_string()))?;
        let planned = match planned {
            Ok(run) => run,
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => {
                record.error = Some(e.to_string());
                store.put_run(&record)?;
                return Ok(PlanRunOutput {
                    planned: PlannedRun::Failed { error: e.to_string() },
                    max_attempts,
                    fail_pipeline,
                });
            }
        };
        record.seq = planned.seq;
        record.rows_read = planned.rows_read;
        record.watermark_from = planned.watermark_from;
        record.watermark_to = planned.watermark_to;
        let Some(write) = planned.write else {
            record.state = RunState::NoData;
            record.finished_ms = Some(now_ms());
            store.put_run(&record)?;
            return Ok(PlanRunOutput {
                planned: PlannedRun::NoData { seq: planned.seq },
                max_attempts,
                fail_pipeline,
            });
        };
        let query_id = format!("pipeline-{}-{}-{}", tick.pipeline, tick.generation, planned.seq);
        let input = QueryInput::new(query_id, write.query, &self.spool, Some(write.sink))
            .map_err(|e| PlannerError::invalid("pipeline run", e.to_string()))?;
        store.put_run(&record)?;
        info!(pipeline = %tick.pipeline, seq = planned.seq, from = ?record.watermark_from,
              to = ?record.watermark_to, "pipeline run planned");
        Ok(PlanRunOutput {
            planned: PlannedRun::Run {
                seq: planned.seq,
                input,
            },
            max_attempts,
            fail_pipeline,
        })
    }
}

fn stop(reason: &str) -> PlanRunOutput {
    PlanRunOutput {
        planned: PlannedRun::Stop {
            reason: reason.to_string(),
        },
        max_attempts: 1,
        fail_pipeline: false,
    }
}

/// Errors worth retrying as an activity (disk trouble), not counted as an attempt.
fn is_transient(e: &PlannerError) -> bool {
    matches!(e, PlannerError::CatalogIo { .. } | PlannerError::Io { .. })
}

fn activity_error(e: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(e.to_string()))
}

#[activities]
impl PipelineActivities {
    /// Freeze the run's bounds and plan its fragments (see the module docs).
    #[activity]
    pub async fn plan_run(
        self: Arc<Self>,
        ctx: ActivityContext,
        task: PlanRunTask,
    ) -> Result<PlanRunOutput, ActivityError> {
        heartbeating(&ctx, self.plan(&task)).await.map_err(activity_error)
    }

    /// Record an attempt's or the run's end in `system.pipeline_runs`.
    #[activity]
    pub async fn finish_run(self: Arc<Self>, _ctx: ActivityContext, task: FinishRunTask) -> Result<(), ActivityError> {
        let store = self.engine.pipelines();
        let Some(mut record) = store.run(&task.pipeline, &task.run_id).map_err(activity_error)? else {
            return Ok(()); // dropped meanwhile
        };
        record.state = task.state;
        record.attempts = task.attempts;
        record.error = match task.state {
            RunState::Succeeded => None,
            _ => task.error.or(record.error),
        };
        if task.rows_written.is_some() {
            record.rows_written = task.rows_written;
        }
        if task.state != RunState::Running {
            record.finished_ms = Some(now_ms());
        }
        store.put_run(&record).map_err(activity_error)
    }

    /// `on_error = 'fail'`: mark the pipeline failed and pause its schedule.
    #[activity]
    pub async fn fail_pipeline(
        self: Arc<Self>,
        _ctx: ActivityContext,
        task: FailPipelineTask,
    ) -> Result<(), ActivityError> {
        let store = self.engine.pipelines();
        let Some(mut stored) = store.get(&task.tick.pipeline).map_err(activity_error)? else {
            return Ok(());
        };
        if stored.generation != task.tick.generation {
            return Ok(());
        }
        stored.state = PipelineState::Failed;
        stored.error = Some(task.error.clone());
        store.put(&stored).map_err(activity_error)?;
        let note = format!("failed: {}", task.error);
        let pause = self
            .client
            .get_schedule_handle(stored.schedule_id())
            .pause(Some(note), PauseScheduleOptions::default())
            .await;
        if let Err(e) = pause {
            warn!(pipeline = %stored.definition.name, error = %e, "could not pause the failed pipeline's schedule");
            return Err(activity_error(e));
        }
        warn!(pipeline = %stored.definition.name, error = %task.error, "pipeline failed; its schedule is paused");
        Ok(())
    }
}
