//! A Temporal worker: polls Contrail's task queue for query and pipeline workflow
//! tasks and their activities. It runs on its own thread (the SDK's `Worker::run` is not
//! `Send`); fragments run on the CPU runtime given to it.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;

use temporalio_client::Client;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
use temporalio_sdk::runtime::{RuntimeOptions, WorkflowErrorType};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::activities::{CommitActivities, FragmentActivities, SHUTDOWN_GRACE};
use crate::client::{TemporalTarget, connect};
use crate::error::{Error, Result};
use crate::fragment::FragmentRunner;
use crate::pipeline::{PipelineActivities, PipelineWorkflow};
use crate::workflow::QueryWorkflow;

/// A running worker thread.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stop polling, let running fragments finish (up to a grace period), and join.
    pub fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Start a worker thread; returns once it is polling (or failed to start).
/// `client`: from [`worker_client`]; a [`crate::WorkflowClient`] made from the same
/// client starts workflows eagerly on this worker.
pub async fn spawn_worker(
    target: TemporalTarget,
    client: Client,
    runner: FragmentRunner,
    cpu: Handle,
    max_concurrent_fragments: usize,
) -> Result<WorkerHandle> {
    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
    let token = stop.clone();
    let thread = std::thread::Builder::new()
        .name("contrail-temporal".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::temporal(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let started = start(&target, client, runner, cpu, max_concurrent_fragments).await;
                // The SDK runtime lives as long as the worker it runs.
                let (_runtime, mut worker) = match started {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                info!(task_queue = %target.task_queue, namespace = %target.namespace, "Temporal worker polling");
                let shutdown = worker.shutdown_handle();
                let (result, ()) = tokio::join!(worker.run(), async move {
                    token.cancelled().await;
                    shutdown();
                });
                if let Err(e) = result {
                    error!(error = %e, "Temporal worker stopped");
                }
            });
        })
        .map_err(Error::temporal)?;
    ready_rx
        .await
        .map_err(|_| Error::temporal("the worker thread died during start-up"))??;
    Ok(WorkerHandle {
        stop,
        thread: Some(thread),
    })
}

/// A client for a worker whose data plane is at `location`.
pub async fn worker_client(target: &TemporalTarget, location: &str) -> Result<Client> {
    connect(target, &format!("contrail-worker@{location}")).await
}

async fn start(
    target: &TemporalTarget,
    client: Client,
    runner: FragmentRunner,
    cpu: Handle,
    slots: usize,
) -> Result<(Runtime, Worker)> {
    let runtime_options = RuntimeOptions::builder()
        .heartbeat_interval(None)
        .build()
        .map_err(Error::temporal)?;
    let runtime = Runtime::from_current_tokio(runtime_options).map_err(Error::temporal)?;
    let pipelines = PipelineActivities {
        engine: Arc::clone(&runner.engine),
        spool: runner.spool.clone(),
        cpu: cpu.clone(),
        client: client.clone(),
    };
    let slots = slots.max(1);
    let options = WorkerOptions::new(target.task_queue.clone())
        // No sticky cache: after a worker dies, the next workflow task goes to any
        // worker at once instead of waiting for the dead one's sticky queue.
        .max_cached_workflows(0)
        .tuner(
            TunerHolder::builder()
                .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(16))
                .activity_task_slot_supplier(FixedSizeSlotSupplier::new(slots))
                .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(1))
                .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(1))
                .build(),
        )
        .graceful_shutdown_period(SHUTDOWN_GRACE)
        .workflow_failure_errors(HashSet::from([WorkflowErrorType::Nondeterminism]))
        .register_workflow::<QueryWorkflow>()
        .map_err(Error::temporal)?
        .register_workflow::<PipelineWorkflow>()
        .map_err(Error::temporal)?
        .register_activities(pipelines)
        .register_activities(FragmentActivities {
            runner,
            cpu: cpu.clone(),
        })
        .register_activities(CommitActivities { cpu })
        .build();
    let worker = Worker::new(&runtime, client, options).map_err(Error::temporal)?;
    Ok((runtime, worker))
}
