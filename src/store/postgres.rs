//! The Postgres backend: every SQL statement Cairn sends to Postgres.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::writer::{BatchKeys, BatchState, CommitBatch, Outcome, StoredId, Writer, plan};
use super::{
    AppendError, AppendRequest, Appended, Filter, GlobalPage, GlobalQuery, RecordedEvent, Scope,
    Store, StoreError, StreamInfo, StreamPage, StreamQuery, scan_window,
};

/// The key of the store-wide advisory lock every append transaction holds
/// from before it picks global positions until it commits ("cairn" in ASCII).
const WRITE_LOCK: i64 = 0x63_61_69_72_6e;

/// The columns of an event, in the order [`EventRow`] reads them.
const EVENT_COLUMNS: &str = "global_position, id, stream, position, type, data, metadata, \
                             causation_id, correlation_id, time";

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

/// An event row as Postgres returns it.
#[derive(sqlx::FromRow)]
struct EventRow {
    global_position: i64,
    id: Uuid,
    stream: String,
    position: i64,
    #[sqlx(rename = "type")]
    event_type: String,
    data: String,
    metadata: Option<String>,
    causation_id: Option<Uuid>,
    correlation_id: Option<String>,
    time: DateTime<Utc>,
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let json = |text: String| {
            RawValue::from_string(text)
                .map_err(|e| StoreError::Internal(format!("stored JSON: {e}")))
        };
        Ok(RecordedEvent {
            id: row.id,
            stream: row.stream,
            event_type: row.event_type,
            position: row.position,
            global_position: row.global_position,
            data: json(row.data)?,
            metadata: row.metadata.map(json).transpose()?,
            causation_id: row.causation_id,
            correlation_id: row.correlation_id,
            time: row.time,
        })
    }
}

/// Turns rows into events.
fn events(rows: Vec<EventRow>) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.into_iter().map(RecordedEvent::try_from).collect()
}

/// Adds the scope and filter of a global read to a `WHERE` clause.
fn push_global_conditions(sql: &mut QueryBuilder<'_, Postgres>, query: &GlobalQuery) {
    sql.push(" WHERE global_position >= ")
        .push_bind(query.position);
    if let Scope::Category(category) = &query.scope {
        sql.push(" AND category = ").push_bind(category.clone());
    }
}

/// Adds the filter of a global read to a `WHERE` clause.
fn push_filter(sql: &mut QueryBuilder<'_, Postgres>, filter: &Filter) {
    if !filter.types.is_empty() {
        sql.push(" AND type = ANY(")
            .push_bind(filter.types.clone())
            .push(")");
    }
    if let Some(correlation_id) = &filter.correlation_id {
        sql.push(" AND correlation_id = ")
            .push_bind(correlation_id.clone());
    }
    if let Some((member, size)) = filter.consumer_group {
        sql.push(" AND abs(cardinal_hash % ")
            .push_bind(size)
            .push(") = ")
            .push_bind(member);
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 AND position BETWEEN $2 AND $3 \
             AND ($4::timestamptz IS NULL OR time <= $4) ORDER BY position {order} LIMIT $5"
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
        // A filtered read looks at a bounded window of the log, so a rare
        // filter costs one short page, not a scan of the whole store.
        let window_end: Option<i64> = if query.filter.is_empty() {
            None
        } else {
            let mut sql = QueryBuilder::new("SELECT global_position FROM events");
            push_global_conditions(&mut sql, query);
            sql.push(" ORDER BY global_position OFFSET ")
                .push_bind(scan_window(query.limit))
                .push(" LIMIT 1");
            sql.build_query_scalar().fetch_optional(&self.pool).await?
        };
        let mut sql = QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events"));
        push_global_conditions(&mut sql, query);
        push_filter(&mut sql, &query.filter);
        if let Some(end) = window_end {
            sql.push(" AND global_position < ").push_bind(end);
        }
        sql.push(" ORDER BY global_position LIMIT ")
            .push_bind(query.limit + 1);
        let rows: Vec<EventRow> = sql.build_query_as().fetch_all(&self.pool).await?;
        Ok(query.page(events(rows)?, window_end))
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 AND ($2::text IS NULL OR type = $2) \
             ORDER BY position DESC LIMIT 1"
        );
        let row: Option<EventRow> = sqlx::query_as(&sql)
            .bind(stream)
            .bind(event_type)
            .fetch_optional(&self.pool)
            .await?;
        row.map(RecordedEvent::try_from).transpose()
    }

    async fn event(&self, id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
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
             WHERE stream >= $1 AND stream < $2 AND starts_with(stream, $1) AND stream > $3 \
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
