//! Pipelines as Temporal Schedules (the serving side): one schedule per pipeline,
//! id `contrail-pipeline-<name>`, whose action starts a [`PipelineWorkflow`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use contrail_planner::pipeline::{Overlap, Schedule};
use contrail_planner::pipeline_store::{NextRuns, PipelineState, PipelineStore, StoredPipeline};
use temporalio_client::schedules::{
    CreateScheduleOptions, DeleteScheduleOptions, PauseScheduleOptions, ScheduleAction, ScheduleError,
    ScheduleOverlapPolicy, ScheduleSpec, TriggerScheduleOptions, UnpauseScheduleOptions,
};
use temporalio_client::{RpcOptions, WorkflowCancelOptions, WorkflowGetResultOptions, WorkflowSignalOptions};
use tracing::{info, warn};

use crate::client::WorkflowClient;
use crate::error::{Error, Result};
use crate::pipeline::{PipelineTick, PipelineWorkflow};

/// How long DROP PIPELINE waits for the runs it cancelled to end.
pub const DROP_WAIT: Duration = Duration::from_secs(60);

/// The workflow task timeout of pipeline runs.
pub const RUN_TASK_TIMEOUT: Duration = Duration::from_secs(2);

fn overlap(pipeline: &StoredPipeline) -> ScheduleOverlapPolicy {
    match pipeline.definition.options.overlap {
        Overlap::Skip => ScheduleOverlapPolicy::Skip,
        Overlap::BufferOne => ScheduleOverlapPolicy::BufferOne,
    }
}

fn is_not_found(e: &ScheduleError) -> bool {
    matches!(e, ScheduleError::Rpc(status) if status.code() == tonic::Code::NotFound)
}

impl WorkflowClient {
    /// Create the schedule of a pipeline. A pipeline without `SCHEDULE` only runs
    /// when triggered: at creation (`first_run`) and by `RUN PIPELINE`.
    ///
    /// The schedule is created paused, then given the runs' workflow task timeout
    /// ([`RUN_TASK_TIMEOUT`], which the SDK's schedule action cannot set) and the
    /// pipeline's own state, then triggered: no run starts with Temporal's 10 s
    /// default, which is what a worker killed mid-task would cost.
    pub async fn create_schedule(&self, pipeline: &StoredPipeline, first_run: bool) -> Result<()> {
        let spec = match &pipeline.definition.schedule {
            Some(Schedule::Every(every)) => ScheduleSpec::from_interval(*every),
            Some(Schedule::Cron(cron)) => ScheduleSpec::builder().cron_strings(vec![cron.clone()]).build(),
            None => ScheduleSpec::default(),
        };
        let tick = PipelineTick {
            pipeline: pipeline.definition.name.clone(),
            generation: pipeline.generation.clone(),
        };
        let action = ScheduleAction::start_workflow(
            PipelineWorkflow::run,
            tick,
            self.target().task_queue.clone(),
            format!("pipeline-{}", pipeline.definition.name),
        );
        let options = CreateScheduleOptions::builder()
            .action(action)
            .spec(spec)
            .overlap_policy(overlap(pipeline))
            .paused(true)
            .note(format!("pipeline {}", pipeline.definition.name))
            .build();
        match self
            .client()
            .create_schedule(pipeline.schedule_id(), options.clone())
            .await
        {
            Ok(_) => {}
            Err(ScheduleError::Rpc(status)) if status.code() == tonic::Code::AlreadyExists => {
                // Left by an earlier incarnation of the pipeline (a crash between
                // its DROP's steps): this definition wins.
                self.delete_schedule(pipeline).await?;
                self.client()
                    .create_schedule(pipeline.schedule_id(), options)
                    .await
                    .map_err(Error::temporal)?;
            }
            Err(e) => return Err(Error::temporal(e)),
        }
        let paused = pipeline.state != PipelineState::Active;
        self.finish_schedule(pipeline, paused).await?;
        if first_run && !paused && pipeline.definition.schedule.is_none() {
            self.trigger_schedule(pipeline).await?;
        }
        Ok(())
    }

    /// Set the runs' workflow task timeout and the schedule's paused state, through
    /// the raw API (one update).
    async fn finish_schedule(&self, pipeline: &StoredPipeline, paused: bool) -> Result<()> {
        use temporalio_client::grpc::WorkflowService;
        use temporalio_common::protos::temporal::api::schedule::v1::schedule_action::Action;
        use temporalio_common::protos::temporal::api::workflowservice::v1::UpdateScheduleRequest;
        use tonic::IntoRequest;
        let description = self
            .client()
            .get_schedule_handle(pipeline.schedule_id())
            .describe(RpcOptions::default())
            .await
            .map_err(Error::temporal)?;
        let conflict_token = description.conflict_token().to_vec();
        let Some(mut schedule) = description.into_raw().schedule else {
            return Err(Error::temporal("a schedule described without its definition"));
        };
        if let Some(Action::StartWorkflow(start)) = schedule.action.as_mut().and_then(|a| a.action.as_mut()) {
            start.workflow_task_timeout = Some(RUN_TASK_TIMEOUT.try_into().map_err(Error::temporal)?);
        }
        if let Some(state) = schedule.state.as_mut() {
            state.paused = paused;
            state.notes = format!("pipeline {}", pipeline.definition.name);
        }
        let request = UpdateScheduleRequest {
            namespace: self.target().namespace.clone(),
            schedule_id: pipeline.schedule_id(),
            schedule: Some(schedule),
            conflict_token,
            identity: "contrail-serve".to_string(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        WorkflowService::update_schedule(&mut self.client().clone(), request.into_request())
            .await
            .map_err(Error::temporal)?;
        Ok(())
    }

    /// Replace the schedule (its overlap policy changed); running runs go on.
    pub async fn replace_schedule(&self, pipeline: &StoredPipeline) -> Result<()> {
        self.delete_schedule(pipeline).await?;
        self.create_schedule(pipeline, false).await
    }

    async fn delete_schedule(&self, pipeline: &StoredPipeline) -> Result<()> {
        match self
            .client()
            .get_schedule_handle(pipeline.schedule_id())
            .delete(DeleteScheduleOptions::default())
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::temporal(e)),
        }
    }

    /// Re-create the schedule of a stored pipeline if Temporal lost it (a fresh
    /// dev server); `true` if it had to.
    pub async fn ensure_schedule(&self, pipeline: &StoredPipeline) -> Result<bool> {
        match self
            .client()
            .get_schedule_handle(pipeline.schedule_id())
            .describe(RpcOptions::default())
            .await
        {
            Ok(_) => Ok(false),
            Err(e) if is_not_found(&e) => {
                self.create_schedule(pipeline, false).await?;
                Ok(true)
            }
            Err(e) => Err(Error::temporal(e)),
        }
    }

    /// Pause or resume a schedule, and tell its running runs (those the schedule
    /// reports, and `running`: what the run records say).
    pub async fn set_schedule_paused(&self, pipeline: &StoredPipeline, paused: bool, running: &[String]) -> Result<()> {
        let handle = self.client().get_schedule_handle(pipeline.schedule_id());
        let note = Some(format!(
            "{} by ALTER PIPELINE",
            if paused { "paused" } else { "resumed" }
        ));
        if paused {
            handle.pause(note, PauseScheduleOptions::default()).await
        } else {
            handle.unpause(note, UnpauseScheduleOptions::default()).await
        }
        .map_err(Error::temporal)?;
        for run in self.running_runs(pipeline, running).await? {
            let signal = self
                .client()
                .get_workflow_handle::<PipelineWorkflow>(&run)
                .signal(PipelineWorkflow::set_paused, paused, WorkflowSignalOptions::default())
                .await;
            if let Err(e) = signal {
                warn!(run = %run, error = %e, "could not signal a running pipeline run");
            }
        }
        Ok(())
    }

    /// Start a run now (with the pipeline's overlap policy).
    pub async fn trigger_schedule(&self, pipeline: &StoredPipeline) -> Result<()> {
        self.client()
            .get_schedule_handle(pipeline.schedule_id())
            .trigger(overlap(pipeline), TriggerScheduleOptions::default())
            .await
            .map_err(Error::temporal)
    }

    /// Delete the schedule, cancel its running runs (see [`Self::set_schedule_paused`])
    /// and wait (up to [`DROP_WAIT`]) for them to end: a run cancelled before its
    /// commit commits nothing; one whose commit started finishes it first. Either
    /// way, nothing lands in the sink after this returns.
    pub async fn drop_schedule(&self, pipeline: &StoredPipeline, running: &[String]) -> Result<()> {
        let running = self.running_runs(pipeline, running).await?;
        self.delete_schedule(pipeline).await?;
        let mut cancelled = Vec::new();
        for run in running {
            info!(run = %run, "cancelling the run of a dropped pipeline");
            let cancel = self
                .client()
                .get_workflow_handle::<PipelineWorkflow>(&run)
                .cancel(WorkflowCancelOptions::default())
                .await;
            match cancel {
                Ok(()) => cancelled.push(run),
                Err(e) => warn!(run = %run, error = %e, "could not cancel a pipeline run"),
            }
        }
        for run in cancelled {
            let handle = self.client().get_workflow_handle::<PipelineWorkflow>(&run);
            let ended = handle.get_result(WorkflowGetResultOptions::default());
            match tokio::time::timeout(DROP_WAIT, ended).await {
                Ok(Ok(outcome)) => info!(run = %run, state = outcome.state.as_str(), "a dropped pipeline's run ended"),
                Ok(Err(e)) => info!(run = %run, outcome = %e, "a dropped pipeline's run ended"),
                Err(_) => warn!(run = %run, "a dropped pipeline's run has not ended yet; it may still commit"),
            }
        }
        Ok(())
    }

    /// Workflow ids of the pipeline's runs in progress: what its schedule reports
    /// (which lags behind a run just triggered) and `known` ones.
    async fn running_runs(&self, pipeline: &StoredPipeline, known: &[String]) -> Result<Vec<String>> {
        let mut runs: Vec<String> = match self
            .client()
            .get_schedule_handle(pipeline.schedule_id())
            .describe(RpcOptions::default())
            .await
        {
            Ok(d) => d.running_actions().into_iter().map(|a| a.workflow_id).collect(),
            Err(e) if is_not_found(&e) => vec![],
            Err(e) => return Err(Error::temporal(e)),
        };
        runs.extend(known.iter().cloned());
        runs.sort();
        runs.dedup();
        Ok(runs)
    }

    /// When the schedule fires next.
    pub async fn next_run(&self, pipeline: &StoredPipeline) -> Option<SystemTime> {
        let d = self
            .client()
            .get_schedule_handle(pipeline.schedule_id())
            .describe(RpcOptions::default())
            .await
            .ok()?;
        d.future_action_times().into_iter().next()
    }
}

/// `system.pipelines.next_run`, from Temporal.
#[derive(Debug)]
pub struct ScheduleNextRuns {
    pub client: WorkflowClient,
    pub store: std::sync::Arc<PipelineStore>,
}

#[async_trait::async_trait]
impl NextRuns for ScheduleNextRuns {
    async fn next_runs(&self) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        let Ok(pipelines) = self.store.list() else {
            return out;
        };
        for p in pipelines.iter().filter(|p| p.definition.schedule.is_some()) {
            let next = tokio::time::timeout(Duration::from_secs(2), self.client.next_run(p)).await;
            if let Ok(Some(t)) = next {
                if let Ok(d) = t.duration_since(SystemTime::UNIX_EPOCH) {
                    out.insert(
                        p.definition.name.clone(),
                        i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                    );
                }
            }
        }
        out
    }
}
