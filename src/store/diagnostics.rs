//! Diagnostics: a health probe, and the plan of every read statement, which
//! tests check for index use.

use std::time::Duration;

use async_trait::async_trait;

use super::backend::{SqlBackend, connection};
use super::error::StoreError;
use super::sql::{Bind, Runner, Sql};
use super::{checkpoints, queries, reads, retention, schemas, snapshots, trace, transfer};

/// How long a health check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A read statement as SQL text, with typical arguments as SQL literals.
#[derive(Debug, Clone)]
pub struct ReadStatement {
    /// What it reads.
    pub name: &'static str,
    /// The statement, with `$1`, `$2`… placeholders.
    pub text: String,
    /// A literal for each placeholder, in order.
    pub arguments: Vec<String>,
}

/// The store's connection pool at one moment.
#[derive(Debug, Clone, Copy)]
pub struct PoolUse {
    /// Connections open.
    pub open: usize,
    /// Those of them not in use.
    pub idle: usize,
}

/// Looking at the store itself.
#[async_trait]
pub trait Diagnostics: Send + Sync {
    /// Every read statement, so that tests can prepare them as the store
    /// does and look at their plans as the store grows.
    fn read_statements(&self) -> Vec<ReadStatement>;
    /// Whether the store answers and takes appends.
    async fn health(&self) -> Result<(), StoreError>;
    /// How many of the store's pooled connections are open and idle now.
    fn pool_use(&self) -> PoolUse;
    /// Diagnostics: the database's plan for every read statement, by name,
    /// with full scans discouraged; tests check that an index serves each.
    async fn query_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Diagnostics for B {
    fn read_statements(&self) -> Vec<ReadStatement> {
        let statements = statements::<B>().into_iter();
        let read_statement = |(name, sql): (&'static str, Sql)| ReadStatement {
            name,
            arguments: sql.binds.iter().map(Bind::literal).collect(),
            text: sql.text,
        };
        statements.map(read_statement).collect()
    }

    fn pool_use(&self) -> PoolUse {
        let pool = &self.parts().pool;
        PoolUse {
            open: pool.size() as usize,
            idle: pool.num_idle(),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn health(&self) -> Result<(), StoreError> {
        if !self.parts().writer.is_running() {
            return Err(StoreError::Unavailable("the writer has stopped".into()));
        }
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
        for (name, sql) in statements::<B>() {
            plans.push((name, B::explain(&mut tx, sql).await?));
        }
        tx.rollback().await?;
        Ok(plans)
    }
}

/// The read statements of every concern, named, with typical arguments.
fn statements<B: SqlBackend>() -> Vec<(&'static str, Sql)> {
    let mut statements = reads::statements::<B>();
    statements.extend(snapshots::statements());
    statements.extend(checkpoints::statements());
    statements.extend(schemas::statements());
    statements.extend(retention::statements::<B>());
    statements.extend(queries::statements::<B>());
    statements.extend(trace::statements::<B>());
    statements.extend(transfer::statements::<B>());
    statements
}
