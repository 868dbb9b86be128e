//! Every read is served by an index, so it costs in proportion to the page it
//! returns, not to the size of the store (issue 2, rule 5), and stays so as
//! a store grows from empty without a restart (issue 8).

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use crate::common::{TestApp, backend_tests};

backend_tests!(every_read_is_served_by_an_index);

/// The database's plans, with full scans discouraged, show every table reached
/// through an index with a condition (Postgres: each index scan has an `Index
/// Cond`; SQLite: tables are searched, never scanned) and, outside traces
/// (which gather one level of effects at a time), no sort of everything that
/// matched before the limit applies.
async fn every_read_is_served_by_an_index(app: TestApp) {
    let plans = app.store.query_plans().await.unwrap();
    assert!(plans.len() >= 19, "{plans:?}");
    for (name, plan) in plans {
        assert_served_by_index(name, &plan);
    }
}

/// Rows the grown tables hold: far more than any page reads.
const GROWN: i64 = 50_000;

/// Postgres keeps a generic plan for a prepared statement after five runs. On
/// a connection with the store's own session settings, every read statement
/// is prepared and run six times on the empty store, the tables then grow
/// (with autovacuum off, so no new statistics come to the rescue), and each
/// prepared statement must still be served by an index. SQLite has no such
/// cache: it plans by the schema and by `ANALYZE` results, and re-prepares a
/// statement whenever either changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_made_on_an_empty_store_still_use_indexes_once_it_has_grown() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let options = cairn::store::postgres::session_options(&app.database_url).unwrap();
    let mut conn = connect_without_autovacuum(&options).await;
    let statements = app.store.read_statements();
    assert!(statements.len() >= 19, "{statements:?}");
    for (i, statement) in statements.iter().enumerate() {
        let prepare = format!("PREPARE s{i} AS {}", statement.text);
        conn.execute(prepare.as_str()).await.unwrap();
        for _ in 0..6 {
            conn.execute(execute(i, &statement.arguments).as_str())
                .await
                .unwrap();
        }
    }
    grow(&mut conn).await;
    for (i, statement) in statements.iter().enumerate() {
        let explain = format!("EXPLAIN {}", execute(i, &statement.arguments));
        let plan: Vec<String> = sqlx::query_scalar(&explain)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_served_by_index(statement.name, &plan);
    }
}

/// The writer plans its lookup of a batch's state once, generically, with
/// sequential scans off: made on an empty store, that plan must still look
/// streams and ids up by index once the store has grown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_plan_made_on_an_empty_store_uses_indexes_once_it_has_grown() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let options = cairn::store::postgres::writer_options(&app.database_url).unwrap();
    let mut conn = connect_without_autovacuum(&options).await;
    let prepare = format!(
        "PREPARE load(text[], uuid[], text[]) AS {}",
        cairn::store::postgres::LOAD_BATCH_STATE
    );
    conn.execute(prepare.as_str()).await.unwrap();
    let execute = "EXECUTE load('{s-1,s-2}', '{00000000-0000-0000-0000-000000000001}', '{Placed}')";
    for _ in 0..6 {
        conn.execute(execute).await.unwrap();
    }
    grow(&mut conn).await;
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {execute}"))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let text = plan.join("\n");
    assert!(!text.contains("Seq Scan"), "{text}");
    assert!(text.contains("Index Cond: (stream = ANY ($1))"), "{text}");
    assert!(text.contains("Index Cond: (id = ANY ($2))"), "{text}");
}

/// A connection with the given settings to a store whose tables will not be
/// analysed behind the test's back.
async fn connect_without_autovacuum(options: &PgConnectOptions) -> PgConnection {
    let mut conn = PgConnection::connect_with(options).await.unwrap();
    for table in ["events", "streams", "snapshots", "checkpoints"] {
        let off = format!("ALTER TABLE {table} SET (autovacuum_enabled = off)");
        conn.execute(off.as_str()).await.unwrap();
    }
    conn
}

/// Grows every table to [`GROWN`] rows.
async fn grow(conn: &mut PgConnection) {
    let sql = format!(
        "INSERT INTO events SELECT g, gen_random_uuid(), 's-' || g, 0, 'c', g, 'A', '{{}}', \
         NULL, gen_random_uuid(), 'c' || g, now() FROM generate_series(1, {GROWN}) AS g; \
         INSERT INTO streams SELECT 's-' || g, 0, now() FROM generate_series(1, {GROWN}) AS g; \
         INSERT INTO event_tags SELECT 'course:c' || (g % 100), 'A', g FROM generate_series(1, {GROWN}) AS g; \
         INSERT INTO snapshots (stream, version, state, time) \
         SELECT 's-' || g, 0, '{{}}', 0 FROM generate_series(1, {GROWN}) AS g; \
         INSERT INTO checkpoints SELECT 'w-' || g, g, 0 FROM generate_series(1, {GROWN}) AS g"
    );
    conn.execute(sql.as_str()).await.unwrap();
}

/// `EXECUTE s{i}(arguments…)`.
fn execute(i: usize, arguments: &[String]) -> String {
    match arguments.is_empty() {
        true => format!("EXECUTE s{i}"),
        false => format!("EXECUTE s{i}({})", arguments.join(", ")),
    }
}

/// Every table in the plan is reached through an index with a condition, by
/// the index the read needs, and (outside traces, which gather one level of
/// effects at a time) in the order of the read: nothing that matched is
/// gathered and sorted before the limit applies.
fn assert_served_by_index(name: &str, plan: &[String]) {
    let text = plan.join("\n");
    let tables = [
        "events",
        "event_tags",
        "streams",
        "snapshots",
        "checkpoints",
        "event_schemas",
        "log_head",
        "tombstones",
        "retention_policies",
    ];
    let sqlite_scan = plan.iter().any(|line| {
        tables
            .iter()
            .any(|table| line.trim_start().starts_with(&format!("SCAN {table}")))
    });
    let on_table = |line: &&String| {
        tables
            .iter()
            .any(|table| line.contains(&format!(" on {table}")))
    };
    let scans = plan
        .iter()
        .filter(|line| line.contains(" Scan"))
        .filter(on_table)
        .count();
    let bounded = plan
        .iter()
        .filter(|line| line.contains("Index Cond:"))
        .count();
    assert!(
        !sqlite_scan && !text.contains("Seq Scan") && scans == bounded,
        "{name} scans a whole table:\n{text}"
    );
    let leading = leading_columns(plan);
    assert!(
        leading
            .iter()
            .any(|column| expected_index(name).contains(&column.as_str())),
        "{name} is not served by the index it needs ({leading:?}):\n{text}"
    );
    // A trace gathers one level of effects at a time; a query sorts the
    // union of its items' first pages (each at most a page long).
    if !name.starts_with("trace") && !name.starts_with("query") {
        let sorts = plan
            .iter()
            .any(|line| line.contains("Sort") || line.contains("TEMP B-TREE"));
        assert!(!sorts, "{name} sorts what it matched:\n{text}");
    }
}

/// The column each index lookup of a plan starts with (Postgres `Index Cond:`,
/// SQLite `SEARCH … (column=?…)`); empty for SQLite's one-step `max()` seek.
fn leading_columns(plan: &[String]) -> Vec<String> {
    plan.iter()
        .filter_map(|line| match line.split_once("Index Cond: ") {
            Some((_, condition)) => Some(condition),
            None => line.trim_start().strip_prefix("SEARCH "),
        })
        .map(|condition| {
            let from = condition.find('(').map_or(condition.len(), |i| i + 1);
            let column = condition[from..].trim_start_matches('(');
            column
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The leading index columns that can serve a read in proportion to its page.
fn expected_index(name: &str) -> &'static [&'static str] {
    match name {
        "event by id" | "trace: causes" => &["id"],
        "trace: effects" => &["causation_id"],
        "all" | "all: window" | "export: events" | "import: event keys" => {
            &["global_position", "rowid"]
        }
        "import: events by id" => &["id"],
        "head" => &["global_position", "singleton", ""],
        "all filtered" => &["global_position", "rowid", "correlation_id"],
        "category" | "category: window" => &["category"],
        "category filtered" => &["category", "correlation_id"],
        "correlation" => &["correlation_id"],
        "checkpoint" => &["consumer"],
        name if name.starts_with("schema") => &["type"],
        name if name.starts_with("query") => &["tag", "type"],
        _ => &["stream"],
    }
}
