//! Every read is served by an index, so it costs in proportion to the page it
//! returns, not to the size of the store (issue 2, rule 5).

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
        let text = plan.join("\n");
        let tables = ["events", "streams", "snapshots", "checkpoints"];
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
        let leading = leading_columns(&plan);
        assert!(
            leading
                .iter()
                .any(|column| expected_index(name).contains(&column.as_str())),
            "{name} is not served by the index it needs ({leading:?}):\n{text}"
        );
        if !name.starts_with("trace") {
            let sorts = plan
                .iter()
                .any(|line| line.contains("Sort") || line.contains("TEMP B-TREE"));
            assert!(!sorts, "{name} sorts what it matched:\n{text}");
        }
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
        "all" | "all: window" => &["global_position", "rowid"],
        "head" => &["global_position", ""],
        "all filtered" => &["global_position", "rowid", "correlation_id"],
        "category" | "category: window" => &["category"],
        "category filtered" => &["category", "correlation_id"],
        "correlation" => &["correlation_id"],
        "checkpoint" => &["consumer"],
        _ => &["stream"],
    }
}
