//! Runs of two kinds of one sync at once: an announcement is a compare-and-set
//! against the ledger and the other run's announced writes, and the ledger's
//! merge keeps the newest version whatever order the runs committed in.

use serde_json::json;

use super::*;

fn ids(set: &std::collections::HashSet<String>) -> Vec<&str> {
    let mut ids: Vec<&str> = set.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_write_is_announced_only_if_no_other_run_holds_a_newer_version() {
    for store in each_store("claim").await {
        let counters = Counters::default();
        // Both runs started just now (`run` stamps its start 5 s after the watermark).
        let now = Timestamp::now().as_second() - 5;
        let incremental = run("inc", now);
        let backfill = RunRow {
            kind: RunKind::Backfill,
            ..run("bf", now)
        };
        store
            .begin_run(&incremental, &json!({}))
            .await
            .expect("begin");
        store.begin_run(&backfill, &json!({})).await.expect("begin");
        // The backfill wrote `a` at version 5 (staged, not merged) and announced
        // `c` at 1, then `b` at 4 and `c` at 2.
        store
            .commit_page(
                "billing",
                "bf",
                &announce("bf-0", vec![intent("c", 1)]),
                None,
                &counters,
            )
            .await
            .expect("backfill commit");
        let mut written = announce("bf-1", vec![intent("b", 4), intent("c", 2)]);
        written.ledger.push(LedgerEntry {
            run_id: "bf".into(),
            ..entry("a", 5)
        });
        let answer = store
            .commit_page("billing", "bf", &written, None, &counters)
            .await
            .expect("backfill commit")
            .announced;
        assert_eq!(answer, Announced::default(), "nothing newer was anywhere");

        // The incremental run decided from an older ledger: `a` at 3 and `b` at 2
        // would set the records back; `c` at 3 goes behind the backfill's write of
        // version 2 (and 1), which may still land; `d` is nobody else's.
        let answer = store
            .commit_page(
                "billing",
                "inc",
                &announce(
                    "inc-1",
                    vec![
                        intent("a", 3),
                        intent("b", 2),
                        intent("c", 3),
                        intent("d", 1),
                    ],
                ),
                None,
                &counters,
            )
            .await
            .expect("incremental commit")
            .announced;
        assert_eq!(ids(&answer.refused), ["a", "b"]);
        assert_eq!(
            answer.behind.keys().map(String::as_str).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(answer.behind["c"].intent.version, Some(2));
        assert_eq!(
            answer.behind["c"].oldest,
            (Some(1), Timestamp::UNIX_EPOCH),
            "the oldest write below it may land too"
        );
        assert!(
            !answer.behind["c"].live,
            "no process runs the backfill here"
        );
        // What was refused is not announced: it is no floor for anyone.
        let floors = store.floors("billing", None).await.expect("floors").newest;
        assert!(!floors.contains_key("a"), "{floors:?}");
        assert_eq!(floors["b"].version, Some(4), "{floors:?}");
        assert_eq!(floors["c"].version, Some(3), "{floors:?}");
        assert_eq!(floors["d"].version, Some(1), "{floors:?}");

        // The backfill, in turn, cannot announce `d` below the incremental run's
        // version, nor `c` below it.
        let answer = store
            .commit_page(
                "billing",
                "bf",
                &announce("bf-2", vec![intent("c", 2), intent("d", 0), intent("e", 1)]),
                None,
                &counters,
            )
            .await
            .expect("backfill commit")
            .announced;
        assert_eq!(ids(&answer.refused), ["c", "d"]);
        assert!(answer.behind.is_empty(), "{answer:?}");
    }
}

#[tokio::test]
async fn the_ledger_keeps_the_newest_version_whatever_order_runs_commit_in() {
    for store in each_store("claim-merge").await {
        let counters = Counters::default();
        // Both runs started just now (`run` stamps its start 5 s after the watermark).
        let now = Timestamp::now().as_second() - 5;
        store
            .begin_run(&run("inc", now), &json!({}))
            .await
            .expect("begin");
        let backfill = RunRow {
            kind: RunKind::Backfill,
            ..run("bf", now)
        };
        store.begin_run(&backfill, &json!({})).await.expect("begin");
        let rows = |run_id: &str, entries: Vec<LedgerEntry>| PageCommit {
            ledger: entries
                .into_iter()
                .map(|e| LedgerEntry {
                    run_id: run_id.into(),
                    ..e
                })
                .collect(),
            ..PageCommit::default()
        };
        // The incremental run commits the newer versions first; the backfill's
        // older ones come after.
        store
            .commit_page(
                "billing",
                "inc",
                &rows("inc", vec![entry("a", 5), entry("b", 2)]),
                None,
                &counters,
            )
            .await
            .expect("commit");
        let mut same_version = entry("b", 2);
        same_version.payload_hash = "h2-changed".into();
        store
            .commit_page(
                "billing",
                "bf",
                &rows("bf", vec![entry("a", 3), same_version]),
                None,
                &counters,
            )
            .await
            .expect("commit");
        store.merge_staged("billing").await.expect("merge");
        let known = store
            .known("billing", &["a", "b"], &[])
            .await
            .expect("known");
        assert_eq!(known.ledger["a"].version, Some(5), "an older version won");
        assert_eq!(known.ledger["a"].run_id, "inc");
        // Within one version the later row wins, as before.
        assert_eq!(known.ledger["b"].payload_hash, "h2-changed");
        // And once merged, an older row staged later still does not go back.
        store
            .commit_page(
                "billing",
                "bf",
                &rows("bf", vec![entry("a", 4)]),
                None,
                &counters,
            )
            .await
            .expect("commit");
        store
            .complete_run("bf", &json!({}), &counters, &[])
            .await
            .expect("complete");
        let known = store.known("billing", &["a"], &[]).await.expect("known");
        assert_eq!(known.ledger["a"].version, Some(5));
    }
}
