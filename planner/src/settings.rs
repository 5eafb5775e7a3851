//! Per-session settings: the state a ticket or prepared-statement handle carries
//! so that any replica (or this one after a restart) can run it the same way.

use std::any::Any;
use std::collections::BTreeMap;
use std::time::Duration;

use datafusion::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::DataFusionError;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Prefix of Contrail's own settings (everything else goes to DataFusion).
pub const CONTRAIL_PREFIX: &str = "contrail.";

/// `contrail.view_types`: keep `Utf8View`/`BinaryView` in results (default off:
/// the JDBC driver and several BI tools cannot read view types).
pub const VIEW_TYPES: &str = "contrail.view_types";

/// `contrail.statement_timeout`: cancel a statement that runs longer than this
/// (`30`, `30s`, `500ms`, `2min`, `1h`; `0` = no limit, the default).
pub const STATEMENT_TIMEOUT: &str = "contrail.statement_timeout";

/// `contrail.execution_mode`: `auto` (default), `inline` or `workflow`.
pub const EXECUTION_MODE: &str = "contrail.execution_mode";

/// `contrail.workflow_threshold_bytes`: in `auto` mode, queries whose estimated
/// input is larger than this run as workflows.
pub const WORKFLOW_THRESHOLD_BYTES: &str = "contrail.workflow_threshold_bytes";

/// Default of [`WORKFLOW_THRESHOLD_BYTES`]: 1 GiB.
pub const DEFAULT_WORKFLOW_THRESHOLD_BYTES: u64 = 1 << 30;

/// `contrail.result_compression`: `none` (default), `lz4` or `zstd`: Arrow IPC
/// body compression of query results, for clients across links slower than the
/// server can compress (on loopback it costs more than it saves).
pub const RESULT_COMPRESSION: &str = "contrail.result_compression";

/// How query results are compressed on the wire (Arrow IPC buffer compression,
/// which pyarrow, ADBC and arrow-rs clients decode; Arrow Java, and so the JDBC
/// driver, does not ship the codecs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultCompression {
    /// Column buffers as they are.
    None,
    /// LZ4 frames: cheap to compress, ~2.5x smaller for TPC-H lineitem.
    Lz4,
    /// Zstandard (level 1): more CPU, ~4x smaller for TPC-H lineitem.
    Zstd,
}

impl ResultCompression {
    fn parse(value: &str) -> Result<Self> {
        match value.trim().trim_matches('\'').to_ascii_lowercase().as_str() {
            "none" | "off" | "false" => Ok(Self::None),
            "lz4" | "lz4_frame" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            other => Err(Error::invalid(
                "setting",
                format!("{RESULT_COMPRESSION} expects 'none', 'lz4' or 'zstd', got '{other}'"),
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// `contrail.priority`: `normal` (default) or `interactive`: which CPU threads
/// the session's statements run on (see [`Priority`]).
pub const PRIORITY: &str = "contrail.priority";

/// Which CPU threads a session's statements run on. Statements that read no
/// table (`SELECT 1`) run on the gRPC threads whatever the priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The threads every statement shares, long ones included.
    Normal,
    /// Threads shared only with other interactive sessions: short statements
    /// (dashboards, lookups) do not queue behind long-running queries. A long
    /// statement here slows the other interactive sessions instead.
    Interactive,
}

impl Priority {
    fn parse(value: &str) -> Result<Self> {
        match value.trim().trim_matches('\'').to_ascii_lowercase().as_str() {
            "normal" => Ok(Self::Normal),
            "interactive" => Ok(Self::Interactive),
            other => Err(Error::invalid(
                "setting",
                format!("{PRIORITY} expects 'normal' or 'interactive', got '{other}'"),
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Interactive => "interactive",
        }
    }
}

/// Where a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// Workflow when the estimated input exceeds the threshold or for large writes; else inline.
    Auto,
    /// Always in the serving process, at once.
    Inline,
    /// Always as a Temporal workflow of fragments.
    Workflow,
}

impl ExecutionMode {
    fn parse(value: &str) -> Result<Self> {
        match value.trim().trim_matches('\'').to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "inline" => Ok(Self::Inline),
            "workflow" => Ok(Self::Workflow),
            other => Err(Error::invalid(
                "setting",
                format!("{EXECUTION_MODE} expects 'auto', 'inline' or 'workflow', got '{other}'"),
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Inline => "inline",
            Self::Workflow => "workflow",
        }
    }
}

/// Every Contrail setting with its default and a one-line description.
pub const CONTRAIL_SETTINGS: &[(&str, &str, &str)] = &[
    (
        VIEW_TYPES,
        "false",
        "Send Utf8View/BinaryView columns as they are instead of Utf8/Binary",
    ),
    (
        STATEMENT_TIMEOUT,
        "0",
        "Cancel statements running longer than this (e.g. 30s, 500ms; 0 = no limit)",
    ),
    (
        EXECUTION_MODE,
        "auto",
        "Where statements run: auto, inline (in the server, at once) or workflow (Temporal fragments)",
    ),
    (
        WORKFLOW_THRESHOLD_BYTES,
        "1073741824",
        "In auto mode, queries reading more than this many bytes (estimated) run as workflows",
    ),
    (
        RESULT_COMPRESSION,
        "none",
        "Compress query results on the wire: none, lz4 or zstd (for clients on slow links; not JDBC)",
    ),
    (
        PRIORITY,
        "normal",
        "CPU threads for this session: normal, or interactive (kept apart from normal sessions' long queries)",
    ),
];

/// A session's Contrail settings as a DataFusion config extension, so that
/// `SHOW contrail.x`, `SHOW ALL` and `information_schema.df_settings` list them
/// (with their defaults and descriptions) beside DataFusion's own.
#[derive(Debug, Clone, Default)]
pub struct ContrailOptions(BTreeMap<String, String>);

impl ContrailOptions {
    /// The `contrail.*` settings `settings` holds.
    pub fn of(settings: &SessionSettings) -> Self {
        let ours = settings.options.iter().filter(|(k, _)| k.starts_with(CONTRAIL_PREFIX));
        Self(ours.map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl ExtensionOptions for ContrailOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    /// Validated as `SET` validates it (DataFusion hands over the key without the prefix).
    fn set(&mut self, key: &str, value: &str) -> datafusion::error::Result<()> {
        let mut one = SessionSettings::default();
        let key = format!("{CONTRAIL_PREFIX}{}", key.trim_start_matches(CONTRAIL_PREFIX));
        one.set(&key, value)
            .map_err(|e| DataFusionError::Configuration(e.to_string()))?;
        self.0.extend(one.options);
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        CONTRAIL_SETTINGS
            .iter()
            .map(|&(key, default, description)| ConfigEntry {
                key: key.to_string(),
                value: Some(self.0.get(key).map_or(default, String::as_str).to_string()),
                description,
            })
            .collect()
    }
}

impl ConfigExtension for ContrailOptions {
    const PREFIX: &'static str = "contrail";
}

/// Settings of one session. Small, serializable, comparable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSettings {
    /// Current catalog (`None`: the default catalog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// Current schema (`None`: `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// `datafusion.*` and `contrail.*` options changed from their defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl SessionSettings {
    /// Whether results keep view types.
    pub fn view_types(&self) -> bool {
        self.options
            .get(VIEW_TYPES)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The statement time limit, if one is set.
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.options
            .get(STATEMENT_TIMEOUT)
            .and_then(|v| parse_duration(STATEMENT_TIMEOUT, v).ok())
            .filter(|d| !d.is_zero())
    }

    /// Where statements of this session run.
    pub fn execution_mode(&self) -> ExecutionMode {
        self.options
            .get(EXECUTION_MODE)
            .and_then(|v| ExecutionMode::parse(v).ok())
            .unwrap_or(ExecutionMode::Auto)
    }

    /// The `auto` mode's input size threshold.
    pub fn workflow_threshold_bytes(&self) -> u64 {
        self.options
            .get(WORKFLOW_THRESHOLD_BYTES)
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_WORKFLOW_THRESHOLD_BYTES)
    }

    /// How this session's query results are compressed on the wire.
    pub fn result_compression(&self) -> ResultCompression {
        self.options
            .get(RESULT_COMPRESSION)
            .and_then(|v| ResultCompression::parse(v).ok())
            .unwrap_or(ResultCompression::None)
    }

    /// Which CPU threads this session's statements run on.
    pub fn priority(&self) -> Priority {
        self.options
            .get(PRIORITY)
            .and_then(|v| Priority::parse(v).ok())
            .unwrap_or(Priority::Normal)
    }

    /// Set one option, validating Contrail's own keys. DataFusion keys are
    /// validated when a session context is built from these settings.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim().to_ascii_lowercase();
        match key.as_str() {
            "catalog" | "current_catalog" => self.catalog = Some(value.to_string()),
            "schema" | "current_schema" | "search_path" => self.schema = Some(value.to_string()),
            VIEW_TYPES => {
                let v = parse_bool(&key, value)?;
                self.options.insert(key, v.to_string());
            }
            STATEMENT_TIMEOUT => {
                let d = parse_duration(&key, value)?;
                self.options.insert(key, format!("{}ms", d.as_millis()));
            }
            EXECUTION_MODE => {
                let mode = ExecutionMode::parse(value)?;
                self.options.insert(key, mode.as_str().to_string());
            }
            RESULT_COMPRESSION => {
                let codec = ResultCompression::parse(value)?;
                self.options.insert(key, codec.as_str().to_string());
            }
            PRIORITY => {
                let priority = Priority::parse(value)?;
                self.options.insert(key, priority.as_str().to_string());
            }
            WORKFLOW_THRESHOLD_BYTES => {
                let bytes: u64 = value.trim().trim_matches('\'').parse().map_err(|_| {
                    Error::invalid("setting", format!("{key} expects a number of bytes, got '{value}'"))
                })?;
                self.options.insert(key, bytes.to_string());
            }
            k if k.starts_with(CONTRAIL_PREFIX) => {
                return Err(Error::invalid("setting", format!("unknown Contrail setting '{k}'")));
            }
            k if k.starts_with("datafusion.") => {
                self.options.insert(key, value.to_string());
            }
            k => {
                return Err(Error::invalid(
                    "setting",
                    format!(
                        "unknown setting '{k}' (settings are 'catalog', 'schema', \
                         'contrail.*' or 'datafusion.*')"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Remove one option (back to its default).
    pub fn reset(&mut self, key: &str) {
        let key = key.trim().to_ascii_lowercase();
        match key.as_str() {
            "catalog" | "current_catalog" => self.catalog = None,
            "schema" | "current_schema" | "search_path" => self.schema = None,
            k => {
                self.options.remove(k);
            }
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        other => Err(Error::invalid(
            "setting",
            format!("{key} expects a boolean, got '{other}'"),
        )),
    }
}

/// `30` (seconds), `30s`, `500ms`, `2min`, `1h`.
fn parse_duration(key: &str, value: &str) -> Result<Duration> {
    let v = value.trim().trim_matches('\'').to_ascii_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let bad = || {
        Error::invalid(
            "setting",
            format!("{key} expects a duration like 30s, 500ms or 2min, got '{value}'"),
        )
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => n,
        "ms" | "millisecond" | "milliseconds" => n / 1000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_reset() {
        let mut s = SessionSettings::default();
        s.set("contrail.view_types", "on").expect("valid bool");
        assert!(s.view_types());
        s.set("datafusion.execution.batch_size", "1024").expect("df key");
        s.set("schema", "tpch").expect("schema");
        assert_eq!(s.schema.as_deref(), Some("tpch"));
        s.reset("contrail.view_types");
        assert!(!s.view_types());
        assert!(s.set("contrail.nope", "1").is_err());
        assert!(s.set("contrail.view_types", "maybe").is_err());
        assert!(s.set("random_key", "1").is_err());
    }

    #[test]
    fn execution_mode_and_threshold() {
        let mut s = SessionSettings::default();
        assert_eq!(s.execution_mode(), ExecutionMode::Auto);
        assert_eq!(s.workflow_threshold_bytes(), DEFAULT_WORKFLOW_THRESHOLD_BYTES);
        s.set(EXECUTION_MODE, "'Workflow'").expect("mode");
        assert_eq!(s.execution_mode(), ExecutionMode::Workflow);
        s.set(WORKFLOW_THRESHOLD_BYTES, "1000").expect("bytes");
        assert_eq!(s.workflow_threshold_bytes(), 1000);
        assert!(s.set(EXECUTION_MODE, "distributed").is_err());
        assert!(s.set(WORKFLOW_THRESHOLD_BYTES, "1GB").is_err());
    }

    #[test]
    fn priority() {
        let mut s = SessionSettings::default();
        assert_eq!(s.priority(), Priority::Normal);
        s.set(PRIORITY, "'Interactive'").expect("interactive");
        assert_eq!(s.priority(), Priority::Interactive);
        let err = s.set(PRIORITY, "high").expect_err("not a priority");
        assert!(err.to_string().contains("'normal' or 'interactive'"), "{err}");
        assert_eq!(s.priority(), Priority::Interactive, "a bad value changes nothing");
        s.reset(PRIORITY);
        assert_eq!(s.priority(), Priority::Normal);
    }

    #[test]
    fn result_compression() {
        let mut s = SessionSettings::default();
        assert_eq!(s.result_compression(), ResultCompression::None);
        s.set(RESULT_COMPRESSION, "'LZ4'").expect("lz4");
        assert_eq!(s.result_compression(), ResultCompression::Lz4);
        s.set(RESULT_COMPRESSION, "zstd").expect("zstd");
        assert_eq!(s.result_compression(), ResultCompression::Zstd);
        let err = s.set(RESULT_COMPRESSION, "gzip").expect_err("gzip is not an IPC codec");
        assert!(err.to_string().contains("'none', 'lz4' or 'zstd'"), "{err}");
        assert_eq!(
            s.result_compression(),
            ResultCompression::Zstd,
            "a bad value changes nothing"
        );
        s.reset(RESULT_COMPRESSION);
        assert_eq!(s.result_compression(), ResultCompression::None);
    }

    #[test]
    fn contrail_options_list_every_setting_with_its_value() {
        let mut s = SessionSettings::default();
        s.set(RESULT_COMPRESSION, "lz4").expect("lz4");
        let mut options = ContrailOptions::of(&s);
        let entries = options.entries();
        assert_eq!(entries.len(), CONTRAIL_SETTINGS.len());
        let value =
            |entries: &[ConfigEntry], key: &str| entries.iter().find(|e| e.key == key).and_then(|e| e.value.clone());
        assert_eq!(value(&entries, RESULT_COMPRESSION).as_deref(), Some("lz4"));
        assert_eq!(value(&entries, EXECUTION_MODE).as_deref(), Some("auto"), "defaults too");
        options.set("execution_mode", "inline").expect("valid");
        assert_eq!(value(&options.entries(), EXECUTION_MODE).as_deref(), Some("inline"));
        assert!(options.set("execution_mode", "sometimes").is_err());
    }

    #[test]
    fn statement_timeout_units() {
        let mut s = SessionSettings::default();
        assert_eq!(s.statement_timeout(), None);
        for (value, ms) in [
            ("30", 30_000),
            ("2s", 2_000),
            ("500ms", 500),
            ("2min", 120_000),
            ("'1h'", 3_600_000),
        ] {
            s.set(STATEMENT_TIMEOUT, value).expect(value);
            assert_eq!(s.statement_timeout(), Some(Duration::from_millis(ms)), "{value}");
        }
        s.set(STATEMENT_TIMEOUT, "0").expect("zero");
        assert_eq!(s.statement_timeout(), None);
        assert!(s.set(STATEMENT_TIMEOUT, "soon").is_err());
        assert!(s.set(STATEMENT_TIMEOUT, "5 fortnights").is_err());
        assert!(s.set(STATEMENT_TIMEOUT, "-1").is_err());
    }
}
