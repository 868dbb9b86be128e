//! The Postgres backend: connections and their session settings, and the
//! statements of group commit under a store-wide advisory lock. Everything
//! else is the shared SQL of the concern modules.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use sqlx::{Connection, Executor, Postgres, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use super::backend::{Parts, SqlBackend, tags_column};
use super::error::StoreError;
use super::plan::{BatchKeys, BatchState, Plan, StoredId, StreamVersion};
use super::sql::{Runner, Sql, runner, unavailable};
use super::writer::{WriteStatements, Writer, signal};

/// An event store in Postgres.
pub struct PostgresStore(Parts<Postgres>);

/// The channel on which every instance announces its commits.
const CHANNEL: &str = "cairn_events";

impl PostgresStore {
    /// Connects, runs the embedded migrations and starts the writer.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        let options = session_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(UNAVAILABLE_AFTER)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let changes = Arc::new(watch::Sender::new(0));
        // Every commit notifies with this process's own mark, so that the
        // listener can pass over its own: the writer has woken readers here
        // already, and a second wake-up would only repeat their reads.
        let instance = Uuid::new_v4().simple().to_string();
        let writes = PgWrites {
            options: writer_options(url)?,
            idle: None,
            instance: instance.clone(),
        };
        let open_writer = move || async move { Ok(writes) };
        let writer = Writer::spawn_on_own_thread(open_writer, changes.clone()).await?;
        let deletions = Arc::new(watch::Sender::new(0));
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let relay = Relay {
            instance,
            changes: changes.clone(),
            deletions: deletions.clone(),
        };
        tokio::spawn(relay_notifications(listener, relay));
        Ok(PostgresStore(Parts {
            pool,
            writer,
            changes,
            deletions,
        }))
    }
}

/// The connection options for a URL, with the session settings every
/// connection of the store runs with.
///
/// - `lock_timeout`: an append waits at most this long for another
///   instance's write lock; then it answers 503 instead of stalling every
///   append behind it.
/// - `plan_cache_mode = force_custom_plan`: every statement is planned for
///   the values it runs with, against the table as it is now. sqlx prepares
///   each statement once per connection; left to itself, Postgres switches a
///   prepared statement to a generic plan after five executions and keeps it
///   until the table's statistics change. A store starts empty, where a full
///   scan is the cheapest plan for everything, and grows faster than
///   autovacuum re-analyses it, so a generic plan made in the first minute
///   (a scan of the whole table for the causes of a trace, say) is still
///   used a million events later. Planning these short statements costs tens
///   of microseconds, far less than one wrong plan.
/// - `enable_bitmapscan = off`: every read is a page in the order of an
///   index, which an index scan delivers row by row until the limit. A
///   bitmap scan gathers every match first and sorts them; the planner takes
///   it when it believes few rows match, which is what it believes of every
///   category of a store that has not been analysed yet (a new store's first
///   minutes, or longer). Measured: one page of 1,000 events of a
///   270,000-event category took 409 ms that way, and an index scan serves
///   it in about 1 ms.
pub fn session_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)?.options([
        ("lock_timeout", "10s"),
        ("plan_cache_mode", "force_custom_plan"),
        ("enable_bitmapscan", "off"),
    ]))
}

/// The connection options of the writer: the store's session settings, but
/// with every statement planned once, generically, and sequential scans off.
///
/// The writer's statements look rows up by key (stream names, event ids, the
/// head of the log), for which an index is the right plan at every size; with
/// sequential scans off, the plan made on an empty table is that index plan
/// too, so it can be kept. Planning anew for each batch cost more than
/// running the lookups (0.43 ms against 0.07 ms, measured), and a batch's
/// round trips are waited for by every client in it.
pub fn writer_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(session_options(url)?.options([
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
    ]))
}

/// The payload announcing a stream's deletion (see [`Relay`]).
const DELETED: &str = "$deleted";

/// Where notifications go: commits of other instances wake readers, and a
/// deletion wakes the feeds of streams too.
struct Relay {
    /// This process's mark on its own commit notifications.
    instance: String,
    /// Signalled for other instances' commits.
    changes: Arc<watch::Sender<u64>>,
    /// Signalled for deletions.
    deletions: Arc<watch::Sender<u64>>,
}

/// Turns other instances' commit notifications into wake-ups (this one's,
/// marked `instance`, are passed over). A notification sent while the
/// listening connection was down is lost, so a reconnect is a wake-up of
/// both kinds: readers then find out what changed by reading.
async fn relay_notifications(mut listener: PgListener, relay: Relay) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) if notification.payload() == relay.instance => {}
            Ok(Some(notification)) if notification.payload() == DELETED => {
                signal(&relay.deletions);
            }
            Ok(Some(_)) => signal(&relay.changes),
            Ok(None) => {
                tracing::warn!("lost the notification connection; reconnecting");
                signal(&relay.changes);
                signal(&relay.deletions);
            }
            Err(error) => {
                tracing::warn!(%error, "notification listener failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                signal(&relay.changes);
                signal(&relay.deletions);
            }
        }
    }
}

/// Whether an error says the connection itself is gone (the socket, or the
/// server ending the session: SQLSTATE classes 08 and 57P), rather than that
/// a statement failed on a working connection.
fn lost_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// The Postgres statements of group commit.
///
/// The writer keeps one connection of its own rather than a pool's: a pool
/// pings a connection as it is returned and again before it is handed out,
/// two extra round trips per batch, and every round trip of a batch is
/// waited for by every client in it. A connection that failed in any way is
/// dropped (which closes it, and the server rolls back what it had begun);
/// the next batch connects afresh.
struct PgWrites {
    options: PgConnectOptions,
    /// The connection between batches; `None` until the first, or after a failure.
    idle: Option<PgConnection>,
    /// The payload of this process's commit notifications.
    instance: String,
}

/// What a batch is judged against, in one round trip: the versions of its
/// streams (`$1`, rows `v`), where its event ids (`$2`) are already stored
/// (rows `e`), which of its streams were deleted (rows `t`), the schema
/// versions of its types (`$3`, rows `s`), and the head of the log (which outlives its event's erasure in
/// `log_head`) with the commit time (row `h`), never before the last event's. Public for the test that checks its plan.
pub const LOAD_BATCH_STATE: &str = "SELECT 'v', stream, version, 0::bigint, NULL::uuid FROM streams WHERE stream = ANY($1) \
             UNION ALL SELECT 'e', stream, position, global_position, id FROM events WHERE id = ANY($2) \
             UNION ALL SELECT 't', stream, version, 0, NULL FROM tombstones WHERE stream = ANY($1) \
             UNION ALL SELECT 's', type, version, 0, NULL FROM event_schemas \
             WHERE type = ANY($3) AND schema IS NOT NULL \
             UNION ALL SELECT 'h', '', greatest(last.global_position, erased.global_position, 0), \
             (extract(epoch FROM greatest(clock_timestamp(), last.time)) * 1000000)::bigint, NULL \
             FROM (SELECT 1) AS one LEFT JOIN \
             (SELECT global_position, time FROM events ORDER BY global_position DESC LIMIT 1) AS last ON true \
             LEFT JOIN log_head AS erased ON erased.singleton";

/// How long a request waits for a database it cannot reach (a pooled
/// connection, or the writer's reconnection) before it is answered 503:
/// API.md allows 2 s.
const UNAVAILABLE_AFTER: Duration = Duration::from_secs(2);

/// The isolation level and the lock of [`BEGIN_WRITE`], for a transaction
/// begun already.
macro_rules! lock_log {
    () => {
        "ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(426836062830)"
    };
}

/// Begins a write transaction and takes the store-wide write lock, in one
/// round trip (a simple query may hold several statements). The lock's key,
/// 426836062830, is "cairn" in ASCII (0x63_61_69_72_6e).
///
/// Global positions are handed out under this lock, before commit. Without
/// it two transactions could commit out of position order, and a reader of
/// `/all` that has seen position 12 would never see 11 appear later. The lock
/// is held until commit, so transactions commit in position order and each
/// one reads the last position after the previous one is visible. It must be
/// store-wide (not per stream or category) because `/all` spans everything,
/// and it is taken once per *batch*, which is what keeps it from becoming a
/// convoy. READ COMMITTED whatever the database's default: the batch's state
/// is read by the next statement, which must see what committed while this
/// one waited for the lock.
const BEGIN_WRITE: &str = concat!("BEGIN ", lock_log!());

#[async_trait]
impl WriteStatements for PgWrites {
    type Tx = PgConnection;

    async fn begin(&mut self) -> Result<Self::Tx, StoreError> {
        if let Some(mut conn) = self.idle.take() {
            match conn.execute(BEGIN_WRITE).await {
                Ok(_) => return Ok(conn),
                // The kept connection died while idle (a server restart, an
                // idle timeout, a proxy): nothing was begun, so begin again on
                // a fresh one rather than fail a healthy batch.
                Err(error) if lost_connection(&error) => {
                    tracing::info!(%error, "the writer's connection was lost; reconnecting");
                }
                Err(error) => return Err(error.into()),
            }
        }
        let mut conn =
            tokio::time::timeout(UNAVAILABLE_AFTER, PgConnection::connect_with(&self.options))
                .await
                .map_err(|_| StoreError::Unavailable("connecting timed out".into()))?
                .map_err(unavailable)?;
        conn.execute(BEGIN_WRITE).await?;
        Ok(conn)
    }

    async fn load(&self, tx: &mut Self::Tx, keys: &BatchKeys) -> Result<BatchState, StoreError> {
        let rows: Vec<(String, String, i64, i64, Option<Uuid>)> = sqlx::query_as(LOAD_BATCH_STATE)
            .bind(&keys.streams)
            .bind(&keys.ids)
            .bind(&keys.types)
            .fetch_all(&mut *tx)
            .await?;
        let mut state = BatchState::default();
        for (kind, stream, position, global_position, id) in rows {
            match (kind.as_str(), id) {
                ("v", _) => {
                    state.versions.insert(stream, position);
                }
                ("s", _) => {
                    state.schema_versions.insert(stream, position);
                }
                ("t", _) => {
                    state.deleted.insert(stream);
                }
                ("e", Some(id)) => {
                    let stored = StoredId {
                        stream,
                        position,
                        global_position,
                    };
                    state.existing.insert(id, stored);
                }
                _ => {
                    state.last_global_position = position;
                    state.commit_time = DateTime::<Utc>::from_timestamp_micros(global_position)
                        .ok_or_else(|| {
                            StoreError::Internal(format!("commit time {global_position}"))
                        })?;
                }
            }
        }
        Ok(state)
    }

    async fn fetch_int(&self, tx: &mut Self::Tx, sql: Sql) -> Result<Option<i64>, StoreError> {
        Postgres::fetch_int(&mut *tx, sql).await
    }

    async fn fetch_text(&self, tx: &mut Self::Tx, sql: Sql) -> Result<Vec<String>, StoreError> {
        Postgres::fetch_text(&mut *tx, sql).await
    }

    async fn insert(&self, tx: &mut Self::Tx, plan: &Plan<'_>) -> Result<(), StoreError> {
        let rows = &plan.rows;
        // One round trip writes the events, the streams' versions (new
        // streams inserted, others updated: an upsert's speculative insertion
        // cost the writer more than knowing which is which, as the batch's
        // state already does), and a notification delivered at commit to every
        // instance listening.
        let (new, held): (Vec<&StreamVersion<'_>>, Vec<_>) =
            plan.versions.iter().partition(|v| v.new);
        sqlx::query(
            "WITH written AS (INSERT INTO events (global_position, id, stream, position, category, \
             cardinal_hash, type, data, metadata, causation_id, correlation_id, tags, time) \
             SELECT g, i, s, p, c, h, t, d, m, ca, co, tg, $12 FROM UNNEST($1::bigint[], $2::uuid[], \
             $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::text[], \
             $9::text[], $10::uuid[], $11::text[], $19::text[]) \
             AS u(g, i, s, p, c, h, t, d, m, ca, co, tg)), \
             tagged AS (INSERT INTO event_tags (tag, type, global_position) \
             SELECT t, ty, g FROM UNNEST($20::text[], $22::text[], $21::bigint[]) AS u(t, ty, g)), \
             created AS (INSERT INTO streams (stream, version, last_time) \
             SELECT s, v, $12 FROM UNNEST($13::text[], $14::bigint[]) AS u(s, v)), \
             advanced AS (UPDATE streams SET version = u.v, last_time = $12 \
             FROM UNNEST($15::text[], $16::bigint[]) AS u(s, v) WHERE streams.stream = u.s) \
             SELECT pg_notify($17, $18)",
        )
        .bind(rows.iter().map(|r| r.global_position).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.event.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.stream).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.category).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.cardinal_hash).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.event.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.event.data.get()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.event.metadata.as_deref().map(RawValue::get))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.event.causation_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.event.correlation_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(plan.commit_time)
        .bind(new.iter().map(|v| v.stream).collect::<Vec<_>>())
        .bind(new.iter().map(|v| v.version).collect::<Vec<_>>())
        .bind(held.iter().map(|v| v.stream).collect::<Vec<_>>())
        .bind(held.iter().map(|v| v.version).collect::<Vec<_>>())
        .bind(CHANNEL)
        .bind(&self.instance)
        .bind(
            rows.iter()
                .map(|r| tags_column(&r.event.tags))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .flat_map(|r| r.event.tags.iter().map(String::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .flat_map(|r| r.event.tags.iter().map(|_| r.global_position))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .flat_map(|r| r.event.tags.iter().map(|_| r.event.event_type.as_str()))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn commit(&mut self, mut conn: Self::Tx) -> Result<(), StoreError> {
        conn.execute("COMMIT").await?;
        self.idle = Some(conn);
        Ok(())
    }
}

runner!(Postgres);

impl SqlBackend for PostgresStore {
    type Db = Postgres;

    fn parts(&self) -> &Parts<Postgres> {
        &self.0
    }

    fn micros(column: &str) -> String {
        format!("(extract(epoch FROM {column}) * 1000000)::bigint")
    }

    fn timestamp(micros: &str) -> String {
        // Through text: multiplying an interval converts to floating point,
        // which is exact only up to 2^53 microseconds.
        format!(
            "(TIMESTAMPTZ 'epoch' + CAST(CAST({micros} AS text) || ' microseconds' AS interval))"
        )
    }

    const BYTE_ORDER: &'static str = " COLLATE \"C\"";

    const LOCK_ROWS: &'static str = " FOR UPDATE";

    fn json_rows(sql: &mut Sql, json: String, columns: &[(&str, &str)]) {
        let columns: Vec<String> = columns
            .iter()
            .map(|(name, kind)| format!("{name} {kind}"))
            .collect();
        sql.push("json_to_recordset(CAST(")
            .bind(json.as_str())
            .push(&format!(" AS json)) AS r({})", columns.join(", ")));
    }

    async fn execute_all(conn: &mut PgConnection, writes: Vec<Sql>) -> Result<(), StoreError> {
        let mut writes = writes.into_iter();
        let Some(last) = writes.next_back() else {
            return Ok(());
        };
        let mut sql = Sql::default();
        for (i, write) in writes.enumerate() {
            let clause = match i {
                0 => format!("WITH w{i} AS ("),
                _ => format!(", w{i} AS ("),
            };
            sql.push(&clause).append(write).push(")");
        }
        if !sql.text.is_empty() {
            sql.push(" ");
        }
        sql.append(last);
        Postgres::execute(conn, sql).await?;
        Ok(())
    }

    async fn write_now(&self, sql: Sql) -> Result<Vec<String>, StoreError> {
        let mut conn = self.0.pool.acquire().await.map_err(unavailable)?;
        Postgres::fetch_text(&mut conn, sql).await
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.0.pool.begin().await.map_err(unavailable)
    }

    async fn begin_log_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.0.pool.begin().await.map_err(unavailable)?;
        tx.execute(concat!("SET TRANSACTION ", lock_log!())).await?;
        Ok(tx)
    }

    async fn announce_deletion(conn: &mut PgConnection) -> Result<(), StoreError> {
        let mut sql = Sql::new("SELECT pg_notify(");
        sql.bind(CHANNEL).push(", ").bind(DELETED).push(")");
        Postgres::execute(conn, sql).await?;
        Ok(())
    }

    async fn begin_read(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.0.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn explain(conn: &mut PgConnection, sql: Sql) -> Result<Vec<String>, StoreError> {
        // Within the caller's transaction: the settings end with it. With
        // full scans discouraged, the plan shows one only where no index can
        // serve the query, whatever the table's size.
        for setting in ["enable_seqscan", "enable_bitmapscan"] {
            let off = format!("SET LOCAL {setting} = off");
            sqlx::query(&off).execute(&mut *conn).await?;
        }
        let explain = format!("EXPLAIN {}", sql.text);
        Postgres::fetch_text(
            conn,
            Sql {
                text: explain,
                binds: sql.binds,
            },
        )
        .await
    }
}
