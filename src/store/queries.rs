//! Reads by tags and types (API.md, Tags and consistency boundaries): the
//! events matching a query, in global order, each item of the query served
//! by an index (`event_tags (tag, global_position)` or `events_type`), so a
//! read costs what it matches, not what the store holds.

use async_trait::async_trait;

use super::backend::{SqlBackend, event_columns, fetch_events_within};
use super::error::StoreError;
use super::model::{Direction, EventQuery, QueryItem, QueryPage};
use super::reads::head;
use super::sql::{Runner, Sql};

/// Reading the events a query matches.
#[async_trait]
pub trait Queries: Send + Sync {
    /// A page of the events matching a query, with the log's head as it
    /// was when the page was read (one consistent snapshot).
    async fn read_query(&self, query: &EventQuery) -> Result<QueryPage, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Queries for B {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_query(&self, query: &EventQuery) -> Result<QueryPage, StoreError> {
        let mut tx = self.begin_read().await?;
        let head = B::Db::fetch_int(&mut tx, head()).await?.unwrap_or(0);
        let position = query.position.unwrap_or(match query.direction {
            Direction::Forward => 1,
            Direction::Backward => head,
        });
        let sql = matching_events::<B>(&query.items, position, query.direction, query.limit + 1);
        let events = fetch_events_within::<B>(&mut tx, sql, query.max_bytes).await?;
        tx.commit().await?;
        Ok(query.page(events, position, head))
    }
}

/// The events matching `items` from `position` on (inclusive) in
/// `direction`, at most `limit` of them.
pub(super) fn matching_events<B: SqlBackend>(
    items: &[QueryItem],
    position: i64,
    direction: Direction,
    limit: i64,
) -> Sql {
    let order = order_of(direction);
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE global_position IN (",
        event_columns::<B>()
    ));
    matching_positions(&mut sql, items, position, direction, limit);
    sql.push(&format!(") ORDER BY global_position {order} LIMIT "))
        .bind(limit);
    sql
}

/// The global position of the earliest event matching `query` above
/// `after`: what an append's condition checks.
pub(super) fn first_match(query: &[QueryItem], after: i64) -> Sql {
    let mut sql = Sql::new("SELECT min(global_position) FROM (");
    matching_positions(&mut sql, query, after + 1, Direction::Forward, 1);
    sql.push(") AS m");
    sql
}

/// Appends a query of the global positions matching `items` from
/// `position` on in `direction`, at most `limit`: the union of one
/// index-ordered, limited branch per item and type (`event_tags` by tag and
/// type, or `events_type` for an item of types only), whose first `limit`
/// positions are the answer's.
pub(super) fn matching_positions(
    sql: &mut Sql,
    items: &[QueryItem],
    position: i64,
    direction: Direction,
    limit: i64,
) {
    let (compare, order) = match direction {
        Direction::Forward => (">=", order_of(direction)),
        Direction::Backward => ("<=", order_of(direction)),
    };
    let mut branches = 0;
    for item in items {
        match item.tags.split_first() {
            Some((first, rest)) => {
                // One branch per type (or one for any type), each driven by
                // the index on (tag, type, global_position) of the first tag.
                let types: Vec<Option<&str>> = match item.types.is_empty() {
                    true => vec![None],
                    false => item.types.iter().map(|t| Some(t.as_str())).collect(),
                };
                for event_type in types {
                    open_branch(sql, &mut branches);
                    sql.push("SELECT t0.global_position FROM event_tags t0");
                    for (i, tag) in rest.iter().enumerate() {
                        let t = i + 1;
                        sql.push(&format!(
                            " JOIN event_tags t{t} ON t{t}.global_position = t0.global_position AND t{t}.tag = "
                        ))
                        .bind(tag.as_str());
                    }
                    sql.push(" WHERE t0.tag = ").bind(first.as_str());
                    if let Some(event_type) = event_type {
                        sql.push(" AND t0.type = ").bind(event_type);
                    }
                    sql.push(&format!(" AND t0.global_position {compare} "))
                        .bind(position);
                    sql.push(&format!(" ORDER BY t0.global_position {order} LIMIT "))
                        .bind(limit);
                    sql.push(&format!(") AS b{branches}"));
                }
            }
            None => {
                for event_type in &item.types {
                    open_branch(sql, &mut branches);
                    sql.push("SELECT global_position FROM events WHERE type = ")
                        .bind(event_type.as_str());
                    sql.push(&format!(" AND global_position {compare} "))
                        .bind(position);
                    sql.push(&format!(" ORDER BY global_position {order} LIMIT "))
                        .bind(limit);
                    sql.push(&format!(") AS b{branches}"));
                }
            }
        }
    }
}

/// Starts the next branch of a union: its own `SELECT` over a subquery
/// (ordered and limited, which a union member may only be as a subquery).
fn open_branch(sql: &mut Sql, branches: &mut usize) {
    sql.push(if *branches == 0 { "" } else { " UNION " });
    sql.push("SELECT global_position FROM (");
    *branches += 1;
}

/// The SQL order of a direction.
fn order_of(direction: Direction) -> &'static str {
    match direction {
        Direction::Forward => "ASC",
        Direction::Backward => "DESC",
    }
}

/// The read statements of this module, named, with typical arguments.
pub(super) fn statements<B: SqlBackend>() -> Vec<(&'static str, Sql)> {
    let tags = QueryItem {
        types: vec!["Subscribed".into()],
        tags: vec!["course:c1".into(), "student:s7".into()],
    };
    let types = QueryItem {
        types: vec!["Opened".into(), "Closed".into()],
        tags: vec![],
    };
    vec![
        (
            "query by tags and type",
            matching_events::<B>(std::slice::from_ref(&tags), 1, Direction::Forward, 101),
        ),
        (
            "query by types, backward",
            matching_events::<B>(
                &[types.clone(), tags.clone()],
                1000,
                Direction::Backward,
                101,
            ),
        ),
        (
            "query: a condition's first match",
            first_match(&[tags, types], 1000),
        ),
    ]
}
