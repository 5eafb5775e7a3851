//! Statements run as workflows: routing, starting, FlightInfo from tickets,
//! PollFlightInfo, cancellation and serving fragment outputs.
//!
//! ```text
//! GetFlightInfo ─> route: inline | workflow (contrail.execution_mode, input size)
//!     workflow: plan_fragments (CPU runtime) ─> QueryInput ─> start QueryWorkflow
//!        GetFlightInfo: wait ─> FlightInfo { one endpoint per final fragment,
//!                                            location = the worker holding it }
//!        PollFlightInfo: at once ─> PollInfo { progress, endpoints so far,
//!                                              descriptor to poll again }
//! DoGet(spool ticket) ─> this process's spool, or relayed from the worker (--proxy-results)
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, PollInfo, Ticket};
use base64::Engine as _;
use contrail_planner::distributed::FragmentRef;
use contrail_planner::settings::{ExecutionMode, ResultCompression};
use contrail_planner::sink::Sink;
use contrail_planner::{Engine, FragmentedQuery, FragmentedWrite, Planned, SessionSettings, Shape};
use contrail_workflows::dataplane::{self, SpoolTicket};
use contrail_workflows::{FragmentTicket, QueryInput, QueryOutput, QueryState, Spool, WorkflowClient};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tonic::Status;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::handle::Signer;

const POLL_PREFIX: &[u8] = b"contrail-poll\0";
/// `FlightInfo.app_metadata` of a workflow statement: names it for CancelFlightInfo.
const QUERY_PREFIX: &str = "contrail-query:";

/// Workflow execution as the serving process sees it.
#[derive(Debug)]
pub struct Workflows {
    pub client: WorkflowClient,
    /// The in-process worker's spool.
    pub spool: Spool,
    /// The in-process worker's data plane address (this server).
    pub location: String,
    /// Relay results instead of pointing clients at workers.
    pub proxy_results: bool,
    /// Signs relay tickets: the server connects only to locations it named.
    pub signer: Signer,
}

/// Where a statement runs: `Some` (the workflows to run it on) or inline.
pub(crate) fn wants_workflow<'w>(
    workflows: Option<&'w Workflows>,
    engine: &Engine,
    settings: &SessionSettings,
    planned: &Planned,
) -> Result<Option<&'w Workflows>> {
    match (settings.execution_mode(), planned.shape()) {
        (ExecutionMode::Inline, _) | (_, Shape::Inline) => Ok(None),
        (ExecutionMode::Workflow, _) => match workflows {
            Some(w) => Ok(Some(w)),
            None => Err(Error::WorkflowsOff {
                message: "contrail.execution_mode = 'workflow' needs Temporal, and this server runs with \
                          --temporal off; restart it with --temporal embedded (or HOST:PORT), or SET \
                          contrail.execution_mode = 'inline'"
                    .to_string(),
            }),
        },
        (ExecutionMode::Auto, _) => {
            Ok(workflows.filter(|_| engine.scanned_bytes(settings, planned) > settings.workflow_threshold_bytes()))
        }
    }
}

/// Cut a planned query into the workflow's input (runs on the CPU runtime).
pub(crate) async fn prepare(
    engine: &Engine,
    spool: &Spool,
    settings: &SessionSettings,
    planned: &Planned,
) -> Result<(QueryInput, SchemaRef)> {
    let query = engine.plan_fragments(settings, planned).await?;
    let schema = Arc::clone(&query.schema);
    Ok((workflow_input(query, spool, None)?, schema))
}

/// Cut a planned write into the workflow's input and its sink; `None`: run it
/// inline (see [`Engine::plan_write_fragments`]).
pub(crate) async fn prepare_write(
    engine: &Engine,
    spool: &Spool,
    settings: &SessionSettings,
    planned: &Planned,
) -> Result<Option<(QueryInput, Sink)>> {
    let Some(FragmentedWrite { query, sink }) = engine.plan_write_fragments(settings, planned).await? else {
        return Ok(None);
    };
    Ok(Some((workflow_input(query, spool, Some(sink.clone()))?, sink)))
}

fn workflow_input(query: FragmentedQuery, spool: &Spool, sink: Option<Sink>) -> Result<QueryInput> {
    Ok(QueryInput::new(uuid::Uuid::new_v4().to_string(), query, spool, sink)?)
}

/// What a poll descriptor carries: enough for any serving process to answer it.
#[derive(Debug, Serialize, Deserialize)]
struct PollHandle {
    #[serde(rename = "q")]
    query_id: String,
    /// IPC schema message, base64.
    #[serde(rename = "s")]
    schema: String,
}

impl Workflows {
    /// Start the workflow.
    pub async fn start(&self, input: QueryInput) -> Result<String> {
        let query_id = input.query_id.clone();
        let stages = input.stages.len();
        let fragments: u32 = input.stages.iter().map(|s| s.fragments).sum();
        self.client.start(input).await?;
        info!(%query_id, stages, fragments, "workflow statement started");
        Ok(query_id)
    }

    /// Wait for the workflow (cancelling it when the session's statement timeout
    /// passes) and describe its result, compressed as the session asks.
    pub async fn wait_info(
        &self,
        query_id: &str,
        schema: &SchemaRef,
        descriptor: FlightDescriptor,
        settings: &SessionSettings,
    ) -> Result<FlightInfo> {
        let output = self.wait(query_id, settings.statement_timeout()).await?;
        let compression = settings.result_compression();
        self.flight_info(query_id, schema, output.results.iter(), descriptor, compression)
    }

    /// Run a write workflow to its commit; the rows written.
    pub async fn write(&self, input: QueryInput, timeout: Option<Duration>) -> Result<u64> {
        let query_id = self.start(input).await?;
        let output = self.wait(&query_id, timeout).await?;
        info!(%query_id, rows = output.rows(), version = ?output.committed, "workflow write committed");
        Ok(output.rows())
    }

    /// The workflow's output; past `timeout` it is cancelled.
    async fn wait(&self, query_id: &str, timeout: Option<Duration>) -> Result<QueryOutput> {
        let wait = self.client.wait(query_id);
        match timeout {
            None => Ok(wait.await?),
            Some(limit) => match tokio::time::timeout(limit, wait).await {
                Ok(r) => Ok(r?),
                Err(_) => {
                    if let Err(e) = self.client.cancel(query_id).await {
                        warn!(%query_id, error = %e, "could not cancel a workflow past its timeout");
                    }
                    // A write may commit just before the cancel lands: its
                    // outcome, not the timer, says whether it happened.
                    match tokio::time::timeout(CANCEL_GRACE, self.client.wait(query_id)).await {
                        Ok(Ok(output)) => Ok(output),
                        Ok(Err(contrail_workflows::Error::WorkflowCancelled { .. })) => Err(Error::Timeout { limit }),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => {
                            // Still not ended: whether a write landed is unknown.
                            warn!(%query_id, "a workflow past its timeout has not ended after its cancel");
                            Err(Error::Timeout { limit })
                        }
                    }
                }
            },
        }
    }

    /// The state of a workflow statement as a PollInfo.
    pub async fn poll_info(
        &self,
        query_id: &str,
        schema: &SchemaRef,
        descriptor: FlightDescriptor,
        compression: ResultCompression,
    ) -> Result<PollInfo> {
        match self.client.state(query_id).await? {
            QueryState::Completed(output) => Ok(PollInfo {
                info: Some(self.flight_info(query_id, schema, output.results.iter(), descriptor, compression)?),
                flight_descriptor: None,
                progress: Some(1.0),
                expiration_time: None,
            }),
            QueryState::Running(progress) => Ok(PollInfo {
                info: Some(self.flight_info(
                    query_id,
                    schema,
                    progress.results.iter().flatten(),
                    descriptor,
                    compression,
                )?),
                flight_descriptor: Some(poll_descriptor(query_id, schema)?),
                progress: Some(progress.fraction()),
                expiration_time: None,
            }),
        }
    }

    fn flight_info<'a>(
        &self,
        query_id: &str,
        schema: &SchemaRef,
        results: impl Iterator<Item = &'a FragmentTicket>,
        descriptor: FlightDescriptor,
        compression: ResultCompression,
    ) -> Result<FlightInfo> {
        let mut info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Error::Internal { message: e.to_string() })?
            .with_descriptor(descriptor)
            .with_ordered(true)
            .with_app_metadata(query_metadata(query_id));
        let (mut rows, mut bytes) = (0i64, 0i64);
        for t in results {
            rows += t.rows as i64;
            bytes += t.bytes as i64;
            let ticket = SpoolTicket::new(&t.fragment, 0).compressed(compression);
            let endpoint = if self.proxy_results || t.fragment.location == self.location {
                // Relay (or serve here): the client stays on this connection.
                FlightEndpoint::new().with_ticket(Ticket::new(self.relay_ticket(&t.fragment, ticket)?))
            } else {
                FlightEndpoint::new()
                    .with_ticket(Ticket::new(ticket.encode()))
                    .with_location(t.fragment.location.clone())
            };
            info = info.with_endpoint(endpoint);
        }
        Ok(info.with_total_records(rows).with_total_bytes(bytes))
    }

    /// Stream a spool ticket: from this process's spool, or relayed from its worker.
    pub async fn serve(&self, ticket: &[u8]) -> Result<Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send>>> {
        let decoded = SpoolTicket::decode(ticket)?;
        match decoded.location.as_deref() {
            Some(location) if location != self.location => {
                self.verify_relay(&decoded)?;
                let channel = dataplane::endpoint(location)
                    .map_err(|e| Error::invalid(format!("bad worker location {location}: {e}")))?
                    .connect()
                    .await
                    .map_err(|e| {
                        Error::Relayed(Status::unavailable(format!(
                            "worker {location} holding this result is unreachable: {e}"
                        )))
                    })?;
                let mut client = FlightServiceClient::new(channel)
                    .max_decoding_message_size(dataplane::MAX_MESSAGE)
                    .max_encoding_message_size(dataplane::MAX_MESSAGE);
                let forwarded = SpoolTicket {
                    location: None,
                    signature: None,
                    ..decoded
                };
                let stream = client
                    .do_get(Ticket::new(forwarded.encode()))
                    .await
                    .map_err(|s| Error::Relayed(Status::new(s.code(), format!("worker {location}: {}", s.message()))))?
                    .into_inner();
                Ok(Box::pin(stream))
            }
            _ => Ok(dataplane::serve_spooled(&self.spool, ticket)?),
        }
    }
}

/// How long a workflow cancelled at its timeout is given to end.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

impl Workflows {
    /// A spool ticket that names its worker, signed, for this process to relay.
    fn relay_ticket(&self, fragment: &FragmentRef, ticket: SpoolTicket) -> Result<Vec<u8>> {
        let mut ticket = SpoolTicket {
            location: Some(fragment.location.clone()),
            signature: None,
            ..ticket
        };
        let signature = self.signer.sign(&ticket.encode())?;
        ticket.signature = Some(base64::engine::general_purpose::STANDARD.encode(signature));
        Ok(ticket.encode())
    }

    /// Refuse to relay to a location this server did not put in the ticket.
    fn verify_relay(&self, ticket: &SpoolTicket) -> Result<()> {
        let signature = ticket
            .signature
            .as_deref()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
        let unsigned = SpoolTicket {
            signature: None,
            ..ticket.clone()
        };
        match signature {
            Some(sig) if self.signer.verify(&unsigned.encode(), &sig) => Ok(()),
            _ => Err(Error::PermissionDenied {
                message: "this result ticket names a worker but was not issued by this server".to_string(),
            }),
        }
    }
}

/// `app_metadata` naming a workflow statement.
pub(crate) fn query_metadata(query_id: &str) -> Vec<u8> {
    format!("{QUERY_PREFIX}{query_id}").into_bytes()
}

/// The workflow statement a FlightInfo describes (from its `app_metadata`).
pub(crate) fn query_of_info(info: &FlightInfo) -> Option<String> {
    std::str::from_utf8(&info.app_metadata)
        .ok()?
        .strip_prefix(QUERY_PREFIX)
        .map(str::to_string)
}

/// The descriptor a client polls again with.
pub(crate) fn poll_descriptor(query_id: &str, schema: &SchemaRef) -> Result<FlightDescriptor> {
    let IpcMessage(ipc) = arrow_flight::SchemaAsIpc::new(schema, &Default::default()).try_into()?;
    let handle = PollHandle {
        query_id: query_id.to_string(),
        schema: base64::engine::general_purpose::STANDARD.encode(ipc),
    };
    let mut cmd = POLL_PREFIX.to_vec();
    cmd.extend(serde_json::to_vec(&handle).map_err(|e| Error::Internal { message: e.to_string() })?);
    Ok(FlightDescriptor::new_cmd(cmd))
}

/// Decode a descriptor from [`poll_descriptor`]; `None` if it is not one.
pub(crate) fn decode_poll_descriptor(descriptor: &FlightDescriptor) -> Result<Option<(String, SchemaRef)>> {
    let Some(body) = descriptor.cmd.strip_prefix(POLL_PREFIX) else {
        return Ok(None);
    };
    let handle: PollHandle = serde_json::from_slice(body).map_err(|e| Error::decode("poll descriptor", e))?;
    let ipc = base64::engine::general_purpose::STANDARD
        .decode(handle.schema.as_bytes())
        .map_err(|e| Error::decode("poll descriptor", e))?;
    let schema = Schema::try_from(IpcMessage(ipc.into()))?;
    Ok(Some((handle.query_id, Arc::new(schema))))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn poll_descriptor_round_trip() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let d = poll_descriptor("q-1", &schema).expect("encode");
        let (q, s) = decode_poll_descriptor(&d).expect("decode").expect("ours");
        assert_eq!(q, "q-1");
        assert_eq!(s, schema);
        assert!(
            decode_poll_descriptor(&FlightDescriptor::new_cmd(b"SELECT 1".to_vec()))
                .expect("x")
                .is_none()
        );
        assert!(decode_poll_descriptor(&FlightDescriptor::new_cmd(b"contrail-poll\0{".to_vec())).is_err());
    }
}
