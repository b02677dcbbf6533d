//! The statements a run makes per page find their rows by key. SQLite keeps no
//! statistics here (nothing runs `ANALYZE`), so its planner guesses; a guess
//! that reads a sync's whole ledger or dead letters costs time that grows with
//! the ledger, and no other test would notice.

use sqlx::Row;

use super::KNOWN;
use super::claim::NEWEST_IN_LEDGER;
use super::commit::{COMMIT_PAGE_STATEMENTS, MERGES};
use super::*;
use crate::state::tests::*;

/// The plan's lines that read either level of the ledger or `dead_letters`
/// other than by a source id or an external id.
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
            let table = ["ledger", "ledger_recent", "l", "dead_letters"]
                .iter()
                .any(|t| detail.split(' ').nth(1) == Some(t));
            reads && table && !detail.contains("source_id=?") && !detail.contains("external_id=?")
        })
        .collect()
}

#[tokio::test]
async fn a_page_s_statements_read_the_ledger_and_dead_letters_by_key() {
    let path = temp_db("plans");
    let store = Store::open(&path).await.expect("open");
    // Staged rows merge into either level by key; only the rarer merge of the
    // second level into the ledger reads a whole level, by design.
    let [into_recent, into_ledger, _] = &*MERGES;
    let statements = COMMIT_PAGE_STATEMENTS
        .sql()
        .chain(into_recent.split(";\n"))
        .chain(into_ledger.split(";\n"))
        .chain([KNOWN, NEWEST_IN_LEDGER])
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

/// Which live record holds an external id is answered by each level's index
/// alone: a read of the ledger row behind each entry cost more than the rest
/// of the page's lookup.
#[tokio::test]
async fn the_holders_of_external_ids_are_read_from_the_index_alone() {
    let path = temp_db("plans-holders");
    let store = Store::open(&path).await.expect("open");
    let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {KNOWN}")))
        .fetch_all(store.sqlite_pool())
        .await
        .expect("plan")
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .filter(|detail| detail.contains("external_id=?"))
        .collect();
    assert!(
        !plan.is_empty()
            && plan
                .iter()
                .all(|d| d.contains("COVERING INDEX ledger_by_external_id")
                    || d.contains("COVERING INDEX ledger_recent_by_external_id")),
        "{plan:?}"
    );
}
