//! System tables: views whose rows are computed afresh each time they are scanned.
//!
//! `system.cached_tables`, `system.pipelines` and `system.pipeline_runs` are each a
//! [`SystemRows`]: a schema and a way to produce the rows as they are now.
//! [`SystemTable`] turns one into a DataFusion [`TableProvider`] of type `VIEW`,
//! so projection, filters and `LIMIT` work on it like on any other table.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::Result;

/// The rows of one system table, read when the table is scanned.
#[async_trait]
pub trait SystemRows: Debug + Send + Sync + 'static {
    /// The table's schema; [`SystemRows::rows`] returns batches of it.
    fn schema(&self) -> SchemaRef;

    /// The rows as they are now.
    async fn rows(&self) -> Result<RecordBatch>;
}

/// A [`SystemRows`] as a table.
#[derive(Debug)]
pub struct SystemTable<R>(pub R);

impl<R: SystemRows> SystemTable<R> {
    /// `rows` as a table provider.
    pub fn provider(rows: R) -> Arc<dyn TableProvider> {
        Arc::new(Self(rows))
    }
}

#[async_trait]
impl<R: SystemRows> TableProvider for SystemTable<R> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .0
            .rows()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(batch.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::error::Error;

    /// Two rows whose second column is a counter bumped by every read.
    #[derive(Debug, Default)]
    struct Counter(AtomicI64);

    #[async_trait]
    impl SystemRows for Counter {
        fn schema(&self) -> SchemaRef {
            Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("reads", DataType::Int64, false),
            ]))
        }

        async fn rows(&self) -> Result<RecordBatch> {
            let n = self.0.fetch_add(1, Ordering::AcqRel) + 1;
            RecordBatch::try_new(
                self.schema(),
                vec![
                    Arc::new(StringArray::from(vec!["a", "b"])),
                    Arc::new(Int64Array::from(vec![n, n * 10])),
                ],
            )
            .map_err(|e| Error::execution(e.into()))
        }
    }

    async fn query(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        ctx.sql(sql).await.expect("plans").collect().await.expect("runs")
    }

    #[tokio::test]
    async fn every_scan_reads_the_rows_now_and_filters_apply() {
        let ctx = SessionContext::new();
        ctx.register_table("counter", SystemTable::provider(Counter::default()))
            .expect("registers");

        let first = query(&ctx, "SELECT reads FROM counter WHERE name = 'b'").await;
        let second = query(&ctx, "SELECT reads FROM counter WHERE name = 'b'").await;
        let value = |batches: &[RecordBatch]| {
            assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
            let column = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64");
            column.value(0)
        };
        assert_eq!(value(&first), 10);
        assert_eq!(value(&second), 20, "the second scan reads the rows again");
    }
}
