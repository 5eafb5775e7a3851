//! The Flight SQL service: decode -> delegate to the planner -> encode.
//!
//! Handlers stay thin. Every request arrives with a [`RequestContext`]
//! (identity and session) attached by [`crate::flight::ContrailFlight`];
//! statements run on one of the [`Executor`]'s CPU runtimes (the session's
//! [`Lane`]); errors become `Status` in
//! `crate::error` only.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::sql::{TableExistsOption, TableNotExistOption};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor, FlightEndpoint,
    FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, PollInfo, SchemaAsIpc, Ticket,
};
use bytes::Bytes;
use contrail_planner::settings::ExecutionMode;
use contrail_planner::sink::Sink;
use contrail_planner::{Engine, IngestTarget, Outcome, SessionSettings, count_schema};
use contrail_workflows::QueryInput;
use contrail_workflows::dataplane::SpoolTicket;
use datafusion::common::ScalarValue;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::distributed::{self, Workflows};
use crate::error::{Error, Result};
use crate::exec::{Executor, Lane};
use crate::handle::{PreparedHandle, Signer, StatementTicket, TicketBody, decode_params, encode_params};
use crate::metadata;
use crate::pipelines::{self, PipelineOutcome};
use crate::plans::{Kept, PlanCache};
use crate::session::{
    CloseSessionResult, GetSessionOptionsResult, RequestContext, SetSessionOptionsError, SetSessionOptionsRequest,
    SetSessionOptionsResult, option_to_string, string_to_option,
};
use crate::wire::{self, Encoding, Frames, batch_frames};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A statement's result rows, as they are computed.
pub type RowStream = futures::stream::BoxStream<'static, Result<RecordBatch>>;

/// A statement's result for DoGet: its schema, its rows as they are computed,
/// and how they go on the wire (`contrail.result_compression`).
pub struct ResultRows {
    pub schema: SchemaRef,
    pub rows: RowStream,
    pub encoding: Encoding,
}

impl ResultRows {
    /// As frames for [`crate::wire::FlightRouter`]'s DoGet.
    pub fn frames(self) -> Result<Frames> {
        batch_frames(self.schema, self.rows, self.encoding)
    }

    /// As `FlightData` (the generic `FlightSqlService` path).
    fn flight_data(self) -> BoxStream<arrow_flight::FlightData> {
        let options = self.encoding.options();
        Box::pin(wire::flight_data(self.schema, self.rows, options))
    }
}

/// Where a planned statement went.
enum Routed {
    /// Runs here: the ticket's schema and body, the session's new settings (SET),
    /// and a query's plan, for its DoGet.
    Inline(SchemaRef, TicketBody, Option<SessionSettings>, Option<Kept>),
    /// A write run as a workflow: its input and the table it commits to.
    Write(QueryInput, Sink),
    Workflow(QueryInput, SchemaRef),
}

/// A statement after GetFlightInfo/PollFlightInfo started it.
pub(crate) enum Started {
    /// Inline: the FlightInfo is final.
    Ready(FlightInfo),
    /// Running as a workflow, under the statement's settings.
    Workflow {
        query_id: String,
        schema: SchemaRef,
        descriptor: FlightDescriptor,
        settings: SessionSettings,
    },
}

/// The Flight SQL service.
pub struct SqlService {
    pub(crate) engine: Arc<Engine>,
    pub(crate) executor: Arc<Executor>,
    pub(crate) signer: Signer,
    pub(crate) auth: Authenticator,
    /// Workflow execution; `None` with `--temporal off`.
    pub(crate) workflows: Option<Arc<Workflows>>,
    /// Plans of inline queries, waiting for the DoGet of their ticket.
    plans: PlanCache,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
}

impl SqlService {
    /// Drop plans kept for tickets and handles that never came back.
    pub fn evict_expired_plans(&self) {
        self.plans.evict_expired();
    }

    pub fn new(
        engine: Arc<Engine>,
        executor: Arc<Executor>,
        signer: Signer,
        auth: Authenticator,
        workflows: Option<Arc<Workflows>>,
    ) -> Result<Self> {
        Ok(Self {
            engine,
            executor,
            signer,
            auth,
            workflows,
            plans: PlanCache::default(),
            sql_info: metadata::sql_info()?,
            xdbc: metadata::xdbc_type_info()?,
        })
    }

    /// Plan a statement; queries get a ticket to stream (or start a workflow),
    /// anything else runs now (exactly once) and its ticket carries the count.
    /// `prepared`: the id of the prepared handle it comes from, whose plan this
    /// server may still hold.
    async fn statement_info(
        &self,
        rc: &RequestContext,
        settings: SessionSettings,
        sql: String,
        params: Option<String>,
        prepared: Option<&str>,
        descriptor: FlightDescriptor,
    ) -> Result<Started> {
        let engine = self.engine.clone();
        let workflows = self.workflows.clone();
        let before = settings.clone();
        let timeout = settings.statement_timeout();
        // A query that reads no table is planned here: cheaper than two thread hops.
        let lane = Lane::sql(&sql, &settings);
        let kept = prepared.and_then(|id| self.plans.take(id, &settings, engine.catalog().version()));
        let route = async move {
            let (sql, kept) = match kept {
                // Planned by CreatePreparedStatement (only queries are kept).
                Some(kept) => (sql, kept),
                None => {
                    let client = workflows.as_deref().map(|w| &w.client);
                    let sql = match pipelines::run_statement(&engine, client, &sql).await? {
                        Some(PipelineOutcome::Done) => {
                            return Ok(Routed::Inline(
                                count_schema(),
                                TicketBody::Done { count: 0 },
                                None,
                                None,
                            ));
                        }
                        Some(PipelineOutcome::Query(query)) => query,
                        None => sql,
                    };
                    let kept = Kept::plan(&engine, &settings, &sql).await?;
                    (sql, kept)
                }
            };
            let rows = match &params {
                Some(p) => param_rows(&decode_params(p)?)?,
                None => vec![],
            };
            let planned = &kept.planned;
            if let Some(w) = distributed::wants_workflow(workflows.as_deref(), &engine, &settings, planned)? {
                // `auto` only prefers a workflow: what cannot run as one runs inline.
                let auto = settings.execution_mode() == ExecutionMode::Auto;
                let routed = if !rows.is_empty() {
                    Err(Error::unimplemented("parameters in statements run as workflows"))
                } else if planned.is_query() {
                    distributed::prepare(&engine, &w.spool, &settings, planned)
                        .await
                        .map(|(input, schema)| Some(Routed::Workflow(input, schema)))
                } else {
                    distributed::prepare_write(&engine, &w.spool, &settings, planned)
                        .await
                        .map(|w| w.map(|(input, sink)| Routed::Write(input, sink)))
                };
                match routed {
                    Ok(Some(routed)) => return Ok(routed),
                    Ok(None) => {}
                    Err(e) if auto => debug!(error = %e, "runs inline: not as a workflow"),
                    Err(e) => return Err(e),
                }
            }
            if planned.is_query() {
                if rows.len() > 1 {
                    // Runs once per row, results concatenated in row order (at
                    // DoGet); each row is bound and planned here so that a bad
                    // row fails now, and the first one's schema is promised.
                    let mut schema = None;
                    for row in rows {
                        let planned = engine.ready(&kept.context, kept.planned.clone().bind(row)?).await?;
                        schema.get_or_insert_with(|| planned.schema(&settings));
                    }
                    let schema = schema.unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
                    return Ok(Routed::Inline(schema, TicketBody::Query { sql, params }, None, None));
                }
                let planned = kept.planned.bind(rows.into_iter().next().unwrap_or_default())?;
                let planned = engine.ready(&kept.context, planned).await?;
                let schema = planned.schema(&settings);
                let body = TicketBody::Query { sql, params };
                return Ok(Routed::Inline(schema, body, None, Some(Kept { planned, ..kept })));
            }
            let mut settings = settings;
            let count = run_update(&engine, &mut settings, &sql, kept.planned, rows).await?;
            Ok(Routed::Inline(
                count_schema(),
                TicketBody::Done { count },
                Some(settings),
                None,
            ))
        };
        let routed = self.executor.run_in(lane, timeout, route).await?;
        let (schema, body, changed, plan) = match routed {
            Routed::Workflow(input, schema) => {
                let workflows = self.workflow_runtime()?;
                let query_id = workflows.start(input).await?;
                return Ok(Started::Workflow {
                    query_id,
                    schema,
                    descriptor,
                    settings: before,
                });
            }
            Routed::Write(input, sink) => {
                let count = self.write(before.statement_timeout(), input, sink).await?;
                (count_schema(), TicketBody::Done { count }, None, None)
            }
            Routed::Inline(schema, body, changed, plan) => (schema, body, changed, plan),
        };
        // The ticket carries the settings the statement was planned with (or
        // that it set), not whatever a concurrent request has set since.
        let settings = match changed {
            Some(changed) if changed != before => {
                rc.update_settings(changed.clone());
                changed
            }
            _ => before,
        };
        let ticket = StatementTicket {
            id: uuid::Uuid::new_v4().to_string(),
            body,
            settings,
        };
        let handle = self.signer.encode_ticket(&ticket)?;
        if let Some(kept) = plan {
            self.plans.insert(ticket.id, ticket.settings, kept);
        }
        flight_info(
            &schema,
            TicketStatementQuery {
                statement_handle: handle,
            }
            .as_any()
            .encode_to_vec(),
            descriptor,
        )
        .map(Started::Ready)
    }

    /// Run a write workflow to its commit, then show the new data here.
    async fn write(&self, timeout: Option<Duration>, input: QueryInput, sink: Sink) -> Result<i64> {
        let rows = self.workflow_runtime()?.write(input, timeout).await?;
        // Committed: an error now must not tell the client the write failed (a
        // retry would write the rows twice). Scans catch up with the log anyway.
        if let Err(e) = self.engine.written(&sink).await {
            warn!(error = %e, "a committed workflow write is not shown here yet");
        }
        Ok(i64::try_from(rows).unwrap_or(i64::MAX))
    }

    fn workflow_runtime(&self) -> Result<&Arc<Workflows>> {
        self.workflows.as_ref().ok_or_else(|| Error::WorkflowsOff {
            message: "this server runs with --temporal off".to_string(),
        })
    }

    /// GetFlightInfo: a workflow statement is waited for.
    async fn completed_info(&self, started: Started) -> Result<FlightInfo> {
        match started {
            Started::Ready(info) => Ok(info),
            Started::Workflow {
                query_id,
                schema,
                descriptor,
                settings,
            } => {
                self.workflow_runtime()?
                    .wait_info(&query_id, &schema, descriptor, &settings)
                    .await
            }
        }
    }

    /// PollFlightInfo: answers at once. Statements start (inline ones finish
    /// within the call); poll descriptors report the workflow's progress.
    pub(crate) async fn poll(&self, rc: &RequestContext, descriptor: FlightDescriptor) -> Result<Option<PollInfo>> {
        if let Some((query_id, schema)) = distributed::decode_poll_descriptor(&descriptor)? {
            let poll = self
                .workflow_runtime()?
                .poll_info(
                    &query_id,
                    &schema,
                    descriptor,
                    rc.session.settings().result_compression(),
                )
                .await?;
            return Ok(Some(poll));
        }
        use arrow_flight::sql::Command;
        let Ok(any) = Any::decode(descriptor.cmd.as_ref()) else {
            return Ok(None);
        };
        let started = match Command::try_from(any) {
            Ok(Command::CommandStatementQuery(q)) => {
                self.statement_info(rc, rc.session.settings(), q.query, None, None, descriptor)
                    .await?
            }
            Ok(Command::CommandPreparedStatementQuery(p)) => {
                let handle = self.signer.decode_prepared(&p.prepared_statement_handle)?;
                let settings = prepared_settings(rc, &handle);
                self.statement_info(
                    rc,
                    settings,
                    handle.sql,
                    handle.params,
                    handle.id.as_deref(),
                    descriptor,
                )
                .await?
            }
            _ => return Ok(None),
        };
        Ok(Some(match started {
            Started::Ready(info) => PollInfo {
                info: Some(info),
                flight_descriptor: None,
                progress: Some(1.0),
                expiration_time: None,
            },
            Started::Workflow {
                query_id,
                schema,
                descriptor,
                ..
            } => {
                // The first answer points at the poll descriptor; no need to ask Temporal yet.
                PollInfo {
                    info: Some(
                        FlightInfo::new()
                            .try_with_schema(&schema)?
                            .with_descriptor(descriptor)
                            .with_ordered(true)
                            .with_app_metadata(distributed::query_metadata(&query_id)),
                    ),
                    flight_descriptor: Some(distributed::poll_descriptor(&query_id, &schema)?),
                    progress: Some(0.0),
                    expiration_time: None,
                }
            }
        }))
    }

    /// DoGet of a spooled fragment output.
    pub(crate) async fn spooled(&self, ticket: &[u8]) -> Result<BoxStream<arrow_flight::FlightData>> {
        self.workflow_runtime()?.serve(ticket).await
    }

    /// The schema a statement would stream, without running it.
    pub(crate) async fn statement_schema(&self, settings: SessionSettings, sql: String) -> Result<SchemaRef> {
        let engine = self.engine.clone();
        let lane = Lane::sql(&sql, &settings);
        self.executor
            .run_in(lane, settings.statement_timeout(), async move {
                let planned = engine.plan(&settings, &sql).await?;
                Ok(planned.schema(&settings))
            })
            .await
    }

    /// `GetSchema`: the schema of any command, without side effects.
    pub(crate) async fn schema_of(&self, rc: &RequestContext, descriptor: &FlightDescriptor) -> Result<SchemaRef> {
        use arrow_flight::sql::Command;
        let any = Any::decode(descriptor.cmd.as_ref()).map_err(|e| Error::decode("command", e))?;
        let command = Command::try_from(any).map_err(|e| Error::decode("command", e))?;
        Ok(match command {
            Command::CommandStatementQuery(q) => self.statement_schema(rc.session.settings(), q.query).await?,
            Command::CommandPreparedStatementQuery(p) => {
                let handle = self.signer.decode_prepared(&p.prepared_statement_handle)?;
                self.statement_schema(prepared_settings(rc, &handle), handle.sql)
                    .await?
            }
            Command::CommandGetCatalogs(q) => q.into_builder().schema(),
            Command::CommandGetDbSchemas(q) => q.into_builder().schema(),
            Command::CommandGetTables(q) => q.into_builder().schema(),
            Command::CommandGetTableTypes(_) => metadata::table_types()?.schema(),
            Command::CommandGetSqlInfo(_) => self.sql_info.schema(),
            Command::CommandGetXdbcTypeInfo(_) => self.xdbc.schema(),
            Command::CommandGetPrimaryKeys(_) => metadata::primary_keys_schema(),
            Command::CommandGetImportedKeys(_)
            | Command::CommandGetExportedKeys(_)
            | Command::CommandGetCrossReference(_) => metadata::foreign_keys_schema(),
            other => return Err(Error::unimplemented(format!("GetSchema for {}", other.type_url()))),
        })
    }

    /// The rows of a DoGet ticket, when it is a statement's (a query or a
    /// prepared statement); `None` for every other Flight SQL ticket.
    pub async fn rows(&self, rc: &RequestContext, ticket: &Ticket) -> Result<Option<ResultRows>> {
        use arrow_flight::sql::Command;
        // Anything else, undecodable tickets included, takes the generic path.
        let Ok(any) = Any::decode(&*ticket.ticket) else {
            return Ok(None);
        };
        let ticket = match Command::try_from(any) {
            Ok(Command::TicketStatementQuery(t)) => self.signer.decode_ticket(&t.statement_handle)?,
            Ok(Command::CommandPreparedStatementQuery(cmd)) => self.prepared_ticket(rc, &cmd)?,
            _ => return Ok(None),
        };
        self.redeem(ticket).await.map(Some)
    }

    /// A prepared statement's handle as a ticket to run it.
    fn prepared_ticket(&self, rc: &RequestContext, cmd: &CommandPreparedStatementQuery) -> Result<StatementTicket> {
        let handle = self.signer.decode_prepared(&cmd.prepared_statement_handle)?;
        Ok(StatementTicket {
            id: uuid::Uuid::new_v4().to_string(),
            settings: prepared_settings(rc, &handle),
            body: TicketBody::Query {
                sql: handle.sql,
                params: handle.params,
            },
        })
    }

    /// Stream a ticket's rows, to be encoded as its session asked.
    async fn redeem(&self, ticket: StatementTicket) -> Result<ResultRows> {
        let lane = Lane::session(&ticket.settings);
        let encoding = Encoding::new(ticket.settings.result_compression(), self.executor.handle_of(lane))?;
        let (schema, rows) = self.redeem_rows(ticket).await?;
        Ok(ResultRows { schema, rows, encoding })
    }

    async fn redeem_rows(&self, ticket: StatementTicket) -> Result<(SchemaRef, RowStream)> {
        match ticket.body {
            TicketBody::Done { count } => {
                let batch = RecordBatch::try_new(count_schema(), vec![Arc::new(Int64Array::from(vec![count]))])?;
                Ok((count_schema(), futures::stream::iter([Ok(batch)]).boxed()))
            }
            TicketBody::Query { sql, params } => {
                let engine = self.engine.clone();
                let mut settings = ticket.settings;
                let timeout = settings.statement_timeout();
                let mut planned_here = self
                    .plans
                    .take(&ticket.id, &settings, engine.catalog().version())
                    .map(|kept| (kept.context, kept.planned));
                if let Some((context, planned)) = planned_here.take_if(|(_, planned)| planned.is_light()) {
                    // Reads no table: run here, as it was planned (see contrail_planner::light).
                    let schema = planned.schema(&settings);
                    return match engine.execute_in(&context, &mut settings, planned).await? {
                        Outcome::Rows(rows) => {
                            let rows = rows.map_err(|e| Error::from(contrail_planner::Error::execution(e)));
                            Ok((schema, rows.boxed()))
                        }
                        Outcome::Count(_) => Err(Error::invalid("ticket does not hold a query")),
                    };
                }
                let (schema, stream) = self
                    .executor
                    .stream(Lane::session(&settings), ticket.id, timeout, async move {
                        // Planned by this server's GetFlightInfo, or planned now from the ticket.
                        let (context, planned) = match planned_here {
                            Some(kept) => kept,
                            None => {
                                let rows = match &params {
                                    Some(p) => param_rows(&decode_params(p)?)?,
                                    None => vec![],
                                };
                                let context = engine.statement(&settings)?;
                                let planned = engine.plan_with(&context, &sql).await?;
                                if rows.len() > 1 {
                                    return run_per_row(&engine, &context, &mut settings, planned, rows).await;
                                }
                                let planned = planned.bind(rows.into_iter().next().unwrap_or_default())?;
                                let planned = engine.ready(&context, planned).await?;
                                (context, planned)
                            }
                        };
                        if !planned.is_query() {
                            return Err(Error::invalid("ticket does not hold a query"));
                        }
                        let schema = planned.schema(&settings);
                        match engine.execute_in(&context, &mut settings, planned).await? {
                            Outcome::Rows(s) => Ok((schema, s)),
                            Outcome::Count(_) => Err(Error::invalid("ticket does not hold a query")),
                        }
                    })
                    .await?;
                Ok((schema, stream.boxed()))
            }
        }
    }

    async fn cancel_info(&self, info: &FlightInfo) -> Result<CancelStatus> {
        let mut status = CancelStatus::NotCancellable;
        // A workflow statement: its app_metadata names it.
        if let Some(query_id) = distributed::query_of_info(info) {
            return match self.workflow_runtime()?.client.cancel(&query_id).await {
                Ok(()) => Ok(CancelStatus::Cancelled),
                // Finished (or cancelled) already.
                Err(contrail_workflows::Error::Temporal { message }) if message.contains("completed") => {
                    Ok(CancelStatus::NotCancellable)
                }
                Err(e) => Err(e.into()),
            };
        }
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else { continue };
            if SpoolTicket::is_spool_ticket(&ticket.ticket) {
                continue;
            }
            let any = Any::decode(ticket.ticket.as_ref()).map_err(|e| Error::decode("ticket", e))?;
            let Some(tsq) = any
                .unpack::<TicketStatementQuery>()
                .map_err(|e| Error::decode("ticket", e))?
            else {
                continue;
            };
            let t = self.signer.decode_ticket(&tsq.statement_handle)?;
            if matches!(t.body, TicketBody::Query { .. }) {
                self.executor.cancel(&t.id);
                status = CancelStatus::Cancelled;
            }
        }
        Ok(status)
    }

    async fn handle_session_action(&self, rc: &RequestContext, action: &Action) -> Result<Option<Bytes>> {
        let body = action.body.as_ref();
        Ok(Some(match action.r#type.as_str() {
            "SetSessionOptions" => {
                let req =
                    SetSessionOptionsRequest::decode(body).map_err(|e| Error::decode("SetSessionOptionsRequest", e))?;
                let mut settings = rc.session.settings();
                let mut errors = std::collections::HashMap::new();
                for (key, value) in req.session_options {
                    let result = match option_to_string(&value) {
                        None => {
                            settings.reset(&key);
                            Ok(())
                        }
                        Some(v) => settings.set(&key, &v),
                    };
                    if let Err(e) = result {
                        let code = if e.to_string().contains("unknown") { 1 } else { 2 };
                        info!(%key, error = %e, "rejected session option");
                        errors.insert(key, SetSessionOptionsError { value: code });
                    }
                }
                // A catalog or schema that does not exist fails the call (NOT_FOUND).
                self.engine.check_namespace(&settings)?;
                // DataFusion validates its own keys when a context is built.
                if let Err(e) = self.engine.context(&settings) {
                    return Err(e.into());
                }
                rc.update_settings(settings);
                SetSessionOptionsResult { errors }.encode_to_vec().into()
            }
            "GetSessionOptions" => {
                let settings = rc.session.settings();
                let mut options: std::collections::HashMap<_, _> = settings
                    .options
                    .iter()
                    .map(|(k, v)| (k.clone(), string_to_option(v)))
                    .collect();
                options.insert(
                    "catalog".into(),
                    string_to_option(settings.catalog.as_deref().unwrap_or(contrail_planner::CATALOG)),
                );
                options.insert(
                    "schema".into(),
                    string_to_option(settings.schema.as_deref().unwrap_or(contrail_planner::DEFAULT_SCHEMA)),
                );
                GetSessionOptionsResult {
                    session_options: options,
                }
                .encode_to_vec()
                .into()
            }
            "CloseSession" => {
                rc.close();
                CloseSessionResult { status: 1 }.encode_to_vec().into()
            }
            "CancelFlightInfo" => {
                let req =
                    CancelFlightInfoRequest::decode(body).map_err(|e| Error::decode("CancelFlightInfoRequest", e))?;
                let info = req
                    .info
                    .ok_or_else(|| Error::invalid("CancelFlightInfoRequest without info"))?;
                let status = self.cancel_info(&info).await?;
                CancelFlightInfoResult { status: status as i32 }.encode_to_vec().into()
            }
            _ => return Ok(None),
        }))
    }
}

/// Execute a non-query statement once per parameter row (once if none).
async fn run_update(
    engine: &Engine,
    settings: &mut SessionSettings,
    sql: &str,
    planned: contrail_planner::Planned,
    rows: Vec<Vec<ScalarValue>>,
) -> Result<i64> {
    if rows.is_empty() {
        return Ok(count_of(engine.execute(settings, planned).await?));
    }
    // INSERT with many parameter rows: one atomic statement.
    if rows.len() > 1 {
        if let Some(batched) = planned.bind_rows(&rows)? {
            return Ok(count_of(engine.execute(settings, batched).await?));
        }
    }
    let mut total = 0i64;
    let mut planned = Some(planned);
    for row in rows {
        let p = match planned.take() {
            Some(p) => p,
            None => engine.plan(settings, sql).await?,
        };
        let n = count_of(engine.execute(settings, p.bind(row)?).await?);
        total = if n < 0 || total < 0 { -1 } else { total + n };
    }
    Ok(total)
}

fn count_of(outcome: Outcome) -> i64 {
    match outcome {
        Outcome::Count(n) => n,
        Outcome::Rows(_) => -1,
    }
}

/// Rows of a parameter batch as scalar values.
fn param_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<ScalarValue>>> {
    let mut rows = Vec::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            let row = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::invalid(format!("bad parameter value: {e}")))?;
            rows.push(row);
        }
    }
    Ok(rows)
}

fn flight_info(schema: &SchemaRef, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<FlightInfo> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1))
}

fn schema_bytes(schema: &SchemaRef) -> Result<Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

fn context<T>(request: &Request<T>) -> Result<RequestContext, Status> {
    request
        .extensions()
        .get::<RequestContext>()
        .cloned()
        .ok_or_else(|| Status::internal("request reached the SQL service without a session"))
}

/// The settings a prepared statement runs with: its session's current ones, or,
/// when the session is fresh (new, or evicted or lost in a restart since the
/// prepare), the ones it was prepared with.
fn prepared_settings(rc: &RequestContext, handle: &PreparedHandle) -> SessionSettings {
    if rc.is_fresh() {
        handle.settings.clone()
    } else {
        rc.session.settings()
    }
}

/// Read a DoPut stream's record batches (the first message carries the schema).
async fn read_batches(stream: PeekableFlightDataStream) -> Result<(SchemaRef, PutStream)> {
    match read_optional_batches(stream).await? {
        (Some(schema), s) => Ok((schema, s)),
        (None, _) => Err(Error::invalid("DoPut stream carries no schema")),
    }
}

/// Like [`read_batches`], for streams that may hold only the command (no schema).
async fn read_optional_batches(stream: PeekableFlightDataStream) -> Result<(Option<SchemaRef>, PutStream)> {
    // Clients may send the command alone (no schema, no data): skip empty messages.
    let stream = stream
        .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty() || !fd.data_body.is_empty()))
        .and_then(|fd| futures::future::ready(checked_ipc(fd)));
    let mut batches = Unpanicked::new(FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(|s| FlightError::Tonic(Box::new(s))),
    ))
    .peekable();
    // Peeking reads messages until the schema (and maybe the first batch) arrives.
    if let Some(Err(e)) = Pin::new(&mut batches).peek().await {
        return Err(Error::invalid(format!("cannot read DoPut data: {e}")));
    }
    let schema = batches.get_ref().inner.schema().cloned();
    Ok((schema, Box::pin(batches)))
}

/// A client's IPC stream, decoded by arrow-ipc, which trusts more of a message
/// than [`checked_ipc`] can check (a validity buffer shorter than its column,
/// an integer type 65,344 bits wide) and panics on it. A panic while decoding
/// ends the stream with a decode error (INVALID_ARGUMENT), never a server thread.
struct Unpanicked<S> {
    inner: S,
    failed: bool,
}

impl<S> Unpanicked<S> {
    fn new(inner: S) -> Self {
        Self { inner, failed: false }
    }
}

impl<S> Stream for Unpanicked<S>
where
    S: Stream<Item = Result<RecordBatch, FlightError>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        if self.failed {
            return std::task::Poll::Ready(None);
        }
        let inner = &mut self.inner;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(inner).poll_next(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                self.failed = true;
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("malformed IPC data");
                warn!(
                    error = why,
                    "a DoPut message the IPC decoder could not read was refused"
                );
                std::task::Poll::Ready(Some(Err(FlightError::DecodeError(format!(
                    "malformed DoPut message: {why}"
                )))))
            }
        }
    }
}

type PutStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, FlightError>> + Send>>;

/// The largest buffer a compressed DoPut message may declare (its uncompressed size).
const MAX_DECOMPRESSED_BUFFER: i64 = 1 << 30;

/// `fd` if its IPC body holds every buffer its header declares; INVALID_ARGUMENT
/// otherwise. arrow-ipc slices the body where the header says (a short body
/// panics in the buffer code) and allocates what a compressed buffer says it
/// holds, so a client's message is checked before it is decoded.
fn checked_ipc(fd: arrow_flight::FlightData) -> Result<arrow_flight::FlightData, Status> {
    use arrow::ipc::{CompressionType, root_as_message};
    let bad = |what: String| Status::invalid_argument(format!("malformed DoPut message: {what}"));
    let message = root_as_message(&fd.data_header).map_err(|e| bad(format!("unreadable IPC header ({e})")))?;
    let batch = match (message.header_as_record_batch(), message.header_as_dictionary_batch()) {
        (Some(batch), _) => batch,
        (None, Some(dictionary)) => dictionary
            .data()
            .ok_or_else(|| bad("a dictionary batch without data".into()))?,
        (None, None) => return Ok(fd), // a schema: arrow-ipc checks it as it reads it
    };
    let body = &fd.data_body;
    let compressed = batch
        .compression()
        .is_some_and(|c| matches!(c.codec(), CompressionType::LZ4_FRAME | CompressionType::ZSTD));
    for buffer in batch.buffers().into_iter().flatten() {
        let (offset, length) = (buffer.offset(), buffer.length());
        let end = offset.checked_add(length).filter(|_| offset >= 0 && length >= 0);
        let Some(end) = end.and_then(|e| usize::try_from(e).ok()).filter(|&e| e <= body.len()) else {
            return Err(bad(format!(
                "a buffer at {offset}+{length} lies outside the {}-byte body",
                body.len()
            )));
        };
        if compressed && length >= 8 {
            let start = end - length as usize;
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&body[start..start + 8]);
            let size = i64::from_le_bytes(prefix);
            if size > MAX_DECOMPRESSED_BUFFER {
                return Err(bad(format!(
                    "a compressed buffer says it holds {size} bytes (at most {MAX_DECOMPRESSED_BUFFER} per buffer)"
                )));
            }
        }
    }
    Ok(fd)
}

/// Ingested data as a DataFusion stream. Schema and field metadata (pandas
/// attaches some) are dropped: tables store types, not client annotations.
fn to_df_stream(schema: SchemaRef, stream: PutStream) -> (SchemaRef, datafusion::execution::SendableRecordBatchStream) {
    let plain: SchemaRef = Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect::<Vec<_>>(),
    ));
    let target = plain.clone();
    let s = stream.map(move |r| {
        // What the client sent cannot be read: its fault (INVALID_ARGUMENT), not ours.
        let batch =
            r.map_err(|e| datafusion::error::DataFusionError::Execution(format!("cannot read DoPut data: {e}")))?;
        RecordBatch::try_new(target.clone(), batch.columns().to_vec())
            .map_err(|e| datafusion::error::DataFusionError::ArrowError(Box::new(e), None))
    });
    (plain.clone(), Box::pin(RecordBatchStreamAdapter::new(plain, s)))
}

fn meta_info<C: ProstMessageExt>(
    cmd: C,
    schema: &SchemaRef,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(flight_info(schema, cmd.as_any().encode_to_vec(), descriptor)?)
}

fn batch_stream(batch: Result<RecordBatch>) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
    let batch = batch?;
    let data = wire::flight_data(
        batch.schema(),
        futures::stream::iter([Ok(batch)]),
        IpcWriteOptions::default(),
    );
    Ok(Response::new(Box::pin(data)))
}

#[tonic::async_trait]
impl FlightSqlService for SqlService {
    type FlightService = SqlService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let mut response =
            Response::new(Box::pin(futures::stream::iter([Ok(HandshakeResponse::default())])) as BoxStream<_>);
        if !self.auth.enabled() {
            return Ok(response);
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::from(Error::unauthenticated(
                    "credentials required: send Basic auth in the handshake",
                ))
            })?;
        let peer = request.remote_addr().map(|a| a.ip());
        let (user, token) = self.auth.login_basic_from(header, peer).await?;
        info!(%user, "authenticated");
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let rc = context(&request)?;
        let started = self
            .statement_info(
                &rc,
                rc.session.settings(),
                query.query,
                None,
                None,
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(self.completed_info(started).await?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let rc = context(&request)?;
        let handle = self.signer.decode_prepared(&cmd.prepared_statement_handle)?;
        let started = self
            .statement_info(
                &rc,
                prepared_settings(&rc, &handle),
                handle.sql,
                handle.params,
                handle.id.as_deref(),
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(self.completed_info(started).await?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let ticket = self.signer.decode_ticket(&ticket.statement_handle)?;
        Ok(Response::new(self.redeem(ticket).await?.flight_data()))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let rc = context(&request)?;
        Ok(Response::new(
            self.redeem(self.prepared_ticket(&rc, &cmd)?).await?.flight_data(),
        ))
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let rc = context(&request)?;
        let engine = self.engine.clone();
        let settings = rc.session.settings();
        let before = settings.clone();
        let workflows = self.workflows.clone();
        let lane = Lane::session(&settings);
        let routed = self
            .executor
            .run_in(lane, settings.statement_timeout(), async move {
                let mut settings = settings;
                let client = workflows.as_deref().map(|w| &w.client);
                match pipelines::run_statement(&engine, client, &cmd.query).await? {
                    Some(PipelineOutcome::Done) => return Ok(Ok((0, settings))),
                    Some(PipelineOutcome::Query(_)) => {
                        return Err(Error::invalid(
                            "SHOW PIPELINES and DESCRIBE PIPELINE return rows: run them as a query",
                        ));
                    }
                    None => {}
                }
                let planned = engine.plan(&settings, &cmd.query).await?;
                let workflow = distributed::wants_workflow(workflows.as_deref(), &engine, &settings, &planned)?;
                if let Some(w) = workflow.filter(|_| !planned.is_query()) {
                    match distributed::prepare_write(&engine, &w.spool, &settings, &planned).await {
                        Ok(Some(write)) => return Ok(Err(write)),
                        Ok(None) => {}
                        Err(e) if settings.execution_mode() == ExecutionMode::Auto => {
                            debug!(error = %e, "runs inline: not as a workflow");
                        }
                        Err(e) => return Err(e),
                    }
                }
                let count = run_update(&engine, &mut settings, &cmd.query, planned, vec![]).await?;
                Ok(Ok((count, settings)))
            })
            .await?;
        let (count, settings) = match routed {
            Ok(done) => done,
            Err((input, sink)) => (
                self.write(before.statement_timeout(), input, sink).await?,
                before.clone(),
            ),
        };
        if settings != before {
            rc.update_settings(settings);
        }
        Ok(count)
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let rc = context(&request)?;
        if cmd.temporary {
            return Err(Error::unimplemented("ingest into a temporary table").into());
        }
        if cmd.transaction_id.is_some() {
            return Err(Error::unimplemented("ingest inside a transaction").into());
        }
        let opts = cmd.table_definition_options.unwrap_or_default();
        let if_not_exist = TableNotExistOption::try_from(opts.if_not_exist).unwrap_or(TableNotExistOption::Unspecified);
        let if_exists = TableExistsOption::try_from(opts.if_exists).unwrap_or(TableExistsOption::Unspecified);
        let target = IngestTarget {
            catalog: cmd.catalog,
            schema: cmd.schema,
            table: cmd.table,
            create: if_not_exist == TableNotExistOption::Create,
            fail_if_exists: matches!(if_exists, TableExistsOption::Fail | TableExistsOption::Unspecified),
            replace: if_exists == TableExistsOption::Replace,
        };
        let (schema, stream) = read_batches(request.into_inner()).await?;
        let engine = self.engine.clone();
        let settings = rc.session.settings();
        let rows = self
            .executor
            .run_in(Lane::session(&settings), None, async move {
                let (schema, stream) = to_df_stream(schema, stream);
                Ok(engine.ingest(&settings, target, schema, stream).await?)
            })
            .await?;
        Ok(rows)
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle = self.signer.decode_prepared(&cmd.prepared_statement_handle)?;
        let (_schema, stream) = read_batches(request.into_inner()).await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| Error::invalid(e.to_string()))?;
        handle.params = encode_params(&batches)?;
        let bytes = self.signer.encode_prepared(&handle)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bytes),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let rc = context(&request)?;
        let handle = self.signer.decode_prepared(&cmd.prepared_statement_handle)?;
        let (schema, stream) = read_optional_batches(request.into_inner()).await?;
        let mut batches: Vec<RecordBatch> = match schema {
            Some(_) => stream.try_collect().await.map_err(|e| Error::invalid(e.to_string()))?,
            None => vec![],
        };
        if batches.iter().all(|b| b.num_rows() == 0) {
            if let Some(p) = &handle.params {
                batches = decode_params(p)?;
            }
        }
        let engine = self.engine.clone();
        let settings = prepared_settings(&rc, &handle);
        let before = settings.clone();
        let sql = handle.sql;
        let workflows = self.workflows.clone();
        let lane = Lane::session(&settings);
        let (count, settings) = self
            .executor
            .run_in(lane, settings.statement_timeout(), async move {
                let rows = param_rows(&batches)?;
                let mut settings = settings;
                let client = workflows.as_deref().map(|w| &w.client);
                match pipelines::run_statement(&engine, client, &sql).await? {
                    Some(PipelineOutcome::Done) => return Ok((0, settings)),
                    Some(PipelineOutcome::Query(_)) => {
                        return Err(Error::invalid("a query cannot run as an update; use DoGet"));
                    }
                    None => {}
                }
                let planned = engine.plan(&settings, &sql).await?;
                if planned.is_query() {
                    return Err(Error::invalid("a query cannot run as an update; use DoGet"));
                }
                let count = run_update(&engine, &mut settings, &sql, planned, rows).await?;
                Ok((count, settings))
            })
            .await?;
        // A prepared `SET` (how the JDBC driver runs every statement) changes the session.
        if settings != before {
            rc.update_settings(settings);
        }
        Ok(count)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let rc = context(&request)?;
        if query.transaction_id.is_some() {
            return Err(Error::unimplemented("prepared statements inside transactions").into());
        }
        let engine = self.engine.clone();
        let settings = rc.session.settings();
        let sql = query.query.clone();
        let s2 = settings.clone();
        let lane = Lane::sql(&sql, &settings);
        let (dataset, params, kept) = self
            .executor
            .run_in(lane, settings.statement_timeout(), async move {
                // Pipeline statements run when executed; SHOW / DESCRIBE are queries.
                let (sql, is_pipeline) = match contrail_planner::pipeline::parse(&sql)? {
                    Some(statement) => match pipelines::query_of(&statement) {
                        Some(query) => (query, true),
                        None => {
                            let empty = Arc::new(arrow::datatypes::Schema::empty());
                            return Ok((Arc::clone(&empty), empty, None));
                        }
                    },
                    None => (sql, false),
                };
                let kept = Kept::plan(&engine, &s2, &sql).await?;
                let params = kept.planned.parameter_schema()?;
                // Statements without a result set have an empty dataset schema:
                // that is how clients (the JDBC driver) tell updates from queries.
                if !kept.planned.is_query() {
                    return Ok((Arc::new(arrow::datatypes::Schema::empty()), params, None));
                }
                let dataset = kept.planned.schema(&s2);
                // A query's plan is kept for the handle's first execution; updates
                // (and pipeline statements) plan again when they run. Its scans
                // are planned again then too: a handle may run long after it
                // was prepared, and must see the tables as they are by then.
                let kept = Kept {
                    planned: kept.planned.without_physical_plan(),
                    ..kept
                };
                Ok((dataset, params, (!is_pipeline).then_some(kept)))
            })
            .await?;
        let id = kept.map(|kept| {
            let id = uuid::Uuid::new_v4().to_string();
            self.plans.insert(id.clone(), settings.clone(), kept);
            id
        });
        let handle = PreparedHandle {
            sql: query.query,
            settings,
            params: None,
            id,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.signer.encode_prepared(&handle)?,
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&params)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles are self-contained; only a plan kept for one that never ran is freed.
        let handle = self.signer.decode_prepared(&query.prepared_statement_handle)?;
        if let Some(id) = &handle.id {
            self.plans.forget(id);
        }
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info.as_ref()).map_err(|e| Error::decode("FlightInfo", e))?;
        let status = self.cancel_info(&info).await?;
        // ActionCancelQueryResult uses its own enum: 1 = cancelled, 3 = not cancellable.
        let result = if status == CancelStatus::Cancelled { 1 } else { 3 };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let rc = context(&request)?;
        let action = request.into_inner();
        match self.handle_session_action(&rc, &action).await? {
            Some(body) => Ok(Response::new(Box::pin(futures::stream::iter([Ok(
                arrow_flight::Result { body },
            )])))),
            None => Err(Error::invalid(format!("unknown action '{}'", action.r#type)).into()),
        }
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<arrow_flight::ActionType, Status>>> {
        let action = |t: &str, d: &str| {
            Ok(arrow_flight::ActionType {
                r#type: t.into(),
                description: d.into(),
            })
        };
        Some(vec![
            action("CancelFlightInfo", "Cancel a query. Request: CancelFlightInfoRequest"),
            action(
                "SetSessionOptions",
                "Set session options. Request: SetSessionOptionsRequest",
            ),
            action(
                "GetSessionOptions",
                "Get session options. Request: GetSessionOptionsRequest",
            ),
            action("CloseSession", "Close the session. Request: CloseSessionRequest"),
        ])
    }

    // ---- metadata ----

    async fn get_flight_info_catalogs(
        &self,
        q: CommandGetCatalogs,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = q.clone().into_builder().schema();
        Ok(Response::new(meta_info(q, &schema, r.into_inner())?))
    }
    async fn get_flight_info_schemas(
        &self,
        q: CommandGetDbSchemas,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = q.clone().into_builder().schema();
        Ok(Response::new(meta_info(q, &schema, r.into_inner())?))
    }
    async fn get_flight_info_tables(
        &self,
        q: CommandGetTables,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = q.clone().into_builder().schema();
        Ok(Response::new(meta_info(q, &schema, r.into_inner())?))
    }
    async fn get_flight_info_table_types(
        &self,
        q: CommandGetTableTypes,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::table_types().map_err(Status::from)?.schema();
        Ok(Response::new(meta_info(q, &schema, r.into_inner())?))
    }
    async fn get_flight_info_sql_info(
        &self,
        q: CommandGetSqlInfo,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.sql_info.schema();
        Ok(Response::new(meta_info(q, &schema, r.into_inner())?))
    }
    async fn get_flight_info_xdbc_type_info(
        &self,
        q: CommandGetXdbcTypeInfo,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.xdbc.schema();
        Ok(Response::new(meta_info(q, &schema, r.into_inner())?))
    }
    async fn get_flight_info_primary_keys(
        &self,
        q: CommandGetPrimaryKeys,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(meta_info(
            q,
            &metadata::primary_keys_schema(),
            r.into_inner(),
        )?))
    }
    async fn get_flight_info_imported_keys(
        &self,
        q: CommandGetImportedKeys,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(meta_info(
            q,
            &metadata::foreign_keys_schema(),
            r.into_inner(),
        )?))
    }
    async fn get_flight_info_exported_keys(
        &self,
        q: CommandGetExportedKeys,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(meta_info(
            q,
            &metadata::foreign_keys_schema(),
            r.into_inner(),
        )?))
    }
    async fn get_flight_info_cross_reference(
        &self,
        q: CommandGetCrossReference,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(meta_info(
            q,
            &metadata::foreign_keys_schema(),
            r.into_inner(),
        )?))
    }

    async fn do_get_catalogs(
        &self,
        _q: CommandGetCatalogs,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(metadata::catalogs())
    }
    async fn do_get_schemas(
        &self,
        q: CommandGetDbSchemas,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(metadata::db_schemas(&self.engine, q))
    }
    async fn do_get_tables(
        &self,
        q: CommandGetTables,
        r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let settings = context(&r)?.session.settings();
        batch_stream(metadata::tables(&self.engine, &settings, q).await)
    }
    async fn do_get_table_types(
        &self,
        _q: CommandGetTableTypes,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(metadata::table_types())
    }
    async fn do_get_sql_info(
        &self,
        q: CommandGetSqlInfo,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(q.into_builder(&self.sql_info).build().map_err(Error::from))
    }
    async fn do_get_xdbc_type_info(
        &self,
        q: CommandGetXdbcTypeInfo,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(self.xdbc.record_batch(q.data_type).map_err(Error::from))
    }
    async fn do_get_primary_keys(
        &self,
        _q: CommandGetPrimaryKeys,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(Ok(RecordBatch::new_empty(metadata::primary_keys_schema())))
    }
    async fn do_get_imported_keys(
        &self,
        _q: CommandGetImportedKeys,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(Ok(RecordBatch::new_empty(metadata::foreign_keys_schema())))
    }
    async fn do_get_exported_keys(
        &self,
        _q: CommandGetExportedKeys,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(Ok(RecordBatch::new_empty(metadata::foreign_keys_schema())))
    }
    async fn do_get_cross_reference(
        &self,
        _q: CommandGetCrossReference,
        _r: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        batch_stream(Ok(RecordBatch::new_empty(metadata::foreign_keys_schema())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// A query with several rows of parameters: run once per row, the results
/// concatenated in row order under the first row's schema (each batch is
/// conformed to it before it is sent, or the stream fails).
async fn run_per_row(
    engine: &Engine,
    context: &contrail_planner::StatementContext,
    settings: &mut SessionSettings,
    planned: contrail_planner::Planned,
    rows: Vec<Vec<ScalarValue>>,
) -> Result<(SchemaRef, datafusion::physical_plan::SendableRecordBatchStream)> {
    if !planned.is_query() {
        return Err(Error::invalid("ticket does not hold a query"));
    }
    let mut schema = None;
    let mut streams = Vec::with_capacity(rows.len());
    for row in rows {
        let bound = engine.ready(context, planned.clone().bind(row)?).await?;
        let promised = Arc::clone(schema.get_or_insert_with(|| bound.schema(settings)));
        match engine.execute_in(context, settings, bound).await? {
            Outcome::Rows(s) => streams.push(contrail_planner::types::conform_stream(s, promised)),
            Outcome::Count(_) => return Err(Error::invalid("ticket does not hold a query")),
        }
    }
    let schema = schema.unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
    let chained = futures::stream::iter(streams).flatten();
    Ok((
        Arc::clone(&schema),
        Box::pin(RecordBatchStreamAdapter::new(schema, chained)),
    ))
}
