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
use contrail_planner::sink::{Sink, StagedFile};
use contrail_planner::{Engine, SessionSettings};
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::metrics;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use deltalake::kernel::Add;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spool::Spool;

/// Everything one fragment activity needs; small (a large plan goes by reference).
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
    pub plan: StagePlan,
    /// Outputs of the stages this one reads, by stage id, in fragment order.
    pub inputs: HashMap<u32, Vec<FragmentRef>>,
    /// How many times the workflow ran this fragment before (its output was lost).
    #[serde(default)]
    pub rerun: u32,
    /// A write's final fragments write data files here instead of the spool.
    #[serde(default)]
    pub sink: Option<Sink>,
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
    /// A `COPY`'s fragment: its file, to move into place at the commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<StagedFile>,
}

/// Plans up to this size travel inside workflow payloads; larger ones by reference.
pub const PLAN_INLINE_MAX: usize = 16 * 1024;

/// A stage plan (`datafusion-proto` bytes): inline, base64, when small; otherwise
/// stored in the server's spool and named by path, so no payload grows with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StagePlan {
    Inline(String),
    Stored { path: String, len: u64 },
}

impl StagePlan {
    /// Encode `plan` for stage `stage` of a query, storing it in `spool` if large.
    pub fn encode(plan: Arc<dyn ExecutionPlan>, spool: &Spool, query_id: &str, stage: u32) -> Result<Self> {
        Self::from_bytes(distributed::encode_plan(plan)?, spool, query_id, stage)
    }

    fn from_bytes(bytes: Vec<u8>, spool: &Spool, query_id: &str, stage: u32) -> Result<Self> {
        if bytes.len() <= PLAN_INLINE_MAX {
            return Ok(Self::Inline(base64::engine::general_purpose::STANDARD.encode(bytes)));
        }
        let path = spool.store_plan(query_id, stage, &bytes)?;
        Ok(Self::Stored {
            path: path.to_string_lossy().into_owned(),
            len: bytes.len() as u64,
        })
    }

    /// The plan bytes.
    pub async fn load(&self) -> Result<Vec<u8>> {
        let invalid = |message: String| Error::InvalidTicket {
            what: "fragment plan",
            message,
        };
        match self {
            Self::Inline(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| invalid(e.to_string())),
            Self::Stored { path, len } => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| invalid(format!("reading {path}: {e}")))?;
                if bytes.len() as u64 != *len {
                    return Err(invalid(format!("{path} holds {} bytes, expected {len}", bytes.len())));
                }
                Ok(bytes)
            }
        }
    }
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
        let plan_bytes = task.plan.load().await?;
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
            // Remember a lost input: a writer only sees a DataFusion error.
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
            let written = match sink {
                Sink::Delta(sink) => {
                    contrail_planner::sink::write_files(sink, ctx.session_config().options(), stream, progress)
                        .await
                        .map(|w| FragmentTicket {
                            fragment,
                            rows: w.rows,
                            bytes: w.adds.iter().map(|a| a.size.max(0) as u64).sum(),
                            adds: w.adds,
                            files: Vec::new(),
                        })
                }
                Sink::Files(sink) => {
                    let config = ctx.session_config().options();
                    contrail_planner::sink::write_parquet(sink, config, &task.query_id, task.fragment, stream, progress)
                        .await
                        .map(|(rows, file)| FragmentTicket {
                            fragment,
                            rows,
                            bytes: file.as_ref().map_or(0, |f| f.bytes),
                            adds: Vec::new(),
                            files: file.into_iter().collect(),
                        })
                }
            };
            return written.map_err(|e| {
                let lost = lost.lock().ok().and_then(|mut l| l.take());
                lost.map_or(Error::Planner(e), Error::UpstreamLost)
            });
        }
        if task.is_final {
            stream = contrail_planner::types::map_output_stream(stream, task.settings.view_types());
        }
        let schema = stream.schema();
        // The spool holds exactly the schema its readers are told.
        stream = contrail_planner::types::conform_stream(stream, Arc::clone(&schema));
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
        if tracing::enabled!(tracing::Level::DEBUG) {
            let plan = DisplayableExecutionPlan::with_metrics(input.as_ref()).indent(true);
            tracing::debug!(fragment = ?fragment, "fragment plan with metrics:\n{plan}");
        }
        Ok(FragmentTicket {
            fragment,
            rows,
            bytes,
            adds: Vec::new(),
            files: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn small_plans_inline_large_ones_by_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), Duration::from_secs(60)).expect("spool");

        let small = StagePlan::from_bytes(vec![7; 100], &spool, "q-1", 0).expect("small");
        assert!(matches!(small, StagePlan::Inline(_)));
        assert_eq!(small.load().await.expect("load"), vec![7; 100]);
        // Recorded histories hold the plan as a plain base64 string.
        let json = serde_json::to_string(&small).expect("json");
        assert!(json.starts_with('"'), "{json}");
        assert_eq!(serde_json::from_str::<StagePlan>(&json).expect("parse"), small);

        let big = vec![9; PLAN_INLINE_MAX + 1];
        let stored = StagePlan::from_bytes(big.clone(), &spool, "q-1", 3).expect("big");
        let json = serde_json::to_string(&stored).expect("json");
        assert!(json.len() < 200, "a stored plan's payload is a path: {json}");
        let back: StagePlan = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.load().await.expect("load"), big);

        // A plan file that is not what was stored is refused, not decoded.
        let StagePlan::Stored { path, .. } = &stored else {
            panic!("expected a stored plan: {stored:?}")
        };
        std::fs::write(path, b"short").expect("overwrite");
        assert!(stored.load().await.is_err());
        // The query's spool removal takes its plans with it.
        spool.remove_query("q-1").expect("remove");
        assert!(!std::path::Path::new(path).exists());
    }
}
