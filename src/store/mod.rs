//! The store layer: one [`Store`] trait, split by concern, over two backends.
//! Nothing here knows HTTP; nothing outside this folder knows SQL.
//!
//! Where things are (one guess per feature):
//!
//! | file | what it holds |
//! | --- | --- |
//! | `model.rs` | the vocabulary: events, queries, pages, snapshots, checkpoints, traces |
//! | `error.rs` | what can go wrong, in store terms |
//! | `appends.rs` | the [`Appends`] concern: writes go to the writer |
//! | `plan.rs` | group commit's pure half: judging requests, laying out rows (unit-tested) |
//! | `writer.rs` | group commit's sequence: begin under the write lock, load, plan, insert, commit |
//! | `reads.rs` | the [`Reads`] concern: stream, global-order and single-event reads |
//! | `queries.rs` | the [`Queries`] concern: events by tags and types |
//! | `snapshots.rs` | the [`Snapshots`] concern |
//! | `trace.rs` | the [`Traces`] concern: causes and effects |
//! | `checkpoints.rs` | the [`Checkpoints`] concern |
//! | `keys.rs` | the [`Keys`] concern: API keys, as digests |
//! | `subscriptions.rs` | the [`Subscriptions`] concern: leases, acknowledgements, parking |
//! | `retention.rs` | the [`Retention`] concern: policies, the sweep, truncation, tombstones |
//! | `schemas.rs` | the [`Schemas`] concern, and the writer's cache of compiled validators |
//! | `diagnostics.rs` | the [`Diagnostics`] concern: health and query plans |
//! | `transfer.rs` | the [`Transfers`] concern: export in pages from one snapshot, import in chunks that resume |
//! | `backend.rs` | what a SQL backend supplies to the concerns (pool, read transactions, time spelling, `EXPLAIN`) |
//! | `sql.rs` | statement builder, per-database runner, database errors mapped by SQLSTATE |
//! | `rows.rs` | rows as the databases return them, converted to the model |
//! | `postgres.rs`, `sqlite.rs` | connecting, session settings, and each database's write statements |
//!
//! A concern is a trait with one generic implementation for every
//! [`SqlBackend`](backend::SqlBackend), its statements written once in the
//! SQL both databases speak, beside it. Only the write path differs per
//! database (how each serialises writers), so each backend implements
//! [`writer::WriteStatements`] and nothing else of the concerns. A new
//! concern (retention, say) is a new file of the same
//! shape, and a new supertrait of [`Store`].

mod appends;
mod backend;
mod checkpoints;
mod diagnostics;
mod error;
mod keys;
mod model;
mod plan;
pub mod postgres;
mod queries;
mod reads;
mod retention;
mod rows;
mod schemas;
mod snapshots;
mod sql;
pub mod sqlite;
mod subscriptions;
mod trace;
mod transfer;
mod writer;

use std::sync::Arc;

pub use appends::Appends;
pub use checkpoints::Checkpoints;
pub use diagnostics::{Diagnostics, ReadStatement};
pub use error::{AppendError, ImportError, SnapshotError, StoreError, SubscriptionError};
pub use keys::Keys;
pub use model::{
    AppendRequest, Appended, Checkpoint, Condition, Direction, EventPosition, EventQuery, Expected,
    Filter, GlobalPage, GlobalQuery, NewEvent, NewKey, NewSnapshot, QueryItem, QueryPage,
    RecordedEvent, Scope, Snapshot, StoredKey, StreamEvent, StreamInfo, StreamPage, StreamQuery,
    Trace, TraceLimits,
};
pub use model::{
    Claim, ConsumerState, Creation, Delivery, DeliveryOrder, ParkedEvent, ParkedPage, PushTarget,
    Settled, Settlement, Source, StartAt, SubscriptionDefinition, SubscriptionState,
};
pub use model::{ExportRange, ImportSummary, TransferItem, TransferKind};
pub use queries::Queries;
pub use reads::Reads;
pub use retention::{EraseError, Erased, Retention, RetentionPolicy, RetentionTarget, Tombstone};
pub use schemas::{EventSchema, SchemaDocument, SchemaFailure, Schemas};
pub use snapshots::Snapshots;
pub use subscriptions::Subscriptions;
pub use trace::Traces;
pub use transfer::{ExportPages, Import, Transfers};

/// An event store: every concern, offered alike by every backend.
pub trait Store:
    Appends
    + Reads
    + Queries
    + Snapshots
    + Traces
    + Checkpoints
    + Keys
    + Subscriptions
    + Schemas
    + Retention
    + Transfers
    + Diagnostics
{
}

impl<T> Store for T where
    T: Appends
        + Reads
        + Queries
        + Snapshots
        + Traces
        + Checkpoints
        + Keys
        + Subscriptions
        + Schemas
        + Retention
        + Transfers
        + Diagnostics
{
}

/// The store behind the HTTP API, shared by every request.
pub type SharedStore = Arc<dyn Store>;
