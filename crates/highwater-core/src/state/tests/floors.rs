//! Announced writes: floors until retired, completed or abandoned, seen by
//! the sync's other runs, kept across the migration of a version 1 store,
//! and left alone by a run of another kind; and a destination's position,
//! the last one a commit stored.

use super::*;

#[tokio::test]
async fn announced_writes_are_floors_until_retired_completed_or_abandoned() {
    for store in each_store("intents").await {
        store
            .begin_run(&run("r1", 1000), &json!({}))
            .await
            .expect("begin");
        let counters = Counters::default();
        for commit in [
            announce("i-1", vec![intent("a", 5), intent("b", 2)]),
            announce("i-2", vec![intent("a", 7)]),
        ] {
            store
                .commit_page("billing", "r1", &commit, None, &counters)
                .await
                .expect("announce");
        }
        let Floors { newest, oldest } = store.floors("billing", None).await.expect("floors");
        assert_eq!(
            newest.get("a"),
            Some(&intent("a", 7)),
            "the newest announcement"
        );
        assert_eq!(newest.get("b"), Some(&intent("b", 2)));
        // What the newest hides still may land after a write repeating it.
        assert_eq!(
            oldest,
            HashMap::from([("a".to_owned(), (Some(5), Timestamp::UNIX_EPOCH))]),
            "the oldest announcement below the newest"
        );
        assert!(
            store
                .floors("other", None)
                .await
                .expect("floors")
                .newest
                .is_empty()
        );

        let retire = PageCommit {
            retire: vec!["i-1".into()],
            ledger: vec![entry("b", 2)],
            ..PageCommit::default()
        };
        store
            .commit_page("billing", "r1", &retire, None, &counters)
            .await
            .expect("retire");
        let floors = store.floors("billing", None).await.expect("floors").newest;
        assert_eq!(floors.len(), 1);
        assert_eq!(floors.get("a"), Some(&intent("a", 7)));

        store.abandon_run("r1").await.expect("abandon");
        assert!(
            store
                .floors("billing", None)
                .await
                .expect("floors")
                .newest
                .is_empty(),
            "an abandoned run leaves no announcement"
        );

        store
            .begin_run(&run("r2", 2000), &json!({}))
            .await
            .expect("begin");
        store
            .commit_page(
                "billing",
                "r2",
                &announce("i-3", vec![intent("c", 1)]),
                None,
                &counters,
            )
            .await
            .expect("announce");
        store
            .complete_run("r2", &json!({}), &counters, &[])
            .await
            .expect("complete");
        assert!(
            store
                .floors("billing", None)
                .await
                .expect("floors")
                .newest
                .is_empty(),
            "a completed run has settled every announcement"
        );
    }
}

/// A destination's position is the one the sync's last commit that stored
/// one stored; and a run is told whether another open run of its sync has
/// announced writes (those its own writes must meet in the compare-and-set).
#[tokio::test]
async fn a_sink_position_is_the_last_one_stored_and_announcements_elsewhere_are_seen() {
    for store in each_store("positions").await {
        store
            .begin_run(&run("r1", 1000), &json!({}))
            .await
            .expect("begin");
        assert_eq!(store.sink_position("billing").await.expect("read"), None);
        let counters = Counters::default();
        for (stored, expected) in [(Some("1:10"), "1:10"), (None, "1:10"), (Some("2:0"), "2:0")] {
            let commit = PageCommit {
                sink_position: stored.map(str::to_owned),
                ..PageCommit::default()
            };
            store
                .commit_page("billing", "r1", &commit, None, &counters)
                .await
                .expect("commit");
            assert_eq!(
                store
                    .sink_position("billing")
                    .await
                    .expect("read")
                    .as_deref(),
                Some(expected)
            );
        }
        assert_eq!(store.sink_position("other").await.expect("read"), None);

        assert!(
            !store
                .announced_elsewhere("billing", "r1")
                .await
                .expect("ask")
        );
        store
            .commit_page(
                "billing",
                "r1",
                &announce("i-1", vec![intent("a", 1)]),
                None,
                &counters,
            )
            .await
            .expect("announce");
        assert!(
            !store
                .announced_elsewhere("billing", "r1")
                .await
                .expect("ask"),
            "a run's own announcements are not elsewhere"
        );
        assert!(
            store
                .announced_elsewhere("billing", "r2")
                .await
                .expect("ask")
        );
        assert!(!store.announced_elsewhere("other", "r2").await.expect("ask"));
        store.abandon_run("r1").await.expect("abandon");
        assert!(
            !store
                .announced_elsewhere("billing", "r2")
                .await
                .expect("ask"),
            "a run no longer open announces nothing"
        );
    }
}

#[tokio::test]
async fn unsettled_writes_of_a_version_1_store_survive_the_migration() {
    let (path, pool) = store_before("migrate-intents", 1).await;
    {
        sqlx::query(
            "INSERT INTO pending (sync, source_id, version, updated_at, run_id)
             VALUES ('billing', 'a', 5, 0, 'r1'), ('billing', 'b', NULL, 7000000, 'r1')",
        )
        .execute(&pool)
        .await
        .expect("pending rows");
        pool.close().await;
    }
    let store = Store::open(&path).await.expect("migrate");
    let floors = store.floors("billing", None).await.expect("floors").newest;
    assert_eq!(floors.len(), 2);
    assert_eq!(floors.get("a").and_then(|f| f.version), Some(5));
    assert_eq!(
        floors.get("b").map(|f| f.updated_at.as_second()),
        Some(7),
        "a floor without a version keeps its time"
    );
}

#[tokio::test]
async fn a_run_of_another_kind_leaves_the_open_runs_floors_alone() {
    for store in each_store("floors-kinds").await {
        // A run and its batch announcing one write of `id`.
        let announcing =
            |run_id: &str, id: &str| announce(&format!("{run_id}-1"), vec![intent(id, 1)]);
        let counters = Counters::default();
        let backfill = |id: &str| RunRow {
            kind: RunKind::Backfill,
            ..run(id, 500)
        };
        // An incremental run stopped with a write announced; a backfill runs and
        // completes meanwhile.
        store
            .begin_run(&run("inc", 1000), &json!({}))
            .await
            .expect("begin");
        store
            .commit_page("billing", "inc", &announcing("inc", "a"), None, &counters)
            .await
            .expect("announce");
        store
            .begin_run(&backfill("bf"), &json!({}))
            .await
            .expect("begin");
        store
            .commit_page("billing", "bf", &announcing("bf", "b"), None, &counters)
            .await
            .expect("announce");
        store
            .complete_run("bf", &json!({}), &counters, &[])
            .await
            .expect("complete");
        let floors = store.floors("billing", None).await.expect("floors").newest;
        assert!(
            floors.contains_key("a"),
            "the open run's floor went: {floors:?}"
        );
        assert!(!floors.contains_key("b"), "{floors:?}");
        // A later backfill ends with a floor of a run that ended; the incremental
        // run settles every floor it found, but not an open backfill's.
        store
            .begin_run(&backfill("bf2"), &json!({}))
            .await
            .expect("begin");
        store
            .commit_page("billing", "bf2", &announcing("bf2", "c"), None, &counters)
            .await
            .expect("announce");
        store
            .complete_run("inc", &json!({}), &counters, &[])
            .await
            .expect("complete");
        let floors = store.floors("billing", None).await.expect("floors").newest;
        assert_eq!(floors.keys().collect::<Vec<_>>(), ["c"], "{floors:?}");
    }
}
