//! The scan of a cached table: its batches as they were cached, about one
//! Flight message each. (DataFusion's memory source would cut them to
//! `batch_size` rows, and so send a large and a small message per batch.)

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use super::Cached;

#[derive(Debug)]
pub(super) struct CachedScanExec {
    table: String,
    cached: Arc<Cached>,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl CachedScanExec {
    pub(super) fn try_new(
        table: &str,
        cached: Arc<Cached>,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> DfResult<Self> {
        let schema = match projection {
            Some(columns) => Arc::new(cached.schema.project(columns)?),
            None => Arc::clone(&cached.schema),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(cached.partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            table: table.to_string(),
            cached,
            projection: projection.cloned(),
            limit,
            schema,
            properties,
        })
    }
}

impl DisplayAs for CachedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "CachedScanExec: table={}, partitions={}, rows={}",
            self.table,
            self.cached.partitions.len(),
            self.cached.rows
        )?;
        if let Some(columns) = &self.projection {
            write!(f, ", projection={columns:?}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for CachedScanExec {
    fn name(&self) -> &str {
        "CachedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let batches: Vec<RecordBatch> = self.cached.partitions.get(partition).cloned().unwrap_or_default();
        let projection = self.projection.clone();
        let mut left = self.limit.unwrap_or(usize::MAX);
        let rows = batches.into_iter().map_while(move |batch| {
            if left == 0 {
                return None;
            }
            let batch = if batch.num_rows() > left {
                batch.slice(0, left)
            } else {
                batch
            };
            left -= batch.num_rows();
            Some(match &projection {
                Some(columns) => batch.project(columns).map_err(Into::into),
                None => Ok(batch),
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(rows),
        )))
    }
}
