//! Writes run as workflow fragments: each final fragment writes Parquet data files
//! into the target without making them visible, and one commit at the end makes
//! all of them visible at once.
//!
//! ```text
//! Delta table (INSERT ... SELECT, CREATE TABLE ... AS):
//!  fragment i ──RecordBatchWriter──> part files (invisible) ──> [Add actions]
//!  commit: one Delta transaction { adds of every fragment, txn(app id, 0) }
//!          (CTAS: the table's creation is that same first commit)
//! Files (COPY (...) TO '<path>' STORED AS PARQUET):
//!  fragment i ──ArrowWriter──> .contrail-<statement>-<i>-<attempt>.tmp (hidden)
//!  commit: rename each fragment's file into place (a directory: one file per
//!          fragment; a single file: the one final fragment's)
//! ```
//!
//! The commit carries a Delta application transaction whose app id is the
//! statement's id, so a retried commit (the worker died after writing the log
//! entry, before reporting) finds its own transaction and does nothing. Files of
//! fragment attempts that were retried are never referenced; a Delta vacuum removes them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::compute::cast_with_options;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::debug;
use url::Url;

use crate::error::{Error, Result};

/// Where a write workflow puts its rows. Travels in the workflow's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sink {
    /// A managed (Delta) table.
    Delta(DeltaSink),
    /// Parquet files (`COPY ... TO`).
    Files(FileSink),
}

/// A Delta table a write workflow appends to (or creates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaSink {
    /// The table's schema (namespace) and name in the catalog.
    pub schema_name: String,
    pub table: String,
    /// The table directory (`file://`).
    pub url: Url,
    /// The schema data files are written with (Delta types), `datafusion-proto` bytes.
    pub schema: Vec<u8>,
    pub partition_by: Vec<String>,
    /// `CREATE TABLE ... AS`: the commit creates the table.
    pub create: bool,
    /// `INSERT`: the table version the statement was planned against. The commit
    /// is built on it, so Delta's conflict check refuses it if the table was
    /// replaced (or its schema changed) meanwhile; concurrent appends are fine.
    #[serde(default)]
    pub read_version: Option<u64>,
    /// A pipeline run: the commit carries its identity and watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineCommit>,
}

/// The identity of a pipeline run's commit and the watermark it moves to. A Delta
/// sink commits it as the application transaction (app id, version = `seq`) and,
/// in the same commit, as commit metadata under [`PIPELINE_COMMIT_KEY`]; a file
/// sink writes it to a marker file after its files are in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineCommit {
    pub app_id: String,
    pub seq: u64,
    /// The source's incremental column, up to which this run read.
    pub watermark: Option<String>,
}

/// The commit metadata key of a pipeline run's [`PipelineCommit`].
pub const PIPELINE_COMMIT_KEY: &str = "contrail.pipeline";

impl DeltaSink {
    pub(crate) fn new(
        (schema_name, table): (String, String),
        url: Url,
        schema: &Schema,
        partition_by: Vec<String>,
        create: bool,
    ) -> Result<Self> {
        let delta_schema = deltalake::kernel::schema::cast::normalize_for_delta(&Arc::new(schema.clone()));
        Ok(Self {
            schema_name,
            table,
            url,
            schema: crate::distributed::schema_bytes(&delta_schema)?,
            partition_by,
            create,
            read_version: None,
            pipeline: None,
        })
    }

    /// `schema.table`, for messages.
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema_name, self.table)
    }

    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        crate::distributed::schema_from_bytes(&self.schema)
    }

    /// The Delta application transaction id of a statement.
    pub fn app_id(statement_id: &str) -> String {
        format!("contrail-statement-{statement_id}")
    }
}

/// `COPY (...) TO '<path>' STORED AS PARQUET` run as a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSink {
    /// Absolute local path: the file, or the directory the files go into.
    pub path: String,
    /// One file at `path` (the plan then ends in a single fragment).
    pub single_file: bool,
    /// Parquet format options of the statement (`format.*`).
    pub options: BTreeMap<String, String>,
    /// A pipeline run: after its files, the commit writes this marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineCommit>,
}

impl FileSink {
    /// The marker of a pipeline's last committed run in the target directory.
    fn marker(&self, app_id: &str) -> PathBuf {
        Path::new(&self.path).join(format!("_contrail_{app_id}.json"))
    }

    /// The last committed run of a pipeline writing here: `(seq, watermark)`.
    pub fn pipeline_committed(&self, app_id: &str) -> Result<(u64, Option<String>)> {
        let path = self.marker(app_id);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let c: PipelineCommit = serde_json::from_slice(&bytes).map_err(|e| Error::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::other(e),
                })?;
                Ok((c.seq, c.watermark))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, None)),
            Err(source) => Err(Error::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

/// One fragment's file, written under a hidden temporary name until the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    pub tmp: String,
    pub path: String,
    pub bytes: u64,
}

impl FileSink {
    /// Where a fragment writes: (temporary name, final name).
    fn staged(&self, statement_id: &str, fragment: u32) -> StagedFile {
        let attempt = uuid::Uuid::new_v4().simple();
        let (dir, path) = if self.single_file {
            let path = PathBuf::from(&self.path);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (dir, path)
        } else {
            let dir = PathBuf::from(&self.path);
            let path = dir.join(format!("{statement_id}-{fragment}.parquet"));
            (dir, path)
        };
        StagedFile {
            tmp: dir
                .join(format!(".contrail-{statement_id}-{fragment}-{attempt}.tmp"))
                .to_string_lossy()
                .into_owned(),
            path: path.to_string_lossy().into_owned(),
            bytes: 0,
        }
    }

    /// The Parquet writer settings: the session's, altered by the statement's
    /// options, with the Arrow schema in the footer (as DataFusion's `COPY` writes).
    fn writer_options(
        &self,
        config: &datafusion::config::ConfigOptions,
        schema: &SchemaRef,
    ) -> Result<datafusion::parquet::arrow::arrow_writer::ArrowWriterOptions> {
        use datafusion::parquet::file::properties::WriterPropertiesBuilder;
        let mut options = session_parquet_options(config);
        let altered: HashMap<String, String> = self.options.clone().into_iter().collect();
        options.alter_with_string_hash_map(&altered).map_err(Error::plan)?;
        let mut parquet = options.parquet;
        if !parquet.global.skip_arrow_metadata {
            parquet.arrow_schema(schema);
        }
        let properties = WriterPropertiesBuilder::try_from(&parquet)
            .map_err(Error::plan)?
            .build();
        Ok(datafusion::parquet::arrow::arrow_writer::ArrowWriterOptions::new()
            .with_properties(properties)
            .with_skip_arrow_metadata(true))
    }
}

/// Write one fragment's rows to a hidden file beside the target; `None` when it
/// has no rows and the target is a directory (no empty files there).
pub async fn write_parquet(
    sink: &FileSink,
    config: &datafusion::config::ConfigOptions,
    statement_id: &str,
    fragment: u32,
    mut stream: SendableRecordBatchStream,
    mut progress: impl FnMut(u64),
) -> Result<(u64, Option<StagedFile>)> {
    use datafusion::parquet::arrow::ArrowWriter;
    let mut staged = sink.staged(statement_id, fragment);
    let io = |path: &str, source: std::io::Error| Error::Io {
        path: path.to_string(),
        source,
    };
    if let Some(dir) = Path::new(&staged.tmp).parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(&sink.path, e))?;
    }
    let file = std::fs::File::create(&staged.tmp).map_err(|e| io(&staged.tmp, e))?;
    // Removes the temporary file unless the write finished.
    let mut guard = RemoveOnDrop(Some(PathBuf::from(&staged.tmp)));
    let parquet = |e: datafusion::parquet::errors::ParquetError| Error::execution(e.into());
    let schema = stream.schema();
    let mut writer = ArrowWriter::try_new_with_options(
        std::io::BufWriter::with_capacity(1 << 20, file),
        Arc::clone(&schema),
        sink.writer_options(config, &schema)?,
    )
    .map_err(parquet)?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(Error::execution)?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(parquet)?;
        progress(rows);
    }
    let inner = writer.into_inner().map_err(parquet)?;
    let file = inner.into_inner().map_err(|e| io(&staged.tmp, e.into_error()))?;
    file.sync_data().map_err(|e| io(&staged.tmp, e))?;
    staged.bytes = file.metadata().map_err(|e| io(&staged.tmp, e))?.len();
    if rows == 0 && !sink.single_file {
        return Ok((0, None));
    }
    guard.0 = None;
    Ok((rows, Some(staged)))
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Move every fragment's file into place. Idempotent: a file already moved (a
/// retried commit) is left as it is.
pub fn commit_files(sink: &FileSink, files: &[StagedFile]) -> Result<u64> {
    if let Some(run) = &sink.pipeline {
        if sink.pipeline_committed(&run.app_id)?.0 >= run.seq {
            return Ok(files.len() as u64); // an earlier attempt committed this run
        }
    }
    for f in files {
        match std::fs::rename(&f.tmp, &f.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Path::new(&f.path).exists() => {}
            Err(source) => {
                return Err(Error::Io {
                    path: f.path.clone(),
                    source,
                });
            }
        }
    }
    if let Some(run) = &sink.pipeline {
        let path = sink.marker(&run.app_id);
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = serde_json::to_vec(run).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
    }
    Ok(files.len() as u64)
}

/// Delete staged files that will never be committed; returns how many were there.
pub fn discard_files(files: &[StagedFile]) -> u64 {
    files.iter().filter(|f| std::fs::remove_file(&f.tmp).is_ok()).count() as u64
}

/// What one fragment wrote: rows and the (uncommitted) files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrittenFiles {
    pub rows: u64,
    pub adds: Vec<Add>,
}

/// Write a fragment's rows as data files of `sink`'s table, uncommitted, with the
/// session's Parquet writer settings (`datafusion.execution.parquet.*`).
pub async fn write_files(
    sink: &DeltaSink,
    config: &datafusion::config::ConfigOptions,
    mut stream: SendableRecordBatchStream,
    mut progress: impl FnMut(u64),
) -> Result<WrittenFiles> {
    let schema = sink.arrow_schema()?;
    let partition_by = (!sink.partition_by.is_empty()).then(|| sink.partition_by.clone());
    let storage = |e| Error::storage(sink.name(), e);
    let mut writer = RecordBatchWriter::try_new(sink.url.as_str(), Arc::clone(&schema), partition_by, None)
        .map_err(storage)?
        .with_writer_properties(parquet_properties(config)?);
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(Error::execution)?;
        rows += batch.num_rows() as u64;
        writer.write(conform(&batch, &schema)?).await.map_err(storage)?;
        progress(rows);
    }
    let adds = writer.flush().await.map_err(storage)?;
    Ok(WrittenFiles { rows, adds })
}

/// Write every partition of `plan` as data files of `sink`'s table, uncommitted,
/// each partition with its own writer and all at once: a large write encodes
/// Parquet on every core. (deltalake's own unpartitioned write drains every
/// partition into one writer, which encodes on one core.)
///
/// If a partition fails, the others stop taking batches and close their files,
/// every file written is deleted (none was committed, so nothing refers to
/// them) and the first error is returned. (Writers are stopped rather than
/// aborted: an aborted writer could leave a finished file nobody knows of.)
pub async fn write_partitions(
    sink: &DeltaSink,
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    task_ctx: Arc<datafusion::execution::TaskContext>,
) -> Result<WrittenFiles> {
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    let config = Arc::clone(task_ctx.session_config().options());
    let streams = datafusion::physical_plan::execute_stream_partitioned(plan, task_ctx).map_err(Error::execution)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut writers = tokio::task::JoinSet::new();
    for stream in streams {
        let (sink, config, mut stopped) = (sink.clone(), Arc::clone(&config), stopped.clone());
        let until = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let stream = Box::pin(RecordBatchStreamAdapter::new(stream.schema(), stream.take_until(until)));
        writers.spawn(async move { write_files(&sink, &config, stream, |_| {}).await });
    }
    let mut written = WrittenFiles {
        rows: 0,
        adds: Vec::new(),
    };
    let mut failure = None;
    while let Some(joined) = writers.join_next().await {
        // Writers are never aborted: a join error is a writer that panicked, our bug.
        let result = joined.map_err(|e| Error::execution(datafusion::error::DataFusionError::External(Box::new(e))));
        match result.and_then(|r| r) {
            Ok(part) => {
                written.rows += part.rows;
                written.adds.extend(part.adds);
            }
            Err(e) if failure.is_none() => {
                failure = Some(e);
                let _ = stop.send(true);
            }
            Err(_) => {}
        }
    }
    match failure {
        None => Ok(written),
        Some(e) => {
            discard_adds(sink, &written.adds);
            Err(e)
        }
    }
}

/// A session's Parquet format options (`datafusion.execution.parquet.*`).
fn session_parquet_options(config: &datafusion::config::ConfigOptions) -> datafusion::config::TableOptions {
    let mut options = datafusion::config::TableOptions::default_from_session_config(config);
    options.set_config_format(datafusion::config::ConfigFileType::PARQUET);
    options
}

/// Parquet writer settings from a session's `datafusion.execution.parquet.*`.
fn parquet_properties(
    config: &datafusion::config::ConfigOptions,
) -> Result<datafusion::parquet::file::properties::WriterProperties> {
    use datafusion::parquet::file::properties::WriterPropertiesBuilder;
    let mut options = session_parquet_options(config);
    // deltalake's writer puts the Arrow schema in the footer itself.
    options.parquet.global.skip_arrow_metadata = true;
    Ok(WriterPropertiesBuilder::try_from(&options.parquet)
        .map_err(Error::plan)?
        .build())
}

/// Delete data files that were written but will never be committed.
fn discard_adds(sink: &DeltaSink, adds: &[Add]) {
    for add in adds {
        // `Add::path` is relative to the table and URL-encoded.
        if let Some(path) = sink.url.join(&add.path).ok().and_then(|u| u.to_file_path().ok()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Cast a batch to the sink's schema, column by column (the planner already
/// matched names and order; this settles Delta's physical types).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let options = crate::types::STRICT_CAST;
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast_with_options(c, f.data_type(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::execution(e.into()))?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| Error::execution(e.into()))
}

/// The Delta table at `url`: loaded when its log has a commit, not loaded (no
/// version: the next commit creates it) when it has none. Like
/// `DeltaTable::try_from_url`, but a local directory without a log is not handed
/// to deltalake to load, whose kernel logs that at ERROR level.
pub(crate) async fn open_or_new(url: &Url) -> deltalake::DeltaResult<DeltaTable> {
    if has_log(url) {
        DeltaTable::try_from_url(url.clone()).await
    } else {
        deltalake::DeltaTableBuilder::from_url(url.clone())?.build()
    }
}

/// Whether the Delta log at `url` has a commit or checkpoint (a local directory
/// is looked at; any other URL is assumed to, and left to deltalake to load).
pub(crate) fn has_log(url: &Url) -> bool {
    let Ok(dir) = url.to_file_path() else {
        return true;
    };
    std::fs::read_dir(dir.join("_delta_log")).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(|c: char| c.is_ascii_digit()) || name == "_last_checkpoint"
        })
    })
}

/// Commit properties for a commit that creates a table: it lands as version 0 or
/// fails. deltalake would otherwise take a lost race for version 0 as a conflict to
/// retry, and commit a second table's metadata and rows on top of the winner's.
pub(crate) fn creating(properties: CommitProperties) -> CommitProperties {
    properties.with_max_retries(0)
}

/// Commit every fragment's files in one Delta transaction, once: a second call for
/// the same statement finds its transaction and returns the version it made.
pub async fn commit(sink: &DeltaSink, statement_id: &str, adds: Vec<Add>) -> Result<u64> {
    let storage = |e| Error::storage(sink.name(), e);
    let (app_id, version) = match &sink.pipeline {
        Some(run) => (run.app_id.clone(), i64::try_from(run.seq).unwrap_or(i64::MAX)),
        None => (DeltaSink::app_id(statement_id), 0),
    };
    let run_metadata = sink
        .pipeline
        .as_ref()
        .and_then(|run| serde_json::to_value(run).ok())
        .map(|v| (PIPELINE_COMMIT_KEY.to_string(), v));
    let properties = || {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(&app_id, version))
            .with_metadata(run_metadata.clone())
    };
    if sink.create {
        // No fragment wrote a file (no rows): the directory may not exist yet.
        if let Ok(dir) = sink.url.to_file_path() {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    let existing = match open_or_new(&sink.url).await {
        Ok(table) if table.version().is_some() => Some(table),
        Ok(_) | Err(deltalake::DeltaTableError::NotATable(_) | deltalake::DeltaTableError::NotInitialized)
            if sink.create =>
        {
            None // CTAS: the commit creates it
        }
        Ok(_) => return Err(storage(deltalake::DeltaTableError::NotInitialized)),
        Err(e) => return Err(storage(e)),
    };
    if let Some(table) = &existing {
        if let Some(done) = committed(table, &app_id, version).await.map_err(storage)? {
            return Ok(done); // committed by an earlier attempt
        }
        if sink.create {
            return Err(created_by_another(sink, &adds));
        }
    }
    // A file removed meanwhile (a server start sweeping files no commit names,
    // after its grace period) must not be committed as a dangling reference.
    if let Some(gone) = adds.iter().find(|add| {
        sink.url
            .join(&add.path)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .is_some_and(|path| !path.exists())
    }) {
        return Err(Error::Io {
            path: gone.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "a data file of this write is gone; nothing was committed, run the statement again",
            ),
        });
    }
    let actions = || adds.iter().cloned().map(Action::Add).collect::<Vec<_>>();
    match existing {
        None => {
            let schema = sink.arrow_schema()?;
            let columns: StructType = schema.as_ref().try_into_kernel().map_err(|e| storage(e.into()))?;
            let created = CreateBuilder::new()
                .with_location(sink.url.as_str())
                .with_table_name(sink.table.clone())
                .with_columns(columns.fields().cloned())
                .with_partition_columns(sink.partition_by.clone())
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_actions(actions())
                .with_commit_properties(creating(properties()))
                .await;
            match created {
                Ok(table) => Ok(table.version().unwrap_or(0)),
                Err(e) if has_log(&sink.url) => lost_create(sink, &app_id, version, &adds, e).await,
                Err(e) => Err(storage(e)),
            }
        }
        Some(mut table) => {
            if let Some(version) = sink.read_version {
                table.load_version(version).await.map_err(storage)?;
            }
            let snapshot = table.snapshot().map_err(storage)?;
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: (!sink.partition_by.is_empty()).then(|| sink.partition_by.clone()),
                predicate: None,
            };
            let done = CommitBuilder::from(properties())
                .with_actions(actions())
                .build(Some(snapshot), table.log_store(), operation)
                .await
                .map_err(storage)?;
            Ok(done.version())
        }
    }
}

/// The version `app_id`'s transaction committed at `version` or later, if it did.
async fn committed(table: &DeltaTable, app_id: &str, version: i64) -> deltalake::DeltaResult<Option<u64>> {
    let snapshot = table.snapshot()?;
    let done = snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await?
        .is_some_and(|committed| committed >= version);
    Ok(done.then(|| snapshot.version()))
}

/// A create commit failed and the table exists now: another statement created it
/// first, or an earlier attempt of this one did.
async fn lost_create(
    sink: &DeltaSink,
    app_id: &str,
    version: i64,
    adds: &[Add],
    error: deltalake::DeltaTableError,
) -> Result<u64> {
    let storage = |e| Error::storage(sink.name(), e);
    let table = DeltaTable::try_from_url(sink.url.clone()).await.map_err(storage)?;
    if let Some(done) = committed(&table, app_id, version).await.map_err(storage)? {
        return Ok(done);
    }
    debug!(table = %sink.name(), %error, "lost the race to create the table");
    Err(created_by_another(sink, adds))
}

/// `ALREADY_EXISTS` for a create whose table another statement made. Its data
/// files are referenced by no commit, and are removed.
fn created_by_another(sink: &DeltaSink, adds: &[Add]) -> Error {
    discard_adds(sink, adds);
    Error::AlreadyExists {
        kind: "table",
        name: sink.name(),
    }
}

/// The last committed run of a pipeline writing to a Delta table: `(seq,
/// watermark)`, both from that run's own commit (`(0, None)`: none yet).
pub async fn pipeline_committed(url: &Url, name: &str, app_id: &str) -> Result<(u64, Option<String>)> {
    let storage = |e| Error::storage(name.to_string(), e);
    let table = DeltaTable::try_from_url(url.clone()).await.map_err(storage)?;
    let snapshot = table.snapshot().map_err(storage)?;
    let Some(seq) = snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(storage)?
    else {
        return Ok((0, None));
    };
    let seq = u64::try_from(seq).unwrap_or(0);
    let mut history = table.history(None);
    while let Some(info) = history.next().await {
        let info = info.map_err(storage)?;
        let Some(value) = info.info.get(PIPELINE_COMMIT_KEY) else {
            continue;
        };
        if let Ok(run) = serde_json::from_value::<PipelineCommit>(value.clone()) {
            if run.app_id == app_id && run.seq == seq {
                return Ok((seq, run.watermark));
            }
        }
    }
    Err(Error::invalid(
        "pipeline state",
        format!("table '{name}' records run {seq} of {app_id} but its commit is no longer in the Delta log"),
    ))
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;

    fn sink(dir: &Path) -> DeltaSink {
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let url = Url::from_directory_path(dir).expect("absolute");
        DeltaSink::new(("s".into(), "raced".into()), url, &schema, vec![], true).expect("sink")
    }

    /// Files holding `ids`, written for `sink` and not committed.
    async fn staged(sink: &DeltaSink, ids: Vec<i64>) -> Vec<Add> {
        let schema = sink.arrow_schema().expect("schema");
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(ids))]).expect("batch");
        let stream = RecordBatchStreamAdapter::new(schema, futures::stream::iter([Ok(batch)]));
        let config = datafusion::config::ConfigOptions::default();
        write_files(sink, &config, Box::pin(stream), |_| {})
            .await
            .expect("write")
            .adds
    }

    fn on_disk(sink: &DeltaSink, add: &Add) -> bool {
        let path = sink.url.join(&add.path).expect("url").to_file_path().expect("path");
        path.exists()
    }

    async fn table_files(sink: &DeltaSink) -> (Option<u64>, Vec<String>) {
        let table = DeltaTable::try_from_url(sink.url.clone()).await.expect("a table");
        let mut files: Vec<String> = table
            .get_file_uris()
            .expect("files")
            .map(|uri| uri.rsplit('/').next().unwrap_or_default().to_string())
            .collect();
        files.sort();
        (table.version(), files)
    }

    fn names(adds: &[Add]) -> Vec<String> {
        let mut names: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_second_create_is_already_exists_and_its_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, second) = (sink(dir.path()), sink(dir.path()));
        let (adds_1, adds_2) = (staged(&first, vec![1, 2]).await, staged(&second, vec![3]).await);

        assert_eq!(commit(&first, "one", adds_1.clone()).await.expect("created"), 0);
        let err = commit(&second, "two", adds_2.clone()).await.expect_err("exists");
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert!(
            !adds_2.iter().any(|a| on_disk(&second, a)),
            "the loser's files are gone"
        );
        assert!(adds_1.iter().all(|a| on_disk(&first, a)));
        // The winner's commit, retried, finds its own transaction.
        assert_eq!(commit(&first, "one", adds_1.clone()).await.expect("retried"), 0);
        assert_eq!(table_files(&first).await, (Some(0), names(&adds_1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_concurrent_creates_exactly_one_lands() {
        for round in 0..8 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (a, b) = (sink(dir.path()), sink(dir.path()));
            let (adds_a, adds_b) = (staged(&a, vec![1]).await, staged(&b, vec![2]).await);
            let create = |sink: &DeltaSink, id: &'static str, adds: &[Add]| {
                let (sink, adds) = (sink.clone(), adds.to_vec());
                tokio::spawn(async move { commit(&sink, id, adds).await })
            };
            let (ta, tb) = (create(&a, "a", &adds_a), create(&b, "b", &adds_b));
            let (ra, rb) = (ta.await.expect("no panic"), tb.await.expect("no panic"));
            let (won, lost) = match (ra, rb) {
                (Ok(0), Err(Error::AlreadyExists { .. })) => (adds_a, adds_b),
                (Err(Error::AlreadyExists { .. }), Ok(0)) => (adds_b, adds_a),
                other => panic!("round {round}: one create lands at version 0, the other is ALREADY_EXISTS: {other:?}"),
            };
            assert_eq!(table_files(&a).await, (Some(0), names(&won)), "round {round}");
            assert!(!lost.iter().any(|add| on_disk(&a, add)), "round {round}");
        }
    }
}
