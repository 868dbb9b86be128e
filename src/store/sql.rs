//! SQL plumbing both backends share: a statement builder whose values travel
//! beside the text as typed binds, the runner each backend supplies for it,
//! and the mapping of database errors to [`StoreError`] by SQLSTATE and error
//! kind. Statements themselves live with their concern (`reads`, `snapshots`…).

use std::fmt::Write;
use std::future::Future;

use sqlx::Database;
use sqlx::error::ErrorKind;
use uuid::Uuid;

use super::error::StoreError;
use super::model::Budgeted;
use super::rows::{
    CheckpointRow, ConsumerRow, ErasableRow, EventKeyRow, EventRow, KeyRow, LeaseRow, ParkedRow,
    PolicyRow, PostedSnapshotRow, ReadyRow, SchemaRow, SnapshotRow, StreamRow, SubscriptionRow,
    TallyRow, TombstoneRow, TurnRow,
};

/// A value bound to a statement.
pub(crate) enum Bind {
    /// A 64-bit integer, or NULL.
    Int(Option<i64>),
    /// A string, or NULL.
    Text(Option<String>),
    /// A UUID.
    Uuid(Uuid),
}

impl Bind {
    /// The value as an SQL literal, for diagnostics that prepare statements
    /// by hand.
    pub fn literal(&self) -> String {
        match self {
            Bind::Int(None) | Bind::Text(None) => "NULL".to_owned(),
            Bind::Int(Some(value)) => value.to_string(),
            Bind::Text(Some(text)) => format!("'{}'", text.replace('\'', "''")),
            Bind::Uuid(uuid) => format!("'{uuid}'"),
        }
    }
}

impl From<i64> for Bind {
    fn from(value: i64) -> Self {
        Bind::Int(Some(value))
    }
}

impl From<Option<i64>> for Bind {
    fn from(value: Option<i64>) -> Self {
        Bind::Int(value)
    }
}

impl From<&str> for Bind {
    fn from(value: &str) -> Self {
        Bind::Text(Some(value.to_owned()))
    }
}

impl From<Option<&str>> for Bind {
    fn from(value: Option<&str>) -> Self {
        Bind::Text(value.map(str::to_owned))
    }
}

impl From<Uuid> for Bind {
    fn from(value: Uuid) -> Self {
        Bind::Uuid(value)
    }
}

/// A statement and the values bound to its placeholders. Placeholders are
/// written `$1`, `$2`…, which SQLite reads as parameters numbered in order of
/// appearance: the same thing.
#[derive(Default)]
pub(crate) struct Sql {
    /// The statement.
    pub text: String,
    /// Its values, in placeholder order.
    pub binds: Vec<Bind>,
}

impl Sql {
    /// A statement starting with `text`.
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for a value.
    pub fn bind(&mut self, value: impl Into<Bind>) -> &mut Self {
        self.binds.push(value.into());
        write!(self.text, "${}", self.binds.len()).expect("writing to a String cannot fail");
        self
    }

    /// Appends another statement, its placeholders numbered on from this
    /// one's. Every `$` followed by digits is taken for a placeholder, so
    /// the appended text must not hold one inside a literal (`'$.name'`,
    /// SQLite's JSON paths, is fine: no digit follows).
    pub fn append(&mut self, other: Sql) -> &mut Self {
        let offset = self.binds.len();
        let mut rest = other.text.as_str();
        while let Some(at) = rest.find('$') {
            self.text.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if let Ok(number) = rest[..digits].parse::<usize>() {
                write!(self.text, "{}", number + offset).expect("writing to a String cannot fail");
            }
            rest = &rest[digits..];
        }
        self.text.push_str(rest);
        self.binds.extend(other.binds);
        self
    }

    /// Appends `(…)` with a placeholder for each value.
    pub fn bind_list<T: Into<Bind> + Clone>(&mut self, values: &[T]) -> &mut Self {
        self.push("(");
        for (i, value) in values.iter().enumerate() {
            self.push(if i == 0 { "" } else { ", " })
                .bind(value.clone());
        }
        self.push(")")
    }
}

/// A database that can decode its rows as `R`.
pub(crate) trait DecodeRow<R>: Database {
    /// One row as `R`.
    fn decode(row: &Self::Row) -> Result<R, sqlx::Error>;
}

impl<DB: Database, R> DecodeRow<R> for DB
where
    R: for<'r> sqlx::FromRow<'r, DB::Row>,
{
    fn decode(row: &DB::Row) -> Result<R, sqlx::Error> {
        R::from_row(row)
    }
}

/// Runs [`Sql`] on one database. Written once for each by [`runner!`],
/// because sqlx's per-database encoders cannot be named generically without
/// bounds that would spread to every caller. The row types are listed here,
/// as supertraits, for the same reason: generic code can then decode them.
pub(crate) trait Runner:
    Database
    + DecodeRow<EventRow>
    + DecodeRow<SnapshotRow>
    + DecodeRow<StreamRow>
    + DecodeRow<CheckpointRow>
    + DecodeRow<KeyRow>
    + DecodeRow<SubscriptionRow>
    + DecodeRow<TurnRow>
    + DecodeRow<ReadyRow>
    + DecodeRow<LeaseRow>
    + DecodeRow<TallyRow>
    + DecodeRow<ConsumerRow>
    + DecodeRow<ParkedRow>
    + DecodeRow<SchemaRow>
    + DecodeRow<ErasableRow>
    + DecodeRow<PolicyRow>
    + DecodeRow<TombstoneRow>
    + DecodeRow<PostedSnapshotRow>
    + DecodeRow<EventKeyRow>
{
    /// Runs a query, decoding each row as `R`.
    fn fetch<R: Send>(
        conn: &mut Self::Connection,
        sql: Sql,
    ) -> impl Future<Output = Result<Vec<R>, StoreError>> + Send
    where
        Self: DecodeRow<R>;
    /// Runs a query, decoding each row as `R` and turning it into a `T`
    /// with `into`, until the `T`s' `size`s add up to `max_bytes` (the one
    /// that reaches it included): rows are read one by one, so a page of huge
    /// rows never needs more memory than that.
    fn fetch_within<R: Send, T: Send>(
        conn: &mut Self::Connection,
        sql: Sql,
        max_bytes: usize,
        into: fn(R) -> Result<T, StoreError>,
        size: fn(&T) -> usize,
    ) -> impl Future<Output = Result<Budgeted<T>, StoreError>> + Send
    where
        Self: DecodeRow<R>;
    /// Runs a query of one nullable integer column; the first row's value.
    fn fetch_int(
        conn: &mut Self::Connection,
        sql: Sql,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    /// Runs a statement; the number of rows it changed.
    fn execute(
        conn: &mut Self::Connection,
        sql: Sql,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Runs a query whose rows are single text columns, such as `EXPLAIN`'s.
    fn fetch_text(
        conn: &mut Self::Connection,
        sql: Sql,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// Implements [`Runner`] for a concrete sqlx database.
macro_rules! runner {
    ($db:ty) => {
        impl $crate::store::sql::Runner for $db {
            async fn fetch<R: Send>(
                conn: &mut <$db as sqlx::Database>::Connection,
                sql: $crate::store::sql::Sql,
            ) -> Result<Vec<R>, $crate::store::error::StoreError>
            where
                Self: $crate::store::sql::DecodeRow<R>,
            {
                let rows = sqlx::query_with(&sql.text, arguments(sql.binds)?)
                    .fetch_all(conn)
                    .await?;
                let decoded: Result<Vec<R>, sqlx::Error> = rows
                    .iter()
                    .map(<Self as $crate::store::sql::DecodeRow<R>>::decode)
                    .collect();
                Ok(decoded?)
            }

            async fn fetch_within<R: Send, T: Send>(
                conn: &mut <$db as sqlx::Database>::Connection,
                sql: $crate::store::sql::Sql,
                max_bytes: usize,
                into: fn(R) -> Result<T, $crate::store::error::StoreError>,
                size: fn(&T) -> usize,
            ) -> Result<$crate::store::model::Budgeted<T>, $crate::store::error::StoreError>
            where
                Self: $crate::store::sql::DecodeRow<R>,
            {
                use futures::TryStreamExt as _;
                let mut rows = sqlx::query_with(&sql.text, arguments(sql.binds)?).fetch(conn);
                let (mut items, mut bytes) = (Vec::new(), 0_usize);
                while let Some(row) = rows.try_next().await? {
                    let item = into(<Self as $crate::store::sql::DecodeRow<R>>::decode(&row)?)?;
                    bytes = bytes.saturating_add(size(&item));
                    items.push(item);
                    if bytes >= max_bytes {
                        // Cut only if a row follows: a page that ends the
                        // read must say so.
                        let cut = rows.try_next().await?.is_some();
                        return Ok($crate::store::model::Budgeted { items, cut });
                    }
                }
                Ok($crate::store::model::Budgeted { items, cut: false })
            }

            async fn fetch_int(
                conn: &mut <$db as sqlx::Database>::Connection,
                sql: $crate::store::sql::Sql,
            ) -> Result<Option<i64>, $crate::store::error::StoreError> {
                let row: Option<(Option<i64>,)> =
                    sqlx::query_as_with(&sql.text, arguments(sql.binds)?)
                        .fetch_optional(conn)
                        .await?;
                Ok(row.and_then(|(value,)| value))
            }

            async fn execute(
                conn: &mut <$db as sqlx::Database>::Connection,
                sql: $crate::store::sql::Sql,
            ) -> Result<u64, $crate::store::error::StoreError> {
                let query = sqlx::query_with(&sql.text, arguments(sql.binds)?);
                Ok(query.execute(conn).await?.rows_affected())
            }

            async fn fetch_text(
                conn: &mut <$db as sqlx::Database>::Connection,
                sql: $crate::store::sql::Sql,
            ) -> Result<Vec<String>, $crate::store::error::StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query_with(&sql.text, arguments(sql.binds)?)
                    .fetch_all(conn)
                    .await?;
                rows.iter()
                    .map(|row| row.try_get::<String, _>(row.len() - 1))
                    .collect::<Result<_, _>>()
                    .map_err(Into::into)
            }
        }

        /// The arguments of a [`Sql`](crate::store::sql::Sql) statement.
        fn arguments<'q>(
            binds: Vec<$crate::store::sql::Bind>,
        ) -> Result<<$db as sqlx::Database>::Arguments<'q>, $crate::store::error::StoreError> {
            use sqlx::Arguments as _;
            let mut arguments = <$db as sqlx::Database>::Arguments::default();
            for value in binds {
                match value {
                    $crate::store::sql::Bind::Int(value) => arguments.add(value),
                    $crate::store::sql::Bind::Text(value) => arguments.add(value),
                    $crate::store::sql::Bind::Uuid(value) => arguments.add(value),
                }
                .map_err(|e| $crate::store::error::StoreError::Internal(format!("binding: {e}")))?;
            }
            Ok(arguments)
        }
    };
}
pub(crate) use runner;

/// A failure to reach the database at all (no connection, no transaction),
/// whatever the database said: the store is unavailable.
pub(crate) fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let transient = match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                if db.kind() == ErrorKind::UniqueViolation {
                    let constraint = db.constraint().unwrap_or("a unique key");
                    return StoreError::Conflict(constraint.to_owned());
                }
                is_transient(db.as_ref())
            }
            _ => false,
        };
        if transient {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Internal(error.to_string())
        }
    }
}

/// Whether a database error means "try again later": Postgres classes 08
/// (connection), 53 (resources) and 57 (operator intervention) and a lock
/// wait timed out (55P03); SQLite BUSY and LOCKED (primary codes 5 and 6,
/// under any extended code).
fn is_transient(error: &dyn sqlx::error::DatabaseError) -> bool {
    let code = error.code().unwrap_or_default();
    if error
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return ["08", "53", "57", "55P03"]
            .iter()
            .any(|class| code.starts_with(class));
    }
    code.parse::<u32>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_appended_statement_numbers_its_placeholders_on() {
        let mut first = Sql::new("UPDATE t SET a = ");
        first.bind(1).push(" WHERE b = ").bind("x");
        let mut second = Sql::new("SELECT json_extract(value, '$.a'), ");
        second
            .bind(2)
            .push(", $")
            .bind(3)
            .push(" FROM u WHERE $ = $$");
        let mut joined = Sql::default();
        joined
            .push("WITH w AS (")
            .append(first)
            .push(") ")
            .append(second);
        assert_eq!(
            joined.text,
            "WITH w AS (UPDATE t SET a = $1 WHERE b = $2) \
             SELECT json_extract(value, '$.a'), $3, $$4 FROM u WHERE $ = $$"
        );
        let ints: Vec<Option<i64>> = joined
            .binds
            .iter()
            .map(|bind| match bind {
                Bind::Int(value) => *value,
                _ => None,
            })
            .collect();
        assert_eq!(ints, [Some(1), None, Some(2), Some(3)]);
    }
}
