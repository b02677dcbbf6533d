//! The statements a run makes per page find their rows by key. SQLite keeps no
//! statistics here (nothing runs `ANALYZE`), so its planner guesses; a guess
//! that reads a sync's whole ledger, its holders or its dead letters costs
//! time that grows with the ledger, and no other test would notice.

use sqlx::Row;

use super::KNOWN;
use super::commit::COMMIT_PAGE_STATEMENTS;
use super::*;
use crate::state::tests::*;

/// The statements of a page's lookup that read by key.
const LOOKUP: &[&str] = &[KNOWN, ledger::BLOCKS, ledger::INDEXES, ledger::INDEX_PIECES];

/// The plan's lines that read the ledger's tables or `dead_letters` other
/// than by a key (or, for the catalog of runs, by sync).
async fn reads_by_sync_alone(pool: &SqlitePool, statement: &str) -> Vec<String> {
    let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {statement}"
    )))
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("plan of {statement}: {e}"));
    plan.iter()
        .map(|row| row.get::<String, _>("detail"))
        .filter(|detail| {
            let reads = detail.starts_with("SCAN ") || detail.starts_with("SEARCH ");
            let table = [
                "ledger_holders",
                "ledger_blocks",
                "ledger_index",
                "ledger_runs",
                "d",
                "dead_letters",
                "any_letter",
                "any_holder",
            ]
            .iter()
            .any(|t| detail.split(' ').nth(1) == Some(t));
            // A sync's runs are listed by sync: a few rows. `any_letter` and
            // `any_holder` are `EXISTS` probes by sync: one row at most.
            let by_key = [
                "source_id=?",
                "external_id=?",
                "rowid=?",
                "(rowid>? AND rowid<?)",
                "ledger_runs_by_sync (sync=?)",
                "any_letter USING PRIMARY KEY (sync=?)",
                "any_holder USING PRIMARY KEY (sync=?)",
            ]
            .iter()
            .any(|k| detail.contains(k));
            reads && table && !by_key
        })
        .collect()
}

#[tokio::test]
async fn a_page_s_statements_read_the_ledger_and_dead_letters_by_key() {
    let path = temp_db("plans");
    let store = Store::open(&path).await.expect("open");
    let statements = COMMIT_PAGE_STATEMENTS
        .sql()
        .chain(LOOKUP.iter().copied())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let mut found = Vec::new();
    for statement in statements {
        for line in reads_by_sync_alone(store.sqlite_pool(), statement).await {
            found.push(format!("{line}\n  in: {statement}"));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n\n"));
}
