//! Writes run as workflow fragments: each final fragment writes Parquet data files
//! into the target Delta table's directory without committing them, and one commit
//! at the end makes all of them visible at once.
//!
//! ```text
//!  fragment i ──RecordBatchWriter──> part files (invisible) ──> [Add actions]
//!  commit: one Delta transaction { adds of every fragment, txn(app id, 0) }
//!          (CTAS: the table's creation is that same first commit)
//! ```
//!
//! The commit carries a Delta application transaction whose app id is the
//! statement's id, so a retried commit (the worker died after writing the log
//! entry, before reporting) finds its own transaction and does nothing. Files of
//! fragment attempts that were retried are never referenced; a Delta vacuum removes them.

use std::sync::Arc;

use arrow::compute::{CastOptions, cast_with_options};
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
use url::Url;

use crate::error::{Error, Result};

/// Where a write workflow puts its rows. Travels in the workflow's input.
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
}

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

/// What one fragment wrote: rows and the (uncommitted) files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrittenFiles {
    pub rows: u64,
    pub adds: Vec<Add>,
}

/// Write a fragment's rows as data files of `sink`'s table, uncommitted.
pub async fn write_files(
    sink: &DeltaSink,
    mut stream: SendableRecordBatchStream,
    mut progress: impl FnMut(u64),
) -> Result<WrittenFiles> {
    let schema = sink.arrow_schema()?;
    let partition_by = (!sink.partition_by.is_empty()).then(|| sink.partition_by.clone());
    let storage = |e| Error::storage(sink.name(), e);
    let mut writer =
        RecordBatchWriter::try_new(sink.url.as_str(), Arc::clone(&schema), partition_by, None).map_err(storage)?;
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

/// Cast a batch to the sink's schema, column by column (the planner already
/// matched names and order; this settles Delta's physical types).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast_with_options(c, f.data_type(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::execution(e.into()))?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| Error::execution(e.into()))
}

/// Commit every fragment's files in one Delta transaction, once: a second call for
/// the same statement finds its transaction and returns the version it made.
pub async fn commit(sink: &DeltaSink, statement_id: &str, adds: Vec<Add>) -> Result<u64> {
    let storage = |e| Error::storage(sink.name(), e);
    let app_id = DeltaSink::app_id(statement_id);
    let properties = || CommitProperties::default().with_application_transaction(Transaction::new(&app_id, 0));
    let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    let existing = match DeltaTable::try_from_url(sink.url.clone()).await {
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
        let snapshot = table.snapshot().map_err(storage)?;
        if snapshot
            .transaction_version(table.log_store().as_ref(), &app_id)
            .await
            .map_err(storage)?
            .is_some()
        {
            return Ok(snapshot.version()); // committed by an earlier attempt
        }
        if sink.create {
            return Err(Error::AlreadyExists {
                kind: "table",
                name: sink.name(),
            });
        }
    }
    match existing {
        None => {
            let schema = sink.arrow_schema()?;
            let columns: StructType = schema.as_ref().try_into_kernel().map_err(|e| storage(e.into()))?;
            let table = CreateBuilder::new()
                .with_location(sink.url.as_str())
                .with_table_name(sink.table.clone())
                .with_columns(columns.fields().cloned())
                .with_partition_columns(sink.partition_by.clone())
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_actions(actions)
                .with_commit_properties(properties())
                .await
                .map_err(storage)?;
            Ok(table.version().unwrap_or(0))
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
                .with_actions(actions)
                .build(Some(snapshot), table.log_store(), operation)
                .await
                .map_err(storage)?;
            Ok(done.version())
        }
    }
}
