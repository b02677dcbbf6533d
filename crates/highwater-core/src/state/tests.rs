use serde_json::json;

use super::*;

pub(super) fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hw-state-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("nested").join("state.db")
}

fn run(id: &str, watermark_s: i64) -> RunRow {
    let at = |s| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
    RunRow {
        run_id: id.into(),
        sync: "billing".into(),
        kind: RunKind::Incremental,
        status: RunStatus::Open,
        lower_bound: None,
        watermark: at(watermark_s),
        started_at: at(watermark_s + 5),
        updated_at: at(watermark_s + 5),
        completed_at: None,
    }
}

fn entry(id: &str, version: i64) -> LedgerEntry {
    LedgerEntry {
        source_id: id.into(),
        external_id: format!("ext-{id}"),
        dest_id: Some(format!("d-{id}")),
        version: Some(version),
        updated_at: Timestamp::UNIX_EPOCH,
        payload_hash: format!("h{version}"),
        run_id: "r1".into(),
    }
}

#[tokio::test]
async fn a_run_moves_from_open_to_completed_and_sets_the_high_water_mark() {
    let path = temp_db("lifecycle");
    let store = Store::open(&path).await.expect("open");
    assert!(
        store
            .open_run("billing", RunKind::Incremental)
            .await
            .expect("query")
            .is_none()
    );
    store
        .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
        .await
        .expect("begin");
    let (open, checkpoint) = store
        .open_run("billing", RunKind::Incremental)
        .await
        .expect("query")
        .expect("open run");
    assert_eq!(open.run_id, "r1");
    assert_eq!(checkpoint.cursor, json!({"kind": "start"}));

    let page = PageCommit {
        ledger: vec![entry("a", 1), entry("b", 2)],
        dead_letters: vec![DeadLetter {
            source_id: "c".into(),
            run_id: "r1".into(),
            stage: DeadLetterStage::Mapping,
            error: "required field `email` is missing".into(),
            payload: json!({"id": "c"}),
            fingerprint: "f".into(),
            attempts: 1,
            last_failed_at: Timestamp::UNIX_EPOCH,
        }],
        ..PageCommit::default()
    };
    let counters = Counters {
        pages: 1,
        read: 3,
        written: 2,
        dead_lettered: 1,
        ..Counters::default()
    };
    store
        .commit_page(
            "billing",
            "r1",
            &page,
            Some(&json!({"kind": "token", "token": "t2"})),
            &counters,
        )
        .await
        .expect("commit");
    // The ledger rows are staged: counted and listed, not yet read by lookups.
    let status = store.status("billing").await.expect("status");
    assert_eq!(status.ledger_records, 2);
    assert_eq!(store.ledger("billing").await.expect("ledger").len(), 2);
    let known = store
        .known("billing", &["a", "c"], &[])
        .await
        .expect("known");
    assert!(known.ledger.is_empty());
    assert_eq!(known.dead.get("c").map(String::as_str), Some("f"));
    store.merge_staged("billing").await.expect("merge");
    let known = store
        .known("billing", &["a", "c", "zz"], &[])
        .await
        .expect("known");
    assert_eq!(known.ledger["a"].dest_id.as_deref(), Some("d-a"));
    assert!(!known.ledger.contains_key("zz"));

    store
        .complete_run("r1", &json!({"kind": "end"}), &counters, &[])
        .await
        .expect("complete");
    let status = store.status("billing").await.expect("status");
    assert!(status.open_run.is_none());
    assert_eq!(status.high_water_mark(), Some(open.watermark));
    assert_eq!((status.dead_letters, status.ledger_records), (1, 2));
    assert_eq!(
        status.last_completed.map(|(_, c)| c.counters),
        Some(counters)
    );

    // Writing the dead-lettered record later resolves its dead letter.
    store
        .begin_run(&run("r2", 2000), &json!({"kind": "start"}))
        .await
        .expect("begin 2");
    let fixed = PageCommit {
        ledger: vec![entry("c", 1)],
        resolved: vec!["c".into()],
        ..PageCommit::default()
    };
    store
        .commit_page("billing", "r2", &fixed, None, &counters)
        .await
        .expect("commit 2");
    let (_, checkpoint) = store
        .open_run("billing", RunKind::Incremental)
        .await
        .expect("q")
        .expect("open");
    assert_eq!(
        checkpoint.cursor,
        json!({"kind": "start"}),
        "no cursor given, none moved"
    );
    assert!(store.dead_letters("billing").await.expect("dlq").is_empty());
    store.close().await;
}

#[tokio::test]
async fn only_one_run_per_sync_can_be_open() {
    let store = Store::open(&temp_db("one-open")).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({}))
        .await
        .expect("first");
    assert!(store.begin_run(&run("r2", 1000), &json!({})).await.is_err());
}

#[tokio::test]
async fn an_abandoned_run_leaves_nothing_to_resume_and_stays_in_the_history_as_failed() {
    let path = temp_db("abandon");
    let store = Store::open(&path).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({}))
        .await
        .expect("begin");
    store.abandon_run("r1").await.expect("abandon");
    assert!(
        store
            .open_run("billing", RunKind::Incremental)
            .await
            .expect("q")
            .is_none()
    );
    assert!(
        store
            .last_completed("billing", RunKind::Incremental)
            .await
            .expect("q")
            .is_none(),
        "an abandoned run sets no high-water mark"
    );
    let record = store
        .run_record("r1")
        .await
        .expect("q")
        .expect("kept in the history");
    assert_eq!(record.run.status, RunStatus::Failed);
    assert!(record.ended_at().is_some());
    store
        .begin_run(&run("r2", 1000), &json!({}))
        .await
        .expect("begin again");
    store.close().await;
    let again = Store::open(&path)
        .await
        .expect("reopen runs no migration twice");
    assert!(
        again
            .open_run("billing", RunKind::Incremental)
            .await
            .expect("q")
            .is_some()
    );
}

#[tokio::test]
async fn announced_writes_are_floors_until_retired_completed_or_abandoned() {
    let store = Store::open(&temp_db("intents")).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({}))
        .await
        .expect("begin");
    let intent = |id: &str, v| Intent {
        source_id: id.into(),
        version: Some(v),
        updated_at: Timestamp::UNIX_EPOCH,
        settles_at: None,
    };
    let announce = |batch: &str, intents| PageCommit {
        announce: Some(IntentBatch {
            id: batch.into(),
            intents,
        }),
        ..PageCommit::default()
    };
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
    let floors = store.floors("billing").await.expect("floors");
    assert_eq!(
        floors.get("a"),
        Some(&intent("a", 7)),
        "the newest announcement"
    );
    assert_eq!(floors.get("b"), Some(&intent("b", 2)));
    assert!(store.floors("other").await.expect("floors").is_empty());

    let retire = PageCommit {
        retire: vec!["i-1".into()],
        ledger: vec![entry("b", 2)],
        ..PageCommit::default()
    };
    store
        .commit_page("billing", "r1", &retire, None, &counters)
        .await
        .expect("retire");
    let floors = store.floors("billing").await.expect("floors");
    assert_eq!(floors.len(), 1);
    assert_eq!(floors.get("a"), Some(&intent("a", 7)));

    store.abandon_run("r1").await.expect("abandon");
    assert!(
        store.floors("billing").await.expect("floors").is_empty(),
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
        store.floors("billing").await.expect("floors").is_empty(),
        "a completed run has settled every announcement"
    );
}

#[tokio::test]
async fn unsettled_writes_of_a_version_1_store_survive_the_migration() {
    let path = temp_db("migrate-intents");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("dir");
    }
    {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .expect("options")
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("connect");
        let (version, name, sql) = MIGRATIONS[0];
        let first = Migration::new(
            version,
            name.into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(sql),
            false,
        );
        Migrator::with_migrations(vec![first])
            .run(&pool)
            .await
            .expect("version 1");
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
    let floors = store.floors("billing").await.expect("floors");
    assert_eq!(floors.len(), 2);
    assert_eq!(floors.get("a").and_then(|f| f.version), Some(5));
    assert_eq!(
        floors.get("b").map(|f| f.updated_at.as_second()),
        Some(7),
        "a floor without a version keeps its time"
    );
}

#[tokio::test]
async fn within_one_commit_the_later_row_of_an_id_wins_whatever_the_id_order() {
    let path = temp_db("row-order");
    let store = Store::open(&path).await.expect("open");
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
    let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
}

#[tokio::test]
async fn staged_rows_of_later_commits_win_and_keep_a_known_destination_id() {
    let path = temp_db("staged-commits");
    let store = Store::open(&path).await.expect("open");
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
    let merge = PageCommit {
        ledger: vec![entry("c", 1)],
        merge: true,
        ..PageCommit::default()
    };
    store
        .commit_page("billing", "r1", &merge, None, &Counters::default())
        .await
        .expect("commit");
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
    let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
}

/// Dead letters hold record payloads: the store, its WAL and shared-memory files,
/// the lock files and the directories highwater creates are its owner's alone,
/// while a directory the user already had keeps its mode.
#[cfg(unix)]
#[tokio::test]
async fn the_store_and_its_locks_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let users = std::env::temp_dir().join(format!("hw-state-{}-private", std::process::id()));
    let _ = std::fs::remove_dir_all(&users);
    std::fs::create_dir_all(&users).expect("create the user's directory");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let state_dir = users.join(".highwater");
    let path = state_dir.join("state.db");

    let lock = acquire(&path, "billing").expect("lock");
    let store = Store::open(&path).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
        .await
        .expect("begin");
    let files = [
        users.clone(),
        state_dir.clone(),
        state_dir.join("locks"),
        lock.path.clone(),
        path.clone(),
        state_dir.join("state.db-wal"),
        state_dir.join("state.db-shm"),
    ];
    let modes: Vec<String> = files
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let shown = p.strip_prefix(&users).unwrap_or(p).display().to_string();
            format!("{shown} {:o}", meta.permissions().mode() & 0o777)
        })
        .collect();
    store.close().await;
    drop(lock);
    let _ = std::fs::remove_dir_all(&users);
    assert_eq!(
        modes,
        [
            " 755",
            ".highwater 700",
            ".highwater/locks 700",
            ".highwater/locks/billing.lock 600",
            ".highwater/state.db 600",
            ".highwater/state.db-wal 600",
            ".highwater/state.db-shm 600",
        ]
    );
}

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
    let store = Store::open(&temp_db("events")).await.expect("open");
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

#[tokio::test]
async fn events_older_than_the_retention_are_pruned() {
    let store = Store::open(&temp_db("prune")).await.expect("open");
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

/// Kinds, statuses, outcomes and stages are spelled one way in code, in JSON and
/// in SQLite, and a name outside its set is refused by both.
#[test]
fn closed_sets_round_trip_by_their_lowercase_names() {
    fn check<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + std::fmt::Debug + FromStr<Err = UnknownName> + Serialize,
    {
        for &value in all {
            let name = as_str(value);
            assert_eq!(name, name.to_lowercase(), "{value:?}");
            assert_eq!(name.parse::<T>(), Ok(value));
            assert_eq!(
                serde_json::to_value(value).expect("serialize"),
                json!(name),
                "{value:?}"
            );
        }
    }
    check(RunKind::ALL, RunKind::as_str);
    check(RunStatus::ALL, RunStatus::as_str);
    check(InvocationOutcome::ALL, InvocationOutcome::as_str);
    check(DeadLetterStage::ALL, DeadLetterStage::as_str);
    check(DeadLetterResolution::ALL, DeadLetterResolution::as_str);
    check(AuditAction::ALL, AuditAction::as_str);
    let names: Vec<&str> = RunKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "incremental",
            "backfill",
            "deletes",
            "full",
            "replay",
            "repair"
        ]
    );
    let names: Vec<&str> = DeadLetterStage::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(names, ["source", "mapping", "destination"]);
    assert_eq!(
        "Incremental".parse::<RunKind>().map_err(|e| e.to_string()),
        Err("unknown run kind \"Incremental\" (expected one of: incremental, backfill, deletes, full, replay, repair)".to_owned())
    );
}

#[tokio::test]
async fn every_kind_and_stage_is_stored_and_read_back_and_no_other_is_admitted() {
    let path = temp_db("names");
    let store = Store::open(&path).await.expect("open");
    // One open run per kind of one sync: kinds do not get in each other's way.
    for (i, &kind) in RunKind::ALL.iter().enumerate() {
        let row = RunRow {
            kind,
            ..run(&format!("r-{kind}"), 1000 + i as i64)
        };
        store.begin_run(&row, &json!({})).await.expect("begin");
    }
    for &kind in RunKind::ALL {
        let (open, _) = store
            .open_run("billing", kind)
            .await
            .expect("q")
            .expect("open run of its kind");
        assert_eq!((open.kind, open.status), (kind, RunStatus::Open));
    }
    let letter = |id: &str, stage: DeadLetterStage| DeadLetter {
        source_id: id.into(),
        run_id: "r-incremental".into(),
        stage,
        error: "refused".into(),
        payload: json!({"id": id}),
        fingerprint: "f".into(),
        attempts: 1,
        last_failed_at: Timestamp::UNIX_EPOCH,
    };
    let page = PageCommit {
        dead_letters: DeadLetterStage::ALL
            .iter()
            .map(|stage| letter(stage.as_str(), *stage))
            .collect(),
        ..PageCommit::default()
    };
    store
        .commit_page(
            "billing",
            "r-incremental",
            &page,
            None,
            &Counters::default(),
        )
        .await
        .expect("commit");
    let stored: Vec<(String, DeadLetterStage)> = store
        .dead_letters("billing")
        .await
        .expect("dlq")
        .into_iter()
        .map(|d| (d.source_id, d.stage))
        .collect();
    assert_eq!(
        stored,
        [
            ("destination".to_owned(), DeadLetterStage::Destination),
            ("mapping".to_owned(), DeadLetterStage::Mapping),
            ("source".to_owned(), DeadLetterStage::Source),
        ]
    );
    // SQLite itself admits no other name either.
    for statement in [
        "UPDATE runs SET kind = 'nightly' WHERE run_id = 'r-full'",
        "UPDATE runs SET status = 'paused' WHERE run_id = 'r-full'",
        "UPDATE dead_letters SET stage = 'sink' WHERE source_id = 'source'",
        "UPDATE dead_letters SET resolution = 'forgotten' WHERE source_id = 'source'",
        "UPDATE invocations SET outcome = 'done' WHERE run_id = 'r-full'",
    ] {
        let result = sqlx::query(statement).execute(&store.pool).await;
        assert!(result.is_err(), "{statement} was admitted");
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
}

#[tokio::test]
async fn the_audit_record_tells_each_invocation_with_counts_retries_and_samples() {
    let path = temp_db("audit");
    let store = Store::open(&path).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
        .await
        .expect("begin");
    let letter = |id: &str| DeadLetter {
        source_id: id.into(),
        run_id: "r1".into(),
        stage: DeadLetterStage::Mapping,
        error: "required field `email` is missing".into(),
        payload: json!({"id": id}),
        fingerprint: "f".into(),
        attempts: 1,
        last_failed_at: Timestamp::UNIX_EPOCH,
    };
    // Three ids, one of them twice, then five more: the first five distinct stay.
    let pages = [
        PageCommit {
            ledger: vec![entry("c", 1), entry("a", 1), entry("c", 2)],
            dead_letters: vec![letter("x")],
            ..PageCommit::default()
        },
        PageCommit {
            ledger: ["a", "e", "b", "f", "g"]
                .iter()
                .map(|id| entry(id, 1))
                .collect(),
            ..PageCommit::default()
        },
    ];
    let first = Counters {
        pages: 1,
        read: 4,
        written: 3,
        dead_lettered: 1,
        ..Counters::default()
    };
    store
        .commit_page(
            "billing",
            "r1",
            &pages[0],
            Some(&json!({"kind": "token", "token": "t2"})),
            &first,
        )
        .await
        .expect("commit");
    // The report's counters run ahead of the checkpoint's: a stop keeps what the
    // invocation resolved, as the report says.
    let reported = Counters { read: 6, ..first };
    let retries = crate::obs::RetryCounts {
        rate_limited: 2,
        timeout: 1,
        ..Default::default()
    };
    store
        .end_invocation(
            "r1",
            &InvocationEnd {
                outcome: InvocationOutcome::Stopped,
                stop_reason: Some("max-pages reached".into()),
                error_class: None,
                error: None,
                counters: reported,
                retries,
            },
        )
        .await
        .expect("end");
    let record = store.run_record("r1").await.expect("q").expect("record");
    assert_eq!(record.run.status, RunStatus::Open);
    assert_eq!(record.ended_at(), None, "a stopped run has not ended");
    assert_eq!(record.counters(), reported);
    assert_eq!(record.checkpoint.counters, first);
    let stopped = record.last_invocation().expect("invocation").clone();
    assert_eq!(
        (
            stopped.number,
            stopped.outcome,
            stopped.stop_reason.as_deref()
        ),
        (
            1,
            Some(InvocationOutcome::Stopped),
            Some("max-pages reached")
        )
    );
    assert_eq!(stopped.cursor_start, json!({"kind": "start"}));
    assert_eq!(
        stopped.cursor_end,
        Some(json!({"kind": "token", "token": "t2"}))
    );
    assert_eq!(stopped.counters(), Some(reported));

    // The next invocation resumes from the checkpoint, and fails.
    store.resume_run("r1").await.expect("resume");
    let second = Counters {
        pages: 2,
        read: 9,
        written: 8,
        dead_lettered: 1,
        ..Counters::default()
    };
    store
        .commit_page(
            "billing",
            "r1",
            &pages[1],
            Some(&json!({"kind": "token", "token": "t3"})),
            &second,
        )
        .await
        .expect("commit");
    store
        .end_invocation(
            "r1",
            &InvocationEnd {
                outcome: InvocationOutcome::Failed,
                stop_reason: None,
                error_class: Some("destination:retries_exhausted".into()),
                error: Some("destination kept failing".into()),
                counters: second,
                retries: crate::obs::RetryCounts {
                    connection: 4,
                    ..Default::default()
                },
            },
        )
        .await
        .expect("end");
    // A third completes it.
    store.resume_run("r1").await.expect("resume");
    store
        .complete_run("r1", &json!({"kind": "end"}), &second, &[])
        .await
        .expect("complete");
    store
        .end_invocation(
            "r1",
            &InvocationEnd {
                outcome: InvocationOutcome::Completed,
                stop_reason: None,
                error_class: None,
                error: None,
                counters: second,
                retries: crate::obs::RetryCounts::default(),
            },
        )
        .await
        .expect("end");

    let record = store.run_record("r1").await.expect("q").expect("record");
    assert_eq!(record.run.status, RunStatus::Completed);
    assert_eq!(record.ended_at(), record.run.completed_at);
    assert!(record.ended_at().is_some());
    let outcomes: Vec<_> = record
        .invocations
        .iter()
        .map(|i| (i.number, i.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, Some(InvocationOutcome::Stopped)),
            (2, Some(InvocationOutcome::Failed)),
            (3, Some(InvocationOutcome::Completed)),
        ]
    );
    let resumed = &record.invocations[1];
    assert_eq!(resumed.counters_start, first, "resumed from the checkpoint");
    assert_eq!(
        resumed.cursor_start,
        json!({"kind": "token", "token": "t2"})
    );
    assert_eq!(resumed.error.as_deref(), Some("destination kept failing"));
    assert_eq!(
        record.invocations[2].cursor_end,
        Some(json!({"kind": "end"}))
    );
    assert_eq!(record.cursor_start(), Some(&json!({"kind": "start"})));
    assert_eq!(record.checkpoint.cursor, json!({"kind": "end"}));
    assert_eq!(record.counters(), second);
    let total = record.retries();
    assert_eq!(
        (
            total.rate_limited,
            total.timeout,
            total.connection,
            total.total()
        ),
        (2, 1, 4, 7)
    );
    assert_eq!(record.failures(), [("destination:retries_exhausted", 1)]);
    assert_eq!(
        record.samples,
        Samples {
            written: ["c", "a", "e", "b", "f"].map(String::from).to_vec(),
            dead_lettered: vec!["x".to_owned()],
        }
    );

    // The list: newest first, the same records.
    store
        .begin_run(&run("r2", 2000), &json!({"kind": "start"}))
        .await
        .expect("begin");
    let runs = store.runs("billing", 10).await.expect("runs");
    let ids: Vec<&str> = runs.iter().map(|r| r.run.run_id.as_str()).collect();
    assert_eq!(ids, ["r2", "r1"]);
    assert_eq!(runs[1], record);
    assert_eq!(store.runs("billing", 1).await.expect("runs").len(), 1);
    assert!(store.runs("other", 10).await.expect("runs").is_empty());
    assert_eq!(
        store.run_ids_starting_with("r", 10).await.expect("ids"),
        ["r1", "r2"]
    );
    assert_eq!(
        store.run_ids_starting_with("r2", 10).await.expect("ids"),
        ["r2"]
    );
    assert!(store.run_record("r3").await.expect("q").is_none());
    store.close().await;
    let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
}

/// A killed invocation leaves no end; the next one of the run says so, and until
/// then the record falls back on the checkpoint's counters.
#[tokio::test]
async fn an_invocation_that_never_ended_is_found_crashed_by_the_next() {
    let path = temp_db("crashed");
    let store = Store::open(&path).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
        .await
        .expect("begin");
    let counters = Counters {
        pages: 1,
        read: 5,
        written: 5,
        ..Counters::default()
    };
    store
        .commit_page(
            "billing",
            "r1",
            &PageCommit::default(),
            Some(&json!({"kind": "offset", "offset": 5})),
            &counters,
        )
        .await
        .expect("commit");
    let record = store.run_record("r1").await.expect("q").expect("record");
    assert_eq!(record.invocations[0].outcome, None);
    assert_eq!(record.counters(), counters);
    store.resume_run("r1").await.expect("resume");
    let record = store.run_record("r1").await.expect("q").expect("record");
    let outcomes: Vec<_> = record.invocations.iter().map(|i| i.outcome).collect();
    assert_eq!(outcomes, [Some(InvocationOutcome::Crashed), None]);
    assert_eq!(
        record.invocations[0].ended_at, None,
        "when it died is not known"
    );
    assert_eq!(record.invocations[1].counters_start, counters);
    store.close().await;
    let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
}

/// Migration 6 rebuilds `runs`, which `checkpoints` references with ON DELETE
/// CASCADE: a store from before keeps its open run's cursor, its high-water mark
/// and its dead letters.
#[tokio::test]
async fn a_store_from_before_the_run_history_keeps_its_runs_checkpoints_and_dead_letters() {
    let path = temp_db("migrate-history");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("dir");
    }
    {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .expect("options")
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("connect");
        let before: Vec<Migration> = MIGRATIONS[..5]
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(before)
            .run(&pool)
            .await
            .expect("version 5");
        sqlx::query(
            "INSERT INTO runs (run_id, sync, kind, status, lower_bound, watermark, started_at, updated_at, completed_at)
             VALUES ('old', 'billing', 'incremental', 'completed', NULL, 1000000000, 1000000000, 1000000000, 1000000000),
                    ('open', 'billing', 'incremental', 'open', 1000000000, 2000000000, 2000000000, 2000000000, NULL);
             INSERT INTO checkpoints (run_id, cursor, counters, updated_at)
             VALUES ('old', '{\"kind\":\"end\"}', ?, 1000000000),
                    ('open', '{\"kind\":\"token\",\"token\":\"t9\"}', ?, 2000000000);
             INSERT INTO dead_letters (sync, source_id, run_id, stage, error, payload, fingerprint, attempts, first_failed_at, last_failed_at)
             VALUES ('billing', 'bad', 'old', 'mapping', 'no email', '{}', 'f', 1, 1, 1);",
        )
        .bind(counters_json(&Counters {
            pages: 3,
            written: 7,
            ..Counters::default()
        }))
        .bind(counters_json(&Counters {
            pages: 1,
            written: 2,
            ..Counters::default()
        }))
        .execute(&pool)
        .await
        .expect("version 5 rows");
        pool.close().await;
    }
    let store = Store::open(&path).await.expect("migrate");
    let (open, checkpoint) = store
        .open_run("billing", RunKind::Incremental)
        .await
        .expect("q")
        .expect("the open run survives");
    assert_eq!(open.run_id, "open");
    assert_eq!(checkpoint.cursor, json!({"kind": "token", "token": "t9"}));
    assert_eq!(checkpoint.counters.written, 2);
    let status = store.status("billing").await.expect("status");
    assert_eq!(
        status.high_water_mark().map(|t| t.as_second()),
        Some(1000),
        "the last completed run still sets the high-water mark"
    );
    assert_eq!(status.dead_letters, 1);
    let old = store.run_record("old").await.expect("q").expect("record");
    assert!(old.invocations.is_empty(), "older than the history");
    assert_eq!(old.counters().written, 7);
    assert_eq!(old.samples, Samples::default());
    // A run from before resumes into the history like any other.
    store.resume_run("open").await.expect("resume");
    let open = store.run_record("open").await.expect("q").expect("record");
    assert_eq!(open.invocations.len(), 1);
    assert_eq!(open.invocations[0].counters_start.written, 2);
    store.close().await;
    let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
}

#[tokio::test]
async fn a_run_of_another_kind_leaves_the_open_runs_floors_alone() {
    let store = Store::open(&temp_db("floors-kinds")).await.expect("open");
    let intent = |id: &str| Intent {
        source_id: id.into(),
        version: Some(1),
        updated_at: Timestamp::UNIX_EPOCH,
        settles_at: None,
    };
    let announce = |run_id: &str, id: &str| PageCommit {
        announce: Some(IntentBatch {
            id: format!("{run_id}-1"),
            intents: vec![intent(id)],
        }),
        ..PageCommit::default()
    };
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
        .commit_page("billing", "inc", &announce("inc", "a"), None, &counters)
        .await
        .expect("announce");
    store
        .begin_run(&backfill("bf"), &json!({}))
        .await
        .expect("begin");
    store
        .commit_page("billing", "bf", &announce("bf", "b"), None, &counters)
        .await
        .expect("announce");
    store
        .complete_run("bf", &json!({}), &counters, &[])
        .await
        .expect("complete");
    let floors = store.floors("billing").await.expect("floors");
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
        .commit_page("billing", "bf2", &announce("bf2", "c"), None, &counters)
        .await
        .expect("announce");
    store
        .complete_run("inc", &json!({}), &counters, &[])
        .await
        .expect("complete");
    let floors = store.floors("billing").await.expect("floors");
    assert_eq!(floors.keys().collect::<Vec<_>>(), ["c"], "{floors:?}");
}
