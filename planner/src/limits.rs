//! Bounds on a statement's text, checked before anything parses it.
//!
//! Parsing, planning, optimizing and running an expression recurse once per
//! level of its tree, and SQL makes deep trees from short text: `1+1+...+1` of
//! 1,900 terms (4 KB) took a 2 MiB thread stack and the whole process with it.
//! Threads that plan and run statements get large stacks (see
//! [`THREAD_STACK_BYTES`]), and every statement is measured here first, on its
//! tokens, without recursion, so no text can reach a recursion deeper than the
//! stacks were sized for:
//!
//! ```text
//! sql ── length <= max_statement_bytes? ── tokens ── nesting <= max_nesting? ── parse, plan, run
//!              └─ no: InvalidArgument                       └─ no: InvalidArgument
//! ```
//!
//! The nesting measured is an upper bound on how deep the statement's trees
//! can be: every bracket opens a level, and within a level every operator
//! (`+`, `||`, `AND`, `NOT`, `CASE`, `::`, ...) may add one until a comma or
//! a clause keyword starts a sibling; set operations (`UNION`), joins and common
//! table expressions (which the planner inlines into each other) add one each
//! for the rest of their level. A wide statement (10,000 columns, a long `IN`
//! list, thousands of `VALUES` rows) is shallow; a chain of 10,000 `OR`s is not.

use std::sync::OnceLock;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Result};

/// Stack of every thread that parses, plans or runs statements (the gRPC,
/// CPU and blocking threads). Only the pages a thread touches take memory;
/// every deep shape of `tests/python/test_hostile.py` runs on it at
/// [`DEFAULT_MAX_NESTING`] (on 2 MiB stacks they crashed at about 2,000).
pub const THREAD_STACK_BYTES: usize = 64 << 20;

/// Longest statement text accepted by default.
pub const DEFAULT_MAX_STATEMENT_BYTES: usize = 16 << 20;

/// Deepest nesting accepted by default (see the module docs).
pub const DEFAULT_MAX_NESTING: usize = 4096;

/// Most items a `SELECT` list may have by default. Planning time grows with the
/// square of a select list's width (10k/20k/40k items: 1.5/5.3/20 s measured)
/// and cannot be interrupted once started, so the width is bounded before
/// planning; PostgreSQL allows 1,664.
pub const DEFAULT_MAX_SELECT_ITEMS: usize = 10_000;

/// The bounds every statement's text is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Longest statement text, in bytes.
    pub max_statement_bytes: usize,
    /// Deepest nesting of expressions, subqueries and set operations.
    pub max_nesting: usize,
    /// Most items of one `SELECT` list (checked on the parsed statement).
    pub max_select_items: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        Self {
            max_statement_bytes: DEFAULT_MAX_STATEMENT_BYTES,
            max_nesting: DEFAULT_MAX_NESTING,
            max_select_items: DEFAULT_MAX_SELECT_ITEMS,
        }
    }
}

static LIMITS: OnceLock<StatementLimits> = OnceLock::new();

/// Set the process's limits, once, at start-up (before any statement); later
/// calls are ignored. Unset, the defaults hold.
pub fn configure(limits: StatementLimits) {
    let _ = LIMITS.set(limits);
}

/// The process's limits.
pub fn current() -> StatementLimits {
    LIMITS.get().copied().unwrap_or_default()
}

/// Check `sql` against the process's limits (see the module docs).
pub fn check(sql: &str) -> Result<()> {
    check_with(sql, current())
}

/// Check `sql` against `limits`.
pub fn check_with(sql: &str, limits: StatementLimits) -> Result<()> {
    if sql.len() > limits.max_statement_bytes {
        return Err(Error::LimitExceeded {
            what: "statement length",
            measured: sql.len(),
            limit: limits.max_statement_bytes,
            unit: "bytes",
            flag: "--max-statement-bytes",
        });
    }
    let nesting = nesting(sql);
    if nesting > limits.max_nesting {
        return Err(Error::LimitExceeded {
            what: "statement nesting (operators chained or nested, subqueries, UNIONs, joins, CTEs)",
            measured: nesting,
            limit: limits.max_nesting,
            unit: "levels",
            flag: "--max-nesting",
        });
    }
    Ok(())
}

/// Check a parsed statement's `SELECT` lists (every one, subqueries and set
/// operations included) against the process's `max_select_items`.
pub fn check_parsed(statement: &impl datafusion::sql::sqlparser::ast::Visit) -> Result<()> {
    check_parsed_with(statement, current())
}

/// [`check_parsed`] against `limits`.
pub fn check_parsed_with(
    statement: &impl datafusion::sql::sqlparser::ast::Visit,
    limits: StatementLimits,
) -> Result<()> {
    use std::ops::ControlFlow;

    use datafusion::sql::sqlparser::ast::{Query, SetExpr, Visitor};

    struct Widest(usize);
    impl Widest {
        fn body(&mut self, body: &SetExpr) {
            // Set operations chain iteratively here; their depth is bounded
            // by the nesting check before parsing.
            let mut pending = vec![body];
            while let Some(body) = pending.pop() {
                match body {
                    SetExpr::Select(select) => self.0 = self.0.max(select.projection.len()),
                    SetExpr::SetOperation { left, right, .. } => {
                        pending.push(left);
                        pending.push(right);
                    }
                    _ => {}
                }
            }
        }
    }
    impl Visitor for Widest {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            self.body(&query.body);
            ControlFlow::Continue(())
        }
    }
    let mut widest = Widest(0);
    let _ = statement.visit(&mut widest);
    if widest.0 > limits.max_select_items {
        return Err(Error::LimitExceeded {
            what: "SELECT list width",
            measured: widest.0,
            limit: limits.max_select_items,
            unit: "items",
            flag: "--max-select-items",
        });
    }
    Ok(())
}

/// An upper bound on the depth of `sql`'s trees, from its tokens alone (see the
/// module docs). Text that does not tokenize measures 0: the parser reports it
/// before building anything.
pub fn nesting(sql: &str) -> usize {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return 0;
    };
    /// One bracket level: operators since its last sibling started, and
    /// chains (set operations, joins, CTEs) that last to its end.
    #[derive(Default)]
    struct Level {
        operators: usize,
        chains: usize,
    }
    let mut levels = vec![Level::default()];
    // The sum over open levels of (1 + operators + chains), kept as it changes.
    let mut depth = 1usize;
    let mut deepest = depth;
    let mut previous_as = false;
    for token in &tokens {
        let mut is_as = false;
        match token {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket | Token::LBrace => {
                if previous_as {
                    // `name AS (...)`: a common table expression.
                    if let Some(level) = levels.last_mut() {
                        level.chains += 1;
                        depth += 1;
                    }
                }
                if matches!(token, Token::LBracket) {
                    // `x[1][2]...`: each subscript is one more call around `x`.
                    if let Some(level) = levels.last_mut() {
                        level.operators += 1;
                        depth += 1;
                    }
                }
                levels.push(Level::default());
                depth += 1;
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                if levels.len() > 1
                    && let Some(level) = levels.pop()
                {
                    depth -= 1 + level.operators + level.chains;
                }
            }
            Token::Comma | Token::SemiColon => {
                if let Some(level) = levels.last_mut() {
                    depth -= level.operators;
                    level.operators = 0;
                }
            }
            Token::Word(word) => match word.keyword {
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::QUALIFY
                | Keyword::WINDOW
                | Keyword::VALUES
                | Keyword::SET
                | Keyword::RETURNING => {
                    if let Some(level) = levels.last_mut() {
                        depth -= level.operators;
                        level.operators = 0;
                    }
                }
                Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT | Keyword::MINUS | Keyword::JOIN => {
                    if let Some(level) = levels.last_mut() {
                        level.chains += 1;
                        depth += 1;
                    }
                }
                Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::RLIKE
                | Keyword::REGEXP
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::EXISTS
                | Keyword::CASE
                | Keyword::AT
                | Keyword::COLLATE
                | Keyword::DIV
                | Keyword::OVERLAPS => {
                    if let Some(level) = levels.last_mut() {
                        level.operators += 1;
                        depth += 1;
                    }
                }
                Keyword::AS => is_as = true,
                _ => {}
            },
            Token::EOF
            | Token::Number(..)
            | Token::Char(_)
            | Token::Placeholder(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => {}
            // Every other token is an operator: `+`, `||`, `=`, `::`, `.`, `->`...
            _ => {
                if let Some(level) = levels.last_mut() {
                    level.operators += 1;
                    depth += 1;
                }
            }
        }
        previous_as = is_as;
        deepest = deepest.max(depth);
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    #[test]
    fn wide_statements_are_shallow() {
        let columns = (0..10_000).map(|i| format!("c{i} + 1 AS a{i}")).collect::<Vec<_>>();
        assert!(nesting(&format!("SELECT {} FROM t", columns.join(", "))) < 10);
        let list = (0..10_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        assert!(nesting(&format!("SELECT * FROM t WHERE a IN ({list})")) < 10);
        let rows = (0..10_000)
            .map(|i| format!("({i}, 'x')"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(nesting(&format!("INSERT INTO t VALUES {rows}")) < 10);
        assert!(nesting("SELECT a + b * c - d FROM t WHERE x = 1 AND y < 2 GROUP BY a ORDER BY b") < 20);
    }

    #[test]
    fn chains_and_nesting_are_deep() {
        for (sql, at_least) in [
            (format!("SELECT {}", chain("1", "+", 2_000)), 1_999),
            (format!("SELECT {}", chain("'a'", "||", 2_000)), 1_999),
            (
                format!("SELECT * FROM t WHERE {}", chain("a = 1", " OR ", 2_000)),
                3_999,
            ),
            (chain("SELECT 1", " UNION ALL ", 2_000), 1_999),
            (format!("SELECT {}1{}", "(".repeat(2_000), ")".repeat(2_000)), 2_000),
            (format!("SELECT {}1{}", "abs(".repeat(2_000), ")".repeat(2_000)), 2_000),
            (format!("SELECT {} 1", "NOT ".repeat(2_000)), 2_000),
            (
                format!(
                    "SELECT {}1{}",
                    "CASE WHEN true THEN ".repeat(2_000),
                    " END".repeat(2_000)
                ),
                2_000,
            ),
            (format!("SELECT x{}", "[1]".repeat(2_000)), 2_000),
        ] {
            let measured = nesting(&sql);
            assert!(
                measured >= at_least,
                "{measured} < {at_least} for {}",
                &sql[..60.min(sql.len())]
            );
        }
        let ctes = (1..500)
            .map(|i| format!("c{i} AS (SELECT x FROM c{})", i - 1))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("WITH c0 AS (SELECT 1 x), {ctes} SELECT * FROM c499");
        assert!(nesting(&sql) >= 500);
    }

    #[test]
    fn limits_refuse_with_what_to_change() {
        let limits = StatementLimits {
            max_statement_bytes: 100,
            max_nesting: 10,
            max_select_items: 3,
        };
        assert!(check_with("SELECT 1 + 2", limits).is_ok());
        let long = check_with(&format!("SELECT '{}'", "x".repeat(200)), limits).expect_err("too long");
        assert!(long.to_string().contains("--max-statement-bytes"), "{long}");
        let deep = check_with(&format!("SELECT {}", chain("1", "+", 20)), limits).expect_err("too deep");
        assert!(deep.to_string().contains("--max-nesting"), "{deep}");
        assert_eq!(deep.kind(), crate::error::ErrorKind::InvalidArgument);
        // Text that does not tokenize is the parser's to report.
        assert!(check_with("SELECT 'unterminated", limits).is_ok());
    }

    #[test]
    fn every_select_list_is_measured_subqueries_and_set_operations_too() {
        use datafusion::sql::sqlparser::parser::Parser;
        let limits = StatementLimits {
            max_select_items: 3,
            ..StatementLimits::default()
        };
        let parsed = |sql: &str| Parser::parse_sql(&GenericDialect {}, sql).expect("parses").remove(0);
        for fits in [
            "SELECT 1, 2, 3",
            "SELECT a FROM (SELECT 1 a, 2 b, 3 c)",
            "INSERT INTO t SELECT 1, 2",
        ] {
            assert!(check_parsed_with(&parsed(fits), limits).is_ok(), "{fits}");
        }
        for wide in [
            "SELECT 1, 2, 3, 4",
            "SELECT a FROM (SELECT 1 a, 2 b, 3 c, 4 d)",
            "SELECT 1 UNION ALL SELECT 1, 2, 3, 4",
            "WITH w AS (SELECT 1, 2, 3, 4) SELECT 1 FROM w",
            "SELECT 1 WHERE EXISTS (SELECT 1, 2, 3, 4)",
            "CREATE TABLE t AS SELECT 1, 2, 3, 4",
        ] {
            let e = check_parsed_with(&parsed(wide), limits).expect_err(wide);
            assert!(e.to_string().contains("--max-select-items"), "{e}");
        }
    }
}
