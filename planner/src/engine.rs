//! The engine: turn one SQL statement into a plan, and run it.
//!
//! ```text
//! sql ──parse (DataFusion's parser)──> AST ──`?` → `$n`──> LogicalPlan
//!        │
//!        ├─ query (SELECT, EXPLAIN, SHOW, VALUES...)      -> stream of batches
//!        ├─ INSERT / COPY                                 -> DataFusion, then refresh the table
//!        ├─ DELETE / UPDATE on a managed table            -> deltalake delete / update
//!        ├─ DDL (CREATE/DROP TABLE|VIEW|SCHEMA, CTAS...)  -> catalog + Delta, persisted
//!        ├─ CACHE TABLE / UNCACHE TABLE                   -> the table cache (see `cache`)
//!        └─ SET / RESET                                   -> the session's settings
//! ```
//!
//! Every statement is planned against a [`SessionContext`] built from
//! [`SessionSettings`], so the server can rebuild the exact context from a ticket.

use dashmap::DashMap;
use datafusion::physical_plan::ExecutionPlanProperties as _;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::alias::AliasGenerator;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ParamValues, ScalarValue, TableReference};
use datafusion::config::ConfigOptions;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::{FunctionRegistry, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    DdlStatement, DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, Statement as PlanStatement, Union, WriteOp,
};
use datafusion::optimizer::OptimizerConfig;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self, visit_expressions_mut};
use deltalake::DeltaTable;
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use futures::StreamExt;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::cache::{TableCache, is_cacheable};
use crate::catalog::{CATALOG, Catalog, DEFAULT_SCHEMA, ObjectKind, StoredObject, dir_url};
use crate::distributed::{self, FragmentInputs, ScansByReference, Stage};
use crate::error::{Error, Result};
use crate::managed::ManagedTable;
use crate::pipeline_store::{PipelineStore, SYSTEM_SCHEMA};
use crate::settings::SessionSettings;
use crate::sink::{DeltaSink, FileSink, Sink};
use crate::types::output_schema;
use datafusion::physical_plan::ExecutionPlan;

/// How the engine is set up; the server fills this from its configuration.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where tables and the catalog live.
    pub data_dir: PathBuf,
    /// DataFusion `target_partitions` (default: number of cores).
    pub target_partitions: Option<usize>,
    /// Rows per batch DataFusion produces.
    pub batch_size: usize,
    /// Memory pool limit in bytes for query execution (`None`: unbounded).
    pub memory_limit: Option<usize>,
    /// Bytes `CACHE TABLE` may hold in memory; 0 (the default) turns it off.
    pub cache_limit: u64,
}

impl EngineOptions {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            target_partitions: None,
            batch_size: 8192,
            memory_limit: None,
            cache_limit: 0,
        }
    }
}

/// Shared by all sessions: catalog, runtime (memory pool, object stores), defaults.
#[derive(Debug)]
pub struct Engine {
    catalog: Arc<Catalog>,
    runtime: Arc<RuntimeEnv>,
    base: SessionConfig,
    /// DDL statements run one at a time.
    ddl: Mutex<()>,
    pipelines: Arc<PipelineStore>,
    /// A built session state per distinct session settings (see [`Engine::statement`]).
    states: DashMap<String, StatementContext>,
}

/// At most this many distinct session settings keep a built state; others
/// build theirs per statement.
const MAX_KEPT_STATES: usize = 64;

/// A session's settings as the key of its DataFusion state: all of them, since
/// the state lists Contrail's too (`SHOW contrail.x`).
fn state_key(settings: &SessionSettings) -> String {
    let mut key = format!("{:?}\0{:?}", settings.catalog, settings.schema);
    for (k, v) in &settings.options {
        key.push('\0');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// What a statement is planned and run in: the DataFusion state of its
/// session's settings, built once and shared, not copied, by every statement
/// with those settings (copying one costs about what planning `SELECT 1` does:
/// DataFusion's function registries are hash maps). Nothing can change it: a
/// query's own start time (`now()`) is given to the optimizer beside it
/// ([`optimize`]); statements that need a state of their own (DDL, writes)
/// take a copy with [`StatementContext::session`].
#[derive(Clone)]
pub struct StatementContext(Arc<SharedState>);

struct SharedState {
    state: SessionState,
    /// What a query's operators run with, made once from `state`.
    task: Arc<TaskContext>,
}

impl StatementContext {
    fn new(mut state: SessionState) -> Self {
        // Physical planning hands scalar functions the options of the state's
        // execution properties (DataFusion's defaults where unset: a session's
        // time zone would not reach `to_unixtime`); a copy sets them when made
        // (`SessionContext::state`), this state once.
        let options = Arc::clone(state.config_options());
        state.execution_props_mut().mark_start_execution(options);
        let task = Arc::new(TaskContext::from(&state));
        Self(Arc::new(SharedState { state, task }))
    }

    /// The shared DataFusion state.
    pub fn state(&self) -> &SessionState {
        &self.0.state
    }

    /// A DataFusion context with a copy of the state, for a statement that may
    /// change it or runs through an API that takes a context.
    pub fn session(&self) -> SessionContext {
        SessionContext::new_with_state(self.0.state.clone())
    }
}

impl std::fmt::Debug for StatementContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementContext")
            .field("session_id", &self.0.state.session_id())
            .finish_non_exhaustive()
    }
}

/// What DataFusion's optimizer reads of a statement: the shared state's options
/// and functions, and the statement's own start time and alias generator (a
/// state's own are set when it is copied: `SessionContext::state`).
struct StatementConfig<'a> {
    state: &'a SessionState,
    started: chrono::DateTime<chrono::Utc>,
    aliases: Arc<AliasGenerator>,
}

impl OptimizerConfig for StatementConfig<'_> {
    fn query_execution_start_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        Some(self.started)
    }

    fn alias_generator(&self) -> &Arc<AliasGenerator> {
        &self.aliases
    }

    fn options(&self) -> Arc<ConfigOptions> {
        Arc::clone(self.state.config_options())
    }

    fn function_registry(&self) -> Option<&dyn FunctionRegistry> {
        Some(self.state)
    }
}

/// A query made ready to run: its one constant row, or its physical plan.
///
/// Its schema is what running it produces, and so what a client is promised:
/// the logical plan's schema can differ from the physical plan's (DataFusion
/// computes some types and nullability again when it plans physically: a
/// `CASE` of `Int32` and `Int64` branches, a `UNION` of `UInt32` and `Int16`,
/// a scalar subquery that finds no row), and a client told one type and sent
/// another decodes garbage.
enum Ready {
    Row(RecordBatch),
    Plan(Arc<dyn ExecutionPlan>),
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ready::Row(row) => write!(f, "Row({:?})", row.schema()),
            Ready::Plan(plan) => write!(f, "Plan({})", plan.name()),
        }
    }
}

impl Ready {
    /// Optimize and plan `plan` physically. A projection of literals over one
    /// empty row (`SELECT 1`, a connection pool's validation query) is its row
    /// before optimizing too, and the optimizer would leave it as it is: its ~40
    /// rules cost more than the rest of such a statement's planning.
    async fn make(context: &StatementContext, plan: &LogicalPlan) -> Result<Self> {
        if let Some(row) = crate::light::constant_row(plan) {
            return Ok(Self::Row(row));
        }
        let state = context.state();
        let plan = optimize(state, plan)?;
        Ok(match crate::light::constant_row(&plan) {
            Some(row) => Self::Row(row),
            None => Self::Plan(
                state
                    .query_planner()
                    .create_physical_plan(&plan, state)
                    .await
                    .map_err(not_found_or_plan)?,
            ),
        })
    }

    fn schema(&self) -> SchemaRef {
        match self {
            Ready::Row(row) => row.schema(),
            Ready::Plan(plan) => plan.schema(),
        }
    }

    fn run(self, context: &StatementContext) -> Result<SendableRecordBatchStream> {
        match self {
            Ready::Row(row) => Ok(one_batch_stream(row)),
            Ready::Plan(plan) => {
                datafusion::physical_plan::execute_stream(plan, Arc::clone(&context.0.task)).map_err(Error::plan)
            }
        }
    }
}

/// A query's [`Ready`] form, made once when it is planned (a query with
/// parameters still unbound is made ready when it runs), and its schema.
#[derive(Debug, Clone)]
pub(crate) struct Physical {
    schema: SchemaRef,
    /// Run at most once: a second run (a cloned [`Planned`]) plans again.
    ready: Arc<std::sync::Mutex<Option<Ready>>>,
}

impl Physical {
    fn new(ready: Ready) -> Self {
        Self {
            schema: ready.schema(),
            ready: Arc::new(std::sync::Mutex::new(Some(ready))),
        }
    }

    fn take(&self) -> Option<Ready> {
        match self.ready.lock() {
            Ok(mut ready) => ready.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

/// Run a query in its statement's context, as it was made ready when planned
/// (or made ready now), its batches cast to the result types the client sees.
async fn query(
    context: &StatementContext,
    plan: &LogicalPlan,
    physical: Option<&Physical>,
    view_types: bool,
) -> Result<Outcome> {
    let ready = match physical.and_then(Physical::take) {
        Some(ready) => ready,
        None => Ready::make(context, plan).await?,
    };
    Ok(Outcome::Rows(crate::types::map_output_stream(
        ready.run(context)?,
        view_types,
    )))
}

/// `SessionState::optimize` on a shared state, the statement starting now.
fn optimize(state: &SessionState, plan: &LogicalPlan) -> Result<LogicalPlan> {
    if let LogicalPlan::Explain(_) = plan {
        // EXPLAIN lists every rule's output: DataFusion's own path, on a copy
        // that starts now.
        let mut copy = state.clone();
        copy.execution_props_mut()
            .mark_start_execution(Arc::clone(state.config_options()));
        return copy.optimize(plan).map_err(Error::plan);
    }
    let config = StatementConfig {
        state,
        started: chrono::Utc::now(),
        aliases: Arc::new(AliasGenerator::new()),
    };
    let analyzed = state
        .analyzer()
        .execute_and_check(plan.clone(), state.config_options(), |_, _| {})
        .map_err(Error::plan)?;
    state
        .optimizer()
        .optimize(analyzed, &config, |_, _| {})
        .map_err(Error::plan)
}

/// A planned statement, ready to run. Planning has no side effects.
#[derive(Debug, Clone)]
pub struct Planned {
    pub(crate) kind: Kind,
    /// A query's physical form and schema, once made (see [`Ready`]).
    pub(crate) physical: Option<Physical>,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Query(LogicalPlan),
    Write {
        plan: LogicalPlan,
        target: Option<TableReference>,
    },
    Delete {
        target: TableReference,
        plan: LogicalPlan,
    },
    Update {
        target: TableReference,
        plan: LogicalPlan,
    },
    Ddl {
        ddl: DdlStatement,
        sql: String,
    },
    Set {
        key: String,
        value: String,
    },
    Reset {
        key: String,
    },
    /// `CACHE TABLE t` / `UNCACHE TABLE [IF EXISTS] t`.
    Cache {
        table: TableReference,
        cache: bool,
        if_exists: bool,
    },
}

/// What kind of work a statement is, for routing it inline or to a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Rows streamed to the client.
    Query,
    /// Rows written by a query: `INSERT ... SELECT`, `CREATE TABLE ... AS
    /// SELECT`, `COPY (...) TO`.
    Write,
    /// Everything else runs inline: settings, DDL, row-level `DELETE`/`UPDATE`.
    Inline,
}

/// A query cut into stages for workflow execution.
#[derive(Debug)]
pub struct FragmentedQuery {
    /// Stages in dependency order; the last one's fragments are the result.
    pub stages: Vec<Stage>,
    /// The result schema clients see.
    pub schema: SchemaRef,
    /// The settings fragments run with.
    pub settings: SessionSettings,
}

/// A write cut into stages: the query's, whose final fragments write to `sink`.
#[derive(Debug)]
pub struct FragmentedWrite {
    pub query: FragmentedQuery,
    pub sink: Sink,
}

/// What running a statement produced.
pub enum Outcome {
    /// A query's rows, streamed as they are produced.
    Rows(SendableRecordBatchStream),
    /// Rows affected by DML (`-1` when unknown); `0` for DDL.
    Count(i64),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Rows(s) => write!(f, "Rows({:?})", s.schema()),
            Outcome::Count(n) => write!(f, "Count({n})"),
        }
    }
}

impl Planned {
    /// Whether the statement returns rows (a query) rather than a count.
    pub fn is_query(&self) -> bool {
        matches!(self.kind, Kind::Query(_))
    }

    /// Whether the statement moves data a workflow can run (a query, or a write
    /// fed by a query), or always runs at once.
    pub fn shape(&self) -> Shape {
        match &self.kind {
            Kind::Query(_) => Shape::Query,
            Kind::Write { target: Some(_), .. }
            | Kind::Write {
                plan: LogicalPlan::Copy(_),
                ..
            } => Shape::Write,
            Kind::Ddl {
                ddl: DdlStatement::CreateMemoryTable(create),
                ..
            } if !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(_)) => Shape::Write,
            _ => Shape::Inline,
        }
    }

    /// The schema of the rows a query streams (after Contrail's type mapping),
    /// or of the one-column count result of any other statement. A query made
    /// ready (planned without unbound parameters) answers its physical plan's
    /// schema, which is what it sends; one with unbound parameters its logical
    /// plan's, the best known before the values are.
    pub fn schema(&self, settings: &SessionSettings) -> SchemaRef {
        match (&self.kind, &self.physical) {
            (Kind::Query(_), Some(physical)) => output_schema(&physical.schema, settings.view_types()),
            (Kind::Query(plan), None) => output_schema(plan.schema().inner(), settings.view_types()),
            _ => count_schema(),
        }
    }

    /// This statement without its physical plan (its schema kept): for a plan
    /// kept long, whose scans must see the tables as they are when it runs.
    pub fn without_physical_plan(self) -> Self {
        if let Some(physical) = &self.physical {
            let _ = physical.take();
        }
        self
    }

    /// Parameters the statement takes (`$1`, `$2`, ... or `?`), in order, with the
    /// types DataFusion inferred (`Null` when unknown).
    pub fn parameter_schema(&self) -> Result<SchemaRef> {
        let plan = match &self.kind {
            Kind::Query(p)
            | Kind::Write { plan: p, .. }
            | Kind::Delete { plan: p, .. }
            | Kind::Update { plan: p, .. } => p,
            _ => return Ok(Arc::new(Schema::empty())),
        };
        let fields = plan.get_parameter_fields().map_err(Error::plan)?;
        let mut named: Vec<(String, Option<arrow::datatypes::FieldRef>)> = fields.into_iter().collect();
        named.sort_by_key(|(name, _)| name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX));
        Ok(Arc::new(Schema::new(
            named
                .into_iter()
                .map(|(name, field)| {
                    let dt = field.map(|f| f.data_type().clone()).unwrap_or(DataType::Null);
                    Field::new(name, dt, true)
                })
                .collect::<Vec<_>>(),
        )))
    }

    /// Bind several rows of parameters to an `INSERT`: one statement, one
    /// commit, all rows or none. `None` when the statement is not an INSERT
    /// (the caller then runs it once per row).
    pub fn bind_rows(&self, rows: &[Vec<ScalarValue>]) -> Result<Option<Self>> {
        let Kind::Write {
            plan: LogicalPlan::Dml(dml),
            target,
        } = &self.kind
        else {
            return Ok(None);
        };
        if !matches!(dml.op, WriteOp::Insert(_)) || rows.is_empty() {
            return Ok(None);
        }
        let mut inputs = rows
            .iter()
            .map(|row| {
                Arc::unwrap_or_clone(dml.input.clone())
                    .with_param_values(ParamValues::from(row.clone()))
                    .map(Arc::new)
                    .map_err(Error::plan)
            })
            .collect::<Result<Vec<_>>>()?;
        // One union of every row (as `VALUES` would be), not a chain of
        // pairs: a batch of thousands of rows must not make a plan that deep.
        let input = match inputs.len() {
            1 => inputs.pop().map(Arc::unwrap_or_clone),
            _ => Some(LogicalPlan::Union(
                Union::try_new_with_loose_types(inputs).map_err(Error::plan)?,
            )),
        }
        .ok_or_else(|| Error::invalid("parameters", "no rows"))?;
        let insert = DmlStatement::new(
            dml.table_name.clone(),
            dml.target.clone(),
            dml.op.clone(),
            Arc::new(input),
        );
        Ok(Some(Self {
            kind: Kind::Write {
                plan: LogicalPlan::Dml(insert),
                target: target.clone(),
            },
            physical: None,
        }))
    }

    /// Bind positional parameter values. A query bound to values is made
    /// ready again by [`Engine::ready`].
    pub fn bind(self, values: Vec<ScalarValue>) -> Result<Self> {
        if values.is_empty() {
            return Ok(self);
        }
        let params = ParamValues::from(values);
        let bind = |p: LogicalPlan| p.with_param_values(params.clone()).map_err(Error::plan);
        let kind = match self.kind {
            Kind::Query(p) => Kind::Query(bind(p)?),
            Kind::Write { plan, target } => Kind::Write {
                plan: bind(plan)?,
                target,
            },
            Kind::Delete { target, plan } => Kind::Delete {
                target,
                plan: bind(plan)?,
            },
            Kind::Update { target, plan } => Kind::Update {
                target,
                plan: bind(plan)?,
            },
            other => {
                return Err(Error::invalid(
                    "parameters",
                    format!("parameter values given to a statement that takes none ({other:?})"),
                ));
            }
        };
        Ok(Self { kind, physical: None })
    }
}

/// Schema of the result of a statement that returns a count.
pub fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("count", DataType::Int64, false)]))
}

impl Engine {
    /// Open the data directory, load the catalog and replay views and external tables.
    pub async fn open(options: EngineOptions) -> Result<Arc<Self>> {
        let cache = Arc::new(TableCache::new(options.cache_limit));
        let catalog = Arc::new(Catalog::open(&options.data_dir, Arc::clone(&cache)).await?);
        // Files of writes killed before their commit: removed in the background.
        let sweeping = Arc::clone(&catalog);
        tokio::spawn(async move { sweeping.sweep_orphans(crate::orphans::GRACE).await });
        // No list-files cache: an external table over a folder must see files
        // added after its first scan.
        let mut rt = RuntimeEnvBuilder::new().with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default().with_list_files_cache_limit(0),
        );
        if let Some(limit) = options.memory_limit {
            rt = rt.with_memory_limit(limit, 1.0);
        }
        let runtime = Arc::new(rt.build().map_err(Error::plan)?);

        let mut base = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_batch_size(options.batch_size);
        if let Some(n) = options.target_partitions {
            base = base.with_target_partitions(n.max(1));
        }
        {
            let o = base.options_mut();
            // Plain Utf8 by default: many clients cannot read view types. The
            // output mapping in `types` covers what planning still produces.
            o.sql_parser.map_string_types_to_utf8view = false;
            o.execution.parquet.schema_force_view_types = false;
            // Snappy, as Delta Lake and Spark write by default, and cheaper to
            // decode on every scan. DataFusion's own default, zstd(3), made SF 1
            // lineitem's files 26% smaller (154 vs 209 MB) for 15% more server CPU
            // per bulk ingest (measured); a session can still
            // `SET datafusion.execution.parquet.compression = 'zstd(3)'`.
            o.execution.parquet.compression = Some("snappy".into());
            // Collect a join's build side once (broadcast it to every probe
            // partition) up to 64 MiB or 2M rows; DataFusion's defaults, 1 MiB and
            // 128K rows, hash-repartition both sides of any larger join. At SF 1
            // inline: TPC-H Q7 301 -> 208 ms, Q18 755 -> 408, all 22 queries
            // 4.80 -> 4.24 s, peak RSS no higher (725 vs 695 MB). Between workflow
            // fragments a partitioned join spools both of its sides, a collected one
            // only its build side: Q5 as a workflow 1.24 -> 0.36 s. A session can
            // `SET` DataFusion's own values back.
            o.optimizer.hash_join_single_partition_threshold = 64 << 20;
            o.optimizer.hash_join_single_partition_threshold_rows = 2_000_000;
            // Sessions start in UTC, as Flight SQL clients and their conformance
            // tests expect: `TIMESTAMP WITH TIME ZONE` values and TIMESTAMPTZ
            // columns come back zoned (DataFusion's default leaves them zone-less).
            o.execution.time_zone = Some("UTC".into());
        }

        let pipelines = Arc::new(PipelineStore::open(catalog.data_dir())?);
        let system = pipelines
            .tables()
            .into_iter()
            .chain([("cached_tables", cache.system_table())]);
        catalog.register_builtin(SYSTEM_SCHEMA, system)?;
        let engine = Arc::new(Self {
            catalog,
            runtime,
            base,
            ddl: Mutex::new(()),
            pipelines,
            states: DashMap::new(),
        });
        cache.set_engine(Arc::downgrade(&engine));
        engine.replay().await?;
        Ok(engine)
    }

    /// Load the rows of every table marked cached (at start-up: `CACHE TABLE`s of
    /// an earlier run). Scans read the tables themselves until their rows are in.
    pub async fn load_cached_tables(&self) {
        for key in self.catalog.cached_tables().await {
            if let Err(e) = self.load_cached(&key).await {
                tracing::warn!(table = %key, error = %e, "could not cache the table; its scans read the table");
            }
        }
    }

    /// Load (or reload, if it changed) the cached rows of `schema.table`.
    pub(crate) async fn load_cached(&self, key: &str) -> Result<u64> {
        let (schema, table) = key.split_once('.').ok_or_else(|| Error::NotFound {
            kind: "table",
            name: key.to_string(),
        })?;
        let provider = self
            .catalog
            .table_itself(schema, table)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "table",
                name: key.to_string(),
            })?;
        let ctx = self.context(&SessionSettings::default())?;
        self.catalog.cache().load(key, provider, &ctx).await
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The pipelines' definitions and run records.
    pub fn pipelines(&self) -> &Arc<PipelineStore> {
        &self.pipelines
    }

    /// See what other processes created or dropped since this one started (a
    /// worker planning a pipeline run over tables made after it started).
    pub async fn refresh_catalog(&self) -> Result<()> {
        let _guard = self.ddl.lock().await;
        let new = self.catalog.refresh().await?;
        self.replay_objects(new).await;
        Ok(())
    }

    /// What a statement of a session with `settings` is planned and run in.
    ///
    /// Each distinct set of settings builds its DataFusion state once (filling
    /// DataFusion's function registries costs about as much as planning a short
    /// query); the statements of every session with those settings share it.
    pub fn statement(&self, settings: &SessionSettings) -> Result<StatementContext> {
        let key = state_key(settings);
        if let Some(kept) = self.states.get(&key) {
            return Ok(kept.clone());
        }
        let context = StatementContext::new(self.state_with(self.session_config(settings)?));
        if self.states.len() < MAX_KEPT_STATES {
            self.states.insert(key, context.clone());
        }
        Ok(context)
    }

    /// A DataFusion context of its own for `settings` over the shared catalog and
    /// runtime: a copy of the kept state, so nothing one statement leaves in its
    /// context reaches another.
    pub fn context(&self, settings: &SessionSettings) -> Result<SessionContext> {
        Ok(self.statement(settings)?.session())
    }

    fn context_with(&self, config: SessionConfig) -> SessionContext {
        SessionContext::new_with_state(self.state_with(config))
    }

    fn state_with(&self, config: SessionConfig) -> SessionState {
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_catalog_list(self.catalog.catalog_list())
            .with_default_features()
            // Plans deltalake's own nodes (write metrics, delete/update scans).
            .with_query_planner(DeltaPlanner::new());
        // Writes' checked casts (also how workers decode them in fragment plans).
        builder
            .scalar_functions()
            .get_or_insert_with(Vec::new)
            .push(crate::exact::exact_cast_udf());
        builder.build()
    }

    /// Cut a planned query into stages of fragments for a workflow (see [`distributed`]).
    ///
    /// The returned settings pin the partitioning the plan was cut with, so every
    /// worker plans its scans the same way.
    ///
    /// [`distributed`]: crate::distributed
    pub async fn plan_fragments(&self, settings: &SessionSettings, planned: &Planned) -> Result<FragmentedQuery> {
        let Kind::Query(plan) = &planned.kind else {
            return Err(Error::unsupported(
                "workflow execution of statements other than queries",
            ));
        };
        self.fragments_of(settings, plan, false).await
    }

    /// Cut a write (`INSERT INTO <managed table> SELECT ...`, `CREATE TABLE ... AS
    /// SELECT ...`, `COPY (...) TO '<local path>' STORED AS PARQUET`) into the
    /// stages of its query and the sink its final fragments write to. `None`: not
    /// a write a workflow does (the target is not a managed table; `IF NOT EXISTS`
    /// and it exists): run it inline.
    pub async fn plan_write_fragments(
        &self,
        settings: &SessionSettings,
        planned: &Planned,
    ) -> Result<Option<FragmentedWrite>> {
        let ctx = self.context(settings)?;
        let (input, sink, single_output) = match &planned.kind {
            Kind::Write {
                plan: LogicalPlan::Copy(copy),
                target: None,
            } => {
                let sink = file_sink(copy)?;
                let single = sink.single_file;
                (copy.input.as_ref().clone(), Sink::Files(sink), single)
            }
            Kind::Write {
                plan: LogicalPlan::Dml(dml),
                target: Some(target),
            } => {
                if !matches!(dml.op, WriteOp::Insert(datafusion::logical_expr::dml::InsertOp::Append)) {
                    return Err(Error::unsupported(format!("{} as a workflow", dml.op)));
                }
                let Some(managed) = self.managed_for(&ctx, target).await? else {
                    return Ok(None); // views, external tables: inline
                };
                let sink = append_sink(self.resolve(&ctx, target)?, &managed)?;
                (dml.input.as_ref().clone(), Sink::Delta(sink), false)
            }
            Kind::Ddl {
                ddl: DdlStatement::CreateMemoryTable(create),
                ..
            } => {
                if create.temporary {
                    return Err(Error::unsupported("TEMPORARY tables"));
                }
                if !create.column_defaults.is_empty() {
                    return Err(Error::unsupported("column DEFAULT values"));
                }
                let (schema_name, table) = self.resolve(&ctx, &create.name)?;
                if self.catalog.schema_provider(&schema_name)?.table_exist(&table) {
                    if create.if_not_exists {
                        return Ok(None);
                    }
                    if create.or_replace {
                        return Err(Error::unsupported("CREATE OR REPLACE TABLE ... AS as a workflow"));
                    }
                    return Err(Error::AlreadyExists {
                        kind: "table",
                        name: format!("{schema_name}.{table}"),
                    });
                }
                let url = dir_url(&self.catalog.table_dir(&schema_name, &table)?)?;
                let input = strip_view_types(create.input.as_ref().clone())?;
                let input = crate::exact::storable(input, &format!("{schema_name}.{table}"))?;
                let schema = input.schema().as_arrow().clone();
                let sink = DeltaSink::new((schema_name, table), url, &schema, vec![], true)?;
                (input, Sink::Delta(sink), false)
            }
            _ => return Err(Error::unsupported("this statement as a workflow write")),
        };
        let query = self.fragments_of(settings, &input, single_output).await?;
        Ok(Some(FragmentedWrite { query, sink }))
    }

    /// After a write workflow committed: show the new data (and a new table) to
    /// this server's statements.
    pub async fn written(&self, sink: &Sink) -> Result<()> {
        let Sink::Delta(sink) = sink else {
            return Ok(()); // files: nothing cached
        };
        match self.catalog.managed(&sink.schema_name, &sink.table) {
            Some(managed) => managed.refresh().await,
            None => {
                let managed = ManagedTable::open(sink.name(), sink.url.clone(), self.catalog.version_handle()).await?;
                self.catalog
                    .register_managed(&sink.schema_name, &sink.table, Arc::new(managed))
            }
        }
    }

    /// `single_output`: the last stage is one fragment (a single output file).
    async fn fragments_of(
        &self,
        settings: &SessionSettings,
        plan: &LogicalPlan,
        single_output: bool,
    ) -> Result<FragmentedQuery> {
        let mut config = self
            .session_config(settings)?
            .with_extension(Arc::new(ScansByReference));
        // A hash join's dynamic filter waits until every partition of the join has
        // built its side: with each partition in its own fragment (another process)
        // that never happens, and the fragments would wait forever.
        config.options_mut().optimizer.enable_join_dynamic_filter_pushdown = false;
        // DataFusion's file scans let an idle partition steal the files (or byte
        // ranges) of its siblings. A fragment runs one partition alone, with no
        // sibling to share with, so it would read every file of the scan: rows
        // came back once per fragment (measured). Each partition must read only its
        // own file group (whole files or byte ranges of one).
        config.options_mut().execution.enable_file_stream_work_stealing = false;
        let mut pinned = settings.clone();
        for key in [
            "optimizer.enable_join_dynamic_filter_pushdown",
            "execution.enable_file_stream_work_stealing",
        ] {
            pinned.options.insert(format!("datafusion.{key}"), "false".to_string());
        }
        pinned.options.insert(
            "datafusion.execution.target_partitions".to_string(),
            config.target_partitions().to_string(),
        );
        pinned.options.insert(
            "datafusion.execution.batch_size".to_string(),
            config.batch_size().to_string(),
        );
        let ctx = self.context_with(config);
        let mut physical = ctx
            .state()
            .create_physical_plan(plan)
            .await
            .map_err(not_found_or_plan)?;
        if single_output && physical.output_partitioning().partition_count() > 1 {
            physical = Arc::new(CoalescePartitionsExec::new(physical));
        }
        let schema = output_schema(&physical.schema(), settings.view_types());
        let stages = distributed::cut(physical)?;
        Ok(FragmentedQuery {
            stages,
            schema,
            settings: pinned,
        })
    }

    /// Bytes of managed table data a planned statement scans (0 for anything else).
    /// Cheap: reads the Delta snapshots' file sizes, plans nothing.
    pub fn scanned_bytes(&self, settings: &SessionSettings, planned: &Planned) -> u64 {
        let plan = match &planned.kind {
            Kind::Query(plan) | Kind::Write { plan, .. } => plan,
            Kind::Ddl {
                ddl: DdlStatement::CreateMemoryTable(create),
                ..
            } => create.input.as_ref(),
            _ => return 0,
        };
        let catalog = settings.catalog.as_deref().unwrap_or(CATALOG);
        let schema = settings.schema.as_deref().unwrap_or(DEFAULT_SCHEMA);
        let mut total = 0u64;
        let _ = plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name = scan.table_name.clone().resolve(catalog, schema);
                // A cached table is read from memory, inline: its files do not count.
                let cached = self.catalog.cache().holds(&format!("{}.{}", name.schema, name.table));
                if let Some(table) = self.catalog.managed(&name.schema, &name.table).filter(|_| !cached) {
                    total = total.saturating_add(table.total_bytes());
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        total
    }

    /// The task context a fragment runs in: `settings` (as pinned by
    /// [`Engine::plan_fragments`]) plus where its inputs are.
    pub fn fragment_context(&self, settings: &SessionSettings, inputs: FragmentInputs) -> Result<Arc<TaskContext>> {
        let config = self.session_config(settings)?.with_extension(Arc::new(inputs));
        Ok(self.context_with(config).task_ctx())
    }

    fn session_config(&self, settings: &SessionSettings) -> Result<SessionConfig> {
        let mut config = self.base.clone();
        for (key, value) in &settings.options {
            if key.starts_with("datafusion.") {
                config.options_mut().set(key, value).map_err(Error::plan)?;
            }
        }
        config
            .options_mut()
            .extensions
            .insert(crate::settings::ContrailOptions::of(settings));
        if settings.catalog.is_some() || settings.schema.is_some() {
            let catalog = settings.catalog.clone().unwrap_or_else(|| CATALOG.to_string());
            let schema = settings.schema.clone().unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
            config = config.with_default_catalog_and_schema(catalog, schema);
        }
        Ok(config)
    }

    /// Refuse settings whose current catalog or schema does not exist (NOT
    /// FOUND), so `SET schema = 'typo'` fails at once, not at the next query.
    pub fn check_namespace(&self, settings: &SessionSettings) -> Result<()> {
        if let Some(catalog) = settings.catalog.as_deref()
            && catalog != CATALOG
        {
            return Err(Error::NotFound {
                kind: "catalog",
                name: catalog.to_string(),
            });
        }
        if let Some(schema) = settings.schema.as_deref()
            && self.catalog.schema_provider(schema).is_err()
        {
            return Err(Error::NotFound {
                kind: "schema",
                name: schema.to_string(),
            });
        }
        Ok(())
    }

    /// Parse and plan one statement. No side effects.
    pub async fn plan(&self, settings: &SessionSettings, sql: &str) -> Result<Planned> {
        self.plan_with(&self.statement(settings)?, sql).await
    }

    /// [`Engine::plan`] in a context from [`Engine::statement`], which
    /// [`Engine::execute_in`] then runs it in.
    pub async fn plan_with(&self, context: &StatementContext, sql: &str) -> Result<Planned> {
        let state = context.state();
        let dialect = state.config().options().sql_parser.dialect;
        // sqlparser's CACHE TABLE takes anything after the name for a query, `;` too.
        let sql = sql.trim_end().trim_end_matches(';');
        crate::limits::check(sql)?;
        let mut statement = state.sql_to_statement(sql, &dialect).map_err(Error::plan)?;
        check_width(&statement)?;
        number_question_marks(&mut statement);
        check_supported(&statement)?;
        if let Some(kind) = cache_statement(&statement)? {
            return Ok(Planned { kind, physical: None });
        }
        let plan = state.statement_to_plan(statement).await.map_err(not_found_or_plan)?;
        let kind = match plan {
            LogicalPlan::Ddl(ddl) => Kind::Ddl {
                ddl,
                sql: sql.trim().trim_end_matches(';').to_string(),
            },
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Delete,
                ref table_name,
                ..
            }) => Kind::Delete {
                target: table_name.clone(),
                plan,
            },
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Update,
                ref table_name,
                ..
            }) => Kind::Update {
                target: table_name.clone(),
                plan,
            },
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Insert(_),
                ref table_name,
                ..
            }) => Kind::Write {
                target: Some(table_name.clone()),
                // A value that does not fit its column's type is refused, not rounded.
                plan: crate::exact::check_casts(plan)?,
            },
            LogicalPlan::Dml(DmlStatement { ref op, .. }) => {
                return Err(Error::unsupported(format!("{op} statements")));
            }
            LogicalPlan::Copy(_) => Kind::Write { plan, target: None },
            LogicalPlan::Statement(PlanStatement::SetVariable(set)) => Kind::Set {
                key: set.variable,
                value: set.value,
            },
            LogicalPlan::Statement(PlanStatement::ResetVariable(reset)) => Kind::Reset { key: reset.variable },
            LogicalPlan::Statement(PlanStatement::TransactionStart(_) | PlanStatement::TransactionEnd(_)) => {
                return Err(Error::unsupported(
                    "transactions: every statement commits atomically on its own",
                ));
            }
            LogicalPlan::Statement(s) => {
                return Err(Error::unsupported(format!(
                    "SQL-level {} (use the Flight SQL prepared statement API)",
                    s.name()
                )));
            }
            query => Kind::Query(query),
        };
        self.ready(context, Planned { kind, physical: None }).await
    }

    /// `planned`, a query among them made ready to run (see [`Ready`]) unless
    /// it is already, or still has parameters to bind: what [`Planned::schema`]
    /// then says is what the query sends. Call it after [`Planned::bind`].
    pub async fn ready(&self, context: &StatementContext, planned: Planned) -> Result<Planned> {
        let Planned { kind, physical } = planned;
        let physical = match (&kind, physical) {
            (_, Some(physical)) => Some(physical),
            (Kind::Query(plan), None) if plan.get_parameter_fields().map_err(Error::plan)?.is_empty() => {
                Some(Physical::new(Ready::make(context, plan).await?))
            }
            (_, None) => None,
        };
        Ok(Planned { kind, physical })
    }

    /// Run a planned statement. `settings` is updated by `SET`/`RESET`.
    ///
    /// Call this on the runtime that should do the CPU work: DataFusion spawns its
    /// operators' tasks on the current runtime.
    pub async fn execute(&self, settings: &mut SessionSettings, planned: Planned) -> Result<Outcome> {
        let context = self.statement(settings)?;
        self.execute_in(&context, settings, planned).await
    }

    /// [`Engine::execute`] in the context the statement was planned in
    /// (see [`Engine::plan_with`]); `context` must come from `settings`.
    pub async fn execute_in(
        &self,
        context: &StatementContext,
        settings: &mut SessionSettings,
        planned: Planned,
    ) -> Result<Outcome> {
        match planned.kind {
            Kind::Query(plan) => query(context, &plan, planned.physical.as_ref(), settings.view_types()).await,
            Kind::Write { plan, target } => {
                let ctx = &context.session();
                let count = run_count(ctx, plan).await?;
                if let Some(target) = target {
                    if let Some(managed) = self.managed_for(ctx, &target).await? {
                        committed(&target.to_string(), managed.refresh().await);
                    }
                }
                Ok(Outcome::Count(count))
            }
            Kind::Delete { target, plan } => self.delete(&context.session(), &target, plan).await,
            Kind::Update { target, plan } => self.update(&context.session(), &target, plan).await,
            Kind::Ddl { ddl, sql } => {
                let _guard = self.ddl.lock().await;
                self.ddl(&context.session(), ddl, sql).await.map(Outcome::Count)
            }
            Kind::Set { key, value } => {
                let mut next = settings.clone();
                next.set(&key, &value)?;
                self.check_namespace(&next)?;
                self.statement(&next)?; // validate DataFusion keys and values
                *settings = next;
                Ok(Outcome::Count(0))
            }
            Kind::Reset { key } => {
                settings.reset(&key);
                Ok(Outcome::Count(0))
            }
            Kind::Cache {
                table,
                cache,
                if_exists,
            } => self
                .cache_table(&context.session(), &table, cache, if_exists)
                .await
                .map(Outcome::Count),
        }
    }

    /// `CACHE TABLE`: load the table's rows, and keep them loaded across
    /// restarts; returns the rows cached. `UNCACHE TABLE`: let them go.
    async fn cache_table(
        &self,
        ctx: &SessionContext,
        name: &TableReference,
        cache: bool,
        if_exists: bool,
    ) -> Result<i64> {
        let not_found = || Error::NotFound {
            kind: "table",
            name: name.to_string(),
        };
        let (schema, table) = match self.resolve(ctx, name) {
            Ok(found) => found,
            Err(Error::NotFound { .. }) if if_exists => return Ok(0),
            Err(e) => return Err(e),
        };
        let Some(provider) = self.catalog.table_itself(&schema, &table).await? else {
            return if if_exists { Ok(0) } else { Err(not_found()) };
        };
        if !cache {
            self.catalog.set_cached(&schema, &table, false).await?;
            return Ok(0);
        }
        if !self.catalog.cache().is_on() {
            return Err(Error::unsupported(
                "CACHE TABLE with the table cache off (--cache-max-bytes 0)",
            ));
        }
        let key = format!("{schema}.{table}");
        if !is_cacheable(provider.as_ref()) {
            return Err(Error::invalid(
                "CACHE TABLE",
                format!("'{key}' is a view or a system table: cache the tables it reads"),
            ));
        }
        self.catalog.set_cached(&schema, &table, true).await?;
        match self.catalog.cache().load(&key, provider, ctx).await {
            Ok(rows) => Ok(i64::try_from(rows).unwrap_or(i64::MAX)),
            Err(e) => {
                // Nothing half-cached stays behind.
                self.catalog.set_cached(&schema, &table, false).await?;
                Err(e)
            }
        }
    }

    /// Plan and run in one step (tests, start-up, sample data).
    pub async fn sql(&self, settings: &mut SessionSettings, sql: &str) -> Result<Outcome> {
        let planned = self.plan(settings, sql).await?;
        self.execute(settings, planned).await
    }

    /// Append record batches to a managed table in one atomic commit, creating
    /// it (from the batches' schema) if `create` and it does not exist, or
    /// replacing its contents if `replace`.
    pub async fn ingest(
        &self,
        settings: &SessionSettings,
        target: IngestTarget,
        schema: SchemaRef,
        batches: SendableRecordBatchStream,
    ) -> Result<i64> {
        let ctx = self.context(settings)?;
        let table_ref = TableReference::full(
            target.catalog.clone().unwrap_or_else(|| CATALOG.to_string()),
            target
                .schema
                .clone()
                .or_else(|| settings.schema.clone())
                .unwrap_or_else(|| DEFAULT_SCHEMA.to_string()),
            target.table.clone(),
        );
        let (schema_name, table_name) = self.resolve(&ctx, &table_ref)?;
        let existing = self.catalog.managed(&schema_name, &table_name);
        let exists_other = existing.is_none() && self.catalog.schema_provider(&schema_name)?.table_exist(&table_name);
        if exists_other {
            return Err(Error::unsupported(format!(
                "ingest into '{schema_name}.{table_name}': only managed tables accept bulk ingest"
            )));
        }
        let input = one_shot_plan(schema.clone(), batches)?;
        match existing {
            Some(managed) => {
                if target.fail_if_exists {
                    return Err(Error::AlreadyExists {
                        kind: "table",
                        name: format!("{schema_name}.{table_name}"),
                    });
                }
                if target.replace {
                    // New contents *and* the new data's schema, in one commit.
                    let input =
                        crate::exact::storable(strip_view_types(input)?, &format!("{schema_name}.{table_name}"))?;
                    let table = managed
                        .delta()
                        .write(Vec::<RecordBatch>::new())
                        .with_input_plan(input)
                        .with_session_state(Arc::new(ctx.state()))
                        .with_save_mode(SaveMode::Overwrite)
                        .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
                        .await
                        .map_err(|e| Error::storage(&table_name, e))?;
                    let rows = added_rows(&table).await;
                    committed(&table_name, managed.install(table).await);
                    return Ok(rows);
                }
                let sink = append_sink((schema_name, table_name), &managed)?;
                // Data that does not fit the table's columns: the table exists,
                // not as this data needs it (ADBC: ALREADY_EXISTS).
                if let Err(Error::InvalidInput { message, .. }) =
                    crate::ingest::conform_to_table(input.clone(), sink.arrow_schema()?.as_ref(), &sink.name())
                {
                    return Err(Error::TableMismatch {
                        table: sink.name(),
                        message,
                    });
                }
                self.write_ingest(&ctx, input, sink).await
            }
            None => {
                if !target.create {
                    return Err(Error::NotFound {
                        kind: "table",
                        name: format!("{schema_name}.{table_name}"),
                    });
                }
                let _guard = self.ddl.lock().await;
                if self.catalog.schema_provider(&schema_name)?.table_exist(&table_name) {
                    // Created by another statement since we looked.
                    return Err(Error::AlreadyExists {
                        kind: "table",
                        name: format!("{schema_name}.{table_name}"),
                    });
                }
                let name = format!("{schema_name}.{table_name}");
                let table_schema = crate::ingest::table_schema_for(input.schema().as_arrow(), &name)?;
                let url = dir_url(&self.catalog.table_dir(&schema_name, &table_name)?)?;
                let sink = DeltaSink::new((schema_name, table_name), url, &table_schema, vec![], true)?;
                self.write_ingest(&ctx, input, sink).await
            }
        }
    }

    /// Ingested rows into `sink`: conformed to the table's columns, written by
    /// every partition at once, made visible by one commit (which creates the
    /// table when `sink.create`). Nothing is visible if any of it fails.
    async fn write_ingest(&self, ctx: &SessionContext, input: LogicalPlan, sink: DeltaSink) -> Result<i64> {
        let plan = crate::ingest::conform_to_table(input, sink.arrow_schema()?.as_ref(), &sink.name())?;
        let mut physical = ctx.state().create_physical_plan(&plan).await.map_err(Error::plan)?;
        // The input is one stream; deal its batches round-robin to one writer per
        // target partition. (A repartition in the logical plan is dropped by the
        // physical optimizer when nothing above it computes anything.)
        let partitions = ctx.copied_config().target_partitions();
        if physical.output_partitioning().partition_count() < partitions {
            physical = Arc::new(
                datafusion::physical_plan::repartition::RepartitionExec::try_new(
                    physical,
                    datafusion::physical_plan::Partitioning::RoundRobinBatch(partitions),
                )
                .map_err(Error::plan)?,
            );
        }
        let written = crate::sink::write_partitions(&sink, physical, ctx.task_ctx()).await?;
        let statement = uuid::Uuid::new_v4().simple().to_string();
        // A failed commit leaves the files unreferenced; they are not deleted here,
        // as a commit error can come after the log entry was written.
        crate::sink::commit(&sink, &statement, written.adds).await?;
        info!(table = %sink.name(), rows = written.rows, "ingested");
        committed(&sink.name(), self.written(&Sink::Delta(sink)).await);
        Ok(i64::try_from(written.rows).unwrap_or(i64::MAX))
    }

    // ---- DDL ----

    /// Run DDL; returns rows written (CTAS), else 0.
    async fn ddl(&self, ctx: &SessionContext, ddl: DdlStatement, sql: String) -> Result<i64> {
        if let DdlStatement::CreateMemoryTable(create) = ddl {
            return self.create_table(ctx, create).await;
        }
        self.other_ddl(ctx, ddl, sql).await.map(|()| 0)
    }

    async fn create_table(
        &self,
        ctx: &SessionContext,
        create: datafusion::logical_expr::CreateMemoryTable,
    ) -> Result<i64> {
        if create.temporary {
            return Err(Error::unsupported("TEMPORARY tables"));
        }
        if !create.column_defaults.is_empty() {
            return Err(Error::unsupported("column DEFAULT values"));
        }
        let (schema, table) = self.resolve(ctx, &create.name)?;
        let provider = self.catalog.schema_provider(&schema)?;
        if provider.table_exist(&table) {
            if create.if_not_exists {
                return Ok(0);
            }
            if !create.or_replace {
                return Err(Error::AlreadyExists {
                    kind: "table",
                    name: format!("{schema}.{table}"),
                });
            }
        }
        let input = Arc::unwrap_or_clone(create.input);
        let rows = self
            .create_managed(ctx, &schema, &table, input, create.or_replace)
            .await?;
        Ok(rows.max(0))
    }

    async fn other_ddl(&self, ctx: &SessionContext, ddl: DdlStatement, sql: String) -> Result<()> {
        match ddl {
            DdlStatement::CreateMemoryTable(create) => self.create_table(ctx, create).await.map(|_| ()),
            DdlStatement::CreateExternalTable(ext) => {
                let (schema, table) = self.resolve(ctx, &ext.name)?;
                let exists = self.catalog.schema_provider(&schema)?.table_exist(&table);
                if exists && ext.if_not_exists {
                    return Ok(());
                }
                if exists && !ext.or_replace {
                    return Err(Error::AlreadyExists {
                        kind: "table",
                        name: format!("{schema}.{table}"),
                    });
                }
                if exists {
                    self.catalog.drop_table(&schema, &table).await?;
                }
                ctx.execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateExternalTable(ext)))
                    .await
                    .map_err(Error::plan)?;
                self.catalog
                    .add_object(StoredObject {
                        schema,
                        name: table,
                        kind: ObjectKind::External,
                        sql,
                    })
                    .await
            }
            DdlStatement::CreateView(view) => {
                let (schema, table) = self.resolve(ctx, &view.name)?;
                let exists = self.catalog.schema_provider(&schema)?.table_exist(&table);
                if exists && !view.or_replace {
                    return Err(Error::AlreadyExists {
                        kind: "view",
                        name: format!("{schema}.{table}"),
                    });
                }
                if exists && self.catalog.managed(&schema, &table).is_some() {
                    return Err(Error::AlreadyExists {
                        kind: "table",
                        name: format!("{schema}.{table}"),
                    });
                }
                ctx.execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateView(view)))
                    .await
                    .map_err(Error::plan)?;
                self.catalog
                    .add_object(StoredObject {
                        schema,
                        name: table,
                        kind: ObjectKind::View,
                        sql,
                    })
                    .await
            }
            DdlStatement::CreateCatalogSchema(create) => {
                let name = match create.schema_name.split_once('.') {
                    Some((catalog, schema)) if catalog == CATALOG => schema.to_string(),
                    // `"."`, `".."`, `"../x"`: not qualified by a catalog, path-like.
                    Some(("", _)) => {
                        crate::catalog::check_storage_name("schema", &create.schema_name)?;
                        create.schema_name.clone()
                    }
                    Some((catalog, _)) => {
                        return Err(Error::NotFound {
                            kind: "catalog",
                            name: catalog.to_string(),
                        });
                    }
                    None => create.schema_name.clone(),
                };
                self.catalog
                    .create_schema(&name, create.if_not_exists)
                    .await
                    .map(|_| ())
            }
            DdlStatement::DropCatalogSchema(drop) => {
                let name = drop.name.schema_name().to_string();
                self.catalog
                    .drop_schema(&name, drop.if_exists, drop.cascade)
                    .await
                    .map(|_| ())
            }
            DdlStatement::DropTable(drop) => self.drop_object(ctx, &drop.name, drop.if_exists, false).await,
            DdlStatement::DropView(drop) => self.drop_object(ctx, &drop.name, drop.if_exists, true).await,
            DdlStatement::CreateCatalog(_) => Err(Error::unsupported(
                "CREATE DATABASE/CATALOG: Contrail serves one catalog, 'contrail'",
            )),
            DdlStatement::CreateIndex(_) => Err(Error::unsupported("CREATE INDEX")),
            DdlStatement::CreateFunction(_) | DdlStatement::DropFunction(_) => {
                Err(Error::unsupported("user-defined SQL functions"))
            }
        }
    }

    async fn drop_object(
        &self,
        ctx: &SessionContext,
        name: &TableReference,
        if_exists: bool,
        view: bool,
    ) -> Result<()> {
        let (schema, table) = match self.resolve(ctx, name) {
            Ok(r) => r,
            Err(Error::NotFound { .. }) if if_exists => return Ok(()),
            Err(e) => return Err(e),
        };
        let kind = if view { "view" } else { "table" };
        let exists = self.catalog.schema_provider(&schema)?.table_exist(&table);
        if !exists {
            return if if_exists {
                Ok(())
            } else {
                Err(Error::NotFound {
                    kind,
                    name: format!("{schema}.{table}"),
                })
            };
        }
        let is_view = self
            .catalog
            .stored(&schema, &table)
            .await
            .is_some_and(|o| o.kind == ObjectKind::View);
        if view != is_view {
            return Err(Error::invalid(
                "DROP",
                format!(
                    "'{schema}.{table}' is a {}; use DROP {}",
                    if is_view { "view" } else { "table" },
                    if is_view { "VIEW" } else { "TABLE" }
                ),
            ));
        }
        self.catalog.drop_table(&schema, &table).await
    }

    /// Create a managed Delta table from a plan's output (an empty relation for
    /// `CREATE TABLE (...)`), in one commit. Returns rows written.
    async fn create_managed(
        &self,
        ctx: &SessionContext,
        schema: &str,
        table: &str,
        input: LogicalPlan,
        replace: bool,
    ) -> Result<i64> {
        let dir = self.catalog.table_dir(schema, table)?;
        let exists = self.catalog.managed(schema, table);
        if replace && exists.is_none() && self.catalog.schema_provider(schema)?.table_exist(table) {
            // Replacing a view or external table by a managed table.
            self.catalog.drop_table(schema, table).await?;
        }
        tokio::fs::create_dir_all(&dir).await.map_err(|e| Error::CatalogIo {
            path: dir.display().to_string(),
            source: e,
        })?;
        let url = dir_url(&dir)?;
        let delta = crate::sink::open_or_new(&url)
            .await
            .map_err(|e| Error::storage(table, e))?;
        // A table created here lands as the log's version 0 or not at all: the
        // loser of two concurrent creates gets ALREADY_EXISTS.
        let creating = delta.version().is_none();
        let properties = if creating {
            crate::sink::creating(CommitProperties::default())
        } else {
            CommitProperties::default()
        };
        let input = crate::exact::storable(strip_view_types(input)?, &format!("{schema}.{table}"))?;
        let written = delta
            .write(Vec::<RecordBatch>::new())
            .with_commit_properties(properties)
            .with_input_plan(input)
            .with_session_state(Arc::new(ctx.state()))
            .with_table_name(table)
            .with_save_mode(if replace {
                SaveMode::Overwrite
            } else {
                SaveMode::ErrorIfExists
            })
            .with_schema_mode(if replace {
                deltalake::operations::write::SchemaMode::Overwrite
            } else {
                deltalake::operations::write::SchemaMode::Merge
            })
            .await;
        let written = match written {
            Ok(written) => written,
            Err(e) if creating && !replace && crate::sink::has_log(&url) => {
                debug!(%schema, %table, error = %e, "create lost to a concurrent create");
                return Err(Error::AlreadyExists {
                    kind: "table",
                    name: format!("{schema}.{table}"),
                });
            }
            Err(e) => return Err(Error::storage(table, e)),
        };
        let rows = added_rows(&written).await;
        match exists {
            Some(managed) => committed(&format!("{schema}.{table}"), managed.install(written).await),
            None => {
                let managed =
                    ManagedTable::from_table(format!("{schema}.{table}"), url, written, self.catalog.version_handle())
                        .await?;
                self.catalog.register_managed(schema, table, Arc::new(managed))?;
            }
        }
        info!(%schema, %table, rows, "created table");
        Ok(rows)
    }

    // ---- DML on managed tables ----

    async fn delete(&self, ctx: &SessionContext, target: &TableReference, plan: LogicalPlan) -> Result<Outcome> {
        let managed = self.require_managed(ctx, target, "DELETE").await?;
        let predicate = match dml_predicate(&plan).map(|p| simplify(&plan, p)).transpose()? {
            Some(p) => match constant_truth(&p) {
                Some(true) => None,
                Some(false) => return Ok(Outcome::Count(0)), // WHERE false / NULL: nothing matches
                None => Some(p),
            },
            None => None,
        };
        let mut builder = managed.delta().delete().with_session_state(Arc::new(ctx.state()));
        if let Some(p) = predicate {
            builder = builder.with_predicate(unqualify(p)?);
        }
        let (table, metrics) = builder.await.map_err(|e| Error::storage(target.table(), e))?;
        committed(&target.to_string(), managed.install(table).await);
        let count = metrics.num_deleted_rows.map_or(-1, |n| n as i64);
        debug!(table = %target, count, "delete done");
        Ok(Outcome::Count(count))
    }

    async fn update(&self, ctx: &SessionContext, target: &TableReference, plan: LogicalPlan) -> Result<Outcome> {
        let managed = self.require_managed(ctx, target, "UPDATE").await?;
        let LogicalPlan::Dml(dml) = &plan else {
            return Err(Error::unsupported("UPDATE plan shape"));
        };
        let LogicalPlan::Projection(projection) = dml.input.as_ref() else {
            return Err(Error::unsupported("UPDATE ... FROM"));
        };
        let mut builder = managed.delta().update().with_session_state(Arc::new(ctx.state()));
        for expr in &projection.expr {
            let (inner, name) = match expr {
                Expr::Alias(a) => (a.expr.as_ref(), a.name.clone()),
                other => (other, other.schema_name().to_string()),
            };
            if matches!(inner, Expr::Column(c) if c.name == name) {
                continue; // unchanged column
            }
            builder = builder.with_update(name, unqualify(inner.clone())?);
        }
        if let Some(p) = dml_predicate(projection.input.as_ref()) {
            let p = simplify(projection.input.as_ref(), p)?;
            match constant_truth(&p) {
                Some(true) => {}
                Some(false) => return Ok(Outcome::Count(0)),
                None => builder = builder.with_predicate(unqualify(p)?),
            }
        }
        let (table, metrics) = builder.await.map_err(|e| Error::storage(target.table(), e))?;
        committed(&target.to_string(), managed.install(table).await);
        Ok(Outcome::Count(metrics.num_updated_rows as i64))
    }

    async fn require_managed(
        &self,
        ctx: &SessionContext,
        target: &TableReference,
        what: &str,
    ) -> Result<Arc<ManagedTable>> {
        self.managed_for(ctx, target).await?.ok_or_else(|| {
            Error::unsupported(format!(
                "{what} on '{target}': only managed (Delta) tables can be modified"
            ))
        })
    }

    pub(crate) async fn managed_for(
        &self,
        ctx: &SessionContext,
        target: &TableReference,
    ) -> Result<Option<Arc<ManagedTable>>> {
        let (schema, table) = self.resolve(ctx, target)?;
        Ok(self.catalog.managed(&schema, &table))
    }

    /// Resolve a possibly partial name against the session's defaults.
    pub(crate) fn resolve(&self, ctx: &SessionContext, name: &TableReference) -> Result<(String, String)> {
        let state = ctx.state();
        let defaults = &state.config().options().catalog;
        let resolved = name
            .clone()
            .resolve(&defaults.default_catalog, &defaults.default_schema);
        if resolved.catalog.as_ref() != CATALOG {
            return Err(Error::NotFound {
                kind: "catalog",
                name: resolved.catalog.to_string(),
            });
        }
        self.catalog.schema_provider(&resolved.schema)?;
        Ok((resolved.schema.to_string(), resolved.table.to_string()))
    }

    /// Re-create views and external tables from their stored SQL.
    async fn replay(&self) -> Result<()> {
        self.replay_objects(self.catalog.stored_objects().await).await;
        Ok(())
    }

    async fn replay_objects(&self, objects: Vec<StoredObject>) {
        for object in objects {
            let settings = SessionSettings {
                schema: Some(object.schema.clone()),
                ..Default::default()
            };
            let result = async {
                let ctx = self
                    .context(&settings)
                    .map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
                let plan = ctx.state().create_logical_plan(&object.sql).await?;
                ctx.execute_logical_plan(plan).await.map(|_| ())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(schema = %object.schema, name = %object.name, error = %e,
                    "could not restore {:?}; it stays in the catalog file", object.kind);
            }
        }
    }
}

/// Where bulk-ingested rows go and what to do if the table exists or not.
#[derive(Debug, Clone, Default)]
pub struct IngestTarget {
    pub catalog: Option<String>,
    pub schema: Option<String>,
    pub table: String,
    /// Create the table when missing.
    pub create: bool,
    /// Error when the table exists.
    pub fail_if_exists: bool,
    /// Replace the table's contents (one commit).
    pub replace: bool,
}

/// `CACHE TABLE t` and `UNCACHE TABLE [IF EXISTS] t`, which DataFusion does not plan.
fn cache_statement(statement: &DfStatement) -> Result<Option<Kind>> {
    let DfStatement::Statement(s) = statement else {
        return Ok(None);
    };
    let reference = |name: &ast::ObjectName| -> TableReference {
        // Unquoted names fold to lower case, as DataFusion folds them.
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident())
            .map(|i| match i.quote_style {
                Some(_) => i.value.clone(),
                None => i.value.to_lowercase(),
            })
            .collect();
        match parts.as_slice() {
            [table] => TableReference::bare(table.as_str()),
            [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
            [catalog, schema, table] => TableReference::full(catalog.as_str(), schema.as_str(), table.as_str()),
            _ => TableReference::bare(name.to_string()),
        }
    };
    match s.as_ref() {
        ast::Statement::Cache {
            table_flag,
            table_name,
            options,
            query,
            ..
        } => {
            if table_flag.is_some() || !options.is_empty() || query.is_some() {
                return Err(Error::unsupported(
                    "CACHE TABLE with LAZY, OPTIONS or AS <query>: use CACHE TABLE <table>",
                ));
            }
            Ok(Some(Kind::Cache {
                table: reference(table_name),
                cache: true,
                if_exists: false,
            }))
        }
        ast::Statement::UNCache { table_name, if_exists } => Ok(Some(Kind::Cache {
            table: reference(table_name),
            cache: false,
            if_exists: *if_exists,
        })),
        _ => Ok(None),
    }
}

fn check_supported(statement: &DfStatement) -> Result<()> {
    if let DfStatement::Statement(s) = statement {
        match s.as_ref() {
            ast::Statement::Delete(d) if d.using.is_some() || d.limit.is_some() || !d.order_by.is_empty() => {
                return Err(Error::unsupported("DELETE with USING, ORDER BY or LIMIT"));
            }
            ast::Statement::CreateTable(c) if c.or_replace && c.if_not_exists => {
                return Err(Error::invalid(
                    "CREATE TABLE",
                    "OR REPLACE and IF NOT EXISTS contradict each other: use one",
                ));
            }
            ast::Statement::CreateTable(c) if c.columns.is_empty() && c.query.is_none() && c.like.is_none() => {
                return Err(Error::invalid(
                    "CREATE TABLE",
                    format!(
                        "table {} has no columns: list them, e.g. CREATE TABLE {} (id BIGINT, name VARCHAR), \
                         or create it AS SELECT",
                        c.name, c.name
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Rewrite JDBC/ODBC-style `?` placeholders into DataFusion's `$1`, `$2`, ...
/// A statement's `SELECT` lists against `--max-select-items` (see [`crate::limits`]).
fn check_width(statement: &DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(s) => crate::limits::check_parsed(s),
        DfStatement::Explain(e) => check_width(&e.statement),
        DfStatement::CopyTo(copy) => match &copy.source {
            datafusion::sql::parser::CopyToSource::Query(query) => crate::limits::check_parsed(query.as_ref()),
            datafusion::sql::parser::CopyToSource::Relation(_) => Ok(()),
        },
        DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => Ok(()),
    }
}

fn number_question_marks(statement: &mut DfStatement) {
    let mut next = 0usize;
    let mut rewrite = |expr: &mut ast::Expr| {
        if let ast::Expr::Value(v) = expr {
            if let ast::Value::Placeholder(p) = &mut v.value {
                if p == "?" {
                    next += 1;
                    *p = format!("${next}");
                }
            }
        }
        ControlFlow::<()>::Continue(())
    };
    match statement {
        DfStatement::Statement(s) => {
            let _ = visit_expressions_mut(s.as_mut(), &mut rewrite);
        }
        DfStatement::Explain(e) => number_question_marks(e.statement.as_mut()),
        _ => {}
    }
}

/// DataFusion reports a missing table as a plan error; give it its own kind.
fn not_found_or_plan(e: datafusion::error::DataFusionError) -> Error {
    let message = e.find_root().to_string();
    if let Some(rest) = message.split("table '").nth(1) {
        if let Some(name) = rest.strip_suffix("' not found") {
            return Error::NotFound {
                kind: "table",
                name: name.to_string(),
            };
        }
    }
    Error::plan(e)
}

async fn run_count(ctx: &SessionContext, plan: LogicalPlan) -> Result<i64> {
    let df = ctx.execute_logical_plan(plan).await.map_err(Error::plan)?;
    let batches = df.collect().await.map_err(Error::execution)?;
    let mut total = 0i64;
    for b in &batches {
        if b.num_columns() == 0 {
            continue;
        }
        if let Some(col) = b.column(0).as_any().downcast_ref::<UInt64Array>() {
            total += col.iter().flatten().map(|v| v as i64).sum::<i64>();
        }
    }
    Ok(total)
}

fn dml_predicate(plan: &LogicalPlan) -> Option<Expr> {
    match plan {
        LogicalPlan::Dml(d) => dml_predicate(d.input.as_ref()),
        LogicalPlan::Filter(f) => Some(f.predicate.clone()),
        _ => None,
    }
}

/// Constant-fold a DML predicate against its input's schema, so `x = NULL`
/// becomes the NULL literal it is.
fn simplify(plan: &LogicalPlan, predicate: Expr) -> Result<Expr> {
    use datafusion::logical_expr::simplify::SimplifyContext;
    use datafusion::optimizer::simplify_expressions::ExprSimplifier;
    let schema = match plan {
        LogicalPlan::Dml(d) => d.input.schema().clone(),
        other => other.schema().clone(),
    };
    ExprSimplifier::new(SimplifyContext::builder().with_schema(schema).build())
        .simplify(predicate)
        .map_err(Error::plan)
}

/// `Some(true)` / `Some(false)` when a predicate is a constant (NULL counts as
/// false, as in a WHERE clause), `None` when it depends on the row.
fn constant_truth(predicate: &Expr) -> Option<bool> {
    match predicate {
        Expr::Literal(ScalarValue::Boolean(Some(b)), _) => Some(*b),
        Expr::Literal(v, _) if v.is_null() => Some(false),
        _ => None,
    }
}

/// deltalake resolves columns against the table's own unqualified schema.
fn unqualify(expr: Expr) -> Result<Expr> {
    expr.transform(|e| {
        Ok(match e {
            Expr::Column(c) if c.relation.is_some() => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
    .map_err(Error::plan)
}

/// Delta tables store plain strings; cast view types on the way in.
/// The sink of a `COPY ... TO` a workflow can run: Parquet, unpartitioned, to a
/// local path (made absolute here: workers need not share the server's directory).
pub(crate) fn file_sink(copy: &datafusion::logical_expr::dml::CopyTo) -> Result<FileSink> {
    use datafusion::datasource::listing::ListingTableUrl;
    if !copy.file_type.get_ext().eq_ignore_ascii_case("parquet") {
        return Err(Error::unsupported("COPY TO formats other than PARQUET as a workflow"));
    }
    if !copy.partition_by.is_empty() {
        return Err(Error::unsupported("COPY ... PARTITIONED BY as a workflow"));
    }
    let target = copy.output_url.as_str();
    let path = match target.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None if target.contains("://") => {
            return Err(Error::unsupported(format!(
                "COPY TO '{target}' as a workflow: only local paths"
            )));
        }
        None => std::path::absolute(target).map_err(|e| Error::invalid("COPY target", e.to_string()))?,
    };
    let single_file = match copy.options.get("single_file_output").map(|v| v.trim()) {
        Some("true") => true,
        Some("false") => false,
        None => {
            let url = ListingTableUrl::parse(target).map_err(Error::plan)?;
            !url.is_collection() && url.file_extension().is_some()
        }
        Some(other) => return Err(Error::invalid("single_file_output", format!("'{other}'"))),
    };
    let options = copy
        .options
        .iter()
        .filter(|(k, _)| k.as_str() != "single_file_output")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(FileSink {
        path: path.to_string_lossy().into_owned(),
        single_file,
        options,
        pipeline: None,
    })
}

fn strip_view_types(plan: LogicalPlan) -> Result<LogicalPlan> {
    let schema = plan.schema().clone();
    if !schema
        .fields()
        .iter()
        .any(|f| crate::types::has_view_type(f.data_type()))
    {
        return Ok(plan);
    }
    let exprs = schema
        .iter()
        .map(|(q, f)| {
            let col = Expr::Column(Column::from((q, f)));
            let target = crate::types::without_view_types(f.data_type());
            if &target == f.data_type() {
                col
            } else {
                datafusion::logical_expr::cast(col, target).alias(f.name())
            }
        })
        .collect::<Vec<_>>();
    LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(Error::plan)
}

/// One batch as a stream.
fn one_batch_stream(batch: RecordBatch) -> SendableRecordBatchStream {
    let schema = batch.schema();
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
        schema,
        futures::stream::once(async move { Ok(batch) }),
    ))
}

/// Rows the last commit added, from its operation metrics.
async fn added_rows(table: &DeltaTable) -> i64 {
    let mut history = table.history(Some(1));
    if let Some(Ok(info)) = history.next().await {
        if let Some(rows) = info
            .info
            .get("operationMetrics")
            .and_then(|m| m.get("num_added_rows"))
            .and_then(|v| v.as_i64())
        {
            return rows;
        }
    }
    -1
}

/// Where an append to a managed table writes: its current schema and partition
/// columns, and the version read, which the commit is built on.
fn append_sink(name: (String, String), managed: &ManagedTable) -> Result<DeltaSink> {
    let display = format!("{}.{}", name.0, name.1);
    let table = managed.delta();
    let snapshot = table.snapshot().map_err(|e| Error::storage(&display, e))?;
    let metadata = snapshot.metadata();
    let delta_schema = metadata
        .parse_schema()
        .map_err(|e| Error::storage(&display, e.into()))?;
    let schema: Schema = (&delta_schema)
        .try_into_arrow()
        .map_err(|e| Error::storage(&display, e.into()))?;
    let partition_by = metadata.partition_columns().to_vec();
    let mut sink = DeltaSink::new(name, managed.url().clone(), &schema, partition_by, false)?;
    sink.read_version = Some(snapshot.version());
    Ok(sink)
}

/// A logical plan reading a stream once (bulk ingest input), as one partition.
fn one_shot_plan(schema: SchemaRef, stream: SendableRecordBatchStream) -> Result<LogicalPlan> {
    let table = crate::types::OneShotTable::new(schema, stream)
        .into_provider()
        .map_err(Error::plan)?;
    LogicalPlanBuilder::scan("ingest", datafusion::datasource::provider_as_source(table), None)
        .and_then(LogicalPlanBuilder::build)
        .map_err(Error::plan)
}

/// After a commit the rows are durable whatever happens next: failing to load
/// the new version here is logged, not returned, as a client told its write
/// failed would write it again. Scans of a registered table load a version
/// they see in the log; a new table this process failed to open shows after a
/// restart.
fn committed(table: &str, shown: Result<()>) {
    if let Err(e) = shown {
        warn!(%table, error = %e, "committed, but not loaded here yet");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;

    #[tokio::test]
    async fn contexts_start_from_a_kept_state_but_do_not_share_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("open");
        let plain = SessionSettings::default();
        let first = engine.context(&plain).expect("context");
        // A statement changing its own state leaves the next statement's alone.
        first.state_ref().write().config_mut().options_mut().execution.time_zone = Some("+01:00".into());
        let second = engine.context(&plain).expect("context");
        assert_eq!(
            second.copied_config().options().execution.time_zone.as_deref(),
            Some("UTC")
        );
        assert_eq!(engine.states.len(), 1);

        // Other DataFusion settings, or another schema: a state of their own.
        let mut zoned = SessionSettings::default();
        zoned
            .options
            .insert("datafusion.execution.time_zone".into(), "+05:00".into());
        let ctx = engine.context(&zoned).expect("context");
        let tz = ctx.copied_config().options().execution.time_zone.clone();
        assert_eq!(tz.as_deref(), Some("+05:00"));
        let mut elsewhere = SessionSettings::default();
        elsewhere.schema = Some("other".into());
        let ctx = engine.context(&elsewhere).expect("context");
        assert_eq!(ctx.copied_config().options().catalog.default_schema, "other");
        assert_eq!(engine.states.len(), 3);

        // Contrail's own settings: a state of their own too, which lists them.
        let mut mode = SessionSettings::default();
        mode.options.insert("contrail.execution_mode".into(), "inline".into());
        let listed = |ctx: &SessionContext| {
            let entries = ctx.copied_config().options().entries();
            let entry = entries.into_iter().find(|e| e.key == "contrail.execution_mode");
            entry.and_then(|e| e.value)
        };
        assert_eq!(
            listed(&engine.context(&mode).expect("context")).as_deref(),
            Some("inline")
        );
        assert_eq!(
            listed(&engine.context(&plain).expect("context")).as_deref(),
            Some("auto")
        );
        assert_eq!(engine.states.len(), 4);
    }

    /// `sql`'s result, planned and run in `context`.
    async fn rows_in(
        engine: &Engine,
        context: &StatementContext,
        settings: &mut SessionSettings,
        sql: &str,
    ) -> Vec<RecordBatch> {
        use futures::TryStreamExt;
        let planned = engine.plan_with(context, sql).await.expect(sql);
        let Outcome::Rows(stream) = engine.execute_in(context, settings, planned).await.expect(sql) else {
            panic!("{sql}: no rows")
        };
        stream.try_collect().await.expect(sql)
    }

    /// The first value of the first column of `batches`, of type `T`.
    fn first_value<T: arrow::datatypes::ArrowPrimitiveType>(batches: &[RecordBatch]) -> T::Native {
        use arrow::array::AsArray;
        batches[0].column(0).as_primitive::<T>().value(0)
    }

    /// Run a statement that returns a count.
    async fn count_of(engine: &Engine, settings: &mut SessionSettings, sql: &str) -> i64 {
        let planned = engine.plan(settings, sql).await.expect(sql);
        match engine.execute(settings, planned).await.expect(sql) {
            Outcome::Count(n) => n,
            Outcome::Rows(_) => panic!("{sql}: rows, not a count"),
        }
    }

    /// A JDBC `executeBatch` of many rows is one INSERT: one commit, and a plan
    /// that stays flat however many rows are bound.
    #[tokio::test]
    async fn an_insert_binds_a_large_batch_of_parameter_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("open");
        let mut settings = SessionSettings::default();
        count_of(&engine, &mut settings, "CREATE TABLE t (id BIGINT, s VARCHAR)").await;
        let planned = engine
            .plan(&settings, "INSERT INTO t VALUES ($1, $2)")
            .await
            .expect("plan");
        let rows: Vec<Vec<ScalarValue>> = (0..20_000_i64)
            .map(|i| vec![ScalarValue::Int64(Some(i)), ScalarValue::Utf8(Some(format!("row {i}")))])
            .collect();
        let batched = planned.bind_rows(&rows).expect("bind").expect("an INSERT batches");
        let Outcome::Count(n) = engine.execute(&mut settings, batched).await.expect("insert") else {
            panic!("no count")
        };
        assert_eq!(n, 20_000);
        let context = engine.statement(&settings).expect("context");
        let sum = rows_in(&engine, &context, &mut settings, "SELECT sum(id) FROM t").await;
        assert_eq!(
            first_value::<arrow::datatypes::Int64Type>(&sum),
            (0..20_000).sum::<i64>()
        );
    }

    /// A table replaced by one with other columns changes the catalog's
    /// version (plans made before must not be reused); plain writes do not.
    #[tokio::test]
    async fn replacing_a_tables_columns_changes_the_catalog_version() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("open");
        let mut settings = SessionSettings::default();
        count_of(&engine, &mut settings, "CREATE TABLE t (x BIGINT)").await;
        let created = engine.catalog().version();
        count_of(&engine, &mut settings, "INSERT INTO t VALUES (1)").await;
        assert_eq!(engine.catalog().version(), created, "a write changes no plan");
        count_of(
            &engine,
            &mut settings,
            "CREATE OR REPLACE TABLE t AS SELECT 'a' AS label, CAST(7 AS BIGINT) AS x",
        )
        .await;
        assert_ne!(engine.catalog().version(), created, "other columns");
    }

    #[tokio::test]
    async fn statements_share_their_settings_state_and_each_starts_its_own_clock() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("open");
        let mut settings = SessionSettings::default();
        let first = engine.statement(&settings).expect("statement");
        let second = engine.statement(&settings).expect("statement");
        assert!(Arc::ptr_eq(&first.0, &second.0), "one state for the same settings");

        // The shared state was built before `before`; a query's now() is its own start.
        let before = chrono::Utc::now().timestamp_nanos_opt().expect("nanoseconds");
        for sql in [
            "SELECT now()",
            "SELECT now() FROM (VALUES (1), (2)) AS v(x) WHERE x > 1",
        ] {
            let now = first_value::<arrow::datatypes::TimestampNanosecondType>(
                &rows_in(&engine, &second, &mut settings, sql).await,
            );
            assert!(
                now >= before,
                "{sql}: now() {now} is before the statement started ({before})"
            );
        }

        // Scalar functions see the session's options (`to_unixtime` its time zone).
        let sql = "SELECT to_unixtime(s) FROM (VALUES ('2024-01-01T00:00:00')) AS v(s)";
        let utc = first_value::<arrow::datatypes::Int64Type>(&rows_in(&engine, &first, &mut settings, sql).await);
        let mut zoned = SessionSettings::default();
        engine
            .sql(&mut zoned, "SET datafusion.execution.time_zone = '+05:00'")
            .await
            .expect("set");
        let context = engine.statement(&zoned).expect("statement");
        let there = first_value::<arrow::datatypes::Int64Type>(&rows_in(&engine, &context, &mut zoned, sql).await);
        assert_eq!(utc - there, 5 * 3600);

        // EXPLAIN lists the optimizer's rules, and the plan it shows has now() folded.
        let batches = rows_in(&engine, &first, &mut settings, "EXPLAIN VERBOSE SELECT now()").await;
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        assert!(text.contains("simplify_expressions"), "{text}");
        assert!(text.contains("TimestampNanosecond("), "{text}");
    }

    /// An engine with 2 target partitions, where every Parquet file is split into
    /// byte ranges: `t` (200,000 rows of `k` 0..6 and `v`, ten row groups) and
    /// `s` (`k` 1..3, one small file).
    async fn engine_with_split_parquet() -> (tempfile::TempDir, Arc<Engine>, SessionSettings) {
        let dir = tempfile::tempdir().expect("tmp");
        let mut options = EngineOptions::new(dir.path().join("data"));
        options.target_partitions = Some(2);
        let engine = Engine::open(options).await.expect("open");
        let mut settings = SessionSettings::default();
        for (name, query) in [
            ("t", "SELECT value % 7 AS k, value AS v FROM generate_series(1, 200000)"),
            ("s", "SELECT value AS k FROM generate_series(1, 3)"),
        ] {
            let file = dir.path().join(format!("{name}.parquet"));
            for sql in [
                format!(
                    "COPY ({query}) TO '{}' STORED AS PARQUET OPTIONS ('format.max_row_group_size' '20000')",
                    file.display()
                ),
                format!(
                    "CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{}'",
                    file.display()
                ),
            ] {
                engine.sql(&mut settings, &sql).await.expect("setup statement");
            }
        }
        // Files of any size are split (the default minimum is 10 MiB).
        settings
            .options
            .insert("datafusion.optimizer.repartition_file_min_size".into(), "1".into());
        (dir, engine, settings)
    }

    /// `sql` planned and cut into workflow stages.
    async fn stages_of(engine: &Engine, settings: &SessionSettings, sql: &str) -> FragmentedQuery {
        let planned = engine.plan(settings, sql).await.expect("plan");
        engine.plan_fragments(settings, &planned).await.expect("fragments")
    }

    /// A workflow over one Parquet file: the scan is split into byte ranges (one
    /// fragment each) and the only exchange is the aggregate's hash shuffle. A
    /// round-robin exchange after a one-partition scan spooled every scanned row.
    #[tokio::test]
    async fn fragments_split_a_parquet_file_and_shuffle_only_by_hash() {
        use datafusion::physical_expr::Partitioning;
        use datafusion::physical_plan::repartition::RepartitionExec;

        let (_dir, engine, settings) = engine_with_split_parquet().await;
        let query = stages_of(&engine, &settings, "SELECT k, sum(v) FROM t GROUP BY k").await;

        let shuffles = |stage: &Stage| {
            stage
                .plan
                .downcast_ref::<RepartitionExec>()
                .map(|r| r.partitioning().clone())
        };
        assert_eq!(query.stages.len(), 2, "{:?}", query.stages);
        let scan = &query.stages[0];
        assert!(
            matches!(shuffles(scan), Some(Partitioning::Hash(_, 2))),
            "the scan stage ends in the aggregate's hash shuffle: {:?}",
            shuffles(scan)
        );
        assert_eq!(scan.fragments(), 2, "one fragment per byte range of the file");
        assert_eq!(
            shuffles(&query.stages[1]),
            None,
            "the final stage: {:?}",
            query.stages[1]
        );
        assert_eq!(query.stages[1].fragments(), 2);
    }

    /// Catalog tables, and table functions read only for their row count, stay in
    /// the server that plans them: a stage reading one is refused with what to do
    /// instead, not sent to a worker (where a `count(*)` over `generate_series`
    /// failed with a schema mismatch). A table function whose column is used travels.
    #[tokio::test]
    async fn stages_reading_local_sources_are_not_sent_to_workers() {
        let (_dir, engine, settings) = engine_with_split_parquet().await;
        for sql in [
            "SELECT count(*) FROM t, generate_series(1, 2) g",
            "SELECT count(*) FROM information_schema.tables",
        ] {
            let query = stages_of(&engine, &settings, sql).await;
            let refused = query
                .stages
                .iter()
                .find_map(|stage| distributed::encode_plan(Arc::clone(&stage.plan)).err())
                .expect("a stage is refused");
            assert!(
                matches!(refused, Error::Unsupported { .. }) && refused.to_string().contains("execution_mode = 'auto'"),
                "{sql}: {refused}"
            );
        }
        for sql in [
            "SELECT count(*) FROM t",
            "SELECT count(*) FROM t, generate_series(1, 2) g WHERE g.value > 1",
        ] {
            let query = stages_of(&engine, &settings, sql).await;
            for stage in &query.stages {
                distributed::encode_plan(Arc::clone(&stage.plan)).expect("travels to a worker");
            }
        }
    }

    /// A join whose smaller side is 200K rows (1.6 MB of keys) collects that side
    /// once, inline and in fragments: DataFusion's defaults (1 MiB, 128K rows)
    /// would hash-repartition both sides. A session can set those values back.
    #[tokio::test]
    async fn mid_sized_build_sides_are_broadcast_unless_the_session_says_otherwise() {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        use datafusion::physical_plan::ExecutionPlan;
        use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
        use futures::TryStreamExt;

        fn join_modes(plan: &Arc<dyn ExecutionPlan>) -> Vec<PartitionMode> {
            let mut modes = Vec::new();
            plan.apply(|node| {
                if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                    modes.push(*join.partition_mode());
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .expect("walk");
            modes
        }

        let (_dir, engine, mut settings) = engine_with_split_parquet().await;
        let sql = "SELECT count(*) FROM t a JOIN t b ON a.v = b.v";
        let mut chosen = Vec::new();
        for datafusion_defaults in [false, true] {
            if datafusion_defaults {
                engine
                    .sql(
                        &mut settings,
                        "SET datafusion.optimizer.hash_join_single_partition_threshold = 1048576",
                    )
                    .await
                    .expect("set bytes");
                engine
                    .sql(
                        &mut settings,
                        "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 131072",
                    )
                    .await
                    .expect("set rows");
            }
            let planned = engine.plan(&settings, sql).await.expect("plan");
            let Kind::Query(logical) = &planned.kind else {
                panic!("a query")
            };
            let state = engine.context(&settings).expect("context").state();
            let inline = state.create_physical_plan(logical).await.expect("physical plan");
            let fragments = engine.plan_fragments(&settings, &planned).await.expect("fragments");
            let in_fragments: Vec<_> = fragments.stages.iter().flat_map(|s| join_modes(&s.plan)).collect();
            assert_eq!(
                join_modes(&inline),
                in_fragments,
                "{sql}: the same join inline and in fragments"
            );
            chosen.push(join_modes(&inline));

            let Outcome::Rows(stream) = engine.sql(&mut settings, sql).await.expect("run") else {
                panic!("rows")
            };
            let batches: Vec<RecordBatch> = stream.try_collect().await.expect("rows");
            assert_eq!(first_value::<arrow::datatypes::Int64Type>(&batches), 200_000, "{sql}");
        }
        assert_eq!(
            chosen,
            [vec![PartitionMode::CollectLeft], vec![PartitionMode::Partitioned]],
            "broadcast by default; partitioned with DataFusion's thresholds"
        );
    }

    /// `EXISTS`, `IN`, `NOT EXISTS` and `LEFT JOIN` against a small table: inline,
    /// DataFusion collects the small side once and emits its rows after the last
    /// probe partition; in fragments (one partition each) such a join must be a
    /// partitioned one, or its build-side rows never come out (measured: TPC-H Q4,
    /// Q20, Q21 and Q2 returned no rows as workflows over split files).
    #[tokio::test]
    async fn joins_emitting_build_rows_last_are_partitioned_in_fragments() {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        use datafusion::logical_expr::JoinType;
        use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

        let (_dir, engine, settings) = engine_with_split_parquet().await;
        for sql in [
            "SELECT k FROM s WHERE EXISTS (SELECT 1 FROM t WHERE t.k = s.k)",
            "SELECT k FROM s WHERE k IN (SELECT k FROM t)",
            "SELECT k FROM s WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.k = s.k AND t.v > 199990)",
            "SELECT s.k, t.v FROM s LEFT JOIN t ON s.k = t.k AND t.v > 100",
        ] {
            let query = stages_of(&engine, &settings, sql).await;
            let mut joins = Vec::new();
            for stage in &query.stages {
                stage
                    .plan
                    .apply(|node| {
                        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                            let probes = join.right().output_partitioning().partition_count();
                            if matches!(
                                join.join_type(),
                                JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark
                            ) {
                                joins.push((*join.join_type(), *join.partition_mode(), probes));
                            }
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })
                    .expect("walk");
            }
            assert!(!joins.is_empty(), "{sql}: a join emitting build rows last");
            for (join_type, mode, probes) in joins {
                assert!(
                    mode == PartitionMode::Partitioned || probes == 1,
                    "{sql}: a {join_type} join in {mode:?} mode over {probes} probe partitions"
                );
            }
        }
    }
}
