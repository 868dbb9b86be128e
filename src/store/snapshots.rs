//! Snapshots of aggregates: every one is kept; a read takes the newest
//! within its bounds.

use async_trait::async_trait;

use super::backend::{SqlBackend, connection, fetch_as, now_micros};
use super::error::{SnapshotError, StoreError};
use super::model::{NewSnapshot, Snapshot};
use super::rows::SnapshotRow;
use super::sql::{Runner, Sql};

/// Storing and loading snapshots.
#[async_trait]
pub trait Snapshots: Send + Sync {
    /// Stores a snapshot of a stream.
    async fn append_snapshot(&self, snapshot: NewSnapshot) -> Result<Snapshot, SnapshotError>;
    /// The newest snapshot of a stream with version ≤ `until_version`.
    async fn snapshot(
        &self,
        stream: &str,
        until_version: Option<i64>,
    ) -> Result<Option<Snapshot>, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Snapshots for B {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn append_snapshot(&self, snapshot: NewSnapshot) -> Result<Snapshot, SnapshotError> {
        let time = now_micros();
        // One statement: the version check and the insert cannot be split by an append.
        let mut sql =
            Sql::new("INSERT INTO snapshots (stream, version, type, state, time) SELECT ");
        sql.bind(snapshot.stream.as_str())
            .push(", ")
            .bind(snapshot.version)
            .push(", ")
            .bind(snapshot.snapshot_type.as_deref())
            .push(", ")
            .bind(snapshot.state.get())
            .push(", ")
            .bind(time.timestamp_micros())
            .push(" WHERE EXISTS (SELECT 1 FROM streams WHERE stream = ")
            .bind(snapshot.stream.as_str())
            .push(" AND version >= ")
            .bind(snapshot.version)
            .push(")");
        let mut conn = connection(self).await?;
        if B::Db::execute(&mut conn, sql).await? == 0 {
            let mut version = Sql::new("SELECT version FROM streams WHERE stream = ");
            version.bind(snapshot.stream.as_str());
            let actual = B::Db::fetch_int(&mut conn, version).await?;
            return Err(match actual {
                None => SnapshotError::NoStream(snapshot.stream),
                Some(actual) => SnapshotError::BeyondVersion {
                    version: snapshot.version,
                    actual,
                },
            });
        }
        Ok(Snapshot {
            stream: snapshot.stream,
            version: snapshot.version,
            snapshot_type: snapshot.snapshot_type,
            state: snapshot.state,
            time,
        })
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn snapshot(
        &self,
        stream: &str,
        until_version: Option<i64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let sql = newest_snapshot(stream, until_version.unwrap_or(i64::MAX));
        let mut conn = connection(self).await?;
        Ok(fetch_as::<B, SnapshotRow, Snapshot>(&mut conn, sql)
            .await?
            .pop())
    }
}

/// The newest snapshot of a stream with version ≤ `bound`; of equal versions
/// the one posted last.
pub(super) fn newest_snapshot(stream: &str, bound: i64) -> Sql {
    let mut sql = Sql::new(
        "SELECT stream, version, type, state, time AS time_micros FROM snapshots WHERE stream = ",
    );
    sql.bind(stream)
        .push(" AND version <= ")
        .bind(bound)
        .push(" ORDER BY version DESC, seq DESC LIMIT 1");
    sql
}

/// The read statements of this module, named, with typical arguments.
pub(super) fn statements() -> Vec<(&'static str, Sql)> {
    vec![("newest snapshot", newest_snapshot("s-1", 10))]
}
