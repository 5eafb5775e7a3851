//! A pipeline's body: checked against the catalog at `CREATE`, and planned for
//! each run with frozen bounds.
//!
//! ```text
//! run: (committed seq, watermark) <── the sink: Delta txn + commit metadata | marker file
//!      to = SELECT max(c), count(*) FROM <source> WHERE c > watermark      (frozen)
//!      plan the body with `watermark < c AND c <= to` above the source's scans
//!      ──> FragmentedWrite whose commit carries (app id, seq + 1, to)
//! ```
//!
//! Because the watermark and the run's identity are read back from the sink, a
//! run that never committed (crashed, cancelled, failed) is simply planned again
//! with the same bounds plus what arrived since: nothing is lost, and the
//! commit's application transaction makes a retried commit a no-op.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::functions_aggregate::expr_fn::{count, max};
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, lit};

use crate::engine::{Engine, Kind};
use crate::error::{Error, Result};
use crate::pipeline::{PipelineBody, PipelineDefinition};
use crate::pipeline_store::StoredPipeline;
use crate::settings::SessionSettings;
use crate::sink::{self, PipelineCommit, Sink};
use crate::{FragmentedWrite, Planned};

/// One run, planned.
#[derive(Debug)]
pub struct RunPlan {
    /// The run sequence its commit carries (last committed + 1).
    pub seq: u64,
    pub watermark_from: Option<String>,
    pub watermark_to: Option<String>,
    /// Source rows inside the bounds (incremental pipelines).
    pub rows_read: Option<u64>,
    /// `None`: nothing new in the source; nothing to commit.
    pub write: Option<FragmentedWrite>,
}

/// The source table an incremental pipeline bounds, and its column.
#[derive(Debug, Clone)]
struct Incremental {
    table: TableReference,
    column: String,
    data_type: DataType,
}

/// The statement a pipeline's body runs.
pub fn body_sql(definition: &PipelineDefinition) -> String {
    match &definition.body {
        PipelineBody::Insert { sql, .. } => sql.clone(),
        PipelineBody::Copy { query, path } => {
            format!("COPY ({query}) TO '{}' STORED AS PARQUET", path.replace('\'', "''"))
        }
    }
}

impl Engine {
    /// Check a pipeline at `CREATE`: its tables and columns exist, its sink takes
    /// the query's rows and can commit exactly once, and its incremental column
    /// is an orderable column of one source table.
    pub async fn check_pipeline(&self, definition: &PipelineDefinition) -> Result<()> {
        let settings = SessionSettings::default();
        let planned = self.plan(&settings, &body_sql(definition)).await?;
        self.pipeline_sink(&settings, &planned).await?;
        if let Some(column) = &definition.incremental_by {
            incremental_source(&planned, column)?;
        }
        Ok(())
    }

    /// Plan the next run of `pipeline`: its sequence, its frozen bounds and its
    /// fragments, whose one commit records both.
    pub async fn plan_pipeline_run(&self, pipeline: &StoredPipeline) -> Result<RunPlan> {
        let definition = &pipeline.definition;
        let settings = SessionSettings::default();
        let planned = self.plan(&settings, &body_sql(definition)).await?;
        let app_id = pipeline.app_id();
        let (committed, from) = match self.pipeline_sink(&settings, &planned).await? {
            PipelineSink::Delta { url, name } => sink::pipeline_committed(&url, &name, &app_id).await?,
            PipelineSink::Files(files) => files.pipeline_committed(&app_id)?,
        };
        let seq = committed + 1;
        let (planned, to, rows_read) = match &definition.incremental_by {
            None => (planned, None, None),
            Some(column) => {
                let source = incremental_source(&planned, column)?;
                let from_value = from
                    .as_deref()
                    .map(|s| ScalarValue::try_from_string(s.to_string(), &source.data_type))
                    .transpose()
                    .map_err(Error::plan)?;
                let (hi, rows) = self.source_bounds(&settings, &source, from_value.as_ref()).await?;
                let Some(hi) = hi else {
                    return Ok(RunPlan {
                        seq,
                        watermark_from: from.clone(),
                        watermark_to: from,
                        rows_read: Some(0),
                        write: None,
                    });
                };
                let to = hi.to_string();
                (bound(planned, &source, from_value, hi)?, Some(to), Some(rows))
            }
        };
        let Some(mut write) = self.plan_write_fragments(&settings, &planned).await? else {
            return Err(Error::unsupported("this pipeline's body as a workflow"));
        };
        let commit = PipelineCommit {
            app_id,
            seq,
            watermark: to.clone(),
        };
        match &mut write.sink {
            Sink::Delta(delta) => delta.pipeline = Some(commit),
            Sink::Files(files) => files.pipeline = Some(commit),
        }
        Ok(RunPlan {
            seq,
            watermark_from: from,
            watermark_to: to,
            rows_read,
            write: Some(write),
        })
    }

    /// Where a pipeline's body writes; only sinks that can commit exactly once.
    async fn pipeline_sink(&self, settings: &SessionSettings, planned: &Planned) -> Result<PipelineSink> {
        let ctx = self.context(settings)?;
        match &planned.kind {
            Kind::Write {
                plan: LogicalPlan::Dml(_),
                target: Some(target),
            } => {
                let Some(managed) = self.managed_for(&ctx, target).await? else {
                    return Err(Error::invalid(
                        "pipeline",
                        format!(
                            "'{target}' is not a managed table: a pipeline inserts into managed (Delta) \
                             tables, whose log records each run exactly once"
                        ),
                    ));
                };
                managed.refresh().await?;
                Ok(PipelineSink::Delta {
                    url: managed.url().clone(),
                    name: target.to_string(),
                })
            }
            Kind::Write {
                plan: LogicalPlan::Copy(copy),
                target: None,
            } => {
                let files = crate::engine::file_sink(copy)?;
                if files.single_file {
                    return Err(Error::invalid(
                        "pipeline",
                        format!(
                            "COPY target '{}' is a file: a pipeline's COPY writes into a directory, one set \
                             of files per run",
                            files.path
                        ),
                    ));
                }
                Ok(PipelineSink::Files(files))
            }
            _ => Err(Error::invalid(
                "pipeline",
                "the body must be INSERT INTO <table> <query> or COPY (<query>) TO '<directory>'",
            )),
        }
    }

    /// `max(column)` and the row count of the source above `from`.
    async fn source_bounds(
        &self,
        settings: &SessionSettings,
        source: &Incremental,
        from: Option<&ScalarValue>,
    ) -> Result<(Option<ScalarValue>, u64)> {
        let ctx = self.context(settings)?;
        let column = Expr::Column(Column::new_unqualified(&source.column));
        let mut df = ctx.table(source.table.clone()).await.map_err(Error::plan)?;
        if let Some(from) = from {
            df = df.filter(column.clone().gt(lit(from.clone()))).map_err(Error::plan)?;
        }
        let df = df
            .aggregate(vec![], vec![max(column).alias("hi"), count(lit(1)).alias("n")])
            .map_err(Error::plan)?;
        let batches = df.collect().await.map_err(Error::execution)?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok((None, 0));
        };
        let hi = ScalarValue::try_from_array(batch.column(0), 0).map_err(Error::execution)?;
        let n = ScalarValue::try_from_array(batch.column(1), 0).map_err(Error::execution)?;
        let rows = match n {
            ScalarValue::Int64(Some(n)) => u64::try_from(n).unwrap_or(0),
            _ => 0,
        };
        Ok(((!hi.is_null()).then_some(hi), rows))
    }
}

enum PipelineSink {
    Delta { url: url::Url, name: String },
    Files(crate::sink::FileSink),
}

/// The one source table of `planned` that has `column`, which must be orderable.
fn incremental_source(planned: &Planned, column: &str) -> Result<Incremental> {
    let plan = match &planned.kind {
        Kind::Write { plan, .. } => plan,
        _ => {
            return Err(Error::invalid(
                "pipeline",
                "INCREMENTAL BY needs a pipeline that writes",
            ));
        }
    };
    let mut found: Vec<(TableReference, String, DataType)> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let schema = scan.source.schema();
            let field = schema
                .field_with_name(column)
                .ok()
                .or_else(|| schema.field_with_name(&column.to_lowercase()).ok());
            if let Some(field) = field {
                if !found.iter().any(|(t, ..)| t == &scan.table_name) {
                    found.push((scan.table_name.clone(), field.name().clone(), field.data_type().clone()));
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(Error::plan)?;
    let (table, column_name, data_type) = match found.len() {
        1 => found.remove(0),
        0 => {
            return Err(Error::invalid(
                "INCREMENTAL BY",
                format!("'{column}' is not a column of any table the query reads"),
            ));
        }
        _ => {
            let tables: Vec<String> = found.iter().map(|(t, ..)| t.to_string()).collect();
            return Err(Error::invalid(
                "INCREMENTAL BY",
                format!(
                    "'{column}' is a column of several tables the query reads ({}): the watermark must \
                     follow one source",
                    tables.join(", ")
                ),
            ));
        }
    };
    let orderable = data_type.is_integer()
        || data_type.is_floating()
        || matches!(
            data_type,
            DataType::Decimal128(..)
                | DataType::Decimal256(..)
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(..)
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
        );
    if !orderable {
        return Err(Error::invalid(
            "INCREMENTAL BY",
            format!(
                "column '{column_name}' of {table} has type {data_type}, which is not orderable: use an \
                 integer, decimal, date, timestamp or string column that only grows"
            ),
        ));
    }
    Ok(Incremental {
        table,
        column: column_name,
        data_type,
    })
}

/// `planned` reading only `from < column <= to` of the incremental source.
fn bound(planned: Planned, source: &Incremental, from: Option<ScalarValue>, to: ScalarValue) -> Result<Planned> {
    let predicate = |table: &TableReference| {
        let column = Expr::Column(Column::new(Some(table.clone()), &source.column));
        let upper = column.clone().lt_eq(lit(to.clone()));
        match &from {
            Some(from) => column.gt(lit(from.clone())).and(upper),
            None => upper,
        }
    };
    let rewrite = |plan: LogicalPlan| -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(scan) if scan.table_name == source.table => {
                let predicate = predicate(&scan.table_name);
                let filter = Filter::try_new(predicate, Arc::new(LogicalPlan::TableScan(scan)))?;
                Ok(Transformed::yes(LogicalPlan::Filter(filter)))
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .map_err(Error::plan)
    };
    let kind = match planned.kind {
        Kind::Write { plan, target } => Kind::Write {
            plan: rewrite(plan)?,
            target,
        },
        _ => {
            return Err(Error::invalid(
                "pipeline",
                "INCREMENTAL BY needs a pipeline that writes",
            ));
        }
    };
    Ok(Planned { kind, physical: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;
    use crate::pipeline::definition_of as definition;

    async fn engine() -> (tempfile::TempDir, Arc<Engine>) {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("open");
        let mut s = SessionSettings::default();
        for sql in [
            "CREATE TABLE src (id BIGINT, v VARCHAR, b BOOLEAN)",
            "CREATE TABLE dst (id BIGINT, v VARCHAR)",
            "CREATE TABLE other (id BIGINT)",
            "INSERT INTO src VALUES (1, 'a', true), (2, 'b', false)",
        ] {
            engine.sql(&mut s, sql).await.expect(sql);
        }
        (dir, engine)
    }

    #[tokio::test]
    async fn check_rejects_what_cannot_run() {
        let (_dir, engine) = engine().await;
        let ok = definition("CREATE PIPELINE p INCREMENTAL BY id AS INSERT INTO dst SELECT id, v FROM src");
        engine.check_pipeline(&ok).await.expect("valid");
        for (sql, wanted) in [
            ("CREATE PIPELINE p AS INSERT INTO dst SELECT id, v FROM nope", "nope"),
            ("CREATE PIPELINE p AS INSERT INTO dst SELECT id, zz FROM src", "zz"),
            ("CREATE PIPELINE p AS INSERT INTO nope SELECT id, v FROM src", "nope"),
            (
                "CREATE PIPELINE p AS INSERT INTO dst SELECT id FROM src",
                "Column count",
            ),
            (
                "CREATE PIPELINE p INCREMENTAL BY zz AS INSERT INTO dst SELECT id, v FROM src",
                "zz",
            ),
            (
                "CREATE PIPELINE p INCREMENTAL BY b AS INSERT INTO dst SELECT id, v FROM src",
                "not orderable",
            ),
            (
                "CREATE PIPELINE p INCREMENTAL BY id AS INSERT INTO dst SELECT s.id, s.v FROM src s JOIN other o ON s.id = o.id",
                "several tables",
            ),
            (
                "CREATE PIPELINE p AS COPY (SELECT * FROM src) TO '/tmp/x.parquet' STORED AS PARQUET",
                "is a file",
            ),
        ] {
            let err = engine
                .check_pipeline(&definition(sql))
                .await
                .expect_err(sql)
                .to_string();
            assert!(err.contains(wanted), "{sql}: {err}");
        }
    }

    #[tokio::test]
    async fn runs_are_bounded_by_the_watermark() {
        let (_dir, engine) = engine().await;
        let p = StoredPipeline::new(definition(
            "CREATE PIPELINE p INCREMENTAL BY id AS INSERT INTO dst SELECT id, v FROM src",
        ));
        let run = engine.plan_pipeline_run(&p).await.expect("plan");
        assert_eq!(
            (run.seq, run.watermark_from, run.watermark_to),
            (1, None, Some("2".to_string()))
        );
        assert_eq!(run.rows_read, Some(2));
        let Some(Sink::Delta(sink)) = run.write.map(|w| w.sink) else {
            panic!("a Delta sink")
        };
        assert_eq!(
            sink.pipeline,
            Some(PipelineCommit {
                app_id: p.app_id(),
                seq: 1,
                watermark: Some("2".into())
            })
        );
        // Commit run 1 (no files: the bounds are what matters), then plan run 2.
        sink::commit(&sink, "ignored", vec![]).await.expect("commit");
        sink::commit(&sink, "ignored", vec![])
            .await
            .expect("a retried commit is a no-op");
        let mut s = SessionSettings::default();
        engine
            .sql(&mut s, "INSERT INTO src VALUES (3, 'c', true)")
            .await
            .expect("insert");
        let run = engine.plan_pipeline_run(&p).await.expect("plan 2");
        assert_eq!(
            (
                run.seq,
                run.watermark_from.as_deref(),
                run.watermark_to.as_deref(),
                run.rows_read
            ),
            (2, Some("2"), Some("3"), Some(1))
        );
        // Nothing new above the committed watermark after run 2.
        let Some(Sink::Delta(sink)) = run.write.map(|w| w.sink) else {
            panic!("a Delta sink")
        };
        sink::commit(&sink, "ignored", vec![]).await.expect("commit 2");
        let run = engine.plan_pipeline_run(&p).await.expect("plan 3");
        assert_eq!((run.seq, run.rows_read), (3, Some(0)));
        assert!(run.write.is_none());
    }
}
