//! Starting, watching and cancelling query workflows (the serving side).

use std::time::Duration;

use temporalio_client::errors::WorkflowGetResultError;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowCancelOptions, WorkflowDescribeOptions,
    WorkflowExecutionStatus, WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowHandle,
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;

use crate::error::{Error, Result};
use crate::workflow::{QueryInput, QueryOutput, QueryProgress, QueryWorkflow, kind_of_failure_type};
use contrail_planner::error::ErrorKind;

/// Where Temporal is and which namespace and task queue Contrail uses.
#[derive(Debug, Clone)]
pub struct TemporalTarget {
    /// `host:port` of the front end.
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
}

/// Connect a client.
pub async fn connect(target: &TemporalTarget, identity: &str) -> Result<Client> {
    let url = Url::parse(&format!("http://{}", target.address)).map_err(Error::temporal)?;
    let options = ConnectionOptions::new(url)
        .identity(identity.to_string())
        .connect_timeout(Duration::from_secs(5))
        .build();
    let connection = Connection::connect(options).await.map_err(Error::temporal)?;
    Client::new(connection, ClientOptions::new(target.namespace.clone()).build()).map_err(Error::temporal)
}

/// Whether a Temporal front end answers at `address`.
pub(crate) async fn ping(address: &str) -> Result<()> {
    let url = Url::parse(&format!("http://{address}")).map_err(Error::temporal)?;
    let options = ConnectionOptions::new(url)
        .connect_timeout(Duration::from_secs(1))
        .build();
    Connection::connect(options).await.map_err(Error::temporal)?;
    Ok(())
}

/// Where a query workflow is.
#[derive(Debug, Clone)]
pub enum QueryState {
    Running(QueryProgress),
    Completed(QueryOutput),
}

/// The serving side's handle on Temporal.
#[derive(Clone)]
pub struct WorkflowClient {
    client: Client,
    target: TemporalTarget,
}

impl std::fmt::Debug for WorkflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowClient").field("target", &self.target).finish()
    }
}

impl WorkflowClient {
    pub async fn connect(target: TemporalTarget) -> Result<Self> {
        let client = connect(&target, "contrail-serve").await?;
        Ok(Self { client, target })
    }

    /// Share the connection of this process's worker (see [`connect`]): statements
    /// then start with eager workflow start, their first workflow task handed to
    /// that worker in the start call's reply instead of through the task queue.
    pub fn sharing(mut client: Client, target: TemporalTarget) -> Self {
        // Copy-on-write: the worker keeps its identity, the worker set stays shared.
        *client.connection_mut().identity_mut() = "contrail-serve".to_string();
        Self { client, target }
    }

    /// The underlying client (tests read histories with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where Temporal is.
    pub fn target(&self) -> &TemporalTarget {
        &self.target
    }

    fn handle(&self, query_id: &str) -> WorkflowHandle<Client, QueryWorkflow> {
        self.client.get_workflow_handle::<QueryWorkflow>(query_id)
    }

    /// Start the workflow for a statement (id = query id; starting twice is a no-op).
    pub async fn start(&self, input: QueryInput) -> Result<()> {
        let id = input.query_id.clone();
        self.client
            .start_workflow(
                QueryWorkflow::run,
                input,
                WorkflowStartOptions::new(self.target.task_queue.clone(), id)
                    // Honoured when a worker of this process shares the connection
                    // and has a free workflow task slot; otherwise a plain start.
                    .enable_eager_workflow_start(true)
                    .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                    .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                    .build(),
            )
            .await
            .map_err(Error::temporal)?;
        Ok(())
    }

    /// Where the workflow is now: progress, or its result. Failures and
    /// cancellations are errors.
    pub async fn state(&self, query_id: &str) -> Result<QueryState> {
        let handle = self.handle(query_id);
        let description = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .map_err(|e| not_found_or(query_id, e))?;
        match description.status() {
            WorkflowExecutionStatus::Running => {
                let progress = handle
                    .query(QueryWorkflow::progress, (), WorkflowQueryOptions::default())
                    .await
                    .map_err(Error::temporal)?;
                Ok(QueryState::Running(progress))
            }
            _ => self.wait(query_id).await.map(QueryState::Completed),
        }
    }

    /// Wait for the result.
    pub async fn wait(&self, query_id: &str) -> Result<QueryOutput> {
        self.handle(query_id)
            .get_result(WorkflowGetResultOptions::default())
            .await
            .map_err(|e| match e {
                WorkflowGetResultError::Failed(failure) => {
                    let (message, kind) = root_cause(failure.failure());
                    Error::WorkflowFailed {
                        query_id: query_id.to_string(),
                        message,
                        kind,
                    }
                }
                WorkflowGetResultError::Cancelled { .. } | WorkflowGetResultError::Terminated { .. } => {
                    Error::WorkflowCancelled {
                        query_id: query_id.to_string(),
                    }
                }
                WorkflowGetResultError::NotFound { .. } => Error::UnknownQuery {
                    query_id: query_id.to_string(),
                },
                other => Error::temporal(other),
            })
    }

    /// Request cancellation (running fragments stop at their next heartbeat).
    pub async fn cancel(&self, query_id: &str) -> Result<()> {
        self.handle(query_id)
            .cancel(WorkflowCancelOptions::default())
            .await
            .map_err(|e| not_found_or(query_id, e))
    }

    /// Every event of the workflow's history.
    pub async fn history(&self, query_id: &str) -> Result<Vec<HistoryEvent>> {
        self.handle(query_id)
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .into_events()
            .await
            .map_err(Error::temporal)
    }
}

fn not_found_or(query_id: &str, e: impl std::fmt::Display) -> Error {
    let text = e.to_string();
    if text.contains("not found") || text.contains("NotFound") {
        Error::UnknownQuery {
            query_id: query_id.to_string(),
        }
    } else {
        Error::temporal(text)
    }
}

/// The innermost message of a failure chain (workflow <- activity <- the fragment's error).
/// The innermost failure's message, and the kind of error its type names
/// (`Internal` for a failure that is not a fragment's own).
fn root_cause(failure: &Failure) -> (String, ErrorKind) {
    use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
    let mut f = failure;
    while let Some(cause) = f.cause.as_deref() {
        f = cause;
    }
    let kind = match &f.failure_info {
        Some(FailureInfo::ApplicationFailureInfo(info)) => kind_of_failure_type(&info.r#type),
        _ => None,
    };
    (f.message.clone(), kind.unwrap_or(ErrorKind::Internal))
}
