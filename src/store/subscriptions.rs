//! Managed subscriptions (API.md, Managed subscriptions): durable cursors over
//! a source whose events are leased to competing consumers.
//!
//! The state lives in two tables. `subscriptions.cursor` says how far the
//! source has been scanned; `subscription_events` holds every scanned event
//! not yet acknowledged: waiting, leased, waiting out a retry's backoff, or
//! parked. An acknowledgement deletes the row, so the table holds what is
//! unsettled, not what was ever delivered.
//!
//! Claims on one subscription take turns: each turn locks its subscription's
//! row (`FOR UPDATE` on Postgres; SQLite's one write lock), so two turns, on
//! one instance or two, never lease one event twice. A turn serves every
//! claim waiting for it (the dispatcher gathers them), so consumers share
//! its cost. Settlements match a row by position *and* lease token: a lease
//! that expired and was taken by another consumer no longer matches, and is
//! reported stale. Leases are signed with the subscription's own key, so one
//! it never issued (forged, or another subscription's) is refused rather than
//! called stale.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::backend::{Conn, SqlBackend, connection, event_columns, fetch_events, now_micros};
use super::error::{StoreError, SubscriptionError};
use super::model::{
    Claim, ConsumerState, Creation, Delivery, DeliveryOrder, ParkedEvent, ParkedPage, QueryItem,
    RecordedEvent, Settled, Settlement, Source, StartAt, SubscriptionDefinition, SubscriptionState,
};
use super::queries::matching_positions;
use super::reads::head;
use super::rows::{
    ConsumerRow, ParkedRow, ReadyRow, SubscriptionRow, TallyRow, TurnRow, from_micros,
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
    /// leases in one transaction; what each request settled, in order (a
    /// lease two requests name counts for the first). A request naming a
    /// lease the subscription never issued is refused alone.
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
        for table in ["subscription_events", "subscription_consumers"] {
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

        // Events delivered before (or held back behind their stream) first,
        // then new ones from the source.
        let mut plan = ClaimPlan::new(name, &row.lease_key, claims, &definition, now);
        let ready = ready_now::<B>(&mut tx, name, &definition, now, plan.wanted()).await?;
        let mut events = Vec::with_capacity(plan.wanted());
        for ready in ready {
            let event = RecordedEvent::try_from(ready.event)?;
            plan.lease(event.global_position, ready.attempt + 1, None);
            events.push(event);
        }
        let cursor = scan_source::<B>(&mut tx, &turn, &definition, &mut plan, &mut events).await?;
        let deliveries = plan.deliveries(events);
        plan.write::<B>(&mut tx).await?;
        if cursor != row.cursor {
            let mut sql = Sql::new("UPDATE subscriptions SET cursor = ");
            sql.bind(cursor).push(" WHERE name = ").bind(name);
            B::Db::execute(&mut tx, sql).await?;
        }
        plan.write_consumers::<B>(&mut tx, now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(deliveries)
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
        let held: Vec<&LeaseId> = verified.iter().flatten().flatten().collect();
        drop(conn);
        let mut done = match held.is_empty() {
            true => HashSet::new(),
            false => settle_leases::<B>(self, &row, &held, settlement).await?,
        };
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
        let mut sql = Sql::new("SELECT count(*) FROM subscription_events WHERE subscription = ");
        sql.bind(name)
            .push(" AND consumer = ")
            .bind(consumer)
            .push(" AND parked_at IS NULL AND lease_expires > ")
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

/// A definition as stored.
fn to_json(definition: &SubscriptionDefinition) -> String {
    serde_json::to_string(definition).expect("a definition serialises")
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
    let mut sql = Sql::new(
        "SELECT min(CASE WHEN parked_at IS NULL THEN global_position END) AS first_unsettled, \
         sum(CASE WHEN parked_at IS NULL AND lease_expires > ",
    );
    sql.bind(now)
        .push(
            " THEN 1 ELSE 0 END) AS in_flight, \
             sum(CASE WHEN parked_at IS NOT NULL THEN 1 ELSE 0 END) AS parked \
             FROM subscription_events WHERE subscription = ",
        )
        .bind(row.name.as_str());
    let tally: Option<TallyRow> = B::Db::fetch(conn, sql).await?.pop();
    let tally = tally.unwrap_or(TallyRow {
        first_unsettled: None,
        in_flight: None,
        parked: None,
    });
    let position = tally
        .first_unsettled
        .map_or(row.cursor, |first| (first - 1).min(row.cursor));
    let head = B::Db::fetch_int(conn, head()).await?.unwrap_or(0);
    let lag = B::Db::fetch_int(conn, source_count::<B>(&definition, position))
        .await?
        .unwrap_or(0);
    let mut sql = Sql::new(
        "SELECT c.consumer, c.last_claim, (SELECT count(*) FROM subscription_events s \
         WHERE s.subscription = c.subscription AND s.consumer = c.consumer \
         AND s.parked_at IS NULL AND s.lease_expires > ",
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

/// Parks the events at `positions`, whose leases ran out after their last
/// allowed delivery.
async fn park_exhausted<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
    definition: &SubscriptionDefinition,
    positions: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    let reason = format!(
        "not acknowledged within ack_timeout_ms ({}) after {} deliveries",
        definition.ack_timeout_ms, definition.max_deliveries
    );
    let mut sql = Sql::new("UPDATE subscription_events SET parked_at = ");
    sql.bind(now)
        .push(", reason = ")
        .bind(reason.as_str())
        .push(
            ", lease = NULL, consumer = NULL, lease_expires = NULL \
             WHERE subscription = ",
        )
        .bind(name)
        .push(" AND global_position IN ")
        .bind_list(positions);
    B::Db::execute(conn, sql).await?;
    Ok(())
}

/// The unsettled events that may be delivered now (at most `max`), their
/// rows locked. Those whose lease ran out after their last allowed delivery
/// are parked instead (a statement only when there are any), and then the
/// query runs once more: their streams' next events may be ready now.
async fn ready_now<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
    definition: &SubscriptionDefinition,
    now: i64,
    max: usize,
) -> Result<Vec<ReadyRow>, StoreError> {
    let max_deliveries = i64::from(definition.max_deliveries);
    let mut pass = 0;
    loop {
        let found: Vec<ReadyRow> =
            B::Db::fetch(conn, ready_to_deliver::<B>(name, definition, now, max)).await?;
        let (exhausted, ready): (Vec<ReadyRow>, Vec<ReadyRow>) = found
            .into_iter()
            .partition(|ready| ready.attempt >= max_deliveries);
        if !exhausted.is_empty() {
            let positions: Vec<i64> = exhausted.iter().map(ReadyRow::global_position).collect();
            park_exhausted::<B>(conn, name, definition, &positions, now).await?;
        }
        pass += 1;
        if exhausted.is_empty() || pass == 2 {
            return Ok(ready);
        }
    }
}

/// A subscription's row, locked until the transaction ends (SQLite's write
/// transactions hold the whole store already), with the head of the log and
/// its earliest unsettled event: a turn's first round trip. (Those two are
/// read as the statement began, before any wait for the lock: an older head
/// only bounds the scan lower, an older earliest event only the count of
/// unsettled ones, by a turn's worth.)
async fn lock_for_turn<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
) -> Result<Option<TurnRow>, StoreError> {
    let mut sql = Sql::new(&format!(
        "{SUBSCRIPTION_SELECT}, (SELECT max(global_position) FROM events) AS head, \
         (SELECT min(global_position) FROM subscription_events e \
         WHERE e.subscription = subscriptions.name AND e.parked_at IS NULL) AS first_unsettled \
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
    let Some(first) = turn.first_unsettled else {
        return Ok(false);
    };
    if turn.subscription.cursor - first + 1 < MAX_UNSETTLED {
        return Ok(false);
    }
    let mut sql = Sql::new(
        "SELECT count(*) FROM (SELECT 1 FROM subscription_events \
         WHERE subscription = ",
    );
    sql.bind(turn.subscription.name.as_str())
        .push(" AND parked_at IS NULL LIMIT ")
        .bind(MAX_UNSETTLED)
        .push(") AS bounded");
    Ok(B::Db::fetch_int(conn, sql).await?.unwrap_or(0) >= MAX_UNSETTLED)
}

/// Unsettled events that may be delivered now, oldest first, with their
/// events: not parked, not leased (or their lease ran out), past their
/// backoff, and, with ordering by stream, the earliest unsettled event of
/// their stream whose stream has nothing in flight.
fn ready_to_deliver<B: SqlBackend>(
    name: &str,
    definition: &SubscriptionDefinition,
    now: i64,
    max: usize,
) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {}, r.attempt FROM events JOIN (SELECT global_position AS ready, attempt \
         FROM subscription_events s WHERE subscription = ",
        event_columns::<B>()
    ));
    sql.bind(name)
        .push(" AND parked_at IS NULL AND available_at <= ")
        .bind(now)
        .push(" AND (lease_expires IS NULL OR lease_expires <= ")
        .bind(now)
        .push(")");
    if definition.ordering == DeliveryOrder::Stream {
        // An earlier unsettled event of the stream is either in flight or
        // itself waiting; a later one in flight came first (this one was
        // parked, then replayed): either way this one waits.
        sql.push(
            " AND NOT EXISTS (SELECT 1 FROM subscription_events o \
             WHERE o.subscription = s.subscription AND o.stream = s.stream \
             AND o.parked_at IS NULL AND o.global_position < s.global_position) \
             AND NOT EXISTS (SELECT 1 FROM subscription_events o \
             WHERE o.subscription = s.subscription AND o.stream = s.stream \
             AND o.global_position > s.global_position AND o.lease_expires > ",
        )
        .bind(now)
        .push(")");
    }
    // Locked: a late settlement of the lease that ran out then waits for
    // this turn, and finds the lease it names gone.
    sql.push(" ORDER BY global_position LIMIT ")
        .bind(max as i64)
        .push(B::LOCK_ROWS)
        .push(") r ON events.global_position = r.ready ORDER BY global_position");
    sql
}

/// Scans the source after the cursor for new events to lease, until the
/// claims have all they want, the source is exhausted, or the scan's bound;
/// the new cursor. With ordering by stream, an event whose stream has an
/// unsettled event is recorded to wait its turn.
async fn scan_source<B: SqlBackend>(
    conn: &mut Conn<B>,
    turn: &TurnRow,
    definition: &SubscriptionDefinition,
    plan: &mut ClaimPlan<'_>,
    events: &mut Vec<RecordedEvent>,
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
    let mut busy: HashSet<String> = HashSet::new();
    while plan.wanted() > 0 && scanned < SCAN_PER_TURN && cursor < head {
        let chunk = match ordered {
            true => plan.wanted().max(100),
            false => plan.wanted(),
        }
        .min(SCAN_PER_TURN - scanned);
        let found =
            fetch_events::<B>(conn, source_events::<B>(definition, cursor, head, chunk)).await?;
        let exhausted = found.len() < chunk;
        if ordered {
            busy.extend(busy_streams::<B>(conn, &row.name, &found).await?);
        }
        for event in found {
            if plan.wanted() == 0 {
                break;
            }
            scanned += 1;
            cursor = event.global_position;
            if ordered && !busy.insert(event.stream.clone()) {
                plan.wait(event.global_position, &event.stream);
                continue;
            }
            plan.lease(event.global_position, 1, Some(&event.stream));
            events.push(event);
        }
        if exhausted && plan.wanted() > 0 {
            cursor = head;
            break;
        }
    }
    Ok(cursor)
}

/// The streams among `events`' that have an unsettled event already.
async fn busy_streams<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
    events: &[RecordedEvent],
) -> Result<HashSet<String>, StoreError> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let streams: HashSet<&str> = events.iter().map(|e| e.stream.as_str()).collect();
    let streams: Vec<&str> = streams.into_iter().collect();
    let mut sql = Sql::new("SELECT DISTINCT stream FROM subscription_events WHERE subscription = ");
    sql.bind(name)
        .push(" AND parked_at IS NULL AND stream IN ")
        .bind_list(&streams);
    Ok(B::Db::fetch_text(conn, sql).await?.into_iter().collect())
}

/// Events by global position, in global order.
fn events_at<B: SqlBackend>(positions: &[i64]) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE global_position IN ",
        event_columns::<B>()
    ));
    sql.bind_list(positions).push(" ORDER BY global_position");
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

/// Appends the match of rows still held under `leases`.
fn match_leases(sql: &mut Sql, name: &str, leases: &[&LeaseId]) {
    // A stored lease names its event, so matching the stored leases alone is
    // exact; the positions let the primary key find the rows. (Pairs in a
    // `VALUES` list were compared each with each: quadratic in the leases.)
    let positions: Vec<i64> = leases.iter().map(|lease| lease.position).collect();
    let stored: Vec<String> = leases.iter().map(|lease| lease.stored()).collect();
    let stored: Vec<&str> = stored.iter().map(String::as_str).collect();
    sql.push("subscription = ")
        .bind(name)
        .push(" AND parked_at IS NULL AND lease_expires IS NOT NULL AND global_position IN ")
        .bind_list(&positions)
        .push(" AND lease IN ")
        .bind_list(&stored);
}

/// Parks the events still held under `leases`.
fn park_leases(name: &str, leases: &[&LeaseId], now: i64, reason: &str) -> Sql {
    let mut sql = Sql::new("UPDATE subscription_events SET parked_at = ");
    sql.bind(now)
        .push(", reason = ")
        .bind(reason)
        .push(", lease = NULL, consumer = NULL, lease_expires = NULL WHERE ");
    match_leases(&mut sql, name, leases);
    sql
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
    let mut tx = backend.begin_write().await?;
    let held: HashSet<String> = match settlement {
        Settlement::Ack => {
            let mut sql = Sql::new("DELETE FROM subscription_events WHERE ");
            match_leases(&mut sql, name, leases);
            sql.push(" RETURNING lease");
            B::Db::fetch_text(&mut tx, sql).await?.into_iter().collect()
        }
        // An update returns the lease it cleared as NULL: the rows still
        // held are read (and locked) first.
        Settlement::Retry { delay, reason } => {
            let held = still_held::<B>(&mut tx, name, leases).await?;
            let definition = parse_definition(row)?;
            let available = now.saturating_add(delay.as_micros().try_into().unwrap_or(i64::MAX));
            let mut sql = Sql::new(
                "UPDATE subscription_events SET lease = NULL, consumer = NULL, \
                 lease_expires = NULL, available_at = ",
            );
            sql.bind(available).push(" WHERE attempt < ");
            sql.bind(i64::from(definition.max_deliveries)).push(" AND ");
            match_leases(&mut sql, name, leases);
            B::Db::execute(&mut tx, sql).await?;
            // The rest of those still held have had all their deliveries.
            B::Db::execute(&mut tx, park_leases(name, leases, now, reason)).await?;
            held
        }
        Settlement::Park { reason } => {
            let held = still_held::<B>(&mut tx, name, leases).await?;
            B::Db::execute(&mut tx, park_leases(name, leases, now, reason)).await?;
            held
        }
    };
    tx.commit().await.map_err(StoreError::from)?;
    Ok(held)
}

/// The leases (as stored) among `leases` still held, their rows locked
/// until the transaction ends.
async fn still_held<B: SqlBackend>(
    conn: &mut Conn<B>,
    name: &str,
    leases: &[&LeaseId],
) -> Result<HashSet<String>, StoreError> {
    let mut sql = Sql::new("SELECT lease FROM subscription_events WHERE ");
    match_leases(&mut sql, name, leases);
    sql.push(B::LOCK_ROWS);
    Ok(B::Db::fetch_text(conn, sql).await?.into_iter().collect())
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
    /// A token for the leases of one turn: an event is leased at most once
    /// in a turn, so the token tells its lease from its earlier and later ones.
    fn new_token() -> String {
        let mut token = [0u8; 9];
        getrandom::fill(&mut token).expect("the operating system provides randomness");
        URL_SAFE_NO_PAD.encode(token)
    }

    /// A new lease on the event at `position` under `token`, and its text.
    fn issue(subscription: &str, key: &str, position: i64, token: &str) -> (LeaseId, String) {
        let lease = LeaseId {
            position,
            token: token.to_owned(),
        };
        let text = format!(
            "{position}.{}.{}",
            lease.token,
            lease.signature(subscription, key)
        );
        (lease, text)
    }

    /// The lease as `subscription_events.lease` keeps it: with its
    /// position, so that no other event's row can match it.
    fn stored(&self) -> String {
        format!("{}.{}", self.position, self.token)
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

/// The rows a turn of claims writes: leases on events, and events that wait
/// behind their streams' earlier ones.
struct ClaimPlan<'a> {
    subscription: &'a str,
    key: &'a str,
    /// The turn's lease token.
    token: String,
    /// The claims served, in order.
    claims: Vec<Claimant<'a>>,
    /// Leased events, oldest first: the ones delivered before (rows at or
    /// before the cursor, in order), then new ones (after it, in order).
    leased: Vec<Leased>,
    /// New events that wait: position, stream.
    waiting: Vec<(i64, String)>,
}

/// A claim as a turn serves it.
struct Claimant<'a> {
    consumer: &'a str,
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
    position: i64,
    /// Its stream, when the claim makes its row.
    stream: Option<String>,
    attempt: i64,
    lease: LeaseId,
    text: String,
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
            token: LeaseId::new_token(),
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
    /// `stream` for a newly scanned event, whose row the turn makes.
    fn lease(&mut self, position: i64, attempt: i64, stream: Option<&str>) {
        let Some(claim) = self.claims.iter().position(|c| c.leased < c.max) else {
            return;
        };
        self.claims[claim].leased += 1;
        let (lease, text) = LeaseId::issue(self.subscription, self.key, position, &self.token);
        self.leased.push(Leased {
            claim,
            position,
            stream: stream.map(str::to_owned),
            attempt,
            lease,
            text,
        });
    }

    /// Records a newly scanned event that waits its turn.
    fn wait(&mut self, position: i64, stream: &str) {
        self.waiting.push((position, stream.to_owned()));
    }

    /// Each claim's deliveries, oldest first, given the leased events (in
    /// any order).
    fn deliveries(&self, mut events: Vec<RecordedEvent>) -> Vec<Vec<Delivery>> {
        events.sort_by_key(|e| e.global_position);
        let mut deliveries: Vec<Vec<Delivery>> = self.claims.iter().map(|_| Vec::new()).collect();
        // An event erased since it was scanned is skipped.
        for leased in &self.leased {
            if let Ok(at) = events.binary_search_by_key(&leased.position, |e| e.global_position) {
                deliveries[leased.claim].push(Delivery {
                    lease: leased.text.clone(),
                    attempt: leased.attempt,
                    event: events[at].clone(),
                });
            }
        }
        // `leased` is oldest first, so each claim's list is too.
        deliveries
    }

    /// Writes the leases and the waiting events: rows for new events
    /// inserted, rows of events delivered before updated.
    async fn write<B: SqlBackend>(&self, conn: &mut Conn<B>) -> Result<(), StoreError> {
        let mut new = Vec::new();
        let mut again = Vec::new();
        for leased in &self.leased {
            let claimant = &self.claims[leased.claim];
            let row = RowWrite {
                global_position: leased.position,
                stream: leased.stream.as_deref().unwrap_or(""),
                attempt: leased.attempt,
                lease: Some(leased.lease.stored()),
                consumer: Some(claimant.consumer),
                lease_expires: Some(claimant.expires),
            };
            match leased.stream {
                Some(_) => new.push(row),
                None => again.push(row),
            }
        }
        new.extend(self.waiting.iter().map(|(position, stream)| RowWrite {
            global_position: *position,
            stream,
            attempt: 0,
            lease: None,
            consumer: None,
            lease_expires: None,
        }));
        // Past the cursor, which only moves under the subscription's lock,
        // no row of a new event exists yet: a plain insert. Rows delivered
        // before are found by their key, one by one (an `UPDATE … FROM` lets
        // SQLite scan the JSON once for every row of the subscription).
        for (rows, upsert) in [(new, false), (again, true)] {
            if rows.is_empty() {
                continue;
            }
            let mut sql = Sql::new(
                "INSERT INTO subscription_events (subscription, global_position, stream, \
                 attempt, lease, consumer, lease_expires, available_at) SELECT ",
            );
            sql.bind(self.subscription).push(
                ", r.global_position, r.stream, r.attempt, r.lease, r.consumer, \
                 r.lease_expires, 0 FROM ",
            );
            B::json_rows(&mut sql, to_json_rows(&rows), RowWrite::COLUMNS);
            if upsert {
                // `WHERE true` tells SQLite's parser the `ON` is no join's.
                sql.push(
                    " WHERE true ON CONFLICT (subscription, global_position) DO UPDATE SET \
                     attempt = excluded.attempt, lease = excluded.lease, \
                     consumer = excluded.consumer, lease_expires = excluded.lease_expires",
                );
            }
            B::Db::execute(conn, sql).await?;
        }
        Ok(())
    }

    /// Records that the claims' consumers claimed at `now`.
    async fn write_consumers<B: SqlBackend>(
        &self,
        conn: &mut Conn<B>,
        now: i64,
    ) -> Result<(), StoreError> {
        // One row each: an upsert may not touch a row twice.
        let consumers: BTreeSet<&str> = self.claims.iter().map(|c| c.consumer).collect();
        if consumers.is_empty() {
            return Ok(());
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
        B::Db::execute(conn, sql).await?;
        Ok(())
    }
}

/// A row of `subscription_events` as a claim writes it.
#[derive(serde::Serialize)]
struct RowWrite<'a> {
    global_position: i64,
    stream: &'a str,
    attempt: i64,
    lease: Option<String>,
    consumer: Option<&'a str>,
    lease_expires: Option<i64>,
}

impl RowWrite<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("global_position", "bigint"),
        ("stream", "text"),
        ("attempt", "bigint"),
        ("lease", "text"),
        ("consumer", "text"),
        ("lease_expires", "bigint"),
    ];
}

/// Rows as the JSON array [`SqlBackend::json_rows`] reads.
fn to_json_rows(rows: &[RowWrite<'_>]) -> String {
    serde_json::to_string(rows).expect("rows serialise")
}
