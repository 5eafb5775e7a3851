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

    /// Too many failed logins of a user or from an address: refused unchecked.
    #[error("too many failed logins for this user or from this address; retry in {} s", .retry_after.as_secs().max(1))]
    TooManyLogins { retry_after: std::time::Duration },

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
            Error::TooManyLogins { .. } => Code::ResourceExhausted,
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
        // The log keeps what a client is not sent: a backtrace some errors
        // carry (delta-kernel's, with RUST_BACKTRACE set), and more of a long message.
        let full = e.to_string();
        let logged = cut(&full, MAX_LOGGED_BYTES);
        match code {
            Code::Internal | Code::Unknown => error!(message = %logged, "request failed"),
            Code::ResourceExhausted => warn!(message = %logged, "request failed"),
            _ => debug!(?code, message = %logged, "request failed"),
        }
        Status::new(code, cut(without_backtrace(&full), MAX_MESSAGE_BYTES))
    }
}

/// Longest error message sent: messages can quote a client's input (a name,
/// a literal), and one that repeats a 100 MB statement would not fit a gRPC
/// message, so the client would get RESOURCE_EXHAUSTED instead of the error.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest error message logged.
const MAX_LOGGED_BYTES: usize = 64 << 10;

/// `message` up to where a Rust backtrace starts (its first frame, `   0: `).
fn without_backtrace(message: &str) -> &str {
    match message.find("\n   0: ") {
        Some(at) => message[..at].trim_end(),
        None => message,
    }
}

/// `message`, cut to `limit` bytes (saying how long it was).
fn cut(message: &str, limit: usize) -> String {
    if message.len() <= limit {
        return message.to_string();
    }
    let mut end = limit;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (message cut: {} bytes)", &message[..end], message.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_sent_are_short_and_carry_no_backtrace() {
        let huge = Error::invalid(format!("table '{}' not found", "x".repeat(1 << 20)));
        let status = Status::from(huge);
        assert!(status.message().len() < MAX_MESSAGE_BYTES + 100);
        assert!(status.message().ends_with("bytes)"), "{}", &status.message()[4000..]);

        let traced = Error::invalid(
            "Generic delta kernel error: bad log\n   0: std::backtrace::Backtrace::capture\n             at /rustc/x/backtrace.rs:296:13\n   1: main",
        );
        assert_eq!(Status::from(traced).message(), "Generic delta kernel error: bad log");
    }
}
