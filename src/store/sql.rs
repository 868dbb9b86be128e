//! SQL that both backends speak alike: the global-order read is built here
//! once, and each backend only runs it.

use std::fmt::Write;

use async_trait::async_trait;

use super::{GlobalPage, GlobalQuery, RecordedEvent, Scope, StoreError, scan_window};

/// A value bound to a statement.
pub(crate) enum Bind {
    /// A 64-bit integer.
    Int(i64),
    /// A string.
    Text(String),
}

/// A statement with `$1`, `$2`… placeholders (SQLite reads them as named
/// parameters numbered in order of appearance, which is the same thing) and
/// the values bound to them.
#[derive(Default)]
pub(crate) struct Sql {
    /// The statement.
    pub text: String,
    /// Its values, in placeholder order.
    pub binds: Vec<Bind>,
}

impl Sql {
    /// Appends SQL text.
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for a value.
    fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        write!(self.text, "${}", self.binds.len()).expect("writing to a String cannot fail");
        self
    }
}

/// What a backend does to run the shared SQL.
#[async_trait]
pub(crate) trait RunSql: Sync {
    /// The select list of an event, in the shape `EventRow` reads.
    const EVENT_COLUMNS: &'static str;
    /// Runs a query of one `bigint` column; its first row, if any.
    async fn fetch_position(&self, sql: Sql) -> Result<Option<i64>, StoreError>;
    /// Runs a query of events.
    async fn fetch_events(&self, sql: Sql) -> Result<Vec<RecordedEvent>, StoreError>;
}

/// Starts a `SELECT … FROM events` with the scope of a global read.
fn scoped(columns: &str, query: &GlobalQuery) -> Sql {
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT {columns} FROM events WHERE global_position >= "
    ))
    .bind(Bind::Int(query.position));
    if let Scope::Category(category) = &query.scope {
        sql.push(" AND category = ")
            .bind(Bind::Text(category.clone()));
    }
    sql
}

/// Reads a category or the whole log in global order. A filtered read looks
/// at a bounded window of the log (see [`scan_window`]), so a rare filter
/// costs one short page, not a scan of the whole store.
pub(crate) async fn read_global<R: RunSql>(
    runner: &R,
    query: &GlobalQuery,
) -> Result<GlobalPage, StoreError> {
    let window_end = if query.filter.is_empty() {
        None
    } else {
        let mut sql = scoped("global_position", query);
        sql.push(" ORDER BY global_position LIMIT 1 OFFSET ")
            .bind(Bind::Int(scan_window(query.limit)));
        runner.fetch_position(sql).await?
    };
    let mut sql = scoped(R::EVENT_COLUMNS, query);
    let filter = &query.filter;
    if !filter.types.is_empty() {
        sql.push(" AND type IN (");
        for (i, event_type) in filter.types.iter().enumerate() {
            sql.push(if i == 0 { "" } else { ", " })
                .bind(Bind::Text(event_type.clone()));
        }
        sql.push(")");
    }
    if let Some(correlation_id) = &filter.correlation_id {
        sql.push(" AND correlation_id = ")
            .bind(Bind::Text(correlation_id.clone()));
    }
    if let Some((member, size)) = filter.consumer_group {
        // |hash| mod size, written so that it cannot overflow.
        sql.push(" AND abs(cardinal_hash % ")
            .bind(Bind::Int(size))
            .push(") = ")
            .bind(Bind::Int(member));
    }
    if let Some(end) = window_end {
        sql.push(" AND global_position < ").bind(Bind::Int(end));
    }
    sql.push(" ORDER BY global_position LIMIT ")
        .bind(Bind::Int(query.limit + 1));
    Ok(query.page(runner.fetch_events(sql).await?, window_end))
}
