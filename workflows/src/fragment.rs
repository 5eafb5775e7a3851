//! Running one fragment: decode its plan, execute its partition, spool the output.
//!
//! ```text
//! FragmentTask { plan bytes, partition, where its inputs are }
//!    decode (FragmentCodec) ─> execute partition ─> [split into buckets] ─> Spool
//!    ─> FragmentTicket { location, fragment, rows, bytes }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use contrail_planner::distributed::{self, FragmentFetcher, FragmentInputs, FragmentRef};
use contrail_planner::sink::DeltaSink;
use contrail_planner::{Engine, SessionSettings};
use datafusion::physical_plan::metrics;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use deltalake::kernel::Add;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spool::Spool;

/// Everything one fragment activity needs; small (the plan is a few KB).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FragmentTask {
    pub query_id: String,
    pub stage: u32,
    pub fragment: u32,
    /// Outputs per fragment (1, or the shuffle's partition count).
    pub buckets: u32,
    /// The last stage: its output is the result and gets the client-facing types.
    pub is_final: bool,
    pub settings: SessionSettings,
    /// The stage plan, `datafusion-proto` bytes, base64.
    pub plan: String,
    /// Outputs of the stages this one reads, by stage id, in fragment order.
    pub inputs: HashMap<u32, Vec<FragmentRef>>,
    /// How many times the workflow ran this fragment before (its output was lost).
    #[serde(default)]
    pub rerun: u32,
    /// A write's final fragments write data files here instead of the spool.
    #[serde(default)]
    pub sink: Option<DeltaSink>,
}

/// What a finished fragment returns: where its output is and how big it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FragmentTicket {
    pub fragment: FragmentRef,
    pub rows: u64,
    pub bytes: u64,
    /// A write's fragment: the data files it wrote, for the commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adds: Vec<Add>,
}

/// Encode a stage plan for [`FragmentTask::plan`].
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<String> {
    let bytes = distributed::encode_plan(plan)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// What a worker runs fragments with.
#[derive(Debug, Clone)]
pub struct FragmentRunner {
    pub engine: Arc<Engine>,
    pub spool: Spool,
    pub fetcher: Arc<dyn FragmentFetcher>,
    /// This worker's data plane address, written into tickets.
    pub location: String,
}

impl FragmentRunner {
    /// Run a fragment to completion; `progress` is called with rows written so far.
    pub async fn run(&self, task: FragmentTask, mut progress: impl FnMut(u64)) -> Result<FragmentTicket> {
        let plan_bytes = base64::engine::general_purpose::STANDARD
            .decode(task.plan.as_bytes())
            .map_err(|e| Error::InvalidTicket {
                what: "fragment plan",
                message: e.to_string(),
            })?;
        let inputs = FragmentInputs {
            stages: task.inputs.clone(),
            fetcher: Arc::clone(&self.fetcher),
        };
        let ctx = self.engine.fragment_context(&task.settings, inputs)?;
        let plan = distributed::decode_plan(&plan_bytes, &ctx)?;
        let (input, partitioning) = match plan.downcast_ref::<RepartitionExec>() {
            Some(shuffle) => (Arc::clone(shuffle.input()), Some(shuffle.partitioning().clone())),
            None => (Arc::clone(&plan), None),
        };
        let partitions = input.output_partitioning().partition_count();
        let execution = |e| Error::Planner(contrail_planner::Error::execution(e));
        let mut stream = input
            .execute(task.fragment as usize, Arc::clone(&ctx))
            .map_err(execution)?;
        let fragment = FragmentRef {
            location: self.location.clone(),
            query_id: task.query_id.clone(),
            stage: task.stage,
            fragment: task.fragment,
        };
        if let Some(sink) = task.sink.as_ref().filter(|_| task.is_final) {
            // Remember a lost input: the writer only sees a DataFusion error.
            let lost = Arc::new(std::sync::Mutex::new(None));
            let seen = Arc::clone(&lost);
            let schema = stream.schema();
            let watched = stream.inspect(move |r| {
                if let Err(e) = r {
                    if let (Some(l), Ok(mut slot)) = (distributed::UpstreamLost::find(e), seen.lock()) {
                        *slot = Some(l.clone());
                    }
                }
            });
            let stream = Box::pin(RecordBatchStreamAdapter::new(schema, watched));
            let written = match contrail_planner::sink::write_files(sink, stream, progress).await {
                Ok(w) => w,
                Err(e) => {
                    let lost = lost.lock().ok().and_then(|mut l| l.take());
                    return Err(lost.map_or(Error::Planner(e), Error::UpstreamLost));
                }
            };
            return Ok(FragmentTicket {
                fragment,
                rows: written.rows,
                bytes: written.adds.iter().map(|a| a.size.max(0) as u64).sum(),
                adds: written.adds,
            });
        }
        if task.is_final {
            stream = contrail_planner::types::map_output_stream(stream, task.settings.view_types());
        }
        let schema = stream.schema();
        let mut partitioner = partitioning
            .map(|p| BatchPartitioner::try_new(p, metrics::Time::new(), task.fragment as usize, partitions))
            .transpose()
            .map_err(execution)?;
        let mut writer = self
            .spool
            .writer(&task.query_id, task.stage, task.fragment, task.buckets, &schema)?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| match distributed::UpstreamLost::find(&e) {
                Some(lost) => Error::UpstreamLost(lost.clone()),
                None => execution(e),
            })?;
            match partitioner.as_mut() {
                Some(p) => {
                    let mut failed = None;
                    p.partition(batch, |bucket, part| {
                        if let Err(e) = writer.write(bucket, &part) {
                            failed = Some(e);
                        }
                        Ok(())
                    })
                    .map_err(execution)?;
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
                None => writer.write(0, &batch)?,
            }
            progress(writer.rows());
        }
        let (rows, bytes) = writer.finish()?;
        Ok(FragmentTicket {
            fragment,
            rows,
            bytes,
            adds: Vec::new(),
        })
    }
}
