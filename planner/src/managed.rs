//! Managed tables: Delta Lake tables under the data directory.
//!
//! [`ManagedTable`] is the DataFusion [`TableProvider`] the catalog registers for
//! each managed table. It delegates reads and `INSERT` to deltalake's own provider
//! and swaps in a fresh snapshot after each write made through Contrail, so a
//! statement always sees every write acknowledged before it started.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
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
            current: Latest::new(Current { table, provider }),
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
        self.set_current(Current { table, provider });
        Ok(())
    }

    fn set_current(&self, current: Current) {
        let schema = current.provider.schema();
        let before = self.current.replace(current);
        if before.provider.schema() != schema {
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
    Ok(Current { table, provider })
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
        self.current.get().provider.schema()
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
        let scan = current.provider.scan(state, projection, filters, limit).await?;
        // Planning for workflow fragments: carry the scan by reference.
        match (
            state.config().get_extension::<ScansByReference>(),
            current.table.version(),
        ) {
            (Some(_), Some(version)) => Ok(Arc::new(ManagedScanExec::wrap(
                &self.name, &self.url, version, projection, filters, limit, scan,
            )?)),
            _ => Ok(scan),
        }
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.current.get().provider.supports_filters_pushdown(filters)
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.current.get().provider.insert_into(state, input, insert_op).await
    }
}
