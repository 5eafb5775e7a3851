//! Managed tables: Delta Lake tables under the data directory.
//!
//! [`ManagedTable`] is the DataFusion [`TableProvider`] the catalog registers for
//! each managed table. It delegates reads and `INSERT` to deltalake's own provider
//! and swaps in a fresh snapshot after each write made through Contrail, so a
//! statement always sees every write acknowledged before it started.
//!
//! Its columns are the ones Contrail reads back (see [`crate::stored`]): where
//! Delta stores a column as another type, a scan casts it back and an `INSERT`
//! casts it to the stored type, so DataFusion only ever sees the column's own
//! Arrow type.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column as PhysicalColumn};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use deltalake::DeltaTable;
use url::Url;

use crate::catalog::Version;
use crate::distributed::{ManagedScanExec, ScansByReference};
use crate::error::{Error, Result};
use crate::latest::Latest;

/// A Delta table registered in the catalog.
#[derive(Debug)]
pub struct ManagedTable {
    name: String,
    url: Url,
    current: Latest<Current>,
    /// The catalog's version, bumped when a new snapshot changes the table's
    /// columns: a plan made against the old ones must not be reused.
    catalog_version: Version,
}

#[derive(Debug, Clone)]
struct Current {
    table: DeltaTable,
    provider: Arc<dyn TableProvider>,
    /// The columns as Contrail reads them; `provider` has the stored ones.
    logical: SchemaRef,
}

impl Current {
    fn new(table: DeltaTable, provider: Arc<dyn TableProvider>) -> Self {
        let logical = crate::stored::logical_schema(&provider.schema());
        Self {
            table,
            provider,
            logical,
        }
    }

    /// Whether column `name` is stored as another type than it reads as.
    fn converted(&self, name: &str) -> bool {
        let stored = self.provider.schema();
        match (stored.field_with_name(name), self.logical.field_with_name(name)) {
            (Ok(s), Ok(l)) => s.data_type() != l.data_type(),
            _ => false,
        }
    }

    /// `input` (with columns named as `from`'s) with every column cast to its type
    /// in `to`, where they differ; `input` itself when none does.
    fn cast_columns(input: Arc<dyn ExecutionPlan>, to: &Schema) -> DfResult<Arc<dyn ExecutionPlan>> {
        let from = input.schema();
        let mut changed = false;
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(from.fields().len());
        for (i, field) in from.fields().iter().enumerate() {
            let column: Arc<dyn PhysicalExpr> = Arc::new(PhysicalColumn::new(field.name(), i));
            exprs.push(match to.field_with_name(field.name()) {
                Ok(target) if target.data_type() != field.data_type() => {
                    changed = true;
                    // The target's own field: its type, nullability and metadata
                    // (a read drops the stored column's type tag).
                    let target = Arc::new(target.clone().with_nullable(field.is_nullable()));
                    let cast = CastExpr::new_with_target_field(column, target, Some(crate::types::STRICT_CAST));
                    (Arc::new(cast), field.name().clone())
                }
                _ => (column, field.name().clone()),
            });
        }
        if !changed {
            return Ok(input);
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }
}

impl ManagedTable {
    /// Open the Delta table at `url` (a `file://` directory URL).
    pub(crate) async fn open(name: impl Into<String>, url: Url, catalog_version: Version) -> Result<Self> {
        let name = name.into();
        let current = load(&name, &url).await?;
        Ok(Self {
            name,
            url,
            current: Latest::new(current),
            catalog_version,
        })
    }

    /// Wrap a table a write operation just returned.
    pub(crate) async fn from_table(
        name: impl Into<String>,
        url: Url,
        table: DeltaTable,
        catalog_version: Version,
    ) -> Result<Self> {
        let name = name.into();
        let provider = provider_of(&name, &table).await?;
        Ok(Self {
            name,
            url,
            current: Latest::new(Current::new(table, provider)),
            catalog_version,
        })
    }

    /// The table's directory URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The current [`DeltaTable`] handle, for deltalake operations.
    pub fn delta(&self) -> DeltaTable {
        self.current.get().table
    }

    /// Bytes of data files in the current version.
    pub fn total_bytes(&self) -> u64 {
        self.current
            .get()
            .table
            .snapshot()
            .map(|s| s.log_data().iter().map(|f| f.size().max(0) as u64).sum())
            .unwrap_or(0)
    }

    /// Reload the latest committed version (after a write through DataFusion).
    pub async fn refresh(&self) -> Result<()> {
        let current = load(&self.name, &self.url).await?;
        self.set_current(current);
        Ok(())
    }

    /// Install the table a deltalake operation returned.
    pub async fn install(&self, table: DeltaTable) -> Result<()> {
        let provider = provider_of(&self.name, &table).await?;
        self.set_current(Current::new(table, provider));
        Ok(())
    }

    fn set_current(&self, current: Current) {
        let schema = Arc::clone(&current.logical);
        let before = self.current.replace(current);
        if before.logical != schema {
            // Replaced by another table, or columns added (schema evolution).
            self.catalog_version.bump();
        }
    }

    /// The table's Delta id and latest committed version (loading it first if
    /// another process committed since), or `None` before its first commit.
    pub(crate) async fn identity(&self) -> Result<Option<(String, u64)>> {
        if self.behind() {
            self.refresh().await?;
        }
        let table = self.current.get().table;
        let (Some(version), Ok(snapshot)) = (table.version(), table.snapshot()) else {
            return Ok(None);
        };
        Ok(Some((snapshot.metadata().id().to_string(), version)))
    }

    /// Whether a newer version than the loaded one is committed (one `stat`).
    fn behind(&self) -> bool {
        let Some(version) = self.current.get().table.version() else {
            return false;
        };
        let Ok(dir) = self.url.to_file_path() else {
            return false;
        };
        dir.join("_delta_log")
            .join(format!("{:020}.json", version + 1))
            .exists()
    }
}

async fn load(name: &str, url: &Url) -> Result<Current> {
    let table = deltalake::open_table(url.clone())
        .await
        .map_err(|e| Error::storage(name, e))?;
    let provider = provider_of(name, &table).await?;
    Ok(Current::new(table, provider))
}

pub(crate) async fn provider_of(name: &str, table: &DeltaTable) -> Result<Arc<dyn TableProvider>> {
    // deltalake reads strings as Utf8View by default; Contrail's tables are
    // Utf8/Binary everywhere (information_schema, GetTables, results).
    let mut config = datafusion::prelude::SessionConfig::new();
    config.options_mut().execution.parquet.schema_force_view_types = false;
    let session = Arc::new(
        datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .build(),
    );
    table
        .table_provider()
        .with_session(session)
        .await
        .map_err(|e| Error::storage(name, e.into()))
}

#[async_trait]
impl TableProvider for ManagedTable {
    fn schema(&self) -> SchemaRef {
        self.current.get().logical
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.behind() {
            // Another process (a worker committing a pipeline run) wrote it.
            self.refresh()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
        }
        let current = self.current.get();
        current
            .table
            .update_datafusion_session(state)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // A filter on a converted column is typed for the column's own type: it
        // is applied above the scan, after the cast (see supports_filters_pushdown).
        let filters: Vec<Expr> = filters
            .iter()
            .filter(|f| !f.column_refs().iter().any(|c| current.converted(&c.name)))
            .cloned()
            .collect();
        let scan = current.provider.scan(state, projection, &filters, limit).await?;
        // Planning for workflow fragments: carry the scan by reference.
        let scan = match (
            state.config().get_extension::<ScansByReference>(),
            current.table.version(),
        ) {
            (Some(_), Some(version)) => Arc::new(ManagedScanExec::wrap(
                &self.name, &self.url, version, projection, &filters, limit, scan,
            )?),
            _ => scan,
        };
        Current::cast_columns(scan, &current.logical)
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let current = self.current.get();
        let (converted, plain): (Vec<_>, Vec<_>) = filters
            .iter()
            .enumerate()
            .partition(|(_, f)| f.column_refs().iter().any(|c| current.converted(&c.name)));
        if converted.is_empty() {
            return current.provider.supports_filters_pushdown(filters);
        }
        let plain_filters: Vec<&Expr> = plain.iter().map(|(_, f)| **f).collect();
        let mut answers = current.provider.supports_filters_pushdown(&plain_filters)?.into_iter();
        let mut result = vec![TableProviderFilterPushDown::Unsupported; filters.len()];
        for (i, _) in plain {
            result[i] = answers.next().unwrap_or(TableProviderFilterPushDown::Unsupported);
        }
        Ok(result)
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let current = self.current.get();
        let input = Current::cast_columns(input, &current.provider.schema())?;
        current.provider.insert_into(state, input, insert_op).await
    }
}
