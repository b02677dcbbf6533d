//! When a run may skip the lookups of ids it has not read: only while the
//! store holds nothing of the sync and no other run of it is open or has
//! committed since the run began.

use super::*;

fn ten_minutes_ago() -> Timestamp {
    Timestamp::now()
        .checked_sub(std::time::Duration::from_secs(600))
        .expect("a time")
}

#[tokio::test]
async fn a_sync_is_untouched_until_a_row_or_another_run_may_be_found() {
    for store in each_store("untouched").await {
        let since = ten_minutes_ago();
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        assert!(store.untouched("billing", "r1", since).await.expect("ask"));
        assert!(
            !store
                .others_since("billing", "r1", since)
                .await
                .expect("ask")
        );
        // Another sync's rows and runs are not this one's.
        let mut elsewhere = run("e1", 1000);
        elsewhere.sync = "crm".into();
        store
            .begin_run(&elsewhere, &json!({}))
            .await
            .expect("begin");
        let page = PageCommit {
            ledger: vec![entry("a", 1)],
            ..PageCommit::default()
        };
        store
            .commit_page("crm", "e1", &page, None, &Counters::default())
            .await
            .expect("commit");
        assert!(store.untouched("billing", "r1", since).await.expect("ask"));

        // Another run of the sync, open: its commits may come at any time.
        let mut deletes = run("r2", 1000);
        deletes.kind = RunKind::Deletes;
        store.begin_run(&deletes, &json!({})).await.expect("begin");
        assert!(!store.untouched("billing", "r1", since).await.expect("ask"));
        assert!(
            store
                .others_since("billing", "r1", since)
                .await
                .expect("ask")
        );
        // Completed since: it may have written in between.
        store
            .complete_run("r2", &json!({}), &Counters::default(), &[])
            .await
            .expect("complete");
        assert!(
            store
                .others_since("billing", "r1", since)
                .await
                .expect("ask")
        );
        assert!(!store.untouched("billing", "r1", since).await.expect("ask"));
        // Completed before: what it wrote is in the tables asked.
        let later = Timestamp::now()
            .checked_add(std::time::Duration::from_secs(1))
            .expect("a time");
        assert!(
            !store
                .others_since("billing", "r1", later)
                .await
                .expect("ask")
        );
        assert!(store.untouched("billing", "r1", later).await.expect("ask"));

        // The run's own rows, staged or merged, and a dead letter alone.
        let page = PageCommit {
            ledger: vec![entry("a", 1)],
            ..PageCommit::default()
        };
        store
            .commit_page("billing", "r1", &page, None, &Counters::default())
            .await
            .expect("commit");
        assert!(!store.untouched("billing", "r1", later).await.expect("ask"));
        store.merge_staged("billing").await.expect("merge");
        assert!(!store.untouched("billing", "r1", later).await.expect("ask"));
        let mut letters = run("l1", 1000);
        letters.sync = "letters".into();
        store.begin_run(&letters, &json!({})).await.expect("begin");
        assert!(store.untouched("letters", "l1", later).await.expect("ask"));
        let page = PageCommit {
            dead_letters: vec![dead_letter("c", "l1")],
            ..PageCommit::default()
        };
        store
            .commit_page("letters", "l1", &page, None, &Counters::default())
            .await
            .expect("commit");
        assert!(!store.untouched("letters", "l1", later).await.expect("ask"));
    }
}
