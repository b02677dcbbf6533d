//! Run history: closed sets stored by name, audit records, invocations found
//! crashed, and a store from before the history.

use super::*;

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
        let result = sqlx::query(statement).execute(store.sqlite_pool()).await;
        assert!(result.is_err(), "{statement} was admitted");
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
}

#[tokio::test]
async fn the_audit_record_tells_each_invocation_with_counts_retries_and_samples() {
    for store in each_store("audit").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let letter = |id: &str| dead_letter(id, "r1");
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
    }
}

/// A killed invocation leaves no end; the next one of the run says so, and until
/// then the record falls back on the checkpoint's counters.
#[tokio::test]
async fn an_invocation_that_never_ended_is_found_crashed_by_the_next() {
    for store in each_store("crashed").await {
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
    }
}

/// Migration 6 rebuilds `runs`, which `checkpoints` references with ON DELETE
/// CASCADE: a store from before keeps its open run's cursor, its high-water mark
/// and its dead letters.
#[tokio::test]
async fn a_store_from_before_the_run_history_keeps_its_runs_checkpoints_and_dead_letters() {
    let (path, pool) = store_before("migrate-history", 5).await;
    {
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
