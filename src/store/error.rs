//! What can go wrong in the store, in the store's own terms. Database errors
//! become these in [`super::dialect`], by SQLSTATE or constraint, never by
//! message text.

use uuid::Uuid;

use super::model::Expected;
use super::schemas::SchemaFailure;

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
    /// The expected version of a stream did not hold.
    #[error("stream {stream} is at version {actual}")]
    WrongVersion {
        /// The stream.
        stream: String,
        /// What the request expected.
        expected: Expected,
        /// The stream's version (-1: no events).
        actual: i64,
    },
    /// An event matching the condition's query arrived after its `after`.
    #[error("the condition failed: a matching event is at global position {first_match}")]
    ConditionFailed {
        /// The global position of the earliest such event.
        first_match: i64,
    },
    /// The condition's `after` lies beyond the log's head: no decision can
    /// have been made there.
    #[error("the condition's after ({after}) is beyond the head of the log ({head})")]
    AfterBeyondHead {
        /// The `after` given.
        after: i64,
        /// The head.
        head: i64,
    },
    /// An event's `data` does not validate against its type's schema.
    #[error("event {event} ({event_type}) does not match its type's schema")]
    SchemaViolation {
        /// The event's index in the request.
        event: usize,
        /// Its type.
        event_type: String,
        /// Each failure, with where in `data`.
        failures: Vec<SchemaFailure>,
    },
    /// A stream of the request was deleted: its name stays taken.
    #[error("stream {0} was deleted")]
    StreamDeleted(String),
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

/// Why a request about a subscription was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubscriptionError {
    /// There is no subscription of that name.
    #[error("there is no subscription {0}")]
    NotFound(String),
    /// A lease this subscription never issued: forged, malformed or
    /// another subscription's.
    #[error("{lease:?} is not a lease of subscription {subscription}")]
    ForeignLease {
        /// The subscription.
        subscription: String,
        /// The lease, as given.
        lease: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an import stopped (API.md, Export and import).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImportError {
    /// A line cannot be restored as it stands. The lines before it were.
    #[error("line {line}: {detail}")]
    Invalid {
        /// The line's number, from 1.
        line: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// The store holds something other than the beginning of this export;
    /// nothing of the lines at hand was written.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
