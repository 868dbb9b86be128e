//! Managed subscriptions (API.md, Managed subscriptions): durable cursors over
//! a source whose events are leased to competing consumers.
//!
//! The state lives in three tables. `subscriptions.cursor` says how far the
//! source has been scanned. Every scanned event not yet acknowledged is in
//! one of two places: leased, in `subscription_leases` (one row per claim a
//! turn served, listing the claim's events), or in `subscription_events`:
//! waiting behind its stream's earlier events, waiting out a retry's
//! backoff, due again after its lease ran out, or parked. An acknowledgement
//! shortens or deletes its claim's row, so a delivery costs a share of one
//! row where a row of its own cost an insert and a delete, and the tables
//! hold what is unsettled, not what was ever delivered.
//!
//! Claims on one subscription take turns: each turn locks its subscription's
//! row (`FOR UPDATE` on Postgres; SQLite's one write lock), so two turns, on
//! one instance or two, never lease one event twice. A turn serves every
//! claim waiting for it (the dispatcher gathers them), so consumers share
//! its cost, and moves the events of leases that ran out back to
//! `subscription_events`. Settlements find a lease by its claim's token and
//! its event's position, under the lock of the claim's row of leases (rows
//! of leases are always locked in token order, so two statements never wait
//! for each other's): a lease that ran out and was moved back no longer
//! matches, and is reported stale. Leases are signed with the
//! subscription's own key, so one it never issued (forged, or another
//! subscription's) is refused rather than called stale.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::backend::{
    Conn, SqlBackend, connection, event_columns, fetch_events, now_micros, to_json,
};
use super::error::{StoreError, SubscriptionError};
use super::model::{
    Claim, ConsumerState, Creation, Delivery, DeliveryOrder, ParkedEvent, ParkedPage, QueryItem,
    RecordedEvent, Settled, Settlement, Source, StartAt, SubscriptionDefinition, SubscriptionState,
};
use super::queries::matching_positions;
use super::reads::{HEAD, head};
use super::rows::{
    ConsumerRow, LeaseRow, ParkedRow, ReadyRow, SubscriptionRow, TallyRow, TurnRow, earliest,
    from_micros,
};
use super::sql::{Runner, Sql};

/// Most source events one turn of claims scans: bounds a turn's time and the
/// rows it writes.
const SCAN_PER_TURN: usize = 2000;

/// With ordering by stream, a subscription stops scanning ahead once this
/// many events are unsettled, most of them waiting behind their streams'
/// earlier ones.
const MAX_UNSETTLED: i64 = 10_000;

/// Most consumers a subscription's state lists (the latest to claim).
const CONSUMERS_LISTED: i64 = 100;

/// Managing subscriptions and handing out their events.
#[async_trait]
pub trait Subscriptions: Send + Sync {
    /// Creates a subscription, unless one of that name exists.
    async fn create_subscription(
        &self,
        name: &str,
        definition: &SubscriptionDefinition,
    ) -> Result<Creation, StoreError>;
    /// A subscription's definition alone: what access checks need.
    async fn subscription_definition(
        &self,
        name: &str,
    ) -> Result<Option<SubscriptionDefinition>, StoreError>;
    /// Every subscription's definition, by name: what push delivery follows.
    async fn subscription_definitions(
        &self,
    ) -> Result<Vec<(String, SubscriptionDefinition)>, StoreError>;
    /// A subscription and how far it has got.
    async fn subscription(&self, name: &str) -> Result<Option<SubscriptionState>, StoreError>;
    /// Every subscription, by name.
    async fn subscriptions(&self) -> Result<Vec<SubscriptionState>, StoreError>;
    /// Deletes a subscription and all its state; false when there was none.
    async fn delete_subscription(&self, name: &str) -> Result<bool, StoreError>;
    /// Serves claims in one turn on the subscription: the events available
    /// now, oldest first, go to the claims in the order given, each up to
    /// its `max`. One list of deliveries per claim, empty when nothing was
    /// left for it (waiting is the caller's).
    async fn claim(
        &self,
        name: &str,
        claims: &[Claim],
    ) -> Result<Vec<Vec<Delivery>>, SubscriptionError>;
    /// Acknowledges, retries or parks the events of several requests'
    /// leases; what each request settled, in order (a lease two requests
    /// name counts for the first). A request naming a lease the subscription
    /// never issued is refused alone. Acknowledgements of whole claims
    /// commit first, the rest in one transaction after: should that fail,
    /// the error is answered, and a retry finds the first ones stale.
    async fn settle(
        &self,
        name: &str,
        requests: &[Vec<String>],
        settlement: &Settlement,
    ) -> Result<Vec<Result<Settled, SubscriptionError>>, SubscriptionError>;
    /// Parked events from global position `position` on.
    async fn parked(
        &self,
        name: &str,
        position: i64,
        limit: i64,
    ) -> Result<ParkedPage, SubscriptionError>;
    /// Puts parked events (all when `positions` is `None`) back into
    /// delivery; how many.
    async fn replay(&self, name: &str, positions: Option<&[i64]>)
    -> Result<u64, SubscriptionError>;
    /// Leases a consumer holds now.
    async fn in_flight(&self, name: &str, consumer: &str) -> Result<i64, StoreError>;
    /// Makes `instance` the one that pushes a subscription's deliveries for
    /// `term`, unless another instance holds a term that has not run out;
    /// whether it is.
    async fn hold_pusher(
        &self,
        name: &str,
        instance: &str,
        term: Duration,
    ) -> Result<bool, StoreError>;
    /// Gives up pushing a subscription, so another instance takes over at once.
    async fn release_pusher(&self, name: &str, instance: &str) -> Result<(), StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Subscriptions for B {
    #[tracing::instrument(level = "debug", skip(self, definition))]
    async fn create_subscription(
        &self,
        name: &str,
        definition: &SubscriptionDefinition,
    ) -> Result<Creation, StoreError> {
        let mut conn = connection(self).await?;
        let cursor = match definition.start {
            StartAt::Beginning => 0,
            StartAt::End => B::Db::fetch_int(&mut conn, head()).await?.unwrap_or(0),
            StartAt::Position(position) => position - 1,
        };
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system provides randomness");
        let mut sql = Sql::new(
            "INSERT INTO subscriptions (name, definition, lease_key, cursor, created) VALUES (",
        );
        sql.bind(name)
            .push(", ")
            .bind(to_json(definition).as_str())
            .push(", ")
            .bind(URL_SAFE_NO_PAD.encode(key).as_str())
            .push(", ")
            .bind(cursor)
            .push(", ")
            .bind(now_micros().timestamp_micros())
            .push(") ON CONFLICT (name) DO NOTHING");
        if B::Db::execute(&mut conn, sql).await? == 1 {
            return Ok(Creation::Created);
        }
        match load::<B>(&mut conn, name, false).await? {
            Some(row) if parse_definition(&row)? == *definition => Ok(Creation::Existing),
            Some(_) => Ok(Creation::Different),
            // Deleted in between: rare enough to call it a conflict.
            None => Ok(Creation::Different),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn subscription_definition(
        &self,
        name: &str,
    ) -> Result<Option<SubscriptionDefinition>, StoreError> {
        let mut conn = connection(self).await?;
        load::<B>(&mut conn, name, false)
            .await?
            .map(|row| parse_definition(&row))
            .transpose()
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn subscription_definitions(
        &self,
    ) -> Result<Vec<(String, SubscriptionDefinition)>, StoreError> {
        let mut conn = connection(self).await?;
        all_rows::<B>(&mut conn)
            .await?
            .into_iter()
            .map(|row| parse_definition(&row).map(|definition| (row.name, definition)))
            .collect()
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn subscription(&self, name: &str) -> Result<Option<SubscriptionState>, StoreError> {
        let mut conn = connection(self).await?;
        match load::<B>(&mut conn, name, false).await? {
            Some(row) => Ok(Some(state_of::<B>(&mut conn, row).await?)),
            None => Ok(None),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn subscriptions(&self) -> Result<Vec<SubscriptionState>, StoreError> {
        let mut conn = connection(self).await?;
        let rows = all_rows::<B>(&mut conn).await?;
        let mut states = Vec::with_capacity(rows.len());
        for row in rows {
            states.push(state_of::<B>(&mut conn, row).await?);
        }
        Ok(states)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete_subscription(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // After a turn under way: the rows it writes are then visible to the
        // deletes below, and no turn starts on a half-deleted subscription.
        if load::<B>(&mut tx, name, true).await?.is_none() {
            return Ok(false);
        }
        // Leases first: a settlement under way holds its claim's row, and
        // what it moves to `subscription_events` as it commits is then
        // deleted below.
        for table in [
            "subscription_leases",
            "subscription_events",
            "subscription_consumers",
        ] {
            let mut sql = Sql::new(&format!("DELETE FROM {table} WHERE subscription = "));
            sql.bind(name);
            B::Db::execute(&mut tx, sql).await?;
        }
        let mut sql = Sql::new("DELETE FROM subscriptions WHERE name = ");
        sql.bind(name);
        let deleted = B::Db::execute(&mut tx, sql).await? > 0;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(deleted)
    }

    #[tracing::instrument(level = "debug", skip(self, claims))]
    async fn claim(
        &self,
        name: &str,
        claims: &[Claim],
    ) -> Result<Vec<Vec<Delivery>>, SubscriptionError> {
        let mut tx = self.begin_write().await?;
        let turn = lock_for_turn::<B>(&mut tx, name)
            .await?
            .ok_or_else(|| SubscriptionError::NotFound(name.to_owned()))?;
        let row = &turn.subscription;
        let definition = parse_definition(row)?;
        let now = now_micros().timestamp_micros();
        let returned = match turn.next_expiry.is_some_and(|at| at <= now) {
            true => return_expired::<B>(&mut tx, name, &definition, now).await?,
            false => false,
        };
        // With ordering by stream, a stream with an event in flight waits.
        let unsettled = match definition.ordering {
            DeliveryOrder::Stream => unsettled::<B>(&mut tx, name).await?,
            DeliveryOrder::None => Unsettled {
                in_flight: HashSet::new(),
                waiting: turn.first_waiting.is_some() || returned,
            },
        };

        // Events delivered before (or held back behind their stream) first,
        // then new ones from the source.
        let mut plan = ClaimPlan::new(name, &row.lease_key, claims, &definition, now);
        if unsettled.waiting {
            let in_flight = &unsettled.in_flight;
            let wanted = plan.wanted();
            for ready in ready_now::<B>(&mut tx, name, &definition, in_flight, now, wanted).await? {
                plan.lease(
                    RecordedEvent::try_from(ready.event)?,
                    ready.attempt + 1,
                    true,
                );
            }
        }
        let cursor = scan_source::<B>(&mut tx, &turn, &definition, unsettled, &mut plan).await?;
        let mut writes = plan.writes::<B>();
        if cursor != row.cursor {
            let mut sql = Sql::new("UPDATE subscriptions SET cursor = ");
            sql.bind(cursor).push(" WHERE name = ").bind(name);
            writes.push(sql);
        }
        writes.extend(plan.consumers_claimed(now));
        B::execute_all(&mut tx, writes).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(plan.deliveries())
    }

    #[tracing::instrument(level = "debug", skip(self, requests))]
    async fn settle(
        &self,
        name: &str,
        requests: &[Vec<String>],
        settlement: &Settlement,
    ) -> Result<Vec<Result<Settled, SubscriptionError>>, SubscriptionError> {
        let mut conn = connection(self).await?;
        let row = load::<B>(&mut conn, name, false)
            .await?
            .ok_or_else(|| SubscriptionError::NotFound(name.to_owned()))?;
        let verified: Vec<Result<Vec<LeaseId>, SubscriptionError>> = requests
            .iter()
            .map(|leases| {
                leases
                    .iter()
                    .map(|lease| {
                        LeaseId::verify(name, &row.lease_key, lease).ok_or_else(|| {
                            SubscriptionError::ForeignLease {
                                subscription: name.to_owned(),
                                lease: lease.clone(),
                            }
                        })
                    })
                    .collect()
            })
            .collect();
        let mut held: Vec<&LeaseId> = verified.iter().flatten().flatten().collect();
        drop(conn);
        let mut done = HashSet::new();
        if matches!(settlement, Settlement::Ack) && !held.is_empty() {
            let whole = ack_whole_claims(self, name, &held).await?;
            done.extend(
                held.iter()
                    .filter(|lease| whole.contains(&lease.token))
                    .map(|lease| lease.stored()),
            );
            held.retain(|lease| !whole.contains(&lease.token));
        }
        if !held.is_empty() {
            done.extend(settle_leases::<B>(self, &row, &held, settlement).await?);
        }
        // Each lease settled counts once, for the first request naming it.
        let answers = verified
            .into_iter()
            .zip(requests)
            .map(|(held, leases)| {
                let mut settled = Settled::default();
                for (id, lease) in held?.iter().zip(leases) {
                    match done.remove(&id.stored()) {
                        true => settled.done += 1,
                        false => settled.stale.push(lease.clone()),
                    }
                }
                Ok(settled)
            })
            .collect();
        Ok(answers)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn parked(
        &self,
        name: &str,
        position: i64,
        limit: i64,
    ) -> Result<ParkedPage, SubscriptionError> {
        let mut tx = self.begin_read().await?;
        if load::<B>(&mut tx, name, false).await?.is_none() {
            return Err(SubscriptionError::NotFound(name.to_owned()));
        }
        let mut sql = Sql::new(
            "SELECT global_position, attempt, reason, parked_at FROM subscription_events \
             WHERE subscription = ",
        );
        sql.bind(name)
            .push(" AND parked_at IS NOT NULL AND global_position >= ")
            .bind(position)
            .push(" ORDER BY global_position LIMIT ")
            .bind(limit + 1);
        let mut rows: Vec<ParkedRow> = B::Db::fetch(&mut tx, sql).await?;
        let end = rows.len() as i64 <= limit;
        rows.truncate(limit as usize);
        let positions: Vec<i64> = rows.iter().map(|r| r.global_position).collect();
        let events = match positions.is_empty() {
            true => Vec::new(),
            false => fetch_events::<B>(&mut tx, events_at::<B>(&positions)).await?,
        };
        tx.commit().await.map_err(StoreError::from)?;
        let next_position = positions.last().map_or(position, |last| last + 1);
        let mut parked = Vec::with_capacity(rows.len());
        for (row, event) in rows.into_iter().zip(events) {
            parked.push(ParkedEvent {
                event,
                reason: row.reason.unwrap_or_default(),
                attempts: row.attempt,
                parked_at: from_micros(row.parked_at)?,
            });
        }
        Ok(ParkedPage {
            parked,
            next_position,
            end,
        })
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn replay(
        &self,
        name: &str,
        positions: Option<&[i64]>,
    ) -> Result<u64, SubscriptionError> {
        // Under the subscription's lock: a claim deciding which event of a
        // stream comes first must not see one come back halfway.
        let mut tx = self.begin_write().await?;
        if load::<B>(&mut tx, name, true).await?.is_none() {
            return Err(SubscriptionError::NotFound(name.to_owned()));
        }
        let mut sql = Sql::new(
            "UPDATE subscription_events SET parked_at = NULL, reason = NULL, attempt = 0, \
             available_at = 0 WHERE subscription = ",
        );
        sql.bind(name).push(" AND parked_at IS NOT NULL");
        if let Some(positions) = positions {
            if positions.is_empty() {
                return Ok(0);
            }
            sql.push(" AND global_position IN ").bind_list(positions);
        }
        let replayed = B::Db::execute(&mut tx, sql).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(replayed)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn in_flight(&self, name: &str, consumer: &str) -> Result<i64, StoreError> {
        let mut sql = Sql::new(
            "SELECT CAST(coalesce(sum(held), 0) AS BIGINT) FROM subscription_leases \
             WHERE subscription = ",
        );
        sql.bind(name)
            .push(" AND consumer = ")
            .bind(consumer)
            .push(" AND expires > ")
            .bind(now_micros().timestamp_micros());
        let mut conn = connection(self).await?;
        Ok(B::Db::fetch_int(&mut conn, sql).await?.unwrap_or(0))
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn hold_pusher(
        &self,
        name: &str,
        instance: &str,
        term: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_micros().timestamp_micros();
        let until = now.saturating_add(term.as_micros().try_into().unwrap_or(i64::MAX));
        let mut sql = Sql::new("UPDATE subscriptions SET pusher = ");
        sql.bind(instance)
            .push(", pusher_until = ")
            .bind(until)
            .push(" WHERE name = ")
            .bind(name)
            .push(" AND (pusher IS NULL OR pusher = ")
            .bind(instance)
            .push(" OR pusher_until < ")
            .bind(now)
            .push(")");
        let mut conn = connection(self).await?;
        Ok(B::Db::execute(&mut conn, sql).await? == 1)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn release_pusher(&self, name: &str, instance: &str) -> Result<(), StoreError> {
        let mut sql =
            Sql::new("UPDATE subscriptions SET pusher = NULL, pusher_until = NULL WHERE name = ");
        sql.bind(name).push(" AND pusher = ").bind(instance);
        let mut conn = connection(self).await?;
        B::Db::execute(&mut conn, sql).await?;
        Ok(())
    }
}

/// The start of a select of subscription rows (more columns may follow).
const SUBSCRIPTION_SELECT: &str = "SELECT name, definition, lease_key, cursor, created";

/// Every subscription's row, by name.
async fn all_rows<B: SqlBackend>(conn: &mut Conn<B>) -> Result<Vec<SubscriptionRow>, StoreError> {
    B::Db::fetch(
        conn,
        Sql::new(&format!(
            "{SUBSCRIPTION_SELECT} FROM subscriptions ORDER BY name"
        )),
    )
    .await
}

/// A subscription's row; with `lock`, locked until the transaction ends
/// (SQLite's write transactions hold the whole store already).
async fn load<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
    lock: bool,
) -> Result<Option<SubscriptionRow>, StoreError> {
    let mut sql = Sql::new(&format!(
        "{SUBSCRIPTION_SELECT} FROM subscriptions WHERE name = "
    ));
    sql.bind(name);
    if lock {
        sql.push(B::LOCK_ROWS);
    }
    Ok(B::Db::fetch(conn, sql).await?.pop())
}

/// The definition a row stores.
fn parse_definition(row: &SubscriptionRow) -> Result<SubscriptionDefinition, StoreError> {
    serde_json::from_str(&row.definition).map_err(|e| {
        StoreError::Internal(format!(
            "stored definition of subscription {}: {e}",
            row.name
        ))
    })
}

/// A subscription's state, from its row.
async fn state_of<B: SqlBackend>(
    conn: &mut Conn<B>,
    row: SubscriptionRow,
) -> Result<SubscriptionState, StoreError> {
    let definition = parse_definition(&row)?;
    let now = now_micros().timestamp_micros();
    let name = row.name.as_str();
    let mut sql = Sql::new(
        "SELECT (SELECT min(global_position) FROM subscription_events \
         WHERE subscription = ",
    );
    sql.bind(name)
        .push(
            " AND parked_at IS NULL) AS first_waiting, \
             (SELECT min(first_position) FROM subscription_leases WHERE subscription = ",
        )
        .bind(name)
        .push(
            ") AS first_leased, (SELECT CAST(sum(held) AS BIGINT) FROM subscription_leases \
             WHERE subscription = ",
        )
        .bind(name)
        .push(" AND expires > ")
        .bind(now)
        .push(") AS in_flight, (SELECT count(*) FROM subscription_events WHERE subscription = ")
        .bind(name)
        .push(" AND parked_at IS NOT NULL) AS parked");
    let tally: Option<TallyRow> = B::Db::fetch(conn, sql).await?.pop();
    let tally = tally.unwrap_or(TallyRow {
        first_waiting: None,
        first_leased: None,
        in_flight: None,
        parked: None,
    });
    let position = earliest(tally.first_waiting, tally.first_leased)
        .map_or(row.cursor, |first| (first - 1).min(row.cursor));
    let head = B::Db::fetch_int(conn, head()).await?.unwrap_or(0);
    let lag = B::Db::fetch_int(conn, source_count::<B>(&definition, position))
        .await?
        .unwrap_or(0);
    let mut sql = Sql::new(
        "SELECT c.consumer, c.last_claim, (SELECT CAST(coalesce(sum(l.held), 0) AS BIGINT) \
         FROM subscription_leases l WHERE l.subscription = c.subscription \
         AND l.consumer = c.consumer AND l.expires > ",
    );
    sql.bind(now)
        .push(") AS in_flight FROM subscription_consumers c WHERE c.subscription = ")
        .bind(row.name.as_str())
        .push(" ORDER BY c.last_claim DESC, c.consumer LIMIT ")
        .bind(CONSUMERS_LISTED);
    let consumers: Vec<ConsumerRow> = B::Db::fetch(conn, sql).await?;
    let consumers = consumers
        .into_iter()
        .map(|c| {
            Ok(ConsumerState {
                consumer: c.consumer,
                in_flight: c.in_flight,
                last_claim: from_micros(c.last_claim)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(SubscriptionState {
        name: row.name,
        definition,
        position,
        head,
        lag,
        in_flight: tally.in_flight.unwrap_or(0),
        parked: tally.parked.unwrap_or(0),
        consumers,
        created: from_micros(row.created)?,
    })
}

/// Moves the events of a subscription's leases that ran out back to
/// `subscription_events`: due again at once, or parked after their last
/// allowed delivery. Whether there were any.
async fn return_expired<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
    definition: &SubscriptionDefinition,
    now: i64,
) -> Result<bool, StoreError> {
    let mut sql = Sql::new("DELETE FROM subscription_leases WHERE subscription = ");
    sql.bind(name).push(" AND token IN ");
    locked_tokens::<B>(&mut sql, name, |sql| {
        sql.push(" AND expires <= ").bind(now);
    });
    sql.push(" RETURNING events");
    let mut events = Vec::new();
    for text in B::Db::fetch_text(conn, sql).await? {
        events.extend(HeldEvent::parse_list(&text)?);
    }
    let reason = format!(
        "not acknowledged within ack_timeout_ms ({}) after {} deliveries",
        definition.ack_timeout_ms, definition.max_deliveries
    );
    let rows: Vec<Unleased> = events
        .iter()
        .map(|event| Unleased::again(event, definition, 0, now, &reason))
        .collect();
    if let Some(sql) = unleased_rows::<B>(name, &rows) {
        B::Db::execute(conn, sql).await?;
    }
    Ok(!events.is_empty())
}

/// Appends `(…)` selecting the tokens of a subscription's rows of leases
/// that `filter` (appending conditions) keeps, locked in token order. Every
/// statement that locks several rows of leases takes them this way, so that
/// two never each hold a row the other waits for.
fn locked_tokens<B: SqlBackend>(sql: &mut Sql, name: &str, filter: impl FnOnce(&mut Sql)) {
    sql.push("(SELECT token FROM subscription_leases WHERE subscription = ")
        .bind(name);
    filter(sql);
    sql.push(" ORDER BY token").push(B::LOCK_ROWS).push(")");
}

/// Writes events that are not (or no longer) leased to
/// `subscription_events`; none when there are none.
fn unleased_rows<B: SqlBackend>(name: &str, rows: &[Unleased<'_>]) -> Option<Sql> {
    if rows.is_empty() {
        return None;
    }
    // Each event is in one place only (a lease, a row, or settled), so no
    // row of these exists. An event erased while it was leased is settled
    // for good: erasure removes the rows of events, not the leases.
    let mut sql = Sql::new(
        "INSERT INTO subscription_events (subscription, global_position, stream, attempt, \
         available_at, parked_at, reason) SELECT ",
    );
    sql.bind(name).push(
        ", r.global_position, r.stream, r.attempt, r.available_at, r.parked_at, r.reason FROM ",
    );
    B::json_rows(&mut sql, to_json(rows), Unleased::COLUMNS);
    sql.push(" WHERE EXISTS (SELECT 1 FROM events e WHERE e.global_position = r.global_position)");
    Some(sql)
}

/// What a turn knows of a subscription's unsettled events before it leases
/// any.
struct Unsettled {
    /// The streams of its leased events.
    in_flight: HashSet<String>,
    /// Whether an event waits in `subscription_events` (parked ones aside).
    waiting: bool,
}

/// A subscription's [`Unsettled`] events, read in one statement after the
/// turn's lock: one snapshot, so an event a settlement moves from its lease
/// to `subscription_events` meanwhile (a retry) is seen in one place or the
/// other, never in neither. (Only a turn moves events out of
/// `subscription_events`, so one seen waiting stays there this turn.)
async fn unsettled<B: SqlBackend>(conn: &mut Conn<B>, name: &str) -> Result<Unsettled, StoreError> {
    // A row per claim's leases, and an empty one if an event waits.
    let mut sql = Sql::new("SELECT events FROM subscription_leases WHERE subscription = ");
    sql.bind(name)
        .push(
            " UNION ALL SELECT '' WHERE EXISTS (SELECT 1 FROM subscription_events \
             WHERE subscription = ",
        )
        .bind(name)
        .push(" AND parked_at IS NULL)");
    let mut unsettled = Unsettled {
        in_flight: HashSet::new(),
        waiting: false,
    };
    for text in B::Db::fetch_text(conn, sql).await? {
        if text.is_empty() {
            unsettled.waiting = true;
            continue;
        }
        unsettled.in_flight.extend(
            HeldEvent::parse_list(&text)?
                .into_iter()
                .map(|event| event.stream),
        );
    }
    Ok(unsettled)
}

/// A subscription's row, locked until the transaction ends (SQLite's write
/// transactions hold the whole store already), with the head of the log,
/// its earliest unsettled events and its earliest lease expiry: a turn's
/// first round trip. (The rest is read as the statement began, before any
/// wait for the lock: an older head only bounds the scan lower, and what
/// another turn or a settlement wrote meanwhile waits for the next turn.)
async fn lock_for_turn<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
) -> Result<Option<TurnRow>, StoreError> {
    let mut sql = Sql::new(&format!(
        "{SUBSCRIPTION_SELECT}, {HEAD} AS head, \
         (SELECT min(global_position) FROM subscription_events e \
         WHERE e.subscription = subscriptions.name AND e.parked_at IS NULL) AS first_waiting, \
         (SELECT min(first_position) FROM subscription_leases l \
         WHERE l.subscription = subscriptions.name) AS first_leased, \
         (SELECT min(expires) FROM subscription_leases l \
         WHERE l.subscription = subscriptions.name) AS next_expiry \
         FROM subscriptions WHERE name = "
    ));
    sql.bind(name).push(B::LOCK_ROWS);
    Ok(B::Db::fetch(conn, sql).await?.pop())
}

/// Whether a subscription has [`MAX_UNSETTLED`] events unsettled. They lie
/// between its earliest unsettled event and its cursor, so they are counted
/// only when that span is long enough to hold so many.
async fn too_many_unsettled<B: SqlBackend>(
    conn: &mut Conn<B>,
    turn: &TurnRow,
) -> Result<bool, StoreError> {
    let Some(first) = turn.first_unsettled() else {
        return Ok(false);
    };
    if turn.subscription.cursor - first + 1 < MAX_UNSETTLED {
        return Ok(false);
    }
    let name = turn.subscription.name.as_str();
    let mut sql = Sql::new(
        "SELECT CAST((SELECT count(*) FROM (SELECT 1 FROM subscription_events \
         WHERE subscription = ",
    );
    sql.bind(name)
        .push(" AND parked_at IS NULL LIMIT ")
        .bind(MAX_UNSETTLED)
        .push(
            ") AS bounded) + (SELECT coalesce(sum(held), 0) FROM subscription_leases \
             WHERE subscription = ",
        )
        .bind(name)
        .push(") AS BIGINT)");
    Ok(B::Db::fetch_int(conn, sql).await?.unwrap_or(0) >= MAX_UNSETTLED)
}

/// The events neither leased nor parked that may be delivered now (at most
/// `max`), oldest first, with their events: past their backoff and, with
/// ordering by stream, the earliest of their stream, of a stream with
/// nothing `in_flight`.
async fn ready_now<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
    definition: &SubscriptionDefinition,
    in_flight: &HashSet<String>,
    now: i64,
    max: usize,
) -> Result<Vec<ReadyRow>, StoreError> {
    let mut sql = Sql::new(&format!(
        "SELECT {}, r.attempt FROM events JOIN (SELECT global_position AS ready, attempt \
         FROM subscription_events s WHERE subscription = ",
        event_columns::<B>()
    ));
    sql.bind(name)
        .push(" AND parked_at IS NULL AND available_at <= ")
        .bind(now);
    if definition.ordering == DeliveryOrder::Stream {
        sql.push(
            " AND NOT EXISTS (SELECT 1 FROM subscription_events o \
             WHERE o.subscription = s.subscription AND o.stream = s.stream \
             AND o.parked_at IS NULL AND o.global_position < s.global_position)",
        );
        // An event of the stream in flight came first, even a later one
        // (this one was parked, then replayed).
        if !in_flight.is_empty() {
            let streams: Vec<StreamOf> =
                in_flight.iter().map(|stream| StreamOf { stream }).collect();
            sql.push(" AND s.stream NOT IN (SELECT r.stream FROM ");
            B::json_rows(&mut sql, to_json(&streams), StreamOf::COLUMNS);
            sql.push(")");
        }
    }
    sql.push(" ORDER BY global_position LIMIT ")
        .bind(max as i64)
        .push(") r ON events.global_position = r.ready ORDER BY global_position");
    B::Db::fetch(conn, sql).await
}

/// A stream's name, as a row of [`SqlBackend::json_rows`].
#[derive(serde::Serialize)]
struct StreamOf<'a> {
    stream: &'a str,
}

impl StreamOf<'_> {
    /// Its column, as [`SqlBackend::json_rows`] reads it.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[("stream", "text")];
}

/// Scans the source after the cursor for new events to lease, until the
/// claims have all they want, the source is exhausted, or the scan's bound;
/// the new cursor. With ordering by stream, an event whose stream has an
/// unsettled event (in flight, or waiting in `subscription_events`) is
/// recorded to wait its turn.
async fn scan_source<B: SqlBackend>(
    conn: &mut Conn<B>,
    turn: &TurnRow,
    definition: &SubscriptionDefinition,
    unsettled: Unsettled,
    plan: &mut ClaimPlan<'_>,
) -> Result<i64, StoreError> {
    let row = &turn.subscription;
    let mut cursor = row.cursor;
    let ordered = definition.ordering == DeliveryOrder::Stream;
    if plan.wanted() == 0 || (ordered && too_many_unsettled::<B>(conn, turn).await?) {
        return Ok(cursor);
    }
    // Everything up to the head is committed and visible (the log never
    // shows an event behind one already seen), so a scan that reaches it
    // may move the cursor there even if the last events did not match.
    let head = turn.head.unwrap_or(0);
    let mut scanned = 0;
    // Streams with an unsettled event: in the store, or leased or left
    // waiting by this turn's earlier chunks (not written yet).
    let mut busy = unsettled.in_flight;
    while plan.wanted() > 0 && scanned < SCAN_PER_TURN && cursor < head {
        let chunk = match ordered {
            true => plan.wanted().max(100),
            false => plan.wanted(),
        }
        .min(SCAN_PER_TURN - scanned);
        let found =
            fetch_events::<B>(conn, source_events::<B>(definition, cursor, head, chunk)).await?;
        let exhausted = found.len() < chunk;
        if ordered && unsettled.waiting {
            busy.extend(waiting_streams::<B>(conn, &row.name, &found).await?);
        }
        for event in found {
            if plan.wanted() == 0 {
                break;
            }
            scanned += 1;
            cursor = event.global_position;
            if ordered && !busy.insert(event.stream.clone()) {
                plan.waiting.push(HeldEvent {
                    position: event.global_position,
                    attempt: 0,
                    stream: event.stream,
                });
                continue;
            }
            plan.lease(event, 1, false);
        }
        if exhausted && plan.wanted() > 0 {
            cursor = head;
            break;
        }
    }
    Ok(cursor)
}

/// The streams among `events`' that have an event waiting in
/// `subscription_events`.
async fn waiting_streams<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
    events: &[RecordedEvent],
) -> Result<HashSet<String>, StoreError> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let streams: HashSet<&str> = events.iter().map(|e| e.stream.as_str()).collect();
    let streams: Vec<&str> = streams.into_iter().collect();
    // A list of values, not a JSON bind: the planner then probes the stream
    // index for each, where a young table's statistics led it to rescan the
    // JSON for every waiting event (272 ms for 10,000 of them).
    let mut sql = Sql::new("SELECT DISTINCT stream FROM subscription_events WHERE subscription = ");
    sql.bind(name)
        .push(" AND parked_at IS NULL AND stream IN ")
        .bind_list(&streams);
    Ok(B::Db::fetch_text(conn, sql).await?.into_iter().collect())
}

/// Events by global position (at least one), in global order.
fn events_at<B: SqlBackend>(positions: &[i64]) -> Sql {
    let first = positions.iter().min().copied().unwrap_or(0);
    let last = positions.iter().max().copied().unwrap_or(0);
    // The range lets the planner see an index range scan even when a young
    // table's statistics make a full scan look cheaper than the list (seen
    // for 100 positions in 20,000 events).
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE global_position BETWEEN ",
        event_columns::<B>()
    ));
    sql.bind(first)
        .push(" AND ")
        .bind(last)
        .push(" AND global_position IN ")
        .bind_list(positions)
        .push(" ORDER BY global_position");
    sql
}

/// The query items of a `query` source, narrowed to the subscription's
/// types (an item left with no type in common matches nothing and goes).
fn narrowed(items: &[QueryItem], types: &[String]) -> Vec<QueryItem> {
    if types.is_empty() {
        return items.to_vec();
    }
    items
        .iter()
        .filter_map(|item| {
            let kept: Vec<String> = match item.types.is_empty() {
                true => types.to_vec(),
                false => item
                    .types
                    .iter()
                    .filter(|t| types.contains(t))
                    .cloned()
                    .collect(),
            };
            (!kept.is_empty()).then(|| QueryItem {
                types: kept,
                tags: item.tags.clone(),
            })
        })
        .collect()
}

/// Appends the conditions that select a subscription's source events above
/// global position `after` (to a statement that ends in `WHERE`); false
/// when the source can match nothing.
fn source_filter(
    sql: &mut Sql,
    definition: &SubscriptionDefinition,
    after: i64,
    limit: i64,
) -> bool {
    sql.push(" global_position > ").bind(after);
    match &definition.source {
        Source::All => {}
        Source::Category(category) => {
            sql.push(" AND category = ").bind(category.as_str());
        }
        Source::Stream(stream) => {
            sql.push(" AND stream = ").bind(stream.as_str());
        }
        Source::Query(items) => {
            let items = narrowed(items, &definition.types);
            if items.is_empty() {
                return false;
            }
            sql.push(" AND global_position IN (");
            matching_positions(
                sql,
                &items,
                after + 1,
                super::model::Direction::Forward,
                limit,
            );
            sql.push(")");
            // The items carry the types already.
            return true;
        }
    }
    if !definition.types.is_empty() {
        let types: Vec<&str> = definition.types.iter().map(String::as_str).collect();
        sql.push(" AND type IN ").bind_list(&types);
    }
    true
}

/// Up to `limit` source events after `after`, up to `head`, in global order.
fn source_events<B: SqlBackend>(
    definition: &SubscriptionDefinition,
    after: i64,
    head: i64,
    limit: usize,
) -> Sql {
    let limit = limit as i64;
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE",
        event_columns::<B>()
    ));
    if !source_filter(&mut sql, definition, after, limit) {
        sql.push(" AND 1 = 0");
    }
    sql.push(" AND global_position <= ").bind(head);
    // A stream's own index orders its events by position, which is their
    // global order too.
    let order = match definition.source {
        Source::Stream(_) => "position",
        _ => "global_position",
    };
    sql.push(&format!(" ORDER BY {order} LIMIT ")).bind(limit);
    sql
}

/// How many source events lie after `after`.
fn source_count<B: SqlBackend>(definition: &SubscriptionDefinition, after: i64) -> Sql {
    let mut sql = Sql::new("SELECT count(*) FROM events WHERE");
    if !source_filter(&mut sql, definition, after, i64::MAX) {
        sql.push(" AND 1 = 0");
    }
    sql
}

/// Acknowledges the claims of several events whose leases are all among
/// `leases` (the usual acknowledgement: a consumer's whole batch), deleting
/// their rows by the digest of their positions in one statement; the
/// claims' tokens.
async fn ack_whole_claims<B: SqlBackend>(
    backend: &B,
    name: &str,
    leases: &[&LeaseId],
) -> Result<HashSet<String>, StoreError> {
    // A single lease may be one of many in its claim (feeds and pushes
    // acknowledge each delivery alone): that is left to the transaction,
    // rather than this statement matching nothing first.
    let claims: Vec<WholeClaim> = positions_by_token(leases)
        .into_iter()
        .filter(|(_, positions)| positions.len() > 1)
        .map(|(token, positions)| WholeClaim {
            token,
            digest: positions_digest(&positions),
        })
        .collect();
    if claims.is_empty() {
        return Ok(HashSet::new());
    }
    let mut sql = Sql::new("DELETE FROM subscription_leases WHERE subscription = ");
    sql.bind(name).push(" AND token IN ");
    locked_tokens::<B>(&mut sql, name, |sql| {
        sql.push(" AND (token, digest) IN (SELECT r.token, r.digest FROM ");
        B::json_rows(sql, to_json(&claims), WholeClaim::COLUMNS);
        sql.push(")");
    });
    sql.push(" RETURNING token");
    Ok(backend.write_now(sql).await?.into_iter().collect())
}

/// A claim's token and the digest of the positions an acknowledgement names
/// under it.
#[derive(serde::Serialize)]
struct WholeClaim<'a> {
    token: &'a str,
    digest: String,
}

impl WholeClaim<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] =
        &[("token", "text"), ("digest", "text")];
}

/// The positions leases name, by their claims' tokens.
fn positions_by_token<'a>(leases: &[&'a LeaseId]) -> HashMap<&'a str, BTreeSet<i64>> {
    let mut named: HashMap<&str, BTreeSet<i64>> = HashMap::new();
    for lease in leases {
        named
            .entry(lease.token.as_str())
            .or_default()
            .insert(lease.position);
    }
    named
}

/// A digest of a set of positions: equal digests mean equal sets.
fn positions_digest(positions: &BTreeSet<i64>) -> String {
    let mut hash = Sha256::new();
    for position in positions {
        hash.update(position.to_be_bytes());
    }
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// Acknowledges, retries or parks the events still held under `leases`, in
/// one write transaction; the leases (as stored) that held.
async fn settle_leases<B: SqlBackend>(
    backend: &B,
    row: &SubscriptionRow,
    leases: &[&LeaseId],
    settlement: &Settlement,
) -> Result<HashSet<String>, SubscriptionError> {
    let name = row.name.as_str();
    let now = now_micros().timestamp_micros();
    let wanted = positions_by_token(leases);
    let tokens: Vec<&str> = wanted.keys().copied().collect();
    let mut tx = backend.begin_write().await?;
    // Locked, in token order (see [`locked_tokens`]): the turn that would
    // move a lease that ran out back waits, or went first and the lease is
    // gone.
    let mut sql = Sql::new(
        "SELECT token, consumer, expires, events FROM subscription_leases WHERE subscription = ",
    );
    sql.bind(name)
        .push(" AND token IN ")
        .bind_list(&tokens)
        .push(" ORDER BY token")
        .push(B::LOCK_ROWS);
    let claims: Vec<LeaseRow> = B::Db::fetch(&mut tx, sql).await?;
    let mut held = HashSet::new();
    let mut settled = Vec::new();
    let mut emptied = Vec::new();
    let mut shortened = Vec::new();
    for claim in claims {
        let positions = &wanted[claim.token.as_str()];
        let (gone, kept): (Vec<HeldEvent>, Vec<HeldEvent>) = HeldEvent::parse_list(&claim.events)?
            .into_iter()
            .partition(|event| positions.contains(&event.position));
        if gone.is_empty() {
            continue;
        }
        held.extend(
            gone.iter()
                .map(|event| LeaseId::stored_as(event.position, &claim.token)),
        );
        settled.extend(gone);
        match kept.is_empty() {
            true => emptied.push(claim.token),
            false => shortened.push(LeaseWrite::new(
                claim.token,
                claim.consumer,
                claim.expires,
                &kept,
            )),
        }
    }
    let mut writes = Vec::new();
    if !emptied.is_empty() {
        let mut sql = Sql::new("DELETE FROM subscription_leases WHERE subscription = ");
        let emptied: Vec<&str> = emptied.iter().map(String::as_str).collect();
        sql.bind(name).push(" AND token IN ").bind_list(&emptied);
        writes.push(sql);
    }
    writes.extend(lease_rows::<B>(name, &shortened, true));
    let unleased: Vec<Unleased> = match settlement {
        Settlement::Ack => Vec::new(),
        Settlement::Retry { delay, reason } => {
            let definition = parse_definition(row)?;
            let available = now.saturating_add(delay.as_micros().try_into().unwrap_or(i64::MAX));
            settled
                .iter()
                .map(|event| Unleased::again(event, &definition, available, now, reason))
                .collect()
        }
        Settlement::Park { reason } => settled
            .iter()
            .map(|event| Unleased::parked(event, now, reason))
            .collect(),
    };
    writes.extend(unleased_rows::<B>(name, &unleased));
    B::execute_all(&mut tx, writes).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(held)
}

/// Writes claims' rows of leases; with `replace`, over rows of the same
/// tokens (a settlement shortening them). None when there are none.
fn lease_rows<B: SqlBackend>(name: &str, rows: &[LeaseWrite], replace: bool) -> Option<Sql> {
    if rows.is_empty() {
        return None;
    }
    let mut sql = Sql::new(
        "INSERT INTO subscription_leases (subscription, token, consumer, expires, \
         first_position, held, digest, events) SELECT ",
    );
    sql.bind(name).push(
        ", r.token, r.consumer, r.expires, r.first_position, r.held, r.digest, r.events FROM ",
    );
    B::json_rows(&mut sql, to_json(rows), LeaseWrite::COLUMNS);
    if replace {
        // `WHERE true` tells SQLite's parser the `ON` is no join's.
        sql.push(
            " WHERE true ON CONFLICT (subscription, token) DO UPDATE SET \
             first_position = excluded.first_position, held = excluded.held, \
             digest = excluded.digest, events = excluded.events",
        );
    }
    Some(sql)
}

/// An unsettled event as a claim's row of leases lists it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(from = "(i64, i64, String)", into = "(i64, i64, String)")]
struct HeldEvent {
    /// Its global position.
    position: i64,
    /// Which delivery of it the lease is.
    attempt: i64,
    stream: String,
}

impl HeldEvent {
    /// The events a row of leases lists.
    fn parse_list(text: &str) -> Result<Vec<HeldEvent>, StoreError> {
        serde_json::from_str(text)
            .map_err(|e| StoreError::Internal(format!("stored subscription leases: {e}")))
    }
}

// Kept as `[position, attempt, stream]`: a claim's row lists hundreds.
impl From<(i64, i64, String)> for HeldEvent {
    fn from((position, attempt, stream): (i64, i64, String)) -> Self {
        HeldEvent {
            position,
            attempt,
            stream,
        }
    }
}

impl From<HeldEvent> for (i64, i64, String) {
    fn from(event: HeldEvent) -> Self {
        (event.position, event.attempt, event.stream)
    }
}

/// A claim's row of leases as it is written.
#[derive(serde::Serialize)]
struct LeaseWrite {
    token: String,
    consumer: String,
    expires: i64,
    first_position: i64,
    held: i64,
    /// Of the events' positions, by [`positions_digest`].
    digest: String,
    /// The events, as the JSON array [`HeldEvent::parse_list`] reads.
    events: String,
}

impl LeaseWrite {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("token", "text"),
        ("consumer", "text"),
        ("expires", "bigint"),
        ("first_position", "bigint"),
        ("held", "bigint"),
        ("digest", "text"),
        ("events", "text"),
    ];

    /// The row of a claim's leases on `events` (at least one).
    fn new(token: String, consumer: String, expires: i64, events: &[HeldEvent]) -> Self {
        LeaseWrite {
            token,
            consumer,
            expires,
            first_position: events.iter().map(|e| e.position).min().unwrap_or(0),
            held: events.len() as i64,
            digest: positions_digest(&events.iter().map(|e| e.position).collect()),
            events: to_json(events),
        }
    }
}

/// A row of `subscription_events`, for an event not leased: due at
/// `available_at`, or parked.
#[derive(serde::Serialize)]
struct Unleased<'a> {
    global_position: i64,
    stream: &'a str,
    attempt: i64,
    available_at: i64,
    parked_at: Option<i64>,
    reason: Option<&'a str>,
}

impl<'a> Unleased<'a> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("global_position", "bigint"),
        ("stream", "text"),
        ("attempt", "bigint"),
        ("available_at", "bigint"),
        ("parked_at", "bigint"),
        ("reason", "text"),
    ];

    /// An event to deliver again from `available_at` on.
    fn due(event: &'a HeldEvent, available_at: i64) -> Self {
        Unleased {
            global_position: event.position,
            stream: &event.stream,
            attempt: event.attempt,
            available_at,
            parked_at: None,
            reason: None,
        }
    }

    /// An event whose lease ended unacknowledged: due again from
    /// `available_at`, or, after its last allowed delivery, parked at `now`
    /// for `reason`.
    fn again(
        event: &'a HeldEvent,
        definition: &SubscriptionDefinition,
        available_at: i64,
        now: i64,
        reason: &'a str,
    ) -> Self {
        match event.attempt < i64::from(definition.max_deliveries) {
            true => Unleased::due(event, available_at),
            false => Unleased::parked(event, now, reason),
        }
    }

    /// An event parked at `now`.
    fn parked(event: &'a HeldEvent, now: i64, reason: &'a str) -> Self {
        Unleased {
            parked_at: Some(now),
            reason: Some(reason),
            ..Unleased::due(event, 0)
        }
    }
}

/// A lease as the subscription issued it: `{position}.{token}.{signature}`.
/// The token tells this lease from the event's earlier and later ones; the
/// signature, by the subscription's key, tells a lease it issued from any
/// other string.
struct LeaseId {
    position: i64,
    token: String,
}

impl LeaseId {
    /// A token for one claim's leases: it names the claim's row of leases,
    /// and tells an event's lease from its earlier and later ones.
    fn new_token() -> String {
        let mut token = [0u8; 9];
        getrandom::fill(&mut token).expect("the operating system provides randomness");
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The text of a new lease on the event at `position` under `token`.
    fn issue(subscription: &str, key: &str, position: i64, token: &str) -> String {
        let lease = LeaseId {
            position,
            token: token.to_owned(),
        };
        format!(
            "{position}.{}.{}",
            lease.token,
            lease.signature(subscription, key)
        )
    }

    /// The lease as settlements count it: its position and token.
    fn stored(&self) -> String {
        Self::stored_as(self.position, &self.token)
    }

    /// The lease on the event at `position` under `token`, as settlements
    /// count it.
    fn stored_as(position: i64, token: &str) -> String {
        format!("{position}.{token}")
    }

    /// The lease `text` names, if this subscription issued it.
    fn verify(subscription: &str, key: &str, text: &str) -> Option<LeaseId> {
        let mut parts = text.splitn(3, '.');
        let (position, token, signature) = (parts.next()?, parts.next()?, parts.next()?);
        let lease = LeaseId {
            position: position.parse().ok()?,
            token: token.to_owned(),
        };
        let given = URL_SAFE_NO_PAD.decode(signature).ok()?;
        lease
            .mac(subscription, key)
            .verify_truncated_left(&given)
            .ok()
            .map(|()| lease)
    }

    /// The signature as written in the lease.
    fn signature(&self, subscription: &str, key: &str) -> String {
        let full = self.mac(subscription, key).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&full[..SIGNATURE_BYTES])
    }

    /// The MAC over the subscription, position and token, ready to finish.
    fn mac(&self, subscription: &str, key: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(format!("{subscription}\n{}.{}", self.position, self.token).as_bytes());
        mac
    }
}

/// Bytes of the MAC kept in a lease: 128 bits cannot be guessed.
const SIGNATURE_BYTES: usize = 16;

/// What a turn of claims writes: a row of leases per claim, and events that
/// wait behind their streams' earlier ones.
struct ClaimPlan<'a> {
    subscription: &'a str,
    key: &'a str,
    /// The claims served, in order.
    claims: Vec<Claimant<'a>>,
    /// Leased events, oldest first: the ones delivered before (rows at or
    /// before the cursor, in order), then new ones (after it, in order).
    leased: Vec<Leased>,
    /// New events that wait.
    waiting: Vec<HeldEvent>,
}

/// A claim as a turn serves it.
struct Claimant<'a> {
    consumer: &'a str,
    /// Names its leases.
    token: String,
    /// When its leases run out.
    expires: i64,
    /// Most events it takes.
    max: usize,
    /// Events leased to it so far.
    leased: usize,
}

/// An event a claim leases.
struct Leased {
    /// Which of the turn's claims it goes to.
    claim: usize,
    event: RecordedEvent,
    /// Which delivery of it this is.
    attempt: i64,
    /// Whether it comes from `subscription_events` (rather than the source).
    again: bool,
    /// The lease's text.
    text: String,
}

impl Leased {
    /// The event as its claim's row of leases lists it.
    fn held(&self) -> HeldEvent {
        HeldEvent {
            position: self.event.global_position,
            attempt: self.attempt,
            stream: self.event.stream.clone(),
        }
    }
}

impl<'a> ClaimPlan<'a> {
    /// A turn serving `claims` at `now`.
    fn new(
        subscription: &'a str,
        key: &'a str,
        claims: &'a [Claim],
        definition: &SubscriptionDefinition,
        now: i64,
    ) -> Self {
        let claims = claims
            .iter()
            .map(|claim| {
                let lease_for = claim
                    .lease_for
                    .unwrap_or(Duration::from_millis(definition.ack_timeout_ms));
                Claimant {
                    consumer: &claim.consumer,
                    token: LeaseId::new_token(),
                    expires: now
                        .saturating_add(lease_for.as_micros().try_into().unwrap_or(i64::MAX)),
                    max: claim.max,
                    leased: 0,
                }
            })
            .collect();
        ClaimPlan {
            subscription,
            key,
            claims,
            leased: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// How many more events the claims take.
    fn wanted(&self) -> usize {
        self.claims.iter().map(|c| c.max - c.leased).sum()
    }

    /// Leases an event for its `attempt`th delivery to the first claim that
    /// wants more (none does once [`Self::wanted`] is 0: the event is left);
    /// `again` when it comes from `subscription_events`, whose row it then
    /// leaves.
    fn lease(&mut self, event: RecordedEvent, attempt: i64, again: bool) {
        let Some(claim) = self.claims.iter().position(|c| c.leased < c.max) else {
            return;
        };
        let claimant = &mut self.claims[claim];
        claimant.leased += 1;
        let text = LeaseId::issue(
            self.subscription,
            self.key,
            event.global_position,
            &claimant.token,
        );
        self.leased.push(Leased {
            claim,
            event,
            attempt,
            again,
            text,
        });
    }

    /// Each claim's deliveries, oldest first (as `leased` is).
    fn deliveries(self) -> Vec<Vec<Delivery>> {
        let mut deliveries: Vec<Vec<Delivery>> = self.claims.iter().map(|_| Vec::new()).collect();
        for leased in self.leased {
            deliveries[leased.claim].push(Delivery {
                lease: leased.text,
                attempt: leased.attempt,
                event: leased.event,
            });
        }
        deliveries
    }

    /// The statements that write the claims' rows of leases and the waiting
    /// events, and take the events leased again out of
    /// `subscription_events`.
    fn writes<B: SqlBackend>(&self) -> Vec<Sql> {
        let mut writes = Vec::new();
        let again: Vec<i64> = self
            .leased
            .iter()
            .filter(|leased| leased.again)
            .map(|leased| leased.event.global_position)
            .collect();
        if !again.is_empty() {
            let mut sql = Sql::new("DELETE FROM subscription_events WHERE subscription = ");
            sql.bind(self.subscription)
                .push(" AND global_position IN ")
                .bind_list(&again);
            writes.push(sql);
        }
        let waiting: Vec<Unleased> = self.waiting.iter().map(|e| Unleased::due(e, 0)).collect();
        writes.extend(unleased_rows::<B>(self.subscription, &waiting));
        let mut rows = Vec::new();
        for (at, claimant) in self.claims.iter().enumerate() {
            let events: Vec<HeldEvent> = self
                .leased
                .iter()
                .filter(|leased| leased.claim == at)
                .map(Leased::held)
                .collect();
            if !events.is_empty() {
                rows.push(LeaseWrite::new(
                    claimant.token.clone(),
                    claimant.consumer.to_owned(),
                    claimant.expires,
                    &events,
                ));
            }
        }
        writes.extend(lease_rows::<B>(self.subscription, &rows, false));
        writes
    }

    /// The statement recording that the claims' consumers claimed at `now`.
    fn consumers_claimed(&self, now: i64) -> Option<Sql> {
        // One row each: an upsert may not touch a row twice.
        let consumers: BTreeSet<&str> = self.claims.iter().map(|c| c.consumer).collect();
        if consumers.is_empty() {
            return None;
        }
        let mut sql = Sql::new(
            "INSERT INTO subscription_consumers (subscription, consumer, last_claim) VALUES ",
        );
        for (i, consumer) in consumers.into_iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" })
                .bind(self.subscription)
                .push(", ")
                .bind(consumer)
                .push(", ")
                .bind(now)
                .push(")");
        }
        sql.push(
            " ON CONFLICT (subscription, consumer) DO UPDATE SET last_claim = excluded.last_claim",
        );
        Some(sql)
    }
}
