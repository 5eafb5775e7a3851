//! The planner's one error type.

use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;

/// Everything that can go wrong planning or running a statement.
///
/// Variants say *what kind* of failure happened; the server maps each to a gRPC
/// code in exactly one place (`contrail_server::error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text or plan is invalid (syntax, unknown column, type mismatch...).
    #[error("{source}")]
    Plan {
        #[source]
        source: DataFusionError,
    },

    /// Execution failed after planning succeeded.
    #[error("{source}")]
    Execution {
        #[source]
        source: DataFusionError,
    },

    /// A table, view or schema that the statement names does not exist.
    #[error("{kind} '{name}' not found")]
    NotFound { kind: &'static str, name: String },

    /// Creating something that is already there.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: &'static str, name: String },

    /// Data for an existing table whose columns it does not fit (bulk ingest
    /// appending: ADBC reports this as ALREADY_EXISTS).
    #[error("table '{table}' exists with other columns: {message}")]
    TableMismatch { table: String, message: String },

    /// A valid request we do not support (yet), with what to do instead.
    #[error("not supported: {what}")]
    Unsupported { what: String },

    /// A user-supplied value (setting, parameter, option) is malformed.
    #[error("invalid {what}: {message}")]
    InvalidInput { what: String, message: String },

    /// The statement was cancelled by the client.
    #[error("statement cancelled")]
    Cancelled,

    /// The Delta Lake storage layer failed.
    #[error("storage error on table '{table}': {source}")]
    Storage {
        table: String,
        #[source]
        source: DeltaTableError,
    },

    /// Files a statement writes (`COPY ... TO`) could not be written.
    #[error("I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The catalog file or data directory could not be read or written.
    #[error("catalog I/O error at {path}: {source}")]
    CatalogIo {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The persisted catalog is corrupt.
    #[error("catalog file {path} is corrupt: {message}")]
    CatalogCorrupt { path: String, message: String },

    /// A statement is past one of the server's limits (see `limits`).
    #[error("{what} is {measured} {unit}, over the server's limit of {limit} (set by {flag})")]
    LimitExceeded {
        what: &'static str,
        measured: usize,
        limit: usize,
        unit: &'static str,
        flag: &'static str,
    },

    /// A result batch is not what its schema promised the client, and cannot
    /// be made so without changing a value (a bug: see `types::conform`).
    #[error("the result does not match its schema: {message}")]
    ResultMismatch { message: String },

    /// `CACHE TABLE` would take the table cache past its limit.
    #[error(
        "CACHE TABLE {table}: the table cache is full ({used} of {limit} bytes in use; \
         UNCACHE TABLE another table or raise --cache-max-bytes)"
    )]
    CacheFull { table: String, limit: u64, used: u64 },
}

/// What kind of failure an error is, wherever it happened (inline, or in a
/// fragment on another worker): the server maps each kind to one gRPC code, and a
/// workflow carries it across Temporal by [`ErrorKind::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The statement or its data is at fault (syntax, a bad cast, division by zero).
    InvalidArgument,
    NotFound,
    AlreadyExists,
    Unimplemented,
    Cancelled,
    ResourceExhausted,
    /// Contrail or its storage failed.
    Internal,
}

impl ErrorKind {
    const ALL: [Self; 7] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::Unimplemented,
        Self::Cancelled,
        Self::ResourceExhausted,
        Self::Internal,
    ];

    /// A stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "InvalidArgument",
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::Unimplemented => "Unimplemented",
            Self::Cancelled => "Cancelled",
            Self::ResourceExhausted => "ResourceExhausted",
            Self::Internal => "Internal",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Result with the planner's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A planning error from DataFusion, unwrapping the context DataFusion adds so
    /// the classification (plan vs. execution vs. not found) is kept.
    pub fn plan(e: DataFusionError) -> Self {
        classify(e, true)
    }

    /// An execution-time error from DataFusion.
    pub fn execution(e: DataFusionError) -> Self {
        classify(e, false)
    }

    pub(crate) fn storage(table: impl Into<String>, source: DeltaTableError) -> Self {
        // Constraint violations surface from deltalake as data errors: they are the
        // statement's fault, not the storage layer's.
        let message = source.to_string();
        if message.contains("Invalid data found") || message.contains("non-nullable") || message.contains("violat") {
            return Self::InvalidInput {
                what: "data".into(),
                message,
            };
        }
        // A statement's own values failing inside deltalake's write (a checked
        // cast, a division by zero): the statement's fault, as inline.
        if data_error(&source) {
            return Self::InvalidInput {
                what: "data".into(),
                message,
            };
        }
        if let DeltaTableError::Arrow { .. } = source {
            return Self::InvalidInput {
                what: "data".into(),
                message,
            };
        }
        Self::Storage {
            table: table.into(),
            source,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        if disk_full(self) {
            return ErrorKind::ResourceExhausted;
        }
        match self {
            Self::Plan { .. } | Self::InvalidInput { .. } | Self::LimitExceeded { .. } => ErrorKind::InvalidArgument,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } | Self::TableMismatch { .. } => ErrorKind::AlreadyExists,
            Self::Unsupported { .. } => ErrorKind::Unimplemented,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::CacheFull { .. } => ErrorKind::ResourceExhausted,
            Self::Execution { source } => match source.find_root() {
                DataFusionError::ResourcesExhausted(_) => ErrorKind::ResourceExhausted,
                // Bad values at run time (division by zero, casts, overflow).
                DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => ErrorKind::InvalidArgument,
                DataFusionError::ExecutionJoin(_) => ErrorKind::Cancelled,
                _ => ErrorKind::Internal,
            },
            Self::Storage { .. }
            | Self::Io { .. }
            | Self::CatalogIo { .. }
            | Self::CatalogCorrupt { .. }
            | Self::ResultMismatch { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> Self {
        Self::Unsupported { what: what.into() }
    }

    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// Whether `error` comes from a full disk (an `ENOSPC` anywhere in its chain of
/// sources): a resource running out, not a bug.
fn disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// Whether `error`'s chain of sources holds a DataFusion execution error (bad
/// values at run time).
fn data_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(DataFusionError::Execution(_)) = e.downcast_ref::<DataFusionError>().map(DataFusionError::find_root)
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn classify(e: DataFusionError, planning: bool) -> Error {
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Error::Plan { source: e },
        DataFusionError::ExecutionJoin(_) if !planning => Error::Cancelled,
        _ if planning => Error::Plan { source: e },
        _ => Error::Execution { source: e },
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::execution(e)
    }
}

/// Longest piece of client input an error message repeats.
const ECHO_BYTES: usize = 64;

/// `input` quoted for an error message, cut to its first 64 bytes (with its
/// length said), control characters escaped: an error never sends a client's
/// whole input back.
pub fn quoted_prefix(input: &str) -> String {
    if input.len() <= ECHO_BYTES {
        return format!("{input:?}");
    }
    let mut end = ECHO_BYTES;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &input[..end], input.len())
}
