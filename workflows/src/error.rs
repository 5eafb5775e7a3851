//! The workflows crate's one error type.

use contrail_planner::distributed::UpstreamLost;

/// What can go wrong starting, running or reading a workflow statement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Planning or running a fragment failed.
    #[error(transparent)]
    Planner(#[from] contrail_planner::Error),

    /// An input fragment's output is gone (its worker died); it must be recomputed.
    #[error(transparent)]
    UpstreamLost(#[from] UpstreamLost),

    /// The spool (fragment outputs on local disk) could not be read or written.
    #[error("spool I/O error at {path}: {source}")]
    Spool {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A fragment output asked for is not in this worker's spool.
    #[error("fragment output {what} is not in this worker's spool (expired or never written)")]
    NotSpooled { what: String },

    /// Arrow IPC encoding or decoding of spooled data failed.
    #[error("spool data error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Talking to Temporal failed (connect, start, describe, cancel).
    #[error("Temporal: {message}")]
    Temporal { message: String },

    /// The embedded Temporal dev server could not be started or stopped.
    #[error("embedded Temporal server: {message}")]
    Embedded { message: String },

    /// The workflow ran and failed; the message is the failure Temporal recorded,
    /// the kind that of the fragment's own error.
    #[error("workflow {query_id} failed: {message}")]
    WorkflowFailed {
        query_id: String,
        message: String,
        kind: contrail_planner::error::ErrorKind,
    },

    /// The workflow was cancelled.
    #[error("workflow {query_id} was cancelled")]
    WorkflowCancelled { query_id: String },

    /// No workflow with this query id.
    #[error("no workflow statement with query id {query_id}")]
    UnknownQuery { query_id: String },

    /// A ticket or descriptor that is not ours or is damaged.
    #[error("invalid {what}: {message}")]
    InvalidTicket { what: &'static str, message: String },
}

impl Error {
    /// What kind of failure this is, to carry across Temporal.
    pub fn kind(&self) -> contrail_planner::error::ErrorKind {
        use contrail_planner::error::ErrorKind;
        match self {
            Self::Planner(p) => p.kind(),
            Self::WorkflowFailed { kind, .. } => *kind,
            Self::WorkflowCancelled { .. } => ErrorKind::Cancelled,
            Self::UnknownQuery { .. } | Self::NotSpooled { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn temporal(e: impl std::fmt::Display) -> Self {
        Self::Temporal { message: e.to_string() }
    }

    pub(crate) fn spool(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Spool {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
