//! Physical plans cut into stages and fragments, for workflow execution.
//!
//! ```text
//!  physical plan ──cut at exchanges──> stages, in dependency order (the last is final)
//!
//!   RepartitionExec(Hash(p), input)  stage S = the RepartitionExec: one fragment per input
//!                                    partition, each hash splitting its rows into p
//!                                    buckets; the consumer reads StageReaderExec(S,
//!                                    Shuffle): partition j = bucket j of every fragment
//!   RepartitionExec(RoundRobin, in)  removed: its consumer runs over `in`'s partitions
//!   CoalescePartitionsExec(input)    stage S = input: one fragment per input partition;
//!   SortPreservingMergeExec(input)   the merge stays in the consumer, over
//!                                    StageReaderExec(S, PerFragment): partition i = fragment i
//!   root                             the final stage: one fragment per output partition
//!   ScalarSubqueryExec(input, subs)  not cut inside: the ScalarSubqueryExprs below it
//!                                    read its results, so its subtree stays in one stage
//!   HashJoinExec(CollectLeft) of a   first made Partitioned (both sides hash-shuffled):
//!   LEFT/FULL/semi/anti/mark join    its build-side rows come out after the last probe
//!                                    partition, which one fragment alone never sees
//! ```
//!
//! Each stage plan is serialized with `datafusion-proto` and [`FragmentCodec`], which
//! knows Contrail's own nodes: [`StageReaderExec`] and [`ManagedScanExec`] (a managed
//! Delta table scan carried by reference: table URL and version, never data files).
//!
//! At run time a fragment finds where its inputs are in the [`FragmentInputs`] session
//! extension, and reads them through its [`FragmentFetcher`] (Flight, in
//! `contrail-workflows`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{Expr, JoinType};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, replace_children_if_necessary};
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use url::Url;

use crate::error::{Error, Result};

/// One stage of a cut plan.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Position in dependency order; stage readers refer to it.
    pub id: u32,
    /// The stage's plan. A [`RepartitionExec`] root means "shuffle the root's input".
    pub plan: Arc<dyn ExecutionPlan>,
    /// Stages this one reads.
    pub inputs: Vec<u32>,
}

impl Stage {
    /// How many fragments (activities) the stage runs.
    pub fn fragments(&self) -> usize {
        match self.plan.downcast_ref::<RepartitionExec>() {
            Some(shuffle) => shuffle.input().output_partitioning().partition_count(),
            None => self.plan.output_partitioning().partition_count(),
        }
    }

    /// How many outputs (buckets) each fragment writes.
    pub fn buckets(&self) -> usize {
        match self.plan.downcast_ref::<RepartitionExec>() {
            Some(shuffle) => shuffle.partitioning().partition_count(),
            None => 1,
        }
    }
}

/// Cut `plan` at its exchanges. Stages come back in dependency order; the last is final.
pub fn cut(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<Stage>> {
    let mut stages = Vec::new();
    let root = cut_node(plan, &mut stages).map_err(Error::plan)?;
    push_stage(&mut stages, root);
    Ok(stages)
}

fn cut_node(plan: Arc<dyn ExecutionPlan>, stages: &mut Vec<Stage>) -> DfResult<Arc<dyn ExecutionPlan>> {
    if plan.is::<ScalarSubqueryExec>() {
        // Its ScalarSubqueryExprs sit in the nodes below and share its results: the
        // subtree stays whole, inside whichever stage holds the ScalarSubqueryExec.
        return Ok(plan);
    }
    let plan = probe_side_whole(plan)?;
    let children = plan
        .children()
        .into_iter()
        .map(|child| cut_node(Arc::clone(child), stages))
        .collect::<DfResult<Vec<_>>>()?;
    let plan = if children.is_empty() {
        plan
    } else {
        replace_children_if_necessary(plan, children)?
    };
    if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
        if !matches!(repartition.partitioning(), Partitioning::Hash(..)) {
            // Round-robin only spreads batches over more partitions, for parallelism
            // inside one process. As an exchange between fragments it would spool
            // every row of its input and read it back (TPC-H Q1 as a workflow: the
            // whole of lineitem, 9x the inline time); its consumer runs one
            // fragment per input partition instead. Ballista drops it the same way.
            return Ok(Arc::clone(repartition.input()));
        }
        if repartition.preserve_order() {
            return Err(DataFusionError::NotImplemented(
                "order-preserving repartitioning cannot run as workflow fragments".to_string(),
            ));
        }
        let buckets = repartition.partitioning().partition_count();
        let schema = plan.schema();
        let id = push_stage(stages, Arc::clone(&plan));
        return Ok(Arc::new(StageReaderExec::new(id, schema, buckets, ReadMode::Shuffle)));
    }
    if plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>() {
        let Some(input) = plan.children().first().map(|c| Arc::clone(c)) else {
            return Ok(plan);
        };
        let fragments = input.output_partitioning().partition_count();
        if fragments > 1 {
            let schema = input.schema();
            let id = push_stage(stages, input);
            let reader: Arc<dyn ExecutionPlan> =
                Arc::new(StageReaderExec::new(id, schema, fragments, ReadMode::PerFragment));
            return replace_children_if_necessary(plan, vec![reader]);
        }
    }
    Ok(plan)
}

/// A join that collects its build side once and emits build rows after its last
/// probe partition ends (LEFT, FULL, semi, anti and mark joins: which build rows
/// matched is known only then) counts its probe partitions down in one process.
/// A fragment runs one of them, so the count never reached zero and those rows
/// were never emitted: `EXISTS` and `IN` over split files returned nothing.
/// Such a hash join becomes a partitioned one (both sides hash-shuffled on the
/// keys, every fragment owning its share of the build side); a null-aware anti
/// join (`NOT IN`, where one NULL on the probe side empties the result) and a
/// nested-loop join read their whole probe side in one fragment.
fn probe_side_whole(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    fn emits_build_rows_last(join_type: JoinType) -> bool {
        matches!(
            join_type,
            JoinType::Left | JoinType::Full | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark
        )
    }
    let whole = |probe: &Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
        Arc::new(CoalescePartitionsExec::new(Arc::clone(probe)))
    };
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let probes = join.right().output_partitioning().partition_count();
        if *join.partition_mode() != PartitionMode::CollectLeft
            || probes <= 1
            || !emits_build_rows_last(*join.join_type())
        {
            return Ok(plan);
        }
        if join.null_aware {
            let children = vec![Arc::clone(join.left()), whole(join.right())];
            return replace_children_if_necessary(plan, children);
        }
        let build = match join.left().downcast_ref::<CoalescePartitionsExec>() {
            Some(coalesce) => Arc::clone(coalesce.input()),
            None => Arc::clone(join.left()),
        };
        let (build_keys, probe_keys) = join.on().iter().map(|(l, r)| (Arc::clone(l), Arc::clone(r))).unzip();
        let build = RepartitionExec::try_new(build, Partitioning::Hash(build_keys, probes))?;
        let probe = RepartitionExec::try_new(Arc::clone(join.right()), Partitioning::Hash(probe_keys, probes))?;
        return join
            .builder()
            .with_partition_mode(PartitionMode::Partitioned)
            .with_new_children(vec![Arc::new(build), Arc::new(probe)])?
            .reset_state()
            .build_exec();
    }
    if let Some(join) = plan.downcast_ref::<NestedLoopJoinExec>() {
        if join.right().output_partitioning().partition_count() > 1 && emits_build_rows_last(*join.join_type()) {
            let children = vec![Arc::clone(join.left()), whole(join.right())];
            return replace_children_if_necessary(plan, children);
        }
    }
    Ok(plan)
}

fn push_stage(stages: &mut Vec<Stage>, plan: Arc<dyn ExecutionPlan>) -> u32 {
    let id = stages.len() as u32;
    let mut inputs = Vec::new();
    collect_readers(&plan, &mut inputs);
    stages.push(Stage { id, plan, inputs });
    id
}

fn collect_readers(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<u32>) {
    if let Some(reader) = plan.downcast_ref::<StageReaderExec>() {
        if !out.contains(&reader.stage) {
            out.push(reader.stage);
        }
        return;
    }
    for child in plan.children() {
        collect_readers(child, out);
    }
}

/// Serialize a stage plan.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    if let Some(what) = local_source(&plan) {
        return Err(Error::unsupported(format!(
            "running this statement as a workflow: it reads {what}, which runs only in the \
             server that plans it; with contrail.execution_mode = 'auto' (or 'inline') it runs there"
        )));
    }
    datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &FragmentCodec)
        .map(|b| b.to_vec())
        .map_err(|e| Error::unsupported(format!("running this statement as a workflow: {e}")))
}

/// A source in `plan` that a fragment cannot carry to a worker: catalog tables
/// (`information_schema`, `SHOW`) stream this process's state, and a table
/// function (`generate_series`, `range`) whose every column was projected away
/// arrives with its one column back (datafusion-proto 55 sends the projected
/// schema, not the projection): a `count(*)` over one failed in the fragment
/// with a schema mismatch.
fn local_source(plan: &Arc<dyn ExecutionPlan>) -> Option<&'static str> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::physical_plan::memory::LazyMemoryExec;
    use datafusion::physical_plan::streaming::StreamingTableExec;

    let mut found = None;
    let _ = plan.apply(|node| {
        found = if node.is::<StreamingTableExec>() {
            Some("information_schema (SHOW, the catalog)")
        } else if node.is::<LazyMemoryExec>() && node.schema().fields().is_empty() {
            Some("a table function (generate_series, range) for its row count only")
        } else {
            None
        };
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Deserialize a stage plan in `ctx` (which carries the session settings).
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(bytes, ctx, &FragmentCodec)
        .map_err(Error::execution)
}

/// Where one fragment's output is: the worker holding it and its identity there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FragmentRef {
    /// Flight address of the worker's data plane (`grpc+tcp://host:port`).
    pub location: String,
    /// The statement's query id.
    pub query_id: String,
    /// Stage and fragment index within it.
    pub stage: u32,
    pub fragment: u32,
}

/// Reads fragment outputs (one bucket of one fragment) from wherever they are.
#[async_trait]
pub trait FragmentFetcher: fmt::Debug + Send + Sync {
    /// Stream bucket `bucket` of `fragment`'s output. An output that is gone (its
    /// worker died, its spool expired) is reported as [`UpstreamLost`].
    async fn fetch(&self, fragment: &FragmentRef, bucket: u32) -> DfResult<SendableRecordBatchStream>;
}

/// The error a [`FragmentFetcher`] returns when an upstream output is gone and must
/// be recomputed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("input fragment {}/{} at {} is gone: {reason}", .fragment.stage, .fragment.fragment, .fragment.location)]
pub struct UpstreamLost {
    pub fragment: FragmentRef,
    pub reason: String,
}

impl UpstreamLost {
    /// Find an [`UpstreamLost`] inside a DataFusion error chain.
    pub fn find(e: &DataFusionError) -> Option<&UpstreamLost> {
        match e {
            DataFusionError::External(inner) => inner.downcast_ref::<UpstreamLost>(),
            DataFusionError::Context(_, inner) => Self::find(inner),
            DataFusionError::Shared(inner) => Self::find(inner),
            _ => None,
        }
    }
}

/// Session extension: the outputs of upstream stages and how to read them.
#[derive(Debug, Clone)]
pub struct FragmentInputs {
    /// Fragment outputs by stage id, in fragment order.
    pub stages: HashMap<u32, Vec<FragmentRef>>,
    pub fetcher: Arc<dyn FragmentFetcher>,
}

/// Marker session extension: managed tables plan scans that can be serialized
/// ([`ManagedScanExec`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScansByReference;

/// How a [`StageReaderExec`] maps its partitions to upstream outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// Partition i is fragment i's whole output.
    PerFragment,
    /// Partition j is bucket j of every fragment.
    Shuffle,
}

/// Leaf standing in for an upstream stage's outputs.
#[derive(Debug)]
pub struct StageReaderExec {
    stage: u32,
    mode: ReadMode,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl StageReaderExec {
    pub fn new(stage: u32, schema: SchemaRef, partitions: usize, mode: ReadMode) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            stage,
            mode,
            schema,
            properties,
        }
    }

    /// The stage it reads.
    pub fn stage(&self) -> u32 {
        self.stage
    }
}

impl DisplayAs for StageReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StageReaderExec: stage={}, mode={:?}, partitions={}",
            self.stage,
            self.mode,
            self.properties.output_partitioning().partition_count()
        )
    }
}

impl ExecutionPlan for StageReaderExec {
    fn name(&self) -> &str {
        "StageReaderExec"
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

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let inputs = context
            .session_config()
            .get_extension::<FragmentInputs>()
            .ok_or_else(|| DataFusionError::Internal("stage reader run outside a fragment".to_string()))?;
        let fragments = inputs.stages.get(&self.stage).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "no outputs of stage {} were passed to this fragment",
                self.stage
            ))
        })?;
        let wanted: Vec<(FragmentRef, u32)> = match self.mode {
            ReadMode::PerFragment => {
                let fragment = fragments.get(partition).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!("stage {} has no fragment {partition}", self.stage))
                })?;
                vec![(fragment, 0)]
            }
            ReadMode::Shuffle => fragments.into_iter().map(|f| (f, partition as u32)).collect(),
        };
        let fetcher = Arc::clone(&inputs.fetcher);
        let stream = futures::stream::iter(wanted)
            .map(move |(fragment, bucket)| {
                let fetcher = Arc::clone(&fetcher);
                async move { fetcher.fetch(&fragment, bucket).await }
            })
            // Open the next upstream while this one streams.
            .buffered(2)
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// A managed (Delta) table scan carried by reference: the table's URL and version,
/// the projection, filters and limit. The worker opens that version and plans the
/// scan again when the fragment runs, so no file list travels with the plan.
#[derive(Debug)]
pub struct ManagedScanExec {
    spec: ScanSpec,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// The real scan: the one planned here, or planned lazily after decoding
    /// (once, for all partitions this process runs).
    inner: Arc<OnceCell<Arc<dyn ExecutionPlan>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScanSpec {
    name: String,
    url: Url,
    version: u64,
    projection: Option<Vec<usize>>,
    /// `datafusion-proto` `LogicalExprList`.
    filters: Vec<u8>,
    limit: Option<usize>,
    partitions: usize,
    /// `datafusion-proto` `Schema` of the scan's output.
    schema: Vec<u8>,
}

impl ManagedScanExec {
    /// Wrap the scan `inner` that the provider planned for this table version.
    pub(crate) fn wrap(
        name: &str,
        url: &Url,
        version: u64,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        inner: Arc<dyn ExecutionPlan>,
    ) -> DfResult<Self> {
        let codec = datafusion_proto::logical_plan::DefaultLogicalExtensionCodec {};
        let nodes = datafusion_proto::logical_plan::to_proto::serialize_exprs(filters, &codec)?;
        let filters = datafusion_proto::protobuf::LogicalExprList { expr: nodes }.encode_to_vec();
        let schema = inner.schema();
        let proto_schema: datafusion_proto::protobuf::Schema = schema.as_ref().try_into()?;
        let spec = ScanSpec {
            name: name.to_string(),
            url: url.clone(),
            version,
            projection: projection.cloned(),
            filters,
            limit,
            partitions: inner.output_partitioning().partition_count(),
            schema: proto_schema.encode_to_vec(),
        };
        Ok(Self::new(spec, schema, OnceCell::new_with(Some(inner))))
    }

    fn new(spec: ScanSpec, schema: SchemaRef, inner: OnceCell<Arc<dyn ExecutionPlan>>) -> Self {
        let inner = Arc::new(inner);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(spec.partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            spec,
            schema,
            properties,
            inner,
        }
    }

    fn decode(buf: &[u8]) -> DfResult<Self> {
        let spec: ScanSpec = serde_json::from_slice(buf)
            .map_err(|e| DataFusionError::Internal(format!("bad managed scan in fragment plan: {e}")))?;
        let proto_schema = datafusion_proto::protobuf::Schema::decode(spec.schema.as_slice())
            .map_err(|e| DataFusionError::Internal(format!("bad scan schema in fragment plan: {e}")))?;
        let schema: Schema = (&proto_schema).try_into()?;
        Ok(Self::new(spec, Arc::new(schema), OnceCell::new()))
    }

    /// Open the table version and plan the scan (on the worker, once per fragment).
    async fn plan_inner(spec: ScanSpec, context: Arc<TaskContext>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let external = |e: Box<dyn std::error::Error + Send + Sync>| DataFusionError::External(e);
        let table = deltalake::DeltaTableBuilder::from_url(spec.url.clone())
            .map_err(|e| external(Box::new(e)))?
            .with_version(spec.version)
            .load()
            .await
            .map_err(|e| external(Box::new(e)))?;
        let provider = crate::managed::provider_of(&spec.name, &table)
            .await
            .map_err(|e| external(Box::new(e)))?;
        let state = SessionStateBuilder::new()
            .with_config(context.session_config().clone())
            .with_runtime_env(context.runtime_env())
            .with_default_features()
            .build();
        table
            .update_datafusion_session(&state)
            .map_err(|e| external(Box::new(e)))?;
        let filters = if spec.filters.is_empty() {
            Vec::new()
        } else {
            let list = datafusion_proto::protobuf::LogicalExprList::decode(spec.filters.as_slice())
                .map_err(|e| DataFusionError::Internal(format!("bad scan filters in fragment plan: {e}")))?;
            let codec = datafusion_proto::logical_plan::DefaultLogicalExtensionCodec {};
            datafusion_proto::logical_plan::from_proto::parse_exprs(&list.expr, context.as_ref(), &codec)?
        };
        let plan = provider
            .scan(&state, spec.projection.as_ref(), &filters, spec.limit)
            .await?;
        let partitions = plan.output_partitioning().partition_count();
        if partitions != spec.partitions {
            return Err(DataFusionError::Internal(format!(
                "scan of {} version {} planned {partitions} partitions on this worker, {} when the query was planned",
                spec.name, spec.version, spec.partitions
            )));
        }
        Ok(plan)
    }
}

impl DisplayAs for ManagedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ManagedScanExec: table={}, version={}, partitions={}",
            self.spec.name, self.spec.version, self.spec.partitions
        )
    }
}

impl ExecutionPlan for ManagedScanExec {
    fn name(&self) -> &str {
        "ManagedScanExec"
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

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if let Some(inner) = self.inner.get() {
            return inner.execute(partition, context);
        }
        let spec = self.spec.clone();
        let schema = Arc::clone(&self.schema);
        let inner = Arc::clone(&self.inner);
        let stream = futures::stream::once(async move {
            let plan = inner
                .get_or_try_init(|| ManagedScanExec::plan_inner(spec, Arc::clone(&context)))
                .await?;
            plan.execute(partition, context)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// `datafusion-proto` codec for Contrail's plan nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FragmentCodec;

const TAG_READER: u8 = b'R';
const TAG_MANAGED_SCAN: u8 = b'M';

#[derive(Serialize, Deserialize)]
struct ReaderWire {
    stage: u32,
    mode: ReadMode,
    partitions: usize,
    schema: Vec<u8>,
}

impl PhysicalExtensionCodec for FragmentCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let bad = |e: String| DataFusionError::Internal(format!("bad node in fragment plan: {e}"));
        match buf.split_first() {
            Some((&TAG_READER, rest)) => {
                let wire: ReaderWire = serde_json::from_slice(rest).map_err(|e| bad(e.to_string()))?;
                let proto_schema = datafusion_proto::protobuf::Schema::decode(wire.schema.as_slice())
                    .map_err(|e| bad(e.to_string()))?;
                let schema: Schema = (&proto_schema).try_into()?;
                Ok(Arc::new(StageReaderExec::new(
                    wire.stage,
                    Arc::new(schema),
                    wire.partitions,
                    wire.mode,
                )))
            }
            Some((&TAG_MANAGED_SCAN, rest)) => Ok(Arc::new(ManagedScanExec::decode(rest)?)),
            _ => Err(bad("unknown node tag".to_string())),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(reader) = node.downcast_ref::<StageReaderExec>() {
            let proto_schema: datafusion_proto::protobuf::Schema = reader.schema.as_ref().try_into()?;
            let wire = ReaderWire {
                stage: reader.stage,
                mode: reader.mode,
                partitions: reader.properties.output_partitioning().partition_count(),
                schema: proto_schema.encode_to_vec(),
            };
            buf.push(TAG_READER);
            serde_json::to_writer(buf, &wire).map_err(|e| DataFusionError::Internal(e.to_string()))?;
            return Ok(());
        }
        if let Some(scan) = node.downcast_ref::<ManagedScanExec>() {
            buf.push(TAG_MANAGED_SCAN);
            serde_json::to_writer(buf, &scan.spec).map_err(|e| DataFusionError::Internal(e.to_string()))?;
            return Ok(());
        }
        Err(DataFusionError::NotImplemented(format!(
            "{} cannot be sent to a worker",
            node.name()
        )))
    }
}

/// A schema as `datafusion-proto` bytes (what fragments and sinks carry).
pub(crate) fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let proto: datafusion_proto::protobuf::Schema = schema
        .try_into()
        .map_err(|e| Error::plan(DataFusionError::External(Box::new(e))))?;
    Ok(proto.encode_to_vec())
}

/// The inverse of [`schema_bytes`].
pub(crate) fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef> {
    let proto = datafusion_proto::protobuf::Schema::decode(bytes)
        .map_err(|e| Error::plan(DataFusionError::Internal(format!("bad schema bytes: {e}"))))?;
    let schema: Schema = (&proto)
        .try_into()
        .map_err(|e| Error::plan(DataFusionError::External(Box::new(e))))?;
    Ok(Arc::new(schema))
}
