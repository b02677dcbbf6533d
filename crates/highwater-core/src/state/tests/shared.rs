//! The shared-transaction mode: what a destination table writes through the
//! store's open transaction is committed by the store's next commit, and
//! nothing commits after that transaction was rolled back.

use super::*;

/// A fresh store with run `r1` open.
async fn open_run(name: &str) -> (std::path::PathBuf, Store) {
    let path = temp_db(name);
    let store = Store::open(&path).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
        .await
        .expect("begin");
    (path, store)
}

async fn count(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn rows_written_in_the_shared_transaction_commit_with_the_page() {
    let (path, store) = open_run("shared-commit").await;
    let shared = store.share_writes().expect("a SQLite store");
    let mut tx = shared.lock().await.expect("lock");
    for sql in [
        "CREATE TABLE t (k TEXT PRIMARY KEY)",
        "INSERT INTO t VALUES ('a')",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.expect(sql);
    }
    tx.keep();
    // Another connection sees nothing until the store commits.
    let reader = SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("reader");
    let before: Option<i64> =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 't'")
            .fetch_optional(&reader)
            .await
            .expect("master");
    assert_eq!(before, Some(0));
    let page = PageCommit {
        ledger: vec![entry("a", 1)],
        ..PageCommit::default()
    };
    store
        .commit_page(
            "billing",
            "r1",
            &page,
            Some(&json!({"kind": "token", "token": "p1"})),
            &Counters::default(),
        )
        .await
        .expect("commit");
    assert_eq!(count(&reader).await, 1);
    reader.close().await;
    store.close().await;
}

#[tokio::test]
async fn after_the_shared_transaction_is_rolled_back_nothing_commits() {
    let (path, store) = open_run("shared-lost").await;
    let shared = store.share_writes().expect("a SQLite store");
    let mut tx = shared.lock().await.expect("lock");
    sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
        .execute(&mut *tx)
        .await
        .expect("create");
    // Neither kept nor committed: a failure in the middle of a write.
    drop(tx);
    let page = PageCommit {
        ledger: vec![entry("a", 1)],
        ..PageCommit::default()
    };
    let refused = store
        .commit_page("billing", "r1", &page, None, &Counters::default())
        .await;
    assert!(
        matches!(refused, Err(StateError::SharedTransactionLost)),
        "{refused:?}"
    );
    store.close().await;
    // The run resumes from its last commit: the ledger never got the row.
    let store = Store::open(&path).await.expect("reopen");
    let known = store.known("billing", &["a"], &[]).await.expect("known");
    assert!(known.ledger.is_empty(), "{known:?}");
    store.close().await;
}
