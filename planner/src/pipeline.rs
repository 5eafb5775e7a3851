//! The pipeline statements, parsed by a small extension of the SQL front end
//! (sqlparser's tokenizer and parser, the ones DataFusion uses):
//!
//! ```text
//! CREATE [OR REPLACE] PIPELINE [IF NOT EXISTS] name
//!   [SCHEDULE EVERY '<interval>' | SCHEDULE CRON '<expr>']
//!   [INCREMENTAL BY <column>]
//!   [WITH (max_attempts = 5, on_error = 'fail' | 'skip', overlap = 'skip' | 'buffer_one', paused = false)]
//!   AS INSERT INTO <table> <query>
//!    | AS COPY (<query>) TO '<path>' STORED AS PARQUET
//! SHOW PIPELINES
//! DESCRIBE PIPELINE name
//! ALTER PIPELINE name PAUSE | RESUME | SET (key = value, ...)
//! RUN PIPELINE name
//! DROP PIPELINE [IF EXISTS] name
//! ```
//!
//! [`parse`] answers `None` for any other statement, which then goes to DataFusion.
//! Errors say what was expected, what was found and where (line and column).

use std::time::Duration;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One pipeline statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineStatement {
    Create(CreatePipeline),
    Show,
    Describe { name: String },
    Alter { name: String, change: AlterPipeline },
    Run { name: String },
    Drop { name: String, if_exists: bool },
}

/// `CREATE PIPELINE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePipeline {
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub definition: PipelineDefinition,
}

/// What a pipeline is; stored in the catalog and carried by its schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineDefinition {
    pub name: String,
    /// `None`: one run, now.
    pub schedule: Option<Schedule>,
    /// The source's monotonic column that bounds each run.
    pub incremental_by: Option<String>,
    pub options: PipelineOptions,
    pub body: PipelineBody,
    /// The statement as the user wrote it (`SHOW PIPELINES`, `DESCRIBE PIPELINE`).
    pub sql: String,
}

/// When a pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    Every(Duration),
    Cron(String),
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Every(d) => write!(f, "EVERY '{}'", humantime(*d)),
            Self::Cron(c) => write!(f, "CRON '{c}'"),
        }
    }
}

/// `WITH (...)` of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineOptions {
    /// Attempts of one run before `on_error` applies.
    pub max_attempts: u32,
    pub on_error: OnError,
    pub overlap: Overlap,
    pub paused: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            on_error: OnError::Fail,
            overlap: Overlap::Skip,
            paused: false,
        }
    }
}

/// What a run that failed `max_attempts` times does to its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnError {
    /// Stop the pipeline (paused, with the error in DESCRIBE and system.pipeline_runs).
    Fail,
    /// Record the failure and go on with the next scheduled run.
    Skip,
}

/// What a scheduled run does while the previous one still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// Do not start it.
    Skip,
    /// Start it when the running one finishes (at most one waits).
    BufferOne,
}

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PipelineBody {
    /// `INSERT INTO <table> <query>`: `sql` is the whole INSERT.
    Insert { table: String, sql: String },
    /// `COPY (<query>) TO '<path>' STORED AS PARQUET`: `query` is the inner query.
    Copy { query: String, path: String },
}

/// `ALTER PIPELINE name ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterPipeline {
    Pause,
    Resume,
    /// Options to change, as written.
    Set(Vec<(String, String)>),
}

/// The definition of a `CREATE PIPELINE` (tests).
#[cfg(test)]
pub(crate) fn definition_of(sql: &str) -> PipelineDefinition {
    match parse(sql) {
        Ok(Some(PipelineStatement::Create(c))) => c.definition,
        other => panic!("{sql}: {other:?}"),
    }
}

/// Parse `sql` if it is a pipeline statement; `None` for any other statement.
pub fn parse(sql: &str) -> Result<Option<PipelineStatement>> {
    crate::limits::check(sql)?;
    let dialect = GenericDialect {};
    let Ok(parser) = Parser::new(&dialect).try_with_sql(sql) else {
        return Ok(None); // not even tokens: DataFusion reports it
    };
    let mut p = PipelineParser { parser, sql };
    p.statement()
}

struct PipelineParser<'a> {
    parser: Parser<'a>,
    sql: &'a str,
}

impl PipelineParser<'_> {
    fn statement(&mut self) -> Result<Option<PipelineStatement>> {
        let statement = if self.parser.parse_keyword(Keyword::CREATE) {
            let or_replace = self.parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
            if !self.word("PIPELINE") {
                return Ok(None);
            }
            PipelineStatement::Create(self.create(or_replace)?)
        } else if self.leads(Keyword::SHOW, "PIPELINES") {
            PipelineStatement::Show
        } else if self.names_third() && self.leads(Keyword::DESCRIBE, "PIPELINE") {
            // (`DESCRIBE pipeline` alone describes a table of that name.)
            PipelineStatement::Describe { name: self.name()? }
        } else if self.leads(Keyword::ALTER, "PIPELINE") {
            let name = self.name()?;
            let change = if self.word("PAUSE") {
                AlterPipeline::Pause
            } else if self.parser.parse_keyword(Keyword::RESUME) {
                AlterPipeline::Resume
            } else if self.parser.parse_keyword(Keyword::SET) {
                AlterPipeline::Set(self.option_list()?)
            } else {
                return Err(self.expected("PAUSE, RESUME or SET (...)"));
            };
            PipelineStatement::Alter { name, change }
        } else if self.leads(Keyword::RUN, "PIPELINE") {
            PipelineStatement::Run { name: self.name()? }
        } else if self.leads(Keyword::DROP, "PIPELINE") {
            let if_exists = self.parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            PipelineStatement::Drop {
                name: self.name()?,
                if_exists,
            }
        } else {
            return Ok(None);
        };
        self.end()?;
        Ok(Some(statement))
    }

    fn create(&mut self, or_replace: bool) -> Result<CreatePipeline> {
        let if_not_exists = self
            .parser
            .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = self.name()?;
        let mut schedule = None;
        let mut incremental_by = None;
        let mut options = PipelineOptions::default();
        loop {
            if self.word("SCHEDULE") {
                if schedule.is_some() {
                    return Err(self.error_at_previous("a second SCHEDULE"));
                }
                schedule = Some(self.schedule()?);
            } else if self.parser.parse_keyword(Keyword::INCREMENTAL) {
                if incremental_by.is_some() {
                    return Err(self.error_at_previous("a second INCREMENTAL BY"));
                }
                self.expect_keyword(Keyword::BY, "BY")?;
                incremental_by = Some(self.name()?);
            } else if self.parser.parse_keyword(Keyword::WITH) {
                for (key, value) in self.option_list()? {
                    apply_option(&mut options, &key, &value)?;
                }
            } else {
                break;
            }
        }
        if or_replace && if_not_exists {
            return Err(Error::invalid(
                "pipeline definition",
                "OR REPLACE and IF NOT EXISTS cannot be used together",
            ));
        }
        self.expect_keyword(Keyword::AS, "SCHEDULE, INCREMENTAL BY, WITH or AS")?;
        let body = self.body()?;
        Ok(CreatePipeline {
            or_replace,
            if_not_exists,
            definition: PipelineDefinition {
                name,
                schedule,
                incremental_by,
                options,
                body,
                sql: self.sql.trim().trim_end_matches(';').trim_end().to_string(),
            },
        })
    }

    fn schedule(&mut self) -> Result<Schedule> {
        if self.parser.parse_keyword(Keyword::EVERY) {
            let at = self.parser.peek_token();
            let text = self.string("an interval such as '5 minutes'")?;
            let every = parse_interval(&text).map_err(|m| self.error_at(&at, &m))?;
            Ok(Schedule::Every(every))
        } else if self.word("CRON") {
            let at = self.parser.peek_token();
            let text = self.string("a cron expression such as '*/5 * * * *'")?;
            check_cron(&text).map_err(|m| self.error_at(&at, &m))?;
            Ok(Schedule::Cron(text.split_whitespace().collect::<Vec<_>>().join(" ")))
        } else {
            Err(self.expected("EVERY or CRON"))
        }
    }

    fn body(&mut self) -> Result<PipelineBody> {
        let start = self.parser.peek_token();
        if self.parser.parse_keyword(Keyword::INSERT) {
            self.expect_keyword(Keyword::INTO, "INTO")?;
            let table = self.parser.parse_object_name(false).map_err(|e| self.parse_error(e))?;
            self.parser.parse_query().map_err(|e| self.parse_error(e))?;
            let end = self.parser.peek_token();
            Ok(PipelineBody::Insert {
                table: table.to_string(),
                sql: self.slice(&start, &end),
            })
        } else if self.parser.parse_keyword(Keyword::COPY) {
            self.expect_token(&Token::LParen, "( after COPY")?;
            let query_start = self.parser.peek_token();
            self.parser.parse_query().map_err(|e| self.parse_error(e))?;
            let query_end = self.parser.peek_token();
            self.expect_token(&Token::RParen, ")")?;
            self.expect_keyword(Keyword::TO, "TO")?;
            let path = self.string("the target path as a string")?;
            self.expect_keyword(Keyword::STORED, "STORED AS PARQUET")?;
            self.expect_keyword(Keyword::AS, "AS PARQUET")?;
            if !self.word("PARQUET") {
                return Err(self.expected("PARQUET (the only format pipelines write)"));
            }
            Ok(PipelineBody::Copy {
                query: self.slice(&query_start, &query_end),
                path,
            })
        } else {
            Err(self.expected("INSERT INTO <table> <query> or COPY (<query>) TO '<path>' STORED AS PARQUET"))
        }
    }

    /// `( key = value, ... )`
    fn option_list(&mut self) -> Result<Vec<(String, String)>> {
        self.expect_token(&Token::LParen, "(")?;
        let mut out = Vec::new();
        loop {
            let key = self.name()?.to_ascii_lowercase();
            self.expect_token(&Token::Eq, "=")?;
            let at = self.parser.next_token();
            let value = match &at.token {
                Token::SingleQuotedString(s) => s.clone(),
                Token::Number(n, _) => n.clone(),
                Token::Word(w) => w.value.to_ascii_lowercase(),
                _ => return Err(self.error_at(&at, &format!("expected a value for {key}"))),
            };
            out.push((key, value));
            if self.parser.consume_token(&Token::Comma) {
                continue;
            }
            self.expect_token(&Token::RParen, ", or )")?;
            return Ok(out);
        }
    }

    fn name(&mut self) -> Result<String> {
        let at = self.parser.peek_token();
        match &at.token {
            Token::Word(w) if w.quote_style.is_some() || w.keyword == Keyword::NoKeyword || !reserved(w.keyword) => {
                self.parser.next_token();
                Ok(if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_ascii_lowercase()
                })
            }
            _ => Err(self.expected("a name")),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.parser.peek_token();
        match &at.token {
            Token::SingleQuotedString(s) => {
                self.parser.next_token();
                Ok(s.clone())
            }
            _ => Err(self.expected(what)),
        }
    }

    /// Consume an unquoted word `w` (case-insensitive) if it is next.
    fn word(&mut self, w: &str) -> bool {
        match &self.parser.peek_token().token {
            Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w) => {
                self.parser.next_token();
                true
            }
            _ => false,
        }
    }

    /// Whether the third token is a name.
    fn names_third(&self) -> bool {
        matches!(self.parser.peek_nth_token(2).token, Token::Word(_))
    }

    /// Consume `keyword w` if the statement starts so.
    fn leads(&mut self, keyword: Keyword, w: &str) -> bool {
        let starts = matches!(&self.parser.peek_nth_token(0).token, Token::Word(k) if k.keyword == keyword)
            && matches!(&self.parser.peek_nth_token(1).token,
                Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
        if starts {
            self.parser.next_token();
            self.parser.next_token();
        }
        starts
    }

    fn expect_keyword(&mut self, keyword: Keyword, what: &str) -> Result<()> {
        if self.parser.parse_keyword(keyword) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn expect_token(&mut self, token: &Token, what: &str) -> Result<()> {
        if self.parser.consume_token(token) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn end(&mut self) -> Result<()> {
        while self.parser.consume_token(&Token::SemiColon) {}
        match self.parser.peek_token().token {
            Token::EOF => Ok(()),
            _ => Err(self.expected("the end of the statement")),
        }
    }

    /// The source text from `start` up to (not including) `end`.
    fn slice(&self, start: &TokenWithSpan, end: &TokenWithSpan) -> String {
        let from = offset(self.sql, start.span.start);
        let to = match end.token {
            Token::EOF => self.sql.len(),
            _ => offset(self.sql, end.span.start),
        };
        self.sql[from..to.max(from)]
            .trim()
            .trim_end_matches(';')
            .trim_end()
            .to_string()
    }

    fn expected(&self, what: &str) -> Error {
        let found = self.parser.peek_token();
        let shown = match &found.token {
            Token::EOF => "the end of the statement".to_string(),
            t => format!("'{t}'"),
        };
        self.error_at(&found, &format!("expected {what}, found {shown}"))
    }

    fn error_at(&self, at: &TokenWithSpan, message: &str) -> Error {
        let Location { line, column } = at.span.start;
        Error::invalid(
            "pipeline definition",
            format!("{message} at line {line}, column {column}"),
        )
    }

    fn error_at_previous(&self, what: &str) -> Error {
        let at = self.parser.peek_token();
        self.error_at(&at, &format!("{what} is not allowed"))
    }

    fn parse_error(&self, e: ParserError) -> Error {
        Error::invalid("pipeline definition", e.to_string().replace("sql parser error: ", ""))
    }
}

/// Keywords that cannot name a pipeline or column without quotes.
fn reserved(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::AS | Keyword::WITH | Keyword::SELECT | Keyword::FROM | Keyword::WHERE | Keyword::INCREMENTAL
    )
}

/// Byte offset of a (1-based line, 1-based character column) location.
fn offset(sql: &str, at: Location) -> usize {
    let mut line = 1u64;
    let mut column = 1u64;
    for (i, c) in sql.char_indices() {
        if line == at.line && column == at.column {
            return i;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    sql.len()
}

/// Apply one `WITH` / `SET` option.
pub fn apply_option(options: &mut PipelineOptions, key: &str, value: &str) -> Result<()> {
    let bad = |expected: &str| Error::invalid("pipeline option", format!("{key} = '{value}': expected {expected}"));
    match key {
        "max_attempts" => {
            options.max_attempts = value
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("a whole number of at least 1"))?;
        }
        "on_error" => {
            options.on_error = match value.to_ascii_lowercase().as_str() {
                "fail" => OnError::Fail,
                "skip" => OnError::Skip,
                _ => return Err(bad("'fail' or 'skip'")),
            }
        }
        "overlap" => {
            options.overlap = match value.to_ascii_lowercase().as_str() {
                "skip" => Overlap::Skip,
                "buffer_one" => Overlap::BufferOne,
                _ => return Err(bad("'skip' or 'buffer_one'")),
            }
        }
        "paused" => {
            options.paused = match value.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad("true or false")),
            }
        }
        _ => {
            return Err(Error::invalid(
                "pipeline option",
                format!("unknown option '{key}' (max_attempts, on_error, overlap, paused)"),
            ));
        }
    }
    Ok(())
}

/// `'5 minutes'`, `'1 hour 30 minutes'`, `'30s'`, `'2h'`: a positive duration.
pub fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("invalid interval '{text}': expected e.g. '30 seconds', '5 minutes', '1 hour' or '1d'");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let per_unit: u64 = match rest[..unit_len].to_ascii_lowercase().as_str() {
            "ms" | "millisecond" | "milliseconds" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => return Err(bad()),
        };
        let too_long = || format!("invalid interval '{text}': too long");
        let millis = n.checked_mul(per_unit).ok_or_else(too_long)?;
        total = total.checked_add(Duration::from_millis(millis)).ok_or_else(too_long)?;
        rest = rest[unit_len..].trim_start();
    }
    if total < Duration::from_secs(1) {
        return Err(format!(
            "invalid interval '{text}': pipelines run at most once a second"
        ));
    }
    Ok(total)
}

/// A standard 5-field cron expression (minute hour day-of-month month day-of-week).
pub fn check_cron(text: &str) -> std::result::Result<(), String> {
    const FIELDS: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "invalid cron expression '{text}': expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            parts.len()
        ));
    }
    for (part, (field, lo, hi)) in parts.iter().zip(FIELDS) {
        for item in part.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            if let Some(step) = step {
                if !step.parse::<u32>().is_ok_and(|s| s >= 1) {
                    return Err(format!(
                        "invalid cron expression '{text}': bad step '{step}' in the {field} field"
                    ));
                }
            }
            if range == "*" {
                continue;
            }
            let bounds: Vec<&str> = range.split('-').collect();
            let valid = bounds.len() <= 2
                && bounds
                    .iter()
                    .all(|b| b.parse::<u32>().is_ok_and(|n| n >= lo && n <= hi) || named(field, b));
            if !valid {
                return Err(format!(
                    "invalid cron expression '{text}': '{item}' is not a valid {field} ({lo}-{hi})"
                ));
            }
        }
    }
    Ok(())
}

fn named(field: &str, value: &str) -> bool {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let v = value.to_ascii_lowercase();
    match field {
        "month" => MONTHS.contains(&v.as_str()),
        "day of week" => DAYS.contains(&v.as_str()),
        _ => false,
    }
}

/// `90s` -> `1m 30s`, for SHOW PIPELINES.
fn humantime(d: Duration) -> String {
    let mut s = d.as_secs();
    let mut out = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= size {
            out.push(format!("{}{unit}", s / size));
            s %= size;
        }
    }
    if out.is_empty() {
        format!("{}ms", d.as_millis())
    } else {
        out.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(sql: &str) -> CreatePipeline {
        match parse(sql) {
            Ok(Some(PipelineStatement::Create(c))) => c,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn error(sql: &str) -> String {
        match parse(sql) {
            Err(e) => e.to_string(),
            other => panic!("{sql} parsed: {other:?}"),
        }
    }

    #[test]
    fn create_with_every_clause() {
        let c = create(
            "create or replace pipeline Orders_Copy schedule every '5 minutes' incremental by o_orderkey \
             with (max_attempts = 3, on_error = 'skip', overlap = 'buffer_one', paused = true) \
             as insert into sink.orders select * from tpch.orders where o_orderkey > 10;",
        );
        assert!(c.or_replace && !c.if_not_exists);
        let d = c.definition;
        assert_eq!(d.name, "orders_copy");
        assert_eq!(d.schedule, Some(Schedule::Every(Duration::from_secs(300))));
        assert_eq!(d.incremental_by.as_deref(), Some("o_orderkey"));
        assert_eq!(
            d.options,
            PipelineOptions {
                max_attempts: 3,
                on_error: OnError::Skip,
                overlap: Overlap::BufferOne,
                paused: true
            }
        );
        assert_eq!(
            d.body,
            PipelineBody::Insert {
                table: "sink.orders".into(),
                sql: "insert into sink.orders select * from tpch.orders where o_orderkey > 10".into(),
            }
        );
        assert!(d.sql.ends_with("o_orderkey > 10"), "{}", d.sql);
    }

    #[test]
    fn create_copy_with_cron_and_defaults() {
        let c = create(
            "CREATE PIPELINE IF NOT EXISTS nightly SCHEDULE CRON '0  2 * * mon-fri'\n\
             AS COPY (SELECT a, b FROM t WHERE a > (SELECT 1)) TO '/tmp/out/' STORED AS PARQUET",
        );
        assert!(c.if_not_exists);
        let d = c.definition;
        assert_eq!(d.schedule, Some(Schedule::Cron("0 2 * * mon-fri".into())));
        assert_eq!(d.options, PipelineOptions::default());
        assert_eq!(
            d.body,
            PipelineBody::Copy {
                query: "SELECT a, b FROM t WHERE a > (SELECT 1)".into(),
                path: "/tmp/out/".into(),
            }
        );
        // No schedule: one run, now.
        assert_eq!(
            create("CREATE PIPELINE once AS INSERT INTO s SELECT 1")
                .definition
                .schedule,
            None
        );
    }

    #[test]
    fn the_other_statements() {
        assert_eq!(parse("SHOW PIPELINES").ok().flatten(), Some(PipelineStatement::Show));
        assert_eq!(
            parse("describe pipeline p1").ok().flatten(),
            Some(PipelineStatement::Describe { name: "p1".into() })
        );
        assert_eq!(
            parse("ALTER PIPELINE p1 PAUSE").ok().flatten(),
            Some(PipelineStatement::Alter {
                name: "p1".into(),
                change: AlterPipeline::Pause
            })
        );
        assert_eq!(
            parse("ALTER PIPELINE p1 RESUME").ok().flatten(),
            Some(PipelineStatement::Alter {
                name: "p1".into(),
                change: AlterPipeline::Resume
            })
        );
        assert_eq!(
            parse("ALTER PIPELINE p1 SET (max_attempts = 2, on_error = 'fail')")
                .ok()
                .flatten(),
            Some(PipelineStatement::Alter {
                name: "p1".into(),
                change: AlterPipeline::Set(vec![
                    ("max_attempts".into(), "2".into()),
                    ("on_error".into(), "fail".into())
                ])
            })
        );
        assert_eq!(
            parse("RUN PIPELINE \"MixedCase\"").ok().flatten(),
            Some(PipelineStatement::Run {
                name: "MixedCase".into()
            })
        );
        assert_eq!(
            parse("DROP PIPELINE IF EXISTS p1").ok().flatten(),
            Some(PipelineStatement::Drop {
                name: "p1".into(),
                if_exists: true
            })
        );
    }

    #[test]
    fn other_sql_is_not_ours() {
        for sql in [
            "SELECT 1",
            "CREATE TABLE pipeline (a INT)",
            "DROP TABLE pipeline",
            "DESCRIBE pipeline",
            "SHOW TABLES",
            "INSERT INTO t VALUES (1)",
            "",
        ] {
            assert_eq!(parse(sql).ok().flatten(), None, "{sql}");
        }
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let e = error("CREATE PIPELINE p SCHEDULE EVERY '5 fortnights' AS INSERT INTO s SELECT 1");
        assert!(
            e.contains("invalid interval '5 fortnights'") && e.contains("column 34"),
            "{e}"
        );
        let e = error("CREATE PIPELINE p SCHEDULE CRON '61 * * * *' AS INSERT INTO s SELECT 1");
        assert!(
            e.contains("'61' is not a valid minute") && e.contains("column 33"),
            "{e}"
        );
        let e = error("CREATE PIPELINE p SCHEDULE CRON '* * *' AS INSERT INTO s SELECT 1");
        assert!(e.contains("expected 5 fields"), "{e}");
        let e = error("CREATE PIPELINE p SCHEDULE HOURLY AS INSERT INTO s SELECT 1");
        assert!(
            e.contains("expected EVERY or CRON, found 'HOURLY' at line 1, column 28"),
            "{e}"
        );
        let e = error("CREATE PIPELINE p WITH (retries = 3) AS INSERT INTO s SELECT 1");
        assert!(e.contains("unknown option 'retries'"), "{e}");
        let e = error("CREATE PIPELINE p WITH (on_error = 'ignore') AS INSERT INTO s SELECT 1");
        assert!(e.contains("'fail' or 'skip'"), "{e}");
        let e = error("CREATE PIPELINE p AS DELETE FROM s");
        assert!(
            e.contains("expected INSERT INTO") && e.contains("found 'DELETE' at line 1, column 22"),
            "{e}"
        );
        let e = error("CREATE PIPELINE p AS COPY (SELECT 1) TO '/x' STORED AS CSV");
        assert!(e.contains("expected PARQUET"), "{e}");
        let e = error("CREATE PIPELINE p\nAS INSERT INTO s SELECT (1 FROM t");
        assert!(e.contains("Line: 2"), "{e}");
        let e = error("CREATE PIPELINE p AS INSERT INTO s SELECT 1 extra garbage");
        assert!(e.contains("end of the statement"), "{e}");
        let e = error("ALTER PIPELINE p STOP");
        assert!(e.contains("PAUSE, RESUME or SET"), "{e}");
        let e = error("CREATE OR REPLACE PIPELINE IF NOT EXISTS p AS INSERT INTO s SELECT 1");
        assert!(e.contains("cannot be used together"), "{e}");
    }

    #[test]
    fn intervals_and_cron() {
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("1 hour 30 minutes"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_interval("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_interval("0 seconds").is_err());
        assert!(parse_interval("500ms").is_err());
        assert!(parse_interval("five minutes").is_err());
        // Overflowing counts are refused, not wrapped or panicking.
        assert!(parse_interval("18446744073709551615 d").is_err_and(|e| e.contains("too long")));
        assert!(parse_interval("18446744073709551615 s").is_err_and(|e| e.contains("too long")));
        assert_eq!(parse_interval("1 m 500 ms"), Ok(Duration::from_millis(60_500)));
        assert!(check_cron("*/15 0-6,22 1 jan-mar sun").is_ok());
        assert!(check_cron("0 24 * * *").is_err());
        assert!(check_cron("*/0 * * * *").is_err());
        assert_eq!(Schedule::Every(Duration::from_secs(5400)).to_string(), "EVERY '1h 30m'");
    }
}
