//! The ledger read through its runs (SQLite keeps it as sorted runs, each
//! merge folding staged rows and the newest runs of like size into a new one)
//! is the ledger one merge of every row would have made: by newest version,
//! keeping a known destination id, with tombstones and moved external ids,
//! while its rows are spread over several runs and once they fold into one.
//! PostgreSQL keeps one table; the same reads must hold there.

use super::*;

/// The rows of each of SQLite's runs, oldest first.
async fn run_sizes(store: &Store) -> Option<Vec<i64>> {
    if matches!(store.backend, Backend::Postgres(_)) {
        return None;
    }
    let sizes: Vec<i64> = sqlx::query_scalar("SELECT rows FROM ledger_runs ORDER BY id")
        .fetch_all(store.sqlite_pool())
        .await
        .expect("runs");
    Some(sizes)
}

/// What every read must say of the records changed by the second merge.
async fn check(store: &Store, records: usize) {
    let known = store
        .known(
            "billing",
            &["k001", "k002", "k003", "k004", "n1"],
            &[
                "ext-k002", "moved", "ext-k003", "ext-k004", "old", "ext-n1", "ext-k005",
            ],
        )
        .await
        .expect("known");
    let l = &known.ledger;
    assert_eq!(
        (l["k001"].version, l["k001"].dest_id.as_deref()),
        (Some(2), Some("d-k001"))
    );
    assert_eq!(
        (l["k002"].version, l["k002"].external_id.as_str()),
        (Some(2), "moved")
    );
    assert!(l["k003"].deleted_at.is_some());
    // An older row merged later loses to the ledger's, whichever level holds it.
    assert_eq!(
        (l["k004"].version, l["k004"].external_id.as_str()),
        (Some(1), "ext-k004")
    );
    assert_eq!(l["n1"].version, Some(1));
    let mut holders: Vec<_> = known.holders.into_iter().collect();
    holders.sort();
    let pair = |e: &str, s: &str| (e.to_owned(), s.to_owned());
    assert_eq!(
        holders,
        [
            pair("ext-k004", "k004"),
            pair("ext-k005", "k005"),
            pair("ext-n1", "n1"),
            pair("moved", "k002")
        ]
    );
    // Holders of ids off the page are folded the same way, and found in
    // whichever run holds them (`n1` is in the second run alone until the
    // runs fold into one).
    let off_page = store
        .known(
            "billing",
            &["zzz"],
            &["ext-k002", "moved", "ext-k004", "old", "ext-n1"],
        )
        .await
        .expect("known");
    let mut holders: Vec<_> = off_page.holders.into_iter().collect();
    holders.sort();
    assert_eq!(
        holders,
        [
            pair("ext-k004", "k004"),
            pair("ext-n1", "n1"),
            pair("moved", "k002")
        ]
    );
    let state = store.record_state("billing", "k001").await.expect("state");
    assert_eq!(
        state.ledger.map(|e| (e.version, e.dest_id)),
        Some((Some(2), Some("d-k001".into())))
    );
    let state = store.record_state("billing", "k004").await.expect("state");
    assert_eq!(state.ledger.map(|e| e.version), Some(Some(1)));
    let ledger = store.ledger("billing").await.expect("ledger");
    assert_eq!(ledger.len(), records);
    let k004 = ledger.iter().find(|e| e.source_id == "k004").expect("k004");
    assert_eq!(k004.version, Some(1));
    let status = store.status("billing").await.expect("status");
    assert_eq!(status.ledger_records, records as i64);
}

#[tokio::test]
async fn runs_read_as_one_merged_ledger() {
    for store in each_store("levels").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        commit_merged(
            &store,
            (0..100).map(|i| entry(&format!("k{i:03}"), 1)).collect(),
        )
        .await;
        assert_eq!(run_sizes(&store).await.unwrap_or(vec![100]), [100]);
        // Five rows, four of them records the first run holds: a run of their own.
        let changes = vec![
            LedgerEntry {
                dest_id: None,
                ..entry("k001", 2)
            },
            LedgerEntry {
                external_id: "moved".into(),
                ..entry("k002", 2)
            },
            LedgerEntry {
                deleted_at: Some(Timestamp::UNIX_EPOCH),
                dest_id: None,
                ..entry("k003", 2)
            },
            LedgerEntry {
                external_id: "old".into(),
                ..entry("k004", 0)
            },
            entry("n1", 1),
        ];
        commit_merged(&store, changes).await;
        assert_eq!(run_sizes(&store).await.unwrap_or(vec![100, 5]), [100, 5]);
        check(&store, 101).await;
        // Twenty-five more: a third run.
        commit_merged(
            &store,
            (0..25).map(|i| entry(&format!("m{i:02}"), 1)).collect(),
        )
        .await;
        assert_eq!(
            run_sizes(&store).await.unwrap_or(vec![100, 5, 25]),
            [100, 5, 25]
        );
        check(&store, 126).await;
        // Runs of their size class, up to eight: all eight fold into one.
        for id in ["p1", "p2", "p3", "p4"] {
            commit_merged(&store, vec![entry(id, 1)]).await;
        }
        assert_eq!(
            run_sizes(&store)
                .await
                .unwrap_or(vec![100, 5, 25, 1, 1, 1, 1]),
            [100, 5, 25, 1, 1, 1, 1]
        );
        commit_merged(&store, vec![entry("n2", 1)]).await;
        assert_eq!(run_sizes(&store).await.unwrap_or(vec![131]), [131]);
        check(&store, 131).await;
        // Staged rows are read with the runs'.
        commit_merged(&store, vec![entry("n3", 1)]).await;
        store
            .commit_page(
                "billing",
                "r1",
                &PageCommit {
                    ledger: vec![entry("n4", 1)],
                    ..PageCommit::default()
                },
                None,
                &Counters::default(),
            )
            .await
            .expect("commit");
        assert_eq!(store.ledger("billing").await.expect("ledger").len(), 133);
        let status = store.status("billing").await.expect("status");
        assert_eq!(status.ledger_records, 133);
        let state = store.record_state("billing", "n4").await.expect("state");
        assert_eq!(state.ledger.map(|e| e.version), Some(Some(1)));
        // A copy into PostgreSQL takes every run's rows.
        store
            .complete_run("r1", &json!({}), &Counters::default(), &[])
            .await
            .expect("complete");
        if run_sizes(&store).await.is_some() {
            let copy = fresh_postgres("levels-copy").await;
            store.copy_to(&copy).await.expect("copy");
            let copied = copy.ledger("billing").await.expect("ledger");
            assert_eq!(copied.len(), 133);
            assert!(copied == store.ledger("billing").await.expect("ledger"));
        }
        let done = store
            .reset(&ResetRequest {
                sync: "billing".into(),
                to: None,
                forget_ledger: true,
                force: true,
                reason: None,
            })
            .await
            .expect("reset");
        assert_eq!(done.forgotten, 133);
        assert!(store.ledger("billing").await.expect("ledger").is_empty());
    }
}

/// A store made before runs keeps its ledger: the rows of both levels of
/// migration 14 fold into one run per sync when the store opens, with the
/// holders of external ids, and the old tables are gone.
#[tokio::test]
async fn a_ledger_of_two_levels_becomes_runs_when_the_store_opens() {
    let (path, pool) = store_before("levels-upgrade", 14).await;
    let row = |level: &str, sync: &str, id: &str, external: &str, version: i64| {
        format!(
            "INSERT INTO {level} (sync, source_id, external_id, dest_id, version, updated_at,
                                  payload_hash, run_id, written_at, deleted_at)
             VALUES ('{sync}', '{id}', '{external}', 'd-{id}', {version}, 1000000, 'h{version}',
                     'r0', 5, NULL)"
        )
    };
    let mut statements: Vec<String> = (0..3000)
        .map(|i| {
            row(
                "ledger",
                "billing",
                &format!("k{i:04}"),
                &format!("k{i:04}"),
                1,
            )
        })
        .collect();
    statements.extend([
        row("ledger", "crm", "c1", "x-c1", 3),
        // Newer in the second level, and older: the newer wins either way.
        row("ledger_recent", "billing", "k0001", "moved", 2),
        row("ledger_recent", "crm", "c1", "x-old", 2),
        row("ledger_recent", "crm", "c2", "c2", 1),
    ]);
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .expect("old rows");
    }
    pool.close().await;
    let store = Store::open(&path).await.expect("migrate");
    let billing = store.ledger("billing").await.expect("ledger");
    assert_eq!(billing.len(), 3000);
    let known = store
        .known("billing", &["k0001", "k2999"], &["moved"])
        .await
        .expect("known");
    assert_eq!(known.ledger["k0001"].version, Some(2));
    assert_eq!(known.ledger["k0001"].external_id, "moved");
    assert_eq!(known.ledger["k2999"].dest_id.as_deref(), Some("d-k2999"));
    assert_eq!(
        known.holders.get("moved").map(String::as_str),
        Some("k0001")
    );
    let crm = store
        .known("crm", &["c1", "c2"], &["x-c1", "x-old"])
        .await
        .expect("known");
    assert_eq!(crm.ledger["c1"].version, Some(3));
    assert_eq!(crm.ledger["c2"].version, Some(1));
    let holders: Vec<_> = crm.holders.into_iter().collect();
    assert_eq!(holders, [("x-c1".to_owned(), "c1".to_owned())]);
    let sizes: Vec<(String, i64)> =
        sqlx::query_as("SELECT sync, rows FROM ledger_runs ORDER BY id")
            .fetch_all(store.sqlite_pool())
            .await
            .expect("runs");
    assert_eq!(sizes, [("billing".into(), 3000), ("crm".into(), 2)]);
    // Made before `ledger_index`, these runs keep their indexes whole, and
    // the lookups above read them there.
    let pieces: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM ledger_index)
              + (SELECT count(*) FROM ledger_runs WHERE length(idx) = 0)",
    )
    .fetch_one(store.sqlite_pool())
    .await
    .expect("pieces");
    assert_eq!(pieces, 0);
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_schema
         WHERE name IN ('ledger', 'ledger_recent', 'ledger_levels')",
    )
    .fetch_one(store.sqlite_pool())
    .await
    .expect("tables");
    assert_eq!(tables, 0);
}

/// Rows a store staged as JSONB, and then as JSON text (before commits packed
/// them), are read, and fold with rows staged since, by every reader and by
/// the merge.
#[tokio::test]
async fn rows_staged_as_jsonb_or_text_fold_with_rows_packed() {
    let path = temp_db("staged-jsonb");
    let store = Store::open(&path).await.expect("open");
    let staged = [
        r#"jsonb('[["a","x-a","d-a",1,1000000,"h1","r0",null],["b","b",null,1,1000000,"h1","r0",null]]')"#,
        r#"'[["a","x-a",null,2,2000000,"h2","r1",null]]'"#,
    ];
    for (seq, rows) in staged.iter().enumerate() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO ledger_staged (sync, seq, rows, written_at) VALUES ('billing', {}, {rows}, 5)",
            seq + 1
        )))
        .execute(store.sqlite_pool())
        .await
        .expect("staged");
    }
    let packed = PageCommit {
        ledger: vec![LedgerEntry {
            payload_hash: "h\"3".into(),
            ..entry("b", 3)
        }],
        ..PageCommit::default()
    };
    store
        .commit_page("billing", "r2", &packed, None, &Counters::default())
        .await
        .expect("commit");
    let a = store.record_state("billing", "a").await.expect("state");
    let a = a.ledger.expect("a's row");
    // The later commit wins, and keeps the destination id the earlier knew.
    assert_eq!(
        (a.version, a.dest_id.as_deref(), a.run_id.as_str()),
        (Some(2), Some("d-a"), "r1")
    );
    let b = store.record_state("billing", "b").await.expect("state");
    let b = b.ledger.expect("b's row");
    assert_eq!(
        (b.version, b.external_id.as_str(), b.payload_hash.as_str()),
        (Some(3), "ext-b", "h\"3")
    );
    let before = store.ledger("billing").await.expect("ledger");
    store.merge_staged("billing").await.expect("merge");
    assert_eq!(store.ledger("billing").await.expect("ledger"), before);
    assert_eq!(run_sizes(&store).await, Some(vec![2]));
    let known = store
        .known("billing", &["a", "b"], &["x-a"])
        .await
        .expect("known");
    assert_eq!(known.ledger["a"], before[0]);
    assert_eq!(known.ledger["b"], b);
    assert_eq!(known.holders.get("x-a").map(String::as_str), Some("a"));
}

/// Rows of one record in one commit fold in the order they came, whatever
/// order a store stages them in: of one version, the later one wins.
#[tokio::test]
async fn a_record_s_rows_in_one_commit_fold_in_their_order() {
    for store in each_store("commit-order").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let rows = vec![
            LedgerEntry {
                payload_hash: "first".into(),
                ..entry("k2", 1)
            },
            entry("k3", 1),
            LedgerEntry {
                payload_hash: "second".into(),
                dest_id: None,
                ..entry("k2", 1)
            },
            entry("k1", 1),
            LedgerEntry {
                payload_hash: "third".into(),
                dest_id: None,
                ..entry("k2", 1)
            },
        ];
        commit_merged(&store, rows).await;
        let known = store
            .known("billing", &["k1", "k2", "k3"], &[])
            .await
            .expect("known");
        let k2 = &known.ledger["k2"];
        assert_eq!(
            (k2.payload_hash.as_str(), k2.dest_id.as_deref()),
            ("third", Some("d-k2"))
        );
        assert_eq!(known.ledger.len(), 3);
    }
}
