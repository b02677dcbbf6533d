//! The shared-transaction mode: what a destination table writes through the
//! store's open transaction is committed by the store's next commit, and
//! nothing commits after that transaction was rolled back — nor, with
//! PostgreSQL, after the run's lease was lost.

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
    let (shared, _sharing) = store
        .share_sqlite_writes("billing")
        .expect("a SQLite store");
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

/// The shared transaction's commits are not synced one by one (the run's
/// completion and every other commit sync the WAL after them), its
/// statement journals stay in memory, and what was written through it
/// commits with the run's completion.
#[tokio::test]
async fn the_shared_transaction_leaves_its_commits_unsynced_until_the_run_completes() {
    let (path, store) = open_run("shared-sync").await;
    let (shared, _sharing) = store
        .share_sqlite_writes("billing")
        .expect("a SQLite store");
    let mut tx = shared.lock().await.expect("lock");
    let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *tx)
        .await
        .expect("synchronous");
    assert_eq!(level, 1, "NORMAL");
    let temp: i64 = sqlx::query_scalar("PRAGMA temp_store")
        .fetch_one(&mut *tx)
        .await
        .expect("temp_store");
    assert_eq!(temp, 2, "statement journals in memory");
    sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
        .execute(&mut *tx)
        .await
        .expect("create");
    tx.keep();
    store
        .complete_run(
            "r1",
            &json!({"kind": "token", "token": "p1"}),
            &Counters::default(),
            &[],
        )
        .await
        .expect("complete");
    let reader = SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("reader");
    assert_eq!(count(&reader).await, 0);
    reader.close().await;
    store.close().await;
}

#[tokio::test]
async fn after_the_shared_transaction_is_rolled_back_nothing_commits() {
    let (path, store) = open_run("shared-lost").await;
    let (shared, _sharing) = store
        .share_sqlite_writes("billing")
        .expect("a SQLite store");
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

/// A fresh PostgreSQL store with run `r1` open, its schema's name, and a
/// connection of its own to look from.
async fn open_postgres_run(name: &str) -> (Store, String, sqlx::PgConnection) {
    let store = fresh_postgres(name).await;
    store
        .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
        .await
        .expect("begin");
    let reader = <sqlx::PgConnection as sqlx::Connection>::connect(&pg_url())
        .await
        .expect("reader");
    (store, pg_schema(name), reader)
}

/// Rows in `schema.t`, or `None` while no committed transaction made it.
async fn pg_count(reader: &mut sqlx::PgConnection, schema: &str) -> Option<i64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}.t"))
        .fetch_one(&mut *reader)
        .await
        .expect("regclass");
    if !exists {
        return None;
    }
    Some(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.t"
        )))
        .fetch_one(&mut *reader)
        .await
        .expect("count"),
    )
}

/// Commits whose ledger rows are staged in `schema`.
async fn pg_staged(reader: &mut sqlx::PgConnection, schema: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.ledger_staged"
    )))
    .fetch_one(reader)
    .await
    .expect("staged")
}

async fn write_row(shared: &crate::state::PgShared, key: &str) {
    let mut tx = shared.writes.lock().await.expect("lock");
    sqlx::query("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
        .execute(&mut *tx)
        .await
        .expect("create");
    sqlx::query("INSERT INTO t VALUES ($1)")
        .bind(key)
        .execute(&mut *tx)
        .await
        .expect("insert");
    tx.keep();
}

#[tokio::test]
async fn postgres_rows_written_in_the_run_s_transaction_commit_with_the_page() {
    let (store, schema, mut reader) = open_postgres_run("shared-pg-commit").await;
    let shared = store
        .share_postgres_writes("highwater unit")
        .expect("a PostgreSQL store")
        .expect("share");
    // A destination table named without a schema is where its user has it.
    assert_eq!(shared.default_schema, "public");
    write_row(&shared, "a").await;
    assert_eq!(pg_count(&mut reader, &schema).await, None);
    let page = PageCommit {
        ledger: vec![entry("a", 1)],
        merge: true,
        ..PageCommit::default()
    };
    store
        .commit_page("billing", "r1", &page, None, &Counters::default())
        .await
        .expect("commit");
    assert_eq!(pg_count(&mut reader, &schema).await, Some(1));
    let known = store.known("billing", &["a"], &[]).await.expect("known");
    assert_eq!(known.ledger.len(), 1, "{known:?}");
    store.close().await;
}

/// Sharing its transaction, a page commit stages its ledger rows (the
/// ledger's upserts would wait on the one connection the table's rows go
/// through): lookups see them once a commit merges them, as SQLite's, and
/// every reader of the ledger or of a record sees them at once. A merge
/// folds every staged row in, whatever run or invocation left it.
#[tokio::test]
async fn postgres_in_the_run_s_transaction_ledger_rows_are_staged_until_a_merge() {
    let (store, schema, mut reader) = open_postgres_run("shared-pg-staged").await;
    let shared = store
        .share_postgres_writes("highwater unit staged")
        .expect("a PostgreSQL store")
        .expect("share");
    let commit = |ledger: Vec<LedgerEntry>, merge: bool| {
        let store = &store;
        async move {
            let page = PageCommit {
                ledger,
                merge,
                ..PageCommit::default()
            };
            store
                .commit_page("billing", "r1", &page, None, &Counters::default())
                .await
                .expect("commit")
                .visible
        }
    };
    let versions = |ledger: &[LedgerEntry]| {
        ledger
            .iter()
            .map(|e| (e.source_id.clone(), e.version))
            .collect::<Vec<_>>()
    };
    write_row(&shared, "a").await;
    assert!(!commit(vec![entry("a", 1), entry("b", 1)], false).await);
    let mut newer = entry("a", 2);
    newer.dest_id = None;
    assert!(!commit(vec![newer, entry("b", 0)], false).await);
    assert_eq!(pg_count(&mut reader, &schema).await, Some(1));
    assert_eq!(pg_staged(&mut reader, &schema).await, 2);
    let known = store
        .known("billing", &["a", "b"], &[])
        .await
        .expect("known");
    assert!(known.ledger.is_empty(), "{known:?}");
    let ledger = store.ledger("billing").await.expect("ledger");
    assert_eq!(
        versions(&ledger),
        [("a".to_owned(), Some(2)), ("b".to_owned(), Some(1))]
    );
    // The newer row keeps the destination id the older one had.
    assert_eq!(ledger[0].dest_id.as_deref(), Some("d-a"));
    let state = store.record_state("billing", "a").await.expect("state");
    assert_eq!(state.ledger, Some(ledger[0].clone()));
    let status = store.status("billing").await.expect("status");
    assert_eq!(status.ledger_records, 2);
    // A commit that merges folds them all in, its own rows with them.
    assert!(commit(vec![entry("c", 1)], true).await);
    assert_eq!(pg_staged(&mut reader, &schema).await, 0);
    let known = store
        .known("billing", &["a", "b", "c"], &[])
        .await
        .expect("known");
    let mut found: Vec<LedgerEntry> = known.ledger.into_values().collect();
    found.sort_by(|x, y| x.source_id.cmp(&y.source_id));
    assert_eq!(found[..2], ledger[..]);
    assert_eq!(found[2], entry("c", 1));
    assert_eq!(
        store
            .status("billing")
            .await
            .expect("status")
            .ledger_records,
        3
    );
    // A staged row folds over the ledger's own, in every reader.
    let mut newest = entry("a", 3);
    newest.dest_id = None;
    assert!(!commit(vec![newest], false).await);
    let ledger = store.ledger("billing").await.expect("ledger");
    assert_eq!(
        versions(&ledger),
        [
            ("a".to_owned(), Some(3)),
            ("b".to_owned(), Some(1)),
            ("c".to_owned(), Some(1))
        ]
    );
    assert_eq!(ledger[0].dest_id.as_deref(), Some("d-a"));
    let state = store.record_state("billing", "a").await.expect("state");
    assert_eq!(state.ledger, Some(ledger[0].clone()));
    assert_eq!(
        store
            .status("billing")
            .await
            .expect("status")
            .ledger_records,
        3
    );
    // Rows a run left staged (it ended before a merge) are folded in by the
    // next run's merge before its first lookup.
    assert!(!commit(vec![entry("d", 1)], false).await);
    store.close().await;
    let next = Store {
        backend: Backend::Postgres(
            postgres::PgStore::open(&postgres::PgLocation {
                url: pg_url(),
                schema: schema.clone(),
                lease: std::time::Duration::from_secs(30),
            })
            .await
            .expect("open"),
        ),
    };
    assert!(
        next.known("billing", &["d"], &[])
            .await
            .expect("known")
            .ledger
            .is_empty()
    );
    next.merge_staged("billing").await.expect("merge");
    let known = next.known("billing", &["d"], &[]).await.expect("known");
    assert_eq!(known.ledger.get("d"), Some(&entry("d", 1)));
    assert_eq!(pg_staged(&mut reader, &schema).await, 0);
    next.close().await;
}

#[tokio::test]
async fn postgres_after_the_run_s_transaction_is_lost_nothing_commits() {
    let (store, schema, mut reader) = open_postgres_run("shared-pg-lost").await;
    let shared = store
        .share_postgres_writes("highwater unit lost")
        .expect("a PostgreSQL store")
        .expect("share");
    write_row(&shared, "a").await;
    // Its connection ended under it, as by `pg_terminate_backend`.
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'highwater unit lost'",
    )
    .fetch_one(&mut reader)
    .await
    .expect("terminate");
    assert_eq!(ended, 1);
    let mut tx = shared.writes.lock().await.expect("lock");
    let failed = sqlx::query("INSERT INTO t VALUES ('b')")
        .execute(&mut *tx)
        .await;
    assert!(failed.is_err(), "{failed:?}");
    drop(tx);
    let page = PageCommit {
        ledger: vec![entry("a", 1), entry("b", 1)],
        ..PageCommit::default()
    };
    let refused = store
        .commit_page("billing", "r1", &page, None, &Counters::default())
        .await;
    assert!(
        matches!(refused, Err(StateError::SharedTransactionLost)),
        "{refused:?}"
    );
    assert_eq!(pg_count(&mut reader, &schema).await, None);
    let known = store
        .known("billing", &["a", "b"], &[])
        .await
        .expect("known");
    assert!(known.ledger.is_empty(), "{known:?}");
    // Another run's store shares a transaction of its own.
    let lock = store
        .lock_run("billing", RunKind::Incremental, false)
        .await
        .expect("lease");
    let next = store.fenced(&lock);
    let shared = next
        .share_postgres_writes("highwater unit")
        .expect("a PostgreSQL store")
        .expect("share");
    write_row(&shared, "a").await;
    next.commit_page(
        "billing",
        "r1",
        &PageCommit::default(),
        None,
        &Counters::default(),
    )
    .await
    .expect("commit");
    assert_eq!(pg_count(&mut reader, &schema).await, Some(1));
    drop(next);
    store.close_releasing(lock).await;
}

#[tokio::test]
async fn postgres_a_run_that_lost_its_lease_commits_none_of_its_rows() {
    let (store, schema, mut reader) = open_postgres_run("shared-pg-fenced").await;
    let lock = store
        .lock_run("billing", RunKind::Incremental, false)
        .await
        .expect("lease");
    let fenced = store.fenced(&lock);
    let shared = fenced
        .share_postgres_writes("highwater unit")
        .expect("a PostgreSQL store")
        .expect("share");
    write_row(&shared, "a").await;
    // Another worker took the lease over: a new holder, a new token.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {schema}.leases SET owner = 'another worker', token = token + 1000"
    )))
    .execute(&mut reader)
    .await
    .expect("take over");
    let page = PageCommit {
        ledger: vec![entry("a", 1)],
        ..PageCommit::default()
    };
    let refused = fenced
        .commit_page("billing", "r1", &page, None, &Counters::default())
        .await;
    assert!(
        matches!(refused, Err(StateError::LeaseLost { .. })),
        "{refused:?}"
    );
    assert_eq!(pg_count(&mut reader, &schema).await, None);
    let known = store.known("billing", &["a"], &[]).await.expect("known");
    assert!(known.ledger.is_empty(), "{known:?}");
    drop(fenced);
    store.close_releasing(lock).await;
}
