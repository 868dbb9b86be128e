//! Durable consumer positions.

use async_trait::async_trait;

use super::backend::{SqlBackend, connection, fetch_as, now_micros};
use super::error::StoreError;
use super::model::Checkpoint;
use super::rows::CheckpointRow;
use super::sql::{Runner, Sql};

/// Storing and loading consumers' positions.
#[async_trait]
pub trait Checkpoints: Send + Sync {
    /// Stores a consumer's position.
    async fn put_checkpoint(&self, consumer: &str, position: i64)
    -> Result<Checkpoint, StoreError>;
    /// A consumer's stored position.
    async fn checkpoint(&self, consumer: &str) -> Result<Option<Checkpoint>, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Checkpoints for B {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn put_checkpoint(
        &self,
        consumer: &str,
        position: i64,
    ) -> Result<Checkpoint, StoreError> {
        let time = now_micros();
        let mut sql = Sql::new("INSERT INTO checkpoints (consumer, position, time) VALUES (");
        sql.bind(consumer)
            .push(", ")
            .bind(position)
            .push(", ")
            .bind(time.timestamp_micros())
            .push(
                ") ON CONFLICT (consumer) DO UPDATE \
                 SET position = excluded.position, time = excluded.time",
            );
        let mut conn = connection(self).await?;
        B::Db::execute(&mut conn, sql).await?;
        Ok(Checkpoint {
            consumer: consumer.to_owned(),
            position,
            time,
        })
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn checkpoint(&self, consumer: &str) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = connection(self).await?;
        Ok(
            fetch_as::<B, CheckpointRow, Checkpoint>(&mut conn, checkpoint(consumer))
                .await?
                .pop(),
        )
    }
}

/// A consumer's checkpoint.
pub(super) fn checkpoint(consumer: &str) -> Sql {
    let mut sql = Sql::new(
        "SELECT consumer, position, time AS time_micros FROM checkpoints WHERE consumer = ",
    );
    sql.bind(consumer);
    sql
}

/// The read statements of this module, named, with typical arguments.
pub(super) fn statements() -> Vec<(&'static str, Sql)> {
    vec![("checkpoint", checkpoint("w"))]
}
