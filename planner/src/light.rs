//! Light statements: queries that read no table at all.
//!
//! `SELECT 1` (a connection pool's validation query), `SELECT version()`,
//! `SELECT now()`: planning and running one costs less than the two
//! thread wake-ups that taking it to the CPU runtime and back would cost, so the
//! server runs these where they arrive. Anything with a `FROM` (a table, a
//! table function, a subquery, `UNNEST`, a recursive CTE) is not light.
//!
//! ```text
//! GetFlightInfo(sql) ── is_light_sql ──┬─ yes: plan here (gRPC runtime) ─ DoGet: Planned::is_light ─ run here
//!                                      └─ no:  CPU runtime, as every other statement
//! ```
//!
//! Most light queries are one row of constants once DataFusion's optimizer has
//! folded them (`SELECT 1`, `SELECT version()`, `SELECT now()`):
//! [`constant_row`] builds that row straight from the optimized plan, without
//! physical planning (a quarter of the server's CPU for a `SELECT 1`). A plan
//! of literals alone (`SELECT 1`) is taken before optimizing, as the optimizer
//! would leave it.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{self, Visit, Visitor};

use crate::engine::{Kind, Planned};

/// Longest SQL text taken as light: a bound on its parsing and planning.
const MAX_LIGHT_SQL: usize = 1024;

/// Whether `sql` is one query that reads no table (see the module docs). A
/// statement that does not parse is not light: the CPU runtime reports its error.
pub fn is_light_sql(sql: &str) -> bool {
    if sql.len() > MAX_LIGHT_SQL || crate::limits::check(sql).is_err() {
        return false;
    }
    let Ok(statements) = DFParser::parse_sql(sql) else {
        return false;
    };
    match statements.front() {
        Some(DfStatement::Statement(statement)) if statements.len() == 1 => {
            matches!(statement.as_ref(), ast::Statement::Query(_)) && !reads_tables(statement.as_ref())
        }
        _ => false,
    }
}

fn reads_tables(statement: &ast::Statement) -> bool {
    struct FindFrom;
    impl Visitor for FindFrom {
        type Break = ();
        fn pre_visit_table_factor(&mut self, _: &ast::TableFactor) -> ControlFlow<()> {
            ControlFlow::Break(())
        }
        fn pre_visit_relation(&mut self, _: &ast::ObjectName) -> ControlFlow<()> {
            ControlFlow::Break(())
        }
    }
    statement.visit(&mut FindFrom).is_break()
}

/// The one row of a plan that is a projection of constants over a single empty
/// row, if `plan` is one: what running it would return. After optimizing, any
/// expression of constants is one; before, only literals are.
pub fn constant_row(plan: &LogicalPlan) -> Option<RecordBatch> {
    let LogicalPlan::Projection(projection) = plan else {
        return None;
    };
    match projection.input.as_ref() {
        LogicalPlan::EmptyRelation(empty) if empty.produce_one_row => {}
        _ => return None,
    }
    let columns = projection
        .expr
        .iter()
        .map(|e| {
            let e = match e {
                Expr::Alias(alias) => alias.expr.as_ref(),
                e => e,
            };
            match e {
                Expr::Literal(value, None) => value.to_array_of_size(1).ok(),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    RecordBatch::try_new(Arc::new(projection.schema.as_arrow().clone()), columns).ok()
}

impl Planned {
    /// Whether this is a query whose plan reads no table (subqueries included).
    pub fn is_light(&self) -> bool {
        let Kind::Query(plan) = &self.kind else {
            return false;
        };
        let mut heavy = false;
        let visited = plan.apply_with_subqueries(|node| {
            heavy = matches!(
                node,
                LogicalPlan::TableScan(_)
                    | LogicalPlan::RecursiveQuery(_)
                    | LogicalPlan::Unnest(_)
                    | LogicalPlan::Extension(_)
            );
            Ok(if heavy {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        });
        visited.is_ok() && !heavy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queries_without_a_from_are_light() {
        for sql in [
            "SELECT 1",
            "select 1;",
            "SELECT version(), current_schema()",
            "SELECT 1 + 2 AS x, 'a' || 'b'",
        ] {
            assert!(is_light_sql(sql), "{sql}");
        }
        for sql in [
            "SELECT * FROM t",
            "SELECT 1 FROM t",
            "SELECT (SELECT max(x) FROM t)",
            "SELECT * FROM generate_series(1, 10)",
            "SELECT * FROM (SELECT 1)",
            "SELECT * FROM unnest([1, 2])",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM t)",
            "INSERT INTO t VALUES (1)",
            "SET x = 1",
            "SELECT 1; SELECT 2",
            "SELEC 1",
            "CREATE PIPELINE p AS INSERT INTO t SELECT 1",
        ] {
            assert!(!is_light_sql(sql), "{sql}");
        }
        assert!(!is_light_sql(&format!("SELECT {}", "1 + ".repeat(400) + "1")));
    }

    #[tokio::test]
    async fn plans_that_read_tables_are_not_light() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = crate::Engine::open(crate::EngineOptions::new(dir.path()))
            .await
            .expect("open");
        let settings = crate::SessionSettings::default();
        engine
            .sql(&mut settings.clone(), "CREATE TABLE t AS SELECT 1 AS x")
            .await
            .expect("ctas");
        for (sql, light) in [
            ("SELECT 1", true),
            ("SELECT now()", true),
            ("SELECT x FROM t", false),
            ("SELECT (SELECT max(x) FROM t)", false),
            ("SELECT * FROM information_schema.tables", false),
            ("INSERT INTO t VALUES (2)", false),
        ] {
            let planned = engine.plan(&settings, sql).await.expect(sql);
            assert_eq!(planned.is_light(), light, "{sql}");
        }
    }

    #[tokio::test]
    async fn a_constant_row_is_what_running_the_plan_returns() {
        use datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        let optimized = async |sql: &str| {
            let plan = ctx.state().create_logical_plan(sql).await.expect(sql);
            ctx.state().optimize(&plan).expect(sql)
        };
        // (sql, whether the plan before optimizing is a constant row already: the
        // engine then takes it without optimizing)
        for (sql, before) in [
            ("SELECT 1", true),
            ("SELECT 1 AS a, 'x' AS b, NULL AS c, 1.5 AS e, 'é' AS \"F\"", true),
            ("SELECT CAST(NULL AS INT) AS d", false),
            ("SELECT version(), 1 + 2 * 3, 'a' || 'b', [1, 2], {'k': 1}", false),
            ("SELECT CAST('2024-01-02' AS DATE), arrow_cast('v', 'Utf8View')", false),
        ] {
            let optimized = optimized(sql).await;
            let row = constant_row(&optimized).unwrap_or_else(|| panic!("{sql}: {optimized}"));
            let ran = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
            assert_eq!(ran.len(), 1, "{sql}");
            assert_eq!(row, ran[0], "{sql}");
            let plan = ctx.state().create_logical_plan(sql).await.expect(sql);
            assert_eq!(
                constant_row(&plan),
                before.then(|| ran[0].clone()),
                "{sql}: before optimizing"
            );
        }
        for sql in [
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1), (2)",
            "SELECT 1 WHERE false",
            "SELECT random()",
            "SELECT x FROM (VALUES (1)) AS v(x)",
        ] {
            let optimized = optimized(sql).await;
            assert!(constant_row(&optimized).is_none(), "{sql}: {optimized}");
        }
    }
}
