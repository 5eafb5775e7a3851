//! The server's one error type, and the one place errors become [`Status`].

use contrail_planner::error::ErrorKind;
use tonic::{Code, Status};
use tracing::{debug, error, warn};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From planning or running SQL, or storage.
    #[error(transparent)]
    Planner(#[from] contrail_planner::Error),

    /// A ticket, handle, command or message we could not decode.
    #[error("invalid {what}: {message}")]
    Decode { what: &'static str, message: String },

    /// A request that is well-formed but not acceptable.
    #[error("{message}")]
    InvalidRequest { message: String },

    /// No or bad credentials.
    #[error("{message}")]
    Unauthenticated { message: String },

    /// Authenticated but not allowed.
    #[error("{message}")]
    PermissionDenied { message: String },

    /// A Flight SQL feature Contrail does not offer.
    #[error("{what} is not supported")]
    Unimplemented { what: String },

    /// Arrow encoding or decoding of data on the wire.
    #[error("arrow error: {source}")]
    Arrow {
        #[from]
        source: arrow::error::ArrowError,
    },

    /// Flight encoding/decoding, or a status passed through from a stream.
    #[error("{source}")]
    Flight {
        #[from]
        source: arrow_flight::error::FlightError,
    },

    /// The statement ran longer than `contrail.statement_timeout` and was cancelled.
    #[error("statement cancelled: it ran longer than contrail.statement_timeout ({limit:?})")]
    Timeout { limit: std::time::Duration },

    /// Workflow execution: Temporal, the spool, the data plane.
    #[error(transparent)]
    Workflow(#[from] contrail_workflows::Error),

    /// Another process's answer (a worker holding a result), passed on with
    /// its own code.
    #[error("{}", .0.message())]
    Relayed(Status),

    /// A workflow statement was asked for, but this server runs without Temporal.
    #[error("{message}")]
    WorkflowsOff { message: String },

    /// A background task died (a bug); the server goes on.
    #[error("internal error: {message}")]
    Internal { message: String },
}

/// Result with the server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn decode(what: &'static str, message: impl std::fmt::Display) -> Self {
        Self::Decode {
            what,
            message: message.to_string(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
        }
    }

    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            message: message.into(),
        }
    }

    pub(crate) fn unimplemented(what: impl Into<String>) -> Self {
        Self::Unimplemented { what: what.into() }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Planner(p) => kind_code(p.kind()),
            Error::Decode { .. } | Error::InvalidRequest { .. } => Code::InvalidArgument,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::Unimplemented { .. } => Code::Unimplemented,
            Error::Arrow { .. } => Code::InvalidArgument,
            Error::Flight { source } => match source {
                arrow_flight::error::FlightError::Tonic(status) => status.code(),
                arrow_flight::error::FlightError::Arrow(_)
                | arrow_flight::error::FlightError::DecodeError(_)
                | arrow_flight::error::FlightError::ProtocolError(_) => Code::InvalidArgument,
                _ => Code::Internal,
            },
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::Relayed(status) => status.code(),
            Error::Internal { .. } => Code::Internal,
            Error::WorkflowsOff { .. } => Code::FailedPrecondition,
            Error::Workflow(w) => {
                use contrail_workflows::Error as W;
                match w {
                    W::Planner(p) => kind_code(p.kind()),
                    W::UnknownQuery { .. } | W::NotSpooled { .. } => Code::NotFound,
                    W::InvalidTicket { .. } => Code::InvalidArgument,
                    W::WorkflowCancelled { .. } => Code::Cancelled,
                    // A fragment failed for good: the code of its own error.
                    W::WorkflowFailed { kind, .. } => kind_code(*kind),
                    W::Temporal { .. } | W::Embedded { .. } | W::UpstreamLost(_) => Code::Unavailable,
                    W::Spool { .. } | W::Arrow(_) => Code::Internal,
                }
            }
        };
        let message = e.to_string();
        match code {
            Code::Internal | Code::Unknown => error!(%message, "request failed"),
            Code::ResourceExhausted => warn!(%message, "request failed"),
            _ => debug!(?code, %message, "request failed"),
        }
        Status::new(code, message)
    }
}

/// The gRPC code of a kind of failure, wherever it happened (inline or in a fragment).
fn kind_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Internal => Code::Internal,
    }
}
