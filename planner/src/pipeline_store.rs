//! Pipelines on disk: their definitions and the record of their runs.
//!
//! ```text
//! <data>/pipelines/<name>.json                 StoredPipeline (definition, state)
//! <data>/pipelines/runs/<name>/<run id>.json   RunRecord, one per run
//! ```
//!
//! Every file is replaced atomically (write, fsync, rename), so a crash leaves the
//! old or the new content. The definition is the truth a pipeline is rebuilt from
//! (its Temporal Schedule is re-created from it when missing); the run records are
//! what `system.pipeline_runs` shows. The watermark is not here: it lives in the
//! sink, in the same commit as the data it covers (see [`crate::sink`]).
//!
//! `system.pipelines` and `system.pipeline_runs` are table providers over this
//! store, read afresh on every scan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::PipelineDefinition;
use crate::system_table::{SystemRows, SystemTable};

/// The schema the pipeline tables are in.
pub const SYSTEM_SCHEMA: &str = "system";

/// Whether a pipeline's schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    Active,
    Paused,
    /// A run failed `max_attempts` times with `on_error = 'fail'`: paused until RESUME.
    Failed,
}

impl PipelineState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Failed => "failed",
        }
    }
}

/// A pipeline as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPipeline {
    pub definition: PipelineDefinition,
    /// New for every `CREATE` (and `OR REPLACE`): a replaced pipeline starts
    /// from scratch, with a watermark of its own.
    pub generation: String,
    pub state: PipelineState,
    pub created_ms: i64,
    /// Why the pipeline stopped (state `failed`).
    #[serde(default)]
    pub error: Option<String>,
}

impl StoredPipeline {
    pub fn new(definition: PipelineDefinition) -> Self {
        let paused = definition.options.paused;
        Self {
            definition,
            generation: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            state: if paused {
                PipelineState::Paused
            } else {
                PipelineState::Active
            },
            created_ms: now_ms(),
            error: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// The Delta application transaction id of this pipeline's commits.
    pub fn app_id(&self) -> String {
        format!("contrail-pipeline-{}-{}", self.definition.name, self.generation)
    }

    /// The Temporal Schedule of this pipeline.
    pub fn schedule_id(&self) -> String {
        schedule_id(&self.definition.name)
    }
}

/// The Temporal Schedule id of pipeline `name`.
pub fn schedule_id(name: &str) -> String {
    format!("contrail-pipeline-{name}")
}

/// How a run ended (or that it is still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Committed its rows.
    Succeeded,
    /// Nothing new in the source: no commit.
    NoData,
    /// Failed `max_attempts` times.
    Failed,
    /// Stopped by `DROP PIPELINE`.
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::NoData => "no_data",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One run of a pipeline, as `system.pipeline_runs` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id: its workflow id and the end of Temporal's run id.
    pub run_id: String,
    /// The run's workflow id (signals and cancellation go there).
    #[serde(default)]
    pub workflow_id: String,
    pub pipeline: String,
    pub generation: String,
    /// The run sequence its commit carries (the Delta transaction version).
    pub seq: u64,
    pub state: RunState,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub rows_read: Option<u64>,
    pub rows_written: Option<u64>,
    pub watermark_from: Option<String>,
    pub watermark_to: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
}

/// Answers when each pipeline's schedule fires next (the serving process asks Temporal).
#[async_trait]
pub trait NextRuns: Send + Sync + std::fmt::Debug {
    /// Next run time (ms since the epoch) by pipeline name.
    async fn next_runs(&self) -> HashMap<String, i64>;
}

/// The pipelines under a data directory.
#[derive(Debug)]
pub struct PipelineStore {
    dir: PathBuf,
    next_runs: OnceLock<Arc<dyn NextRuns>>,
}

impl PipelineStore {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("pipelines");
        std::fs::create_dir_all(dir.join("runs")).map_err(|e| io_err(&dir, e))?;
        Ok(Self {
            dir,
            next_runs: OnceLock::new(),
        })
    }

    /// Where `system.pipelines` learns next run times (set once, by the server).
    pub fn set_next_runs(&self, source: Arc<dyn NextRuns>) {
        let _ = self.next_runs.set(source);
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    fn runs_dir(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join("runs").join(name))
    }

    /// Every pipeline, by name.
    pub fn list(&self) -> Result<Vec<StoredPipeline>> {
        let mut out: Vec<StoredPipeline> = json_files(&self.dir)?
            .into_iter()
            .map(|p| read_json(&p))
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.definition.name.cmp(&b.definition.name));
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Result<Option<StoredPipeline>> {
        let path = self.path(name)?;
        match std::fs::metadata(&path) {
            Ok(_) => read_json(&path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// The pipeline, or NOT_FOUND.
    pub fn require(&self, name: &str) -> Result<StoredPipeline> {
        self.get(name)?.ok_or_else(|| Error::NotFound {
            kind: "pipeline",
            name: name.to_string(),
        })
    }

    pub fn put(&self, pipeline: &StoredPipeline) -> Result<()> {
        write_json(&self.path(pipeline.name())?, pipeline)
    }

    /// Remove a pipeline and its run records.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, e)),
        }
        let runs = self.runs_dir(name)?;
        match std::fs::remove_dir_all(&runs) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&runs, e)),
            _ => Ok(()),
        }
    }

    pub fn put_run(&self, run: &RunRecord) -> Result<()> {
        let dir = self.runs_dir(&run.pipeline)?;
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        write_json(&dir.join(format!("{}.json", file_safe(&run.run_id))), run)
    }

    pub fn run(&self, pipeline: &str, run_id: &str) -> Result<Option<RunRecord>> {
        let path = self.runs_dir(pipeline)?.join(format!("{}.json", file_safe(run_id)));
        match std::fs::metadata(&path) {
            Ok(_) => read_json(&path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// The runs of one pipeline (all of them: `None`), oldest first.
    pub fn runs(&self, pipeline: Option<&str>) -> Result<Vec<RunRecord>> {
        let names = match pipeline {
            Some(name) => vec![name.to_string()],
            None => self.list()?.into_iter().map(|p| p.definition.name).collect(),
        };
        let mut out = Vec::new();
        for name in names {
            for path in json_files(&self.runs_dir(&name)?)? {
                out.push(read_json::<RunRecord>(&path)?);
            }
        }
        out.sort_by(|a, b| (a.started_ms, &a.run_id).cmp(&(b.started_ms, &b.run_id)));
        Ok(out)
    }

    /// Workflow ids of the runs of `pipeline` still running.
    pub fn running(&self, pipeline: &str) -> Result<Vec<String>> {
        Ok(self
            .runs(Some(pipeline))?
            .into_iter()
            .filter(|r| r.state == RunState::Running && !r.workflow_id.is_empty())
            .map(|r| r.workflow_id)
            .collect())
    }

    /// `system.pipelines` and `system.pipeline_runs`.
    pub fn tables(self: &Arc<Self>) -> [(&'static str, Arc<dyn TableProvider>); 2] {
        [
            ("pipelines", SystemTable::provider(PipelinesRows(Arc::clone(self)))),
            ("pipeline_runs", SystemTable::provider(RunsRows(Arc::clone(self)))),
        ]
    }

    async fn pipelines_batch(&self) -> Result<RecordBatch> {
        let pipelines = self.list()?;
        let runs = self.runs(None)?;
        let next = match self.next_runs.get() {
            Some(source) => source.next_runs().await,
            None => HashMap::new(),
        };
        let last = |name: &str| {
            runs.iter()
                .filter(|r| r.pipeline == name)
                .max_by_key(|r| (r.started_ms, r.run_id.clone()))
        };
        let watermark = |name: &str| {
            runs.iter()
                .filter(|r| r.pipeline == name && r.state == RunState::Succeeded)
                .max_by_key(|r| r.seq)
                .and_then(|r| r.watermark_to.clone())
        };
        let col = |f: &dyn Fn(&StoredPipeline) -> Option<String>| -> ArrayRef {
            Arc::new(pipelines.iter().map(f).collect::<StringArray>())
        };
        let ts = |f: &dyn Fn(&StoredPipeline) -> Option<i64>| -> ArrayRef {
            Arc::new(
                pipelines
                    .iter()
                    .map(f)
                    .collect::<TimestampMillisecondArray>()
                    .with_timezone("UTC"),
            )
        };
        let columns = vec![
            col(&|p| Some(p.definition.name.clone())),
            col(&|p| Some(p.definition.sql.clone())),
            col(&|p| p.definition.schedule.as_ref().map(ToString::to_string)),
            col(&|p| Some(p.state.as_str().to_string())),
            col(&|p| watermark(p.name())),
            col(&|p| last(p.name()).map(|r| r.run_id.clone())),
            col(&|p| last(p.name()).map(|r| r.state.as_str().to_string())),
            ts(&|p| last(p.name()).map(|r| r.started_ms)),
            ts(&|p| {
                (p.state == PipelineState::Active)
                    .then(|| next.get(p.name()).copied())
                    .flatten()
            }),
            col(&|p| p.error.clone()),
        ];
        RecordBatch::try_new(pipelines_schema(), columns).map_err(|e| Error::execution(e.into()))
    }

    fn runs_batch(&self) -> Result<RecordBatch> {
        let runs = self.runs(None)?;
        let text = |f: &dyn Fn(&RunRecord) -> Option<String>| -> ArrayRef {
            Arc::new(runs.iter().map(f).collect::<StringArray>())
        };
        let count = |f: &dyn Fn(&RunRecord) -> Option<u64>| -> ArrayRef {
            Arc::new(runs.iter().map(f).collect::<UInt64Array>())
        };
        let ts = |f: &dyn Fn(&RunRecord) -> Option<i64>| -> ArrayRef {
            Arc::new(
                runs.iter()
                    .map(f)
                    .collect::<TimestampMillisecondArray>()
                    .with_timezone("UTC"),
            )
        };
        let columns = vec![
            text(&|r| Some(r.run_id.clone())),
            text(&|r| Some(r.pipeline.clone())),
            count(&|r| Some(r.seq)),
            text(&|r| Some(r.state.as_str().to_string())),
            ts(&|r| Some(r.started_ms)),
            ts(&|r| r.finished_ms),
            count(&|r| r.rows_read),
            count(&|r| r.rows_written),
            text(&|r| r.watermark_from.clone()),
            text(&|r| r.watermark_to.clone()),
            Arc::new(runs.iter().map(|r| Some(r.attempts)).collect::<UInt32Array>()),
            text(&|r| r.error.clone()),
        ];
        RecordBatch::try_new(runs_schema(), columns).map_err(|e| Error::execution(e.into()))
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn pipelines_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, false),
        Field::new("watermark", DataType::Utf8, true),
        Field::new("last_run", DataType::Utf8, true),
        Field::new("last_run_state", DataType::Utf8, true),
        Field::new("last_run_started", timestamp(), true),
        Field::new("next_run", timestamp(), true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("started", timestamp(), false),
        Field::new("finished", timestamp(), true),
        Field::new("rows_read", DataType::UInt64, true),
        Field::new("rows_written", DataType::UInt64, true),
        Field::new("watermark_from", DataType::Utf8, true),
        Field::new("watermark_to", DataType::Utf8, true),
        Field::new("attempts", DataType::UInt32, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// `system.pipelines`: every pipeline, its state, last and next run.
#[derive(Debug)]
struct PipelinesRows(Arc<PipelineStore>);

#[async_trait]
impl SystemRows for PipelinesRows {
    fn schema(&self) -> SchemaRef {
        pipelines_schema()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        self.0.pipelines_batch().await
    }
}

/// `system.pipeline_runs`: every run's record.
#[derive(Debug)]
struct RunsRows(Arc<PipelineStore>);

#[async_trait]
impl SystemRows for RunsRows {
    fn schema(&self) -> SchemaRef {
        runs_schema()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        self.0.runs_batch()
    }
}

/// Pipeline names become file names: plain identifiers only.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "pipeline name",
            format!("'{name}': use letters, digits, '_' and '-' (at most 128)"),
        ))
    }
}

fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::CatalogIo {
        path: path.display().to_string(),
        source,
    }
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "json") && path.is_file() {
            out.push(path);
        }
    }
    Ok(out)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::CatalogCorrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::CatalogCorrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension(format!("json.{}.tmp", uuid::Uuid::new_v4().simple()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::definition_of as definition;

    #[test]
    fn definitions_and_runs_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = PipelineStore::open(dir.path()).expect("open");
        let p = StoredPipeline::new(definition("CREATE PIPELINE p1 AS INSERT INTO t SELECT * FROM s"));
        store.put(&p).expect("put");
        assert_eq!(store.require("p1").expect("get"), p);
        assert!(store.get("nope").expect("get").is_none());
        assert!(matches!(store.require("nope"), Err(Error::NotFound { .. })));
        assert!(store.get("../x").is_err());

        let run = RunRecord {
            run_id: "pipeline-p1-2026-11-22T00:00:00Z-0a1b2c3d".into(),
            workflow_id: "pipeline-p1-2026-11-22T00:00:00Z".into(),
            pipeline: "p1".into(),
            generation: p.generation.clone(),
            seq: 1,
            state: RunState::Running,
            started_ms: 1,
            finished_ms: None,
            rows_read: Some(3),
            rows_written: None,
            watermark_from: None,
            watermark_to: Some("3".into()),
            attempts: 1,
            error: None,
        };
        store.put_run(&run).expect("put run");
        assert_eq!(store.runs(Some("p1")).expect("runs"), vec![run.clone()]);
        assert_eq!(store.run("p1", &run.run_id).expect("run"), Some(run));
        store.remove("p1").expect("remove");
        assert!(store.list().expect("list").is_empty());
        assert!(store.runs(None).expect("runs").is_empty());
    }
}
