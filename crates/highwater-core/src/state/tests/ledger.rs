//! The ledger's rows as commits stage them and merges fold them: within a
//! commit and across commits the later row of an id wins, a known
//! destination id is kept, a tombstone holds no external id, and a record
//! keyed by its own source id holds that external id.

use super::*;

#[tokio::test]
async fn within_one_commit_the_later_row_of_an_id_wins_whatever_the_id_order() {
    for store in each_store("row-order").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        // Two pages in one commit: the later copy of `m` comes after ids that sort
        // both before and after it.
        let page = PageCommit {
            ledger: vec![
                entry("z", 1),
                entry("m", 1),
                entry("a", 1),
                entry("m", 3),
                entry("b", 1),
            ],
            ..PageCommit::default()
        };
        store
            .commit_page("billing", "r1", &page, None, &Counters::default())
            .await
            .expect("commit");
        // Staged, and read through `ledger`; then merged by SQL: the same answer.
        for merged in [false, true] {
            let ledger = store.ledger("billing").await.expect("ledger");
            let ids: Vec<_> = ledger.iter().map(|e| e.source_id.as_str()).collect();
            assert_eq!(ids, ["a", "b", "m", "z"], "merged: {merged}");
            let m = ledger.iter().find(|e| e.source_id == "m").expect("m");
            assert_eq!((m.version, m.payload_hash.as_str()), (Some(3), "h3"));
            store.merge_staged("billing").await.expect("merge");
        }
        let known = store.known("billing", &["m"], &[]).await.expect("known");
        assert_eq!(known.ledger["m"].version, Some(3));
        store.close().await;
    }
}

#[tokio::test]
async fn staged_rows_of_later_commits_win_and_keep_a_known_destination_id() {
    for store in each_store("staged-commits").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let commit = |ledger| PageCommit {
            ledger,
            ..PageCommit::default()
        };
        let no_dest = |id, version| LedgerEntry {
            dest_id: None,
            ..entry(id, version)
        };
        for page in [
            commit(vec![entry("m", 1), entry("a", 1)]),
            commit(vec![no_dest("m", 4), entry("b", 1)]),
            commit(vec![no_dest("a", 2)]),
        ] {
            store
                .commit_page("billing", "r1", &page, None, &Counters::default())
                .await
                .expect("commit");
        }
        let staged = store.ledger("billing").await.expect("ledger");
        let summary = |ledger: &[LedgerEntry]| -> Vec<(String, Option<i64>, Option<String>)> {
            ledger
                .iter()
                .map(|e| (e.source_id.clone(), e.version, e.dest_id.clone()))
                .collect()
        };
        let expected = vec![
            ("a".to_owned(), Some(2), Some("d-a".to_owned())),
            ("b".to_owned(), Some(1), Some("d-b".to_owned())),
            ("m".to_owned(), Some(4), Some("d-m".to_owned())),
        ];
        assert_eq!(summary(&staged), expected);
        // A commit that asks for a merge moves every staged row, its own included.
        commit_merged(&store, vec![entry("c", 1)]).await;
        let known = store
            .known("billing", &["a", "b", "c", "m"], &[])
            .await
            .expect("known");
        assert_eq!(known.ledger.len(), 4);
        assert_eq!(known.ledger["m"].version, Some(4));
        assert_eq!(known.ledger["m"].dest_id.as_deref(), Some("d-m"));
        // Completing the run merges what is still staged.
        store
            .commit_page(
                "billing",
                "r1",
                &commit(vec![no_dest("b", 5)]),
                None,
                &Counters::default(),
            )
            .await
            .expect("commit");
        store
            .complete_run("r1", &json!({"kind": "end"}), &Counters::default(), &[])
            .await
            .expect("complete");
        let known = store.known("billing", &["b"], &[]).await.expect("known");
        assert_eq!(known.ledger["b"].version, Some(5));
        assert_eq!(known.ledger["b"].dest_id.as_deref(), Some("d-b"));
        assert_eq!(
            store
                .status("billing")
                .await
                .expect("status")
                .ledger_records,
            4
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_tombstone_is_staged_merged_and_known_and_holds_no_external_id() {
    for store in each_store("tombstones").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let gone_at = Timestamp::from_second(900).unwrap_or(Timestamp::UNIX_EPOCH);
        let tombstone = |id| LedgerEntry {
            dest_id: None,
            payload_hash: String::new(),
            deleted_at: Some(gone_at),
            ..entry(id, 2)
        };
        let pages = [
            vec![entry("a", 1), entry("b", 1)],
            // Deleted: the staged row keeps the deletion, and the merge the
            // destination id known before.
            vec![tombstone("a")],
        ];
        for ledger in pages {
            let page = PageCommit {
                ledger,
                ..PageCommit::default()
            };
            store
                .commit_page("billing", "r1", &page, None, &Counters::default())
                .await
                .expect("commit");
        }
        let staged = store.ledger("billing").await.expect("ledger");
        assert_eq!(staged[0].deleted_at, Some(gone_at));
        assert_eq!(staged[0].dest_id.as_deref(), Some("d-a"));
        assert_eq!(staged[1].deleted_at, None);
        store.merge_staged("billing").await.expect("merge");
        let known = store
            .known("billing", &["a", "b"], &["ext-a", "ext-b"])
            .await
            .expect("known");
        assert_eq!(known.ledger["a"].deleted_at, Some(gone_at));
        assert_eq!(known.ledger["a"].dest_id.as_deref(), Some("d-a"));
        assert_eq!(known.ledger["b"].deleted_at, None);
        // A deleted record's external id is free for another source record.
        assert_eq!(known.holders.get("ext-a"), None);
        assert_eq!(known.holders.get("ext-b").map(String::as_str), Some("b"));
        // Written again (re-created), the record is no longer deleted.
        commit_merged(&store, vec![entry("a", 3)]).await;
        let known = store.known("billing", &["a"], &[]).await.expect("known");
        assert_eq!(known.ledger["a"].deleted_at, None);
        assert_eq!(known.ledger["a"].version, Some(3));
        let story = store.record_state("billing", "a").await.expect("state");
        assert_eq!(story.ledger.map(|l| l.deleted_at), Some(None));
    }
}

/// A record keyed by its own source id holds that external id without an entry
/// in the external-id index: found whether or not its source id is one of the
/// page's, and not once it is deleted.
#[tokio::test]
async fn a_record_keyed_by_its_own_id_holds_it() {
    for store in each_store("own-key-holders").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let own = |id: &str| LedgerEntry {
            external_id: id.into(),
            ..entry(id, 1)
        };
        let gone = LedgerEntry {
            deleted_at: Some(Timestamp::UNIX_EPOCH),
            ..own("c")
        };
        commit_merged(&store, vec![own("a"), own("b"), gone, entry("d", 1)]).await;
        let holders = |ids: &'static [&'static str], external: &'static [&'static str]| {
            let store = store.clone();
            async move {
                let known = store.known("billing", ids, external).await.expect("known");
                let mut holders: Vec<_> = known.holders.into_iter().collect();
                holders.sort();
                holders
            }
        };
        let pair = |e: &str, s: &str| (e.to_owned(), s.to_owned());
        // On the page, and not on it; another record's key; a deleted record's.
        assert_eq!(
            holders(&["a", "x"], &["a", "b", "ext-d", "c"]).await,
            [pair("a", "a"), pair("b", "b"), pair("ext-d", "d")]
        );
        // On the page but not asked for: no holder.
        assert_eq!(holders(&["a", "b"], &["b"]).await, [pair("b", "b")]);
    }
}
