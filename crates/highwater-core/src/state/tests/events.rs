//! Record events: what `explain` reads back, and their retention.

use super::*;

fn event(id: &str, page: Option<u64>, action: RecordAction, version: i64) -> RecordEvent {
    RecordEvent {
        source_id: id.into(),
        page,
        action,
        version: Some(version),
        updated_at: Timestamp::from_second(1_000 + version).ok(),
        dest_id: Some(format!("d-{id}")),
        attempts: 2,
        detail: (action == RecordAction::DeadLettered).then(|| "mapping: no amount".into()),
    }
}

#[tokio::test]
async fn a_records_events_come_back_in_order_and_only_its_own() {
    for store in each_store("events").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let commits = [
            vec![
                event("a", Some(1), RecordAction::Written, 1),
                event("b", Some(1), RecordAction::DeadLettered, 1),
            ],
            vec![event("a", Some(2), RecordAction::Unchanged, 2)],
            vec![event("a", None, RecordAction::Repaired, 2)],
        ];
        for events in commits {
            let commit = PageCommit {
                events,
                ..PageCommit::default()
            };
            store
                .commit_page("billing", "r1", &commit, None, &Counters::default())
                .await
                .expect("commit");
        }
        let story = store.record_story("billing", "a").await.expect("story");
        let actions: Vec<_> = story
            .iter()
            .map(|s| (s.run_id.as_str(), s.event.page, s.event.action))
            .collect();
        assert_eq!(
            actions,
            [
                ("r1", Some(1), RecordAction::Written),
                ("r1", Some(2), RecordAction::Unchanged),
                ("r1", None, RecordAction::Repaired),
            ]
        );
        assert_eq!(
            story[0].event,
            event("a", Some(1), RecordAction::Written, 1)
        );
        let b = store.record_story("billing", "b").await.expect("story");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].event.detail.as_deref(), Some("mapping: no amount"));
        assert!(
            store
                .record_story("other", "a")
                .await
                .expect("story")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn events_older_than_the_retention_are_pruned() {
    for store in each_store("prune").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let commit = PageCommit {
            events: vec![event("a", Some(1), RecordAction::Written, 1)],
            ..PageCommit::default()
        };
        store
            .commit_page("billing", "r1", &commit, None, &Counters::default())
            .await
            .expect("commit");
        let written = store.record_story("billing", "a").await.expect("story")[0].at;
        let before = written
            .checked_sub(jiff::SignedDuration::from_secs(1))
            .expect("time");
        assert_eq!(
            store.prune_events("billing", before).await.expect("prune"),
            0
        );
        assert_eq!(
            store
                .record_story("billing", "a")
                .await
                .expect("story")
                .len(),
            1
        );
        let after = written
            .checked_add(jiff::SignedDuration::from_secs(1))
            .expect("time");
        assert_eq!(
            store.prune_events("billing", after).await.expect("prune"),
            1
        );
        assert!(
            store
                .record_story("billing", "a")
                .await
                .expect("story")
                .is_empty()
        );
    }
}
