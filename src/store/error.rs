//! What can go wrong in the store, in the store's own terms. Database errors
//! become these in [`super::dialect`], by SQLSTATE or constraint, never by
//! message text.

use uuid::Uuid;

use super::model::Expected;

/// A failure of the store itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded: try again later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A write collided with a row that must be unique (named by its
    /// constraint): another writer got there first.
    #[error("a conflicting write already exists ({0})")]
    Conflict(String),
    /// Anything else: a bug or corrupt data.
    #[error("store failure: {0}")]
    Internal(String),
}

/// Why an append was refused; nothing of it was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The expected version did not hold.
    #[error("the stream is at version {actual}")]
    WrongVersion {
        /// What the request expected.
        expected: Expected,
        /// The stream's version (-1: no events).
        actual: i64,
    },
    /// An event id is already used, and the request is not an exact retry.
    #[error("event id {0} is already used by another write")]
    IdConflict(Uuid),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    /// The stream has no events.
    #[error("stream {0} has no events")]
    NoStream(String),
    /// The snapshot's version is beyond the stream's.
    #[error("version {version} is beyond the stream's version {actual}")]
    BeyondVersion {
        /// The snapshot's version.
        version: i64,
        /// The stream's version.
        actual: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
