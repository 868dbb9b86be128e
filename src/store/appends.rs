//! Appends: every write of events goes through the backend's group-commit
//! [`Writer`](super::writer::Writer); this is the face the rest of the
//! service sees.

use async_trait::async_trait;
use tokio::sync::watch;

use super::backend::SqlBackend;
use super::error::AppendError;
use super::model::{AppendRequest, Appended};

/// Writing events.
#[async_trait]
pub trait Appends: Send + Sync {
    /// Appends a batch atomically, checking the expected version and idempotency.
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError>;
    /// Changes after every commit of this process and, where the backend
    /// can tell, of other processes on the same database. A wake-up only:
    /// readers find out what changed by reading. Each receiver is woken on
    /// its own, so any number of waiters may share it.
    fn changes(&self) -> watch::Receiver<u64>;
}

#[async_trait]
impl<B: SqlBackend> Appends for B {
    #[tracing::instrument(level = "debug", skip_all, fields(events = request.events.len()))]
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.parts().writer.append(request).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.parts().changes.subscribe()
    }
}
