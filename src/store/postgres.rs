//! The Postgres backend: every SQL statement Cairn sends to Postgres.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

use super::sql::{self, Bind, RunSql, Sql};
use super::writer::{BatchKeys, BatchState, CommitBatch, Outcome, StoredId, Writer, plan};
use super::{
    AppendError, AppendRequest, Appended, EventRow, GlobalPage, GlobalQuery, RecordedEvent, Store,
    StoreError, StreamInfo, StreamPage, StreamQuery, events,
};

/// The key of the store-wide advisory lock every append transaction holds
/// from before it picks global positions until it commits ("cairn" in ASCII).
const WRITE_LOCK: i64 = 0x63_61_69_72_6e;

/// How long a health check waits for Postgres.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// An event store in Postgres.
pub struct PostgresStore {
    pool: PgPool,
    writer: Writer,
}

impl PostgresStore {
    /// Connects, runs the embedded migrations and starts the writer.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let writer = Writer::spawn(PgCommit { pool: pool.clone() });
        Ok(PostgresStore { pool, writer })
    }
}

/// The Postgres half of group commit.
struct PgCommit {
    pool: PgPool,
}

#[async_trait]
impl CommitBatch for PgCommit {
    async fn commit(&self, batch: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError> {
        let keys = BatchKeys::of(batch);
        let mut tx = self.pool.begin().await?;
        // Global positions are handed out here, before commit. Without this lock
        // two transactions could commit out of position order, and a reader of
        // `/all` that has seen position 12 would never see 11 appear later. The
        // lock is held until commit, so transactions commit in position order
        // and each one reads the last position after the previous one is
        // visible. It must be store-wide (not per stream or category) because
        // `/all` spans everything, and it is taken once per *batch*, which is
        // what keeps it from becoming a convoy.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        let mut state = BatchState::default();
        let versions: Vec<(String, i64)> =
            sqlx::query_as("SELECT stream, version FROM streams WHERE stream = ANY($1)")
                .bind(&keys.streams)
                .fetch_all(&mut *tx)
                .await?;
        state.versions.extend(versions);
        let existing: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
            "SELECT id, stream, position, global_position FROM events WHERE id = ANY($1)",
        )
        .bind(&keys.ids)
        .fetch_all(&mut *tx)
        .await?;
        state.existing.extend(existing.into_iter().map(
            |(id, stream, position, global_position)| {
                (
                    id,
                    StoredId {
                        stream,
                        position,
                        global_position,
                    },
                )
            },
        ));
        // Commit times never go backwards along the log, even if the clock does.
        let (last, now): (i64, DateTime<Utc>) = sqlx::query_as(
            "SELECT coalesce(last.global_position, 0), greatest(clock_timestamp(), last.time) \
             FROM (SELECT 1) AS one LEFT JOIN \
             (SELECT global_position, time FROM events ORDER BY global_position DESC LIMIT 1) AS last \
             ON true",
        )
        .fetch_one(&mut *tx)
        .await?;
        state.last_global_position = last;

        let plan = plan(batch, state);
        if !plan.rows.is_empty() {
            let rows = &plan.rows;
            sqlx::query(
                "INSERT INTO events (global_position, id, stream, position, category, cardinal_hash, \
                 type, data, metadata, causation_id, correlation_id, time) \
                 SELECT g, i, s, p, c, h, t, d, m, ca, co, $12 FROM UNNEST($1::bigint[], $2::uuid[], \
                 $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::text[], \
                 $9::text[], $10::uuid[], $11::text[]) AS u(g, i, s, p, c, h, t, d, m, ca, co)",
            )
            .bind(rows.iter().map(|r| r.global_position).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event.id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.stream).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.category).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.cardinal_hash).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event.event_type.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event.data.get()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event.metadata.as_deref().map(RawValue::get)).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event.causation_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event.correlation_id.as_deref()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO streams (stream, version, last_time) \
                 SELECT s, v, $3 FROM UNNEST($1::text[], $2::bigint[]) AS u(s, v) \
                 ON CONFLICT (stream) DO UPDATE SET version = excluded.version, last_time = excluded.last_time",
            )
            .bind(plan.versions.iter().map(|(s, _)| *s).collect::<Vec<_>>())
            .bind(plan.versions.iter().map(|(_, v)| *v).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.outcomes)
    }
}

/// Binds the values of shared SQL to a query.
fn bind_all<'q, O>(
    mut query: sqlx::query::QueryAs<'q, Postgres, O, <Postgres as sqlx::Database>::Arguments<'q>>,
    binds: Vec<Bind>,
) -> sqlx::query::QueryAs<'q, Postgres, O, <Postgres as sqlx::Database>::Arguments<'q>> {
    for value in binds {
        query = match value {
            Bind::Int(value) => query.bind(value),
            Bind::Text(value) => query.bind(value),
        };
    }
    query
}

#[async_trait]
impl RunSql for PostgresStore {
    const EVENT_COLUMNS: &str = "global_position, id, stream, position, type, data, metadata, \
                             causation_id, correlation_id, \
                             (extract(epoch FROM time) * 1000000)::bigint AS time_micros";

    async fn fetch_position(&self, sql: Sql) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = bind_all(sqlx::query_as(&sql.text), sql.binds)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(position,)| position))
    }

    async fn fetch_events(&self, sql: Sql) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = bind_all(sqlx::query_as(&sql.text), sql.binds)
            .fetch_all(&self.pool)
            .await?;
        events(rows)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.writer.append(request).await
    }

    async fn read_stream(&self, query: &StreamQuery) -> Result<StreamPage, StoreError> {
        let (lower, upper, order) = query.bounds();
        let sql = format!(
            "SELECT {} FROM events WHERE stream = $1 AND position BETWEEN $2 AND $3 \
             AND ($4::timestamptz IS NULL OR time <= $4) ORDER BY position {order} LIMIT $5",
            Self::EVENT_COLUMNS
        );
        // The version is read after the events, so it is never older than them.
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(&query.stream)
            .bind(lower)
            .bind(upper)
            .bind(query.as_of)
            .bind(query.limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let version = self.stream_version(&query.stream).await?;
        Ok(query.page(version, events(rows)?))
    }

    async fn read_global(&self, query: &GlobalQuery) -> Result<GlobalPage, StoreError> {
        sql::read_global(self, query).await
    }

    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM streams WHERE stream = $1")
                .bind(stream)
                .fetch_optional(&self.pool)
                .await?;
        Ok(version.unwrap_or(-1))
    }

    async fn last_event(
        &self,
        stream: &str,
        event_type: Option<&str>,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM events WHERE stream = $1 AND ($2::text IS NULL OR type = $2) \
             ORDER BY position DESC LIMIT 1",
            Self::EVENT_COLUMNS
        );
        let row: Option<EventRow> = sqlx::query_as(&sql)
            .bind(stream)
            .bind(event_type)
            .fetch_optional(&self.pool)
            .await?;
        row.map(RecordedEvent::try_from).transpose()
    }

    async fn event(&self, id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let sql = format!("SELECT {} FROM events WHERE id = $1", Self::EVENT_COLUMNS);
        let row: Option<EventRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(RecordedEvent::try_from).transpose()
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let rows: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT stream, version, last_time FROM streams \
             WHERE stream >= $1 AND stream < $2 AND stream > $3 \
             ORDER BY stream LIMIT $4",
        )
        .bind(prefix)
        .bind(super::prefix_upper_bound(prefix))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(stream, version, last_time)| StreamInfo {
                stream,
                version,
                last_time,
            })
            .collect())
    }

    async fn health(&self) -> Result<(), StoreError> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(HEALTH_TIMEOUT, ping).await {
            Ok(result) => result.map(drop).map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(
                "Postgres did not answer in time".into(),
            )),
        }
    }
}
