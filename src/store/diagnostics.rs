//! Diagnostics: a health probe, and the plan of every read statement, which
//! tests check for index use.

use std::time::Duration;

use async_trait::async_trait;

use super::backend::{SqlBackend, connection};
use super::error::StoreError;
use super::sql::{Runner, Sql};
use super::{checkpoints, reads, snapshots, trace};

/// How long a health check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Looking at the store itself.
#[async_trait]
pub trait Diagnostics: Send + Sync {
    /// Whether the store answers.
    async fn health(&self) -> Result<(), StoreError>;
    /// Diagnostics: the database's plan for every read statement, by name,
    /// with full scans discouraged; tests check that an index serves each.
    async fn query_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Diagnostics for B {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn health(&self) -> Result<(), StoreError> {
        let ping = async {
            let mut conn = connection(self).await?;
            B::Db::fetch_int(&mut conn, Sql::new("SELECT CAST(1 AS BIGINT)")).await
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, ping).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(StoreError::Unavailable(
                "the database did not answer in time".into(),
            )),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn query_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
        let mut tx = self.begin_read().await?;
        let mut plans = Vec::new();
        let statements = reads::statements::<B>()
            .into_iter()
            .chain(snapshots::statements())
            .chain(checkpoints::statements())
            .chain(trace::statements::<B>());
        for (name, sql) in statements {
            plans.push((name, B::explain(&mut tx, sql).await?));
        }
        tx.rollback().await?;
        Ok(plans)
    }
}
