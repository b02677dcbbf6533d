//! The ledger read through its two levels (SQLite's second level holds what
//! merged since the ledger last grew by a quarter) is the ledger one merge of
//! every row would have made: by newest version, keeping a known destination
//! id, with tombstones and moved external ids, before and after the second
//! level merges into the first. PostgreSQL keeps one level; the same reads
//! must hold there.

use super::*;

/// Rows of SQLite's second level and rows counted in its ledger.
async fn level_sizes(store: &Store) -> Option<(i64, i64)> {
    if matches!(store.backend, Backend::Postgres(_)) {
        return None;
    }
    let recent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_recent")
        .fetch_one(store.sqlite_pool())
        .await
        .expect("count");
    let ledger: i64 = sqlx::query_scalar("SELECT ledger_rows FROM ledger_levels")
        .fetch_one(store.sqlite_pool())
        .await
        .expect("count");
    Some((recent, ledger))
}

async fn commit(store: &Store, ledger: Vec<LedgerEntry>) {
    let page = PageCommit {
        ledger,
        merge: true,
        ..PageCommit::default()
    };
    store
        .commit_page("billing", "r1", &page, None, &Counters::default())
        .await
        .expect("commit");
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
    // whichever level holds them (`n1` is in the second level alone until
    // the levels merge).
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
async fn both_levels_read_as_one_merged_ledger() {
    for store in each_store("levels").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        commit(
            &store,
            (0..100).map(|i| entry(&format!("k{i:03}"), 1)).collect(),
        )
        .await;
        assert_eq!(level_sizes(&store).await.unwrap_or((0, 100)), (0, 100));
        // Five rows against a ledger of 100: they go to the second level.
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
        commit(&store, changes).await;
        assert_eq!(level_sizes(&store).await.unwrap_or((5, 100)), (5, 100));
        check(&store, 101).await;
        // Twenty-five more: the second level with them would hold more than a
        // quarter of the ledger, so both go into it.
        commit(
            &store,
            (0..25).map(|i| entry(&format!("m{i:02}"), 1)).collect(),
        )
        .await;
        assert_eq!(level_sizes(&store).await.unwrap_or((0, 126)), (0, 126));
        check(&store, 126).await;
        // Back in the second level, then forgotten with the ledger.
        commit(&store, vec![entry("n2", 1)]).await;
        assert_eq!(level_sizes(&store).await.unwrap_or((1, 126)), (1, 126));
        // A copy into PostgreSQL takes the second level's rows too.
        store
            .complete_run("r1", &json!({}), &Counters::default(), &[])
            .await
            .expect("complete");
        if level_sizes(&store).await.is_some() {
            let copy = fresh_postgres("levels-copy").await;
            store.copy_to(&copy).await.expect("copy");
            let copied = copy.ledger("billing").await.expect("ledger");
            assert_eq!(copied.len(), 127);
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
        assert_eq!(done.forgotten, 127);
        assert!(store.ledger("billing").await.expect("ledger").is_empty());
    }
}
