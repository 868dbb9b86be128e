//! API keys: stored as digests, never as secrets. Every instance reads the
//! whole (small) table on a short interval, so a key revoked through one
//! instance is refused by all of them within that interval.

use async_trait::async_trait;
use uuid::Uuid;

use super::backend::{SqlBackend, connection, fetch_as, now_micros};
use super::error::StoreError;
use super::model::{NewKey, StoredKey};
use super::rows::KeyRow;
use super::sql::{Runner, Sql};

/// Storing, listing and revoking API keys.
#[async_trait]
pub trait Keys: Send + Sync {
    /// Stores a new key.
    async fn create_key(&self, key: NewKey) -> Result<StoredKey, StoreError>;
    /// Every key ever stored, revoked ones included, oldest first.
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// Revokes a key; false when there is no such key, or it was revoked.
    async fn revoke_key(&self, id: Uuid) -> Result<bool, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Keys for B {
    #[tracing::instrument(level = "debug", skip_all, fields(id = %key.id))]
    async fn create_key(&self, key: NewKey) -> Result<StoredKey, StoreError> {
        let created = now_micros();
        let scopes = scope_words(&key);
        let streams = key
            .streams
            .as_ref()
            .map(|s| serde_json::to_string(s).expect("a list of strings serialises"));
        let mut sql = Sql::new(
            "INSERT INTO api_keys (id, name, digest, scopes, streams, expires_at, created) VALUES (",
        );
        sql.bind(key.id)
            .push(", ")
            .bind(key.name.as_str())
            .push(", ")
            .bind(key.digest.as_str())
            .push(", ")
            .bind(scopes.as_str())
            .push(", ")
            .bind(streams.as_deref())
            .push(", ")
            .bind(key.expires_at.map(|t| t.timestamp_micros()))
            .push(", ")
            .bind(created.timestamp_micros())
            .push(")");
        let mut conn = connection(self).await?;
        B::Db::execute(&mut conn, sql).await?;
        Ok(StoredKey {
            key,
            created,
            revoked: None,
        })
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut conn = connection(self).await?;
        fetch_as::<B, KeyRow, StoredKey>(&mut conn, all_keys()).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn revoke_key(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut sql = Sql::new("UPDATE api_keys SET revoked = ");
        sql.bind(now_micros().timestamp_micros())
            .push(" WHERE revoked IS NULL AND id = ")
            .bind(id);
        let mut conn = connection(self).await?;
        Ok(B::Db::execute(&mut conn, sql).await? > 0)
    }
}

/// A key's scopes as stored: their names, space-separated.
fn scope_words(key: &NewKey) -> String {
    let words: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    words.join(" ")
}

/// Every key, oldest first: a whole (small) table, read on an interval, so
/// not among the statements whose plans must use an index.
fn all_keys() -> Sql {
    Sql::new(
        "SELECT id, name, digest, scopes, streams, expires_at, created, revoked \
         FROM api_keys ORDER BY created, id",
    )
}
