//! `CACHE TABLE`: a table's rows kept in memory, so its scans skip Parquet.
//!
//! ```text
//! CACHE TABLE t ──> scan t, every partition on its own task ──> plain types, ~1.75 MiB batches
//!                   ──> TableCache["s.t"] = Cached { partitions, fingerprint }
//!                   (bytes counted against --cache-max-bytes: over it, RESOURCE_EXHAUSTED)
//! SELECT .. FROM t ──> CachingSchema::table(t) = CachedTable { t's own provider, its slot }
//!     scan: t's fingerprint now == the cached one ? CachedScanExec over the rows
//!                                                 : t itself, and reload behind it
//! UNCACHE TABLE t | DROP TABLE t ──> the rows are gone
//! ```
//!
//! A cached table never answers with rows older than the table's: every scan
//! takes the table's fingerprint again (a Delta table's id and version, one
//! `stat`; an external table's files with their sizes and modification times,
//! one listing). A write makes the cached rows stale: the statements that see it
//! read the files, while the cache reloads in the background. Which tables are
//! cached is kept in `catalog.json`, and `contrail serve` loads them again when it
//! starts. The cache belongs to one process: workflow fragments read the table.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::BatchCoalescer;
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use dashmap::DashMap;
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::Constraints;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties as _};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use tokio::runtime::Handle;
use tracing::{info, warn};

use self::scan::CachedScanExec;
use self::system::CachedTablesRows;
use crate::catalog::Version;
use crate::distributed::ScansByReference;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::latest::Latest;
use crate::managed::ManagedTable;
use crate::pipeline_store::now_ms;
use crate::system_table::SystemTable;
use crate::types::{MESSAGE_BYTES, MESSAGE_MAX_ROWS, cast_batch, data_bytes, has_view_type, without_view_types};

mod scan;
mod system;

/// Cached batches hold about one Flight message each ([`MESSAGE_BYTES`]), and
/// at least this many rows.
const MIN_BATCH_ROWS: usize = 1024;

/// What a table's rows are, as far as the cache can tell: equal fingerprints,
/// equal rows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fingerprint {
    /// A managed table: its Delta table id and version.
    Delta { id: String, version: u64 },
    /// An external table: each file's path, size and modification time (ns).
    Files(Vec<(String, u64, i64)>),
}

/// The fingerprint of `table` now, or `None` for what cannot be cached (views,
/// system tables).
async fn fingerprint(table: &dyn TableProvider, session: &dyn Session) -> DfResult<Option<Fingerprint>> {
    if let Some(managed) = table.downcast_ref::<ManagedTable>() {
        let identity = managed
            .identity()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        return Ok(identity.map(|(id, version)| Fingerprint::Delta { id, version }));
    }
    if let Some(listing) = table.downcast_ref::<ListingTable>() {
        let extension = &listing.options().file_extension;
        let mut files = Vec::new();
        for url in listing.table_paths() {
            let store = session.runtime_env().object_store(url)?;
            let mut listed = url.list_all_files(session, store.as_ref(), extension).await?;
            while let Some(meta) = listed.try_next().await? {
                let modified = meta.last_modified.timestamp_nanos_opt().unwrap_or_default();
                files.push((meta.location.to_string(), meta.size, modified));
            }
        }
        files.sort();
        return Ok(Some(Fingerprint::Files(files)));
    }
    Ok(None)
}

/// Bytes of the cache in use, held by one table's rows; given back on drop.
#[derive(Debug)]
struct Reservation {
    used: Arc<AtomicU64>,
    limit: u64,
    bytes: AtomicU64,
}

impl Reservation {
    fn try_grow(&self, n: u64) -> bool {
        let grown = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok();
        if grown {
            self.bytes.fetch_add(n, Ordering::AcqRel);
        }
        grown
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes(), Ordering::AcqRel);
    }
}

/// One table's rows in memory.
#[derive(Debug)]
struct Cached {
    partitions: Vec<Vec<RecordBatch>>,
    schema: SchemaRef,
    fingerprint: Fingerprint,
    rows: u64,
    loaded_at_ms: i64,
    load_ms: u64,
    memory: Reservation,
}

#[derive(Debug, Clone, Default)]
enum State {
    #[default]
    Loading,
    Ready(Arc<Cached>),
    /// The last load failed, at this fingerprint of the table: it is tried
    /// again when the table changes, not on every scan.
    Failed(String, Fingerprint),
}

/// A cached table's place in the cache.
#[derive(Debug, Default)]
struct Slot {
    state: Latest<State>,
    /// One load at a time.
    loading: tokio::sync::Mutex<()>,
    /// A background reload is queued or running.
    reloading: AtomicBool,
    /// Loads started, the first included.
    loads: AtomicU64,
}

/// Every cached table of one process, within one memory limit.
#[derive(Debug)]
pub struct TableCache {
    limit: u64,
    used: Arc<AtomicU64>,
    /// By `schema.table`.
    slots: DashMap<String, Arc<Slot>>,
    /// Background reloads plan in a context of the engine's.
    engine: OnceLock<Weak<Engine>>,
    /// The runtime the engine was opened on: background reloads run there, not
    /// on the runtime of the statement that noticed the change (the server's
    /// interactive one, say).
    home: OnceLock<Handle>,
}

impl TableCache {
    /// A cache of at most `limit` bytes; 0 turns `CACHE TABLE` off.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: Arc::new(AtomicU64::new(0)),
            slots: DashMap::new(),
            engine: OnceLock::new(),
            home: OnceLock::new(),
        }
    }

    /// Bytes of cached rows held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Called once, by [`Engine::open`]: `engine` and the runtime it runs on.
    pub(crate) fn set_engine(&self, engine: Weak<Engine>) {
        let _ = self.engine.set(engine);
        if let Ok(home) = Handle::try_current() {
            let _ = self.home.set(home);
        }
    }

    /// Spawn background work on the engine's runtime (else on the current one).
    fn spawn_at_home<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.home.get() {
            Some(home) => drop(home.spawn(work)),
            None => drop(tokio::spawn(work)),
        }
    }

    pub(crate) fn is_on(&self) -> bool {
        self.limit > 0
    }

    /// Mark `key` as cached (its rows not loaded yet).
    pub(crate) fn mark(&self, key: &str) {
        if self.is_on() {
            self.slots.entry(key.to_string()).or_default();
        }
    }

    /// Forget `key` and its rows. Returns whether it was cached.
    pub(crate) fn remove(&self, key: &str) -> bool {
        self.slots.remove(key).is_some()
    }

    /// Whether `key`'s rows are in memory (as last loaded; a scan checks they are current).
    pub(crate) fn holds(&self, key: &str) -> bool {
        self.slot(key).is_some_and(|s| matches!(s.state.get(), State::Ready(_)))
    }

    fn slot(&self, key: &str) -> Option<Arc<Slot>> {
        self.slots.get(key).map(|s| Arc::clone(s.value()))
    }

    /// Read every row of `table` into the cache under `key` (marked before),
    /// unless what is cached is still current. Returns the rows cached.
    pub(crate) async fn load(&self, key: &str, table: Arc<dyn TableProvider>, ctx: &SessionContext) -> Result<u64> {
        let slot = self.slot(key).ok_or_else(|| Error::NotFound {
            kind: "cached table",
            name: key.to_string(),
        })?;
        let _one = slot.loading.lock().await;
        let state = ctx.state();
        let fingerprint = fingerprint(table.as_ref(), &state)
            .await
            .map_err(Error::execution)?
            .ok_or_else(|| not_cacheable(key))?;
        let schema = plain_schema(&table.schema());
        if let State::Ready(cached) = slot.state.get() {
            if cached.fingerprint == fingerprint && cached.schema == schema {
                return Ok(cached.rows);
            }
        }
        // The stale rows go first: a reload never needs room for two copies.
        slot.state.set(State::Loading);
        slot.loads.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        match self.read_all(key, table, ctx, Arc::clone(&schema)).await {
            Ok((partitions, memory)) => {
                let rows = partitions.iter().flatten().map(|b| b.num_rows() as u64).sum();
                let load_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                info!(table = key, rows, bytes = memory.bytes(), load_ms, "table cached");
                slot.state.set(State::Ready(Arc::new(Cached {
                    schema,
                    partitions,
                    fingerprint,
                    rows,
                    loaded_at_ms: now_ms(),
                    load_ms,
                    memory,
                })));
                Ok(rows)
            }
            Err(e) => {
                slot.state.set(State::Failed(e.to_string(), fingerprint));
                Err(e)
            }
        }
    }

    async fn read_all(
        &self,
        key: &str,
        table: Arc<dyn TableProvider>,
        ctx: &SessionContext,
        schema: SchemaRef,
    ) -> Result<(Vec<Vec<RecordBatch>>, Reservation)> {
        let memory = Arc::new(Reservation {
            used: Arc::clone(&self.used),
            limit: self.limit,
            bytes: AtomicU64::new(0),
        });
        let state = ctx.state();
        let plan = table.scan(&state, None, &[], None).await.map_err(Error::plan)?;
        let partitions = plan.output_partitioning().partition_count();
        let mut readers = tokio::task::JoinSet::new();
        for partition in 0..partitions {
            let stream = plan.execute(partition, ctx.task_ctx()).map_err(Error::execution)?;
            let (schema, memory, key) = (Arc::clone(&schema), Arc::clone(&memory), key.to_string());
            readers.spawn(async move {
                let batches = read_partition(stream, schema, &memory, &key).await;
                (partition, batches)
            });
        }
        let mut out = vec![Vec::new(); partitions];
        while let Some(joined) = readers.join_next().await {
            // Readers are never aborted while joined: an error is a reader that panicked.
            let (partition, batches) = joined.map_err(|e| Error::execution(DataFusionError::External(Box::new(e))))?;
            out[partition] = batches?;
        }
        // Every reader is done: the reservation has one owner again.
        let memory = Arc::into_inner(memory).ok_or_else(|| {
            Error::execution(DataFusionError::Internal(
                "cache reservation still shared after its readers ended".into(),
            ))
        })?;
        Ok((out, memory))
    }

    /// Reload `key` on the engine's runtime unless a reload is already on its way.
    fn reload_in_background(self: &Arc<Self>, key: &str, slot: &Arc<Slot>) {
        if slot.reloading.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(engine) = self.engine.get().and_then(Weak::upgrade) else {
            slot.reloading.store(false, Ordering::Release);
            return;
        };
        let (key, slot) = (key.to_string(), Arc::clone(slot));
        self.spawn_at_home(async move {
            if let Err(e) = engine.load_cached(&key).await {
                warn!(table = %key, error = %e, "could not reload the cached table; its scans read the table");
            }
            slot.reloading.store(false, Ordering::Release);
        });
    }

    /// `system.cached_tables`.
    pub(crate) fn system_table(self: &Arc<Self>) -> Arc<dyn TableProvider> {
        SystemTable::provider(CachedTablesRows {
            cache: Arc::clone(self),
        })
    }
}

async fn read_partition(
    mut stream: SendableRecordBatchStream,
    schema: SchemaRef,
    memory: &Reservation,
    key: &str,
) -> Result<Vec<RecordBatch>> {
    let arrow_err = |e| Error::execution(DataFusionError::ArrowError(Box::new(e), None));
    let mut coalescer: Option<BatchCoalescer> = None;
    let mut out = Vec::new();
    let keep = |batch: RecordBatch, out: &mut Vec<RecordBatch>| -> Result<()> {
        let bytes = batch.get_array_memory_size() as u64;
        if !memory.try_grow(bytes) {
            return Err(Error::CacheFull {
                table: key.to_string(),
                limit: memory.limit,
                used: memory.used.load(Ordering::Acquire),
            });
        }
        out.push(batch);
        Ok(())
    };
    while let Some(batch) = stream.next().await {
        let batch = cast_batch(&batch.map_err(Error::execution)?, &schema).map_err(arrow_err)?;
        if batch.num_rows() == 0 {
            continue;
        }
        let coalescer = coalescer.get_or_insert_with(|| {
            let per_row = data_bytes(&batch) / batch.num_rows();
            let rows = (MESSAGE_BYTES / per_row.max(1)).clamp(MIN_BATCH_ROWS, MESSAGE_MAX_ROWS);
            BatchCoalescer::new(Arc::clone(&schema), rows)
        });
        coalescer.push_batch(batch).map_err(arrow_err)?;
        while let Some(done) = coalescer.next_completed_batch() {
            keep(done, &mut out)?;
        }
    }
    if let Some(mut coalescer) = coalescer {
        coalescer.finish_buffered_batch().map_err(arrow_err)?;
        while let Some(done) = coalescer.next_completed_batch() {
            // The last batch sits in buffers sized for a full one: copy it to its size.
            keep(compact(&done).map_err(arrow_err)?, &mut out)?;
        }
    }
    Ok(out)
}

/// `batch` in buffers of its own size.
fn compact(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let rows = u32::try_from(batch.num_rows()).unwrap_or(u32::MAX);
    arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from_iter_values(0..rows))
}

fn not_cacheable(key: &str) -> Error {
    Error::invalid(
        "CACHE TABLE",
        format!("'{key}' is not a table (views and system tables are not cached; cache the tables a view reads)"),
    )
}

/// Whether `table` can be cached: a managed or an external table.
pub(crate) fn is_cacheable(table: &dyn TableProvider) -> bool {
    table.is::<ManagedTable>() || table.is::<ListingTable>()
}

/// A schema of the catalog: its tables, the cached ones answered from memory.
#[derive(Debug)]
pub(crate) struct CachingSchema {
    name: String,
    tables: Arc<dyn SchemaProvider>,
    cache: Arc<TableCache>,
    /// Bumped by every table registered or dropped here.
    version: Version,
}

impl CachingSchema {
    pub(crate) fn new(name: &str, tables: Arc<dyn SchemaProvider>, cache: Arc<TableCache>, version: Version) -> Self {
        Self {
            name: name.to_string(),
            tables,
            cache,
            version,
        }
    }

    /// The table itself, never its cached rows.
    pub(crate) async fn table_itself(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.tables.table(name).await
    }
}

#[async_trait]
impl SchemaProvider for CachingSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.tables.table(name).await? else {
            return Ok(None);
        };
        let key = format!("{}.{name}", self.name);
        match self.cache.slot(&key) {
            Some(slot) if is_cacheable(table.as_ref()) => Ok(Some(Arc::new(CachedTable {
                schema: plain_schema(&table.schema()),
                key,
                table,
                slot,
                cache: Arc::clone(&self.cache),
            }))),
            _ => Ok(Some(table)),
        }
    }

    async fn table_type(&self, name: &str) -> DfResult<Option<TableType>> {
        self.tables.table_type(name).await
    }

    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let replaced = self.tables.register_table(name, table);
        self.version.bump();
        replaced
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let dropped = self.tables.deregister_table(name);
        self.version.bump();
        dropped
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.table_exist(name)
    }
}

/// A cached table as DataFusion sees it: its rows from memory while they are
/// current, from the table itself otherwise. Its string columns are plain
/// `Utf8`/`Binary` either way.
#[derive(Debug)]
struct CachedTable {
    key: String,
    table: Arc<dyn TableProvider>,
    schema: SchemaRef,
    slot: Arc<Slot>,
    cache: Arc<TableCache>,
}

impl CachedTable {
    async fn scan_table(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = self.table.scan(state, projection, filters, limit).await?;
        without_views(plan)
    }
}

/// `schema` with plain types for view types; everything else as it is.
fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| has_view_type(f.data_type())) {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(without_view_types(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `plan` with its view-typed columns cast to plain ones.
fn without_views(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    if !schema.fields().iter().any(|f| has_view_type(f.data_type())) {
        return Ok(plan);
    }
    let exprs = schema.fields().iter().enumerate().map(|(i, field)| {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), i));
        let expr: Arc<dyn PhysicalExpr> = if has_view_type(field.data_type()) {
            Arc::new(CastExpr::new(column, without_view_types(field.data_type()), None))
        } else {
            column
        };
        (expr, field.name().clone())
    });
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

#[async_trait]
impl TableProvider for CachedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.table.constraints()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    fn get_logical_plan(&self) -> Option<std::borrow::Cow<'_, LogicalPlan>> {
        self.table.get_logical_plan()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.table.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Workflow fragments run elsewhere: they read the table itself.
        if state.config().get_extension::<ScansByReference>().is_some() {
            return self.scan_table(state, projection, filters, limit).await;
        }
        let now = fingerprint(self.table.as_ref(), state).await?;
        let current = match self.slot.state.get() {
            State::Ready(cached) if now.as_ref() == Some(&cached.fingerprint) && cached.schema == self.schema => {
                Some(cached)
            }
            State::Loading => None,
            State::Failed(_, failed_at) if now.as_ref() == Some(&failed_at) => None,
            State::Ready(_) | State::Failed(..) => {
                self.cache.reload_in_background(&self.key, &self.slot);
                None
            }
        };
        let Some(cached) = current else {
            return self.scan_table(state, projection, filters, limit).await;
        };
        Ok(Arc::new(CachedScanExec::try_new(&self.key, cached, projection, limit)?))
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Inexact: DataFusion filters the rows either way; the table's own scan
        // may still use them to skip files and row groups.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: datafusion::logical_expr::dml::InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.table.insert_into(state, input, insert_op).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{Array, Int64Array};
    use futures::TryStreamExt;

    use super::*;
    use crate::{EngineOptions, Outcome, SessionSettings};

    async fn open(limit: u64) -> (tempfile::TempDir, Arc<Engine>) {
        let dir = tempfile::tempdir().expect("tmp");
        let mut options = EngineOptions::new(dir.path());
        options.cache_limit = limit;
        options.target_partitions = Some(2);
        let engine = Engine::open(options).await.expect("open");
        (dir, engine)
    }

    async fn run(engine: &Engine, sql: &str) -> crate::Result<Vec<RecordBatch>> {
        match engine.sql(&mut SessionSettings::default(), sql).await? {
            Outcome::Rows(stream) => Ok(stream.try_collect().await.expect("rows")),
            Outcome::Count(n) => Ok(vec![
                RecordBatch::try_from_iter([("count", Arc::new(Int64Array::from(vec![n])) as _)]).expect("batch"),
            ]),
        }
    }

    async fn one(engine: &Engine, sql: &str) -> i64 {
        let batches = run(engine, sql).await.expect(sql);
        let column = batches[0].column(0);
        let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Int64).expect("cast");
        column.as_any().downcast_ref::<Int64Array>().expect("int64").value(0)
    }

    async fn from_memory(engine: &Engine, table: &str) -> bool {
        let plan = arrow::util::pretty::pretty_format_batches(
            &run(engine, &format!("EXPLAIN SELECT * FROM {table}"))
                .await
                .expect("explain"),
        )
        .expect("format")
        .to_string();
        plan.contains("CachedScanExec")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cached_rows_are_never_older_than_the_table() {
        let (_dir, engine) = open(1 << 30).await;
        run(&engine, "CREATE TABLE t AS SELECT value AS id, concat('v', CAST(value % 7 AS VARCHAR)) AS s FROM generate_series(1, 10000)")
            .await
            .expect("ctas");
        let sum = "SELECT sum(id) + count(s) FROM t";
        let before = one(&engine, sum).await;
        assert_eq!(one(&engine, "CACHE TABLE t").await, 10000);
        assert!(engine.catalog().cache().holds("public.t"));
        assert!(engine.catalog().cache().used() > 0);
        assert!(from_memory(&engine, "t").await);
        assert_eq!(one(&engine, sum).await, before);

        // A write is seen by the very next statement, from the table itself...
        run(&engine, "INSERT INTO t VALUES (20000, 'new')")
            .await
            .expect("insert");
        assert_eq!(one(&engine, sum).await, before + 20001);
        // ...and the cache catches up in the background.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !from_memory(&engine, "t").await {
            assert!(Instant::now() < deadline, "the cache did not reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(one(&engine, sum).await, before + 20001);

        assert_eq!(one(&engine, "UNCACHE TABLE t").await, 0);
        assert!(!engine.catalog().cache().holds("public.t"));
        assert!(!from_memory(&engine, "t").await);
    }

    #[test]
    fn background_reloads_run_on_the_runtime_the_engine_was_opened_on() {
        let runtime = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(name)
                .enable_all()
                .build()
                .expect("runtime")
        };
        let (home, statements) = (runtime("engine-home"), runtime("statements"));
        let (_dir, engine) = home.block_on(open(1 << 20));
        let cache = Arc::clone(engine.catalog().cache());
        // As a scan on another runtime (the server's interactive one) starts a reload.
        let ran_on = statements.block_on(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            cache.spawn_at_home(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            });
            rx.await.expect("the background work ran")
        });
        assert_eq!(ran_on.as_deref(), Some("engine-home"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_table_that_outgrows_the_cache_is_read_from_the_table_and_not_reloaded_per_scan() {
        let (_dir, engine) = open(256 * 1024).await;
        run(
            &engine,
            "CREATE TABLE g AS SELECT value AS id FROM generate_series(1, 1000)",
        )
        .await
        .expect("ctas");
        assert_eq!(one(&engine, "CACHE TABLE g").await, 1000);
        run(&engine, "INSERT INTO g SELECT value FROM generate_series(1001, 100000)")
            .await
            .expect("insert");
        assert_eq!(one(&engine, "SELECT count(*) FROM g").await, 100000);
        let cache = engine.catalog().cache();
        let slot = cache.slot("public.g").expect("slot");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(slot.state.get(), State::Failed(..)) {
            assert!(Instant::now() < deadline, "the reload did not fail");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let State::Failed(error, _) = slot.state.get() else {
            unreachable!()
        };
        assert!(error.contains("the table cache is full"), "{error}");
        while slot.reloading.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the reload did not end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let loads = slot.loads.load(Ordering::Acquire);
        for _ in 0..3 {
            assert_eq!(one(&engine, "SELECT sum(id) FROM g").await, 100000 * 100001 / 2);
        }
        assert!(!from_memory(&engine, "g").await);
        assert_eq!(
            slot.loads.load(Ordering::Acquire),
            loads,
            "scans of an unchanged table retried the load"
        );
        assert_eq!(cache.used(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_table_over_the_limit_is_refused_and_nothing_stays_cached() {
        let (_dir, engine) = open(64 * 1024).await;
        run(
            &engine,
            "CREATE TABLE big AS SELECT value AS id, repeat('x', 100) AS pad FROM generate_series(1, 10000)",
        )
        .await
        .expect("ctas");
        let err = run(&engine, "CACHE TABLE big").await.expect_err("over the limit");
        assert!(matches!(err, Error::CacheFull { .. }), "{err}");
        assert_eq!(err.kind(), crate::error::ErrorKind::ResourceExhausted);
        assert!(!engine.catalog().cache().holds("public.big"));
        assert_eq!(engine.catalog().cache().used(), 0);
        assert!(engine.catalog().cached_tables().await.is_empty());
        assert_eq!(one(&engine, "SELECT count(*) FROM big").await, 10000);
    }
}
