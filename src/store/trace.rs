//! Causation tracing: the chain of causes above an event and the tree of
//! effects below it, bounded in depth and size.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use uuid::Uuid;

use super::backend::{SqlBackend, event_columns, fetch_events};
use super::error::StoreError;
use super::model::{RecordedEvent, Trace, TraceLimits};
use super::reads::event_by_id;
use super::sql::Sql;

/// Most ids in one `IN (…)` list.
const IN_LIST_CHUNK: usize = 500;

/// Following causation.
#[async_trait]
pub trait Traces: Send + Sync {
    /// The causes and effects of one event; `None` if it is unknown.
    async fn trace(&self, id: Uuid, limits: TraceLimits) -> Result<Option<Trace>, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Traces for B {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn trace(&self, id: Uuid, limits: TraceLimits) -> Result<Option<Trace>, StoreError> {
        let columns = event_columns::<B>();
        let mut tx = self.begin_read().await?;
        let Some(message) = fetch_events::<B>(&mut tx, event_by_id::<B>(id))
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let mut truncated = false;

        // Causes: nearest first from the database, cut at a cycle or the cap.
        let mut seen = HashSet::from([id]);
        let mut causes = Vec::new();
        for cause in
            fetch_events::<B>(&mut tx, self::causes(id, limits.max_depth, &columns)).await?
        {
            if causes.len() == limits.max_depth || !seen.insert(cause.id) {
                truncated = true;
                break;
            }
            causes.push(cause);
        }
        causes.reverse();

        // Effects: one level at a time through the causation index, nearest
        // levels first, so the caps keep the part closest to the message.
        let mut children: HashMap<Uuid, Vec<RecordedEvent>> = HashMap::new();
        let mut frontier = vec![id];
        let mut seen = HashSet::from([id]);
        let mut count = 0;
        'levels: for depth in 0..=limits.max_depth {
            let mut next = Vec::new();
            for chunk in frontier.chunks(IN_LIST_CHUNK) {
                // Never more rows than fit, plus one to tell that a cap is hit.
                let room = match depth == limits.max_depth {
                    true => 0,
                    false => limits.max_events - count,
                };
                let limit = room as i64 + 1;
                let found = fetch_events::<B>(&mut tx, effects::<B>(chunk, limit)).await?;
                let full = found.len() as i64 == limit;
                for effect in found {
                    if depth == limits.max_depth || count == limits.max_events {
                        truncated = true;
                        break 'levels;
                    }
                    if !seen.insert(effect.id) {
                        truncated = true; // a cycle
                        continue;
                    }
                    count += 1;
                    next.push(effect.id);
                    let parent = effect.causation_id.expect("selected by causation_id");
                    children.entry(parent).or_default().push(effect);
                }
                if full {
                    truncated = true;
                    break 'levels;
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        tx.commit().await?;
        Ok(Some(Trace {
            message,
            causes,
            effects_by_cause: children,
            truncated,
        }))
    }
}

/// Walks `causation_id` up from a message: its causes, nearest first, at most
/// `max_depth + 1` of them (one more than may be kept, to tell a cut chain).
/// A cause the store lacks ends the chain; a cycle repeats until the cap and
/// is cut by the caller.
pub(super) fn causes(message: Uuid, max_depth: usize, columns: &str) -> Sql {
    let mut sql = Sql::new(
        "WITH RECURSIVE chain(cause, depth) AS (\
         SELECT causation_id, 1 FROM events WHERE causation_id IS NOT NULL AND id = ",
    );
    sql.bind(message)
        .push(
            " UNION ALL SELECT e.causation_id, chain.depth + 1 FROM chain \
             JOIN events e ON e.id = chain.cause WHERE e.causation_id IS NOT NULL AND chain.depth <= ",
        )
        .bind(max_depth as i64)
        .push(&format!(
            ") SELECT {columns} FROM chain JOIN events ON events.id = chain.cause ORDER BY chain.depth"
        ));
    sql
}

/// The first `limit` events caused by any of `causes`, in global order.
pub(super) fn effects<B: SqlBackend>(causes: &[Uuid], limit: i64) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE causation_id IN ",
        event_columns::<B>()
    ));
    sql.bind_list(causes)
        .push(" ORDER BY global_position LIMIT ")
        .bind(limit);
    sql
}

/// The read statements of this module, named, with typical arguments.
pub(super) fn statements<B: SqlBackend>() -> Vec<(&'static str, Sql)> {
    vec![
        (
            "trace: causes",
            causes(Uuid::nil(), 1000, &event_columns::<B>()),
        ),
        (
            "trace: effects",
            effects::<B>(&[Uuid::nil(), Uuid::max()], 100),
        ),
    ]
}
