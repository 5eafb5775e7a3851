//! Pipeline statements on the serving side.
//!
//! ```text
//! CREATE PIPELINE   check (tables, columns, sink, INCREMENTAL BY) -> store -> Temporal Schedule
//! ALTER ... PAUSE   store: paused -> pause the schedule, signal running runs (RESUME: the reverse)
//! ALTER ... SET     store: options -> (overlap, paused: the schedule too)
//! RUN PIPELINE      trigger the schedule now
//! DROP PIPELINE     delete the schedule, cancel running runs, wait for them to end -> store: removed
//! SHOW PIPELINES / DESCRIBE PIPELINE   queries over system.pipelines
//! ```
//!
//! The store in the data directory is the truth: at start-up every stored
//! pipeline gets its schedule back if Temporal lost it ([`reconcile`]).

use std::sync::Arc;

use contrail_planner::Engine;
use contrail_planner::pipeline::{AlterPipeline, PipelineStatement, apply_option};
use contrail_planner::pipeline_store::{PipelineState, StoredPipeline};
use contrail_workflows::WorkflowClient;
use contrail_workflows::schedule::ScheduleNextRuns;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// What a pipeline statement turned into.
#[derive(Debug)]
pub(crate) enum PipelineOutcome {
    /// A query to run in its place (SHOW, DESCRIBE).
    Query(String),
    /// Done; the statement's count is 0.
    Done,
}

/// Parse `sql` as a pipeline statement and run it; `None`: not one.
pub(crate) async fn run_statement(
    engine: &Engine,
    client: Option<&WorkflowClient>,
    sql: &str,
) -> Result<Option<PipelineOutcome>> {
    let Some(statement) = contrail_planner::pipeline::parse(sql)? else {
        return Ok(None);
    };
    let store = engine.pipelines();
    if let Some(query) = query_of(&statement) {
        if let PipelineStatement::Describe { name } = &statement {
            store.require(name)?;
        }
        return Ok(Some(PipelineOutcome::Query(query)));
    }
    let outcome = match statement {
        PipelineStatement::Show | PipelineStatement::Describe { .. } => {
            return Err(Error::Internal {
                message: "SHOW / DESCRIBE PIPELINE are queries".to_string(),
            });
        }
        PipelineStatement::Create(create) => {
            let client = require(client)?;
            let name = create.definition.name.clone();
            let replaced = store.get(&name)?;
            if let Some(existing) = &replaced {
                if create.if_not_exists {
                    return Ok(Some(PipelineOutcome::Done));
                }
                if !create.or_replace {
                    return Err(contrail_planner::Error::AlreadyExists { kind: "pipeline", name }.into());
                }
                engine.check_pipeline(&create.definition).await?;
                client.drop_schedule(existing, &store.running(&name)?).await?;
                store.remove(&name)?;
            } else {
                engine.check_pipeline(&create.definition).await?;
            }
            let pipeline = StoredPipeline::new(create.definition);
            store.put(&pipeline)?;
            if let Err(e) = client.create_schedule(&pipeline, true).await {
                // Not created after all: leave what was there before.
                let _ = store.remove(&name);
                if let Some(existing) = replaced {
                    if let Err(put) = store.put(&existing) {
                        warn!(pipeline = %name, error = %put, "could not restore the replaced pipeline");
                        return Err(e.into());
                    }
                    if let Err(again) = client.create_schedule(&existing, false).await {
                        // The store is the truth: the next start-up schedules it again.
                        warn!(pipeline = %name, error = %again, "the replaced pipeline has no schedule until restart");
                    }
                }
                return Err(e.into());
            }
            info!(pipeline = %name, schedule = ?pipeline.definition.schedule, "pipeline created");
            PipelineOutcome::Done
        }
        PipelineStatement::Alter { name, change } => {
            let client = require(client)?;
            let mut pipeline = store.require(&name)?;
            let before = pipeline.clone();
            match change {
                AlterPipeline::Pause => set_state(&mut pipeline, true),
                AlterPipeline::Resume => set_state(&mut pipeline, false),
                AlterPipeline::Set(options) => {
                    for (key, value) in &options {
                        apply_option(&mut pipeline.definition.options, key, value)?;
                    }
                    let paused = pipeline.definition.options.paused;
                    if paused != before.definition.options.paused {
                        set_state(&mut pipeline, paused);
                    }
                }
            }
            store.put(&pipeline)?;
            if pipeline.definition.options.overlap != before.definition.options.overlap {
                client.replace_schedule(&pipeline).await?;
            }
            let paused = pipeline.state != PipelineState::Active;
            if paused != (before.state != PipelineState::Active) {
                client
                    .set_schedule_paused(&pipeline, paused, &store.running(&name)?)
                    .await?;
            }
            info!(pipeline = %name, state = pipeline.state.as_str(), "pipeline altered");
            PipelineOutcome::Done
        }
        PipelineStatement::Run { name } => {
            let client = require(client)?;
            let pipeline = store.require(&name)?;
            client.trigger_schedule(&pipeline).await?;
            PipelineOutcome::Done
        }
        PipelineStatement::Drop { name, if_exists } => {
            let client = require(client)?;
            let Some(pipeline) = store.get(&name)? else {
                if if_exists {
                    return Ok(Some(PipelineOutcome::Done));
                }
                return Err(contrail_planner::Error::NotFound { kind: "pipeline", name }.into());
            };
            client.drop_schedule(&pipeline, &store.running(&name)?).await?;
            store.remove(&name)?;
            info!(pipeline = %name, "pipeline dropped");
            PipelineOutcome::Done
        }
    };
    Ok(Some(outcome))
}

/// The query SHOW PIPELINES and DESCRIBE PIPELINE run; `None` for the others.
pub(crate) fn query_of(statement: &PipelineStatement) -> Option<String> {
    match statement {
        PipelineStatement::Show => Some(
            "SELECT name, schedule, state, watermark, last_run, last_run_state, next_run, error \
             FROM system.pipelines ORDER BY name"
                .to_string(),
        ),
        PipelineStatement::Describe { name } => Some(format!(
            "SELECT * FROM system.pipelines WHERE name = '{}'",
            name.replace('\'', "''")
        )),
        _ => None,
    }
}

/// PAUSE / RESUME (RESUME also clears a failure).
fn set_state(pipeline: &mut StoredPipeline, paused: bool) {
    pipeline.definition.options.paused = paused;
    if paused {
        pipeline.state = PipelineState::Paused;
    } else {
        pipeline.state = PipelineState::Active;
        pipeline.error = None;
    }
}

fn require(client: Option<&WorkflowClient>) -> Result<&WorkflowClient> {
    client.ok_or_else(|| Error::WorkflowsOff {
        message: "pipelines run on Temporal, and this server runs with --temporal off; restart it with \
                  --temporal embedded (or HOST:PORT)"
            .to_string(),
    })
}

/// At start-up: give every stored pipeline its schedule back if Temporal lost it
/// (a fresh dev server), and let `system.pipelines` ask Temporal for next runs.
pub(crate) async fn reconcile(engine: &Engine, client: &WorkflowClient) -> Result<()> {
    let store = Arc::clone(engine.pipelines());
    store.set_next_runs(Arc::new(ScheduleNextRuns {
        client: client.clone(),
        store: Arc::clone(&store),
    }));
    for pipeline in store.list()? {
        match client.ensure_schedule(&pipeline).await {
            Ok(true) => info!(pipeline = %pipeline.definition.name, "pipeline schedule re-created"),
            Ok(false) => {}
            Err(e) => {
                warn!(pipeline = %pipeline.definition.name, error = %e, "could not check the pipeline's schedule")
            }
        }
    }
    Ok(())
}
