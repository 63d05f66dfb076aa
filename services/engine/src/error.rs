//! The engine's one error type. Every message says what was wrong and, where the caller can act,
//! what to do. The server maps each variant exactly once to a gRPC status and an HTTP status.

use std::path::PathBuf;

/// Engine errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No or unknown credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but the contract does not allow it.
    #[error("{0}")]
    PermissionDenied(String),
    /// A room, table, computation or run that does not exist (for this caller).
    #[error("{0}")]
    NotFound(String),
    /// A request that is malformed in itself (a bad path, a bad id).
    #[error("{0}")]
    InvalidRequest(String),
    /// Uploaded data that does not match the contract: schema, types, nulls, hashes.
    #[error("{0}")]
    InvalidData(String),
    /// The request is valid but the room is not ready for it (an input table not uploaded yet).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The room's differential-privacy budget does not allow the run.
    #[error("{0}")]
    BudgetExhausted(String),
    /// An upload over the configured limits.
    #[error("{0}")]
    TooLarge(String),
    /// The room's contract cannot be hosted by this engine.
    #[error("{0}")]
    Contract(String),
    /// Storage failed: the data directory is unusable, full, or corrupted.
    #[error("storage error at {path}: {message}")]
    Storage { path: PathBuf, message: String },
    /// A computation failed inside the engine (a bug or resource exhaustion, not bad input).
    #[error("computation failed: {0}")]
    Computation(String),
    /// Delivery to an activation sink failed.
    #[error("delivery failed: {0}")]
    Delivery(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn storage(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Self::Storage { path: path.into(), message: err.to_string() }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::Computation(e.to_string())
    }
}
