//! Run history: `highwater runs <sync>` and `runs show <run-id>` tell the truth
//! about runs that completed, stopped at a budget and failed — their counts agree
//! with the reports `run --json` printed, their retries by class with what the
//! simulator served, their example ids with the destination and the dead letters —
//! and bad input to them is refused, exit 2, changing nothing.

use std::collections::HashSet;
use std::process::Output;

use serde_json::{Value, json};
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report, stderr, stdout};

/// `runs <sync> --json`: one record per line, newest first.
async fn runs(world: &World) -> Vec<Value> {
    let out = world.highwater(&["runs", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    stdout(&out)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{}", describe(&out)))
        })
        .collect()
}

/// `runs show <id> --json`.
async fn show(world: &World, run_id: &str) -> Value {
    let out = world.highwater(&["runs", "show", run_id, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    report(&out)
}

fn outcomes(record: &Value) -> Vec<Value> {
    record["invocations"]
        .as_array()
        .unwrap_or_else(|| panic!("no invocations: {record}"))
        .iter()
        .map(|i| i["outcome"].clone())
        .collect()
}

/// Bad input: exit 2 and one line saying what is wrong.
fn assert_refused(out: &Output, expected: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    let message = stderr(out);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(
        message.contains(expected),
        "expected {expected:?} in:\n{message}"
    );
    assert_eq!(stdout(out), "", "bad input prints no result");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_run_is_recorded_as_its_report_tells_it() {
    let mut sim = SimConfig::new(61, 600);
    sim.dest.rate_limit_ratio = 0.02;
    sim.dest.retry_after_secs = 0;
    sim.dest.burst_start_ratio = 0.01;
    let world = World::start("runs-complete", sim, &Setup::new(Style::Cursor, Mode::Put)).await;
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let run = report(&out);

    let records = runs(&world).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["run_id"], run["run_id"]);
    assert_eq!(record["sync"], SYNC);
    assert_eq!(record["kind"], "incremental");
    assert_eq!(record["status"], "completed");
    assert_eq!(record["last_outcome"], "completed");
    assert_eq!(record["watermark"], run["watermark"]);
    assert_eq!(record["lower_bound"], run["lower_bound"]);
    assert_eq!(record["counters"], run["counters"]);
    assert_eq!(record["retries"], run["retries"], "{}", describe(&out));
    assert!(record["ended_at"].is_string(), "{record}");
    assert!(record["errors"]["last_error"].is_null(), "{record}");
    assert_eq!(outcomes(record), [json!("completed")]);
    let invocation = &record["invocations"][0];
    assert_eq!(invocation["counters"], run["session"]);
    assert_eq!(invocation["retries"], run["retries"]);
    assert_eq!(record["cursor_start"], json!({"kind": "start"}));
    assert_eq!(record["cursor_end"], invocation["cursor_end"]);
    assert_eq!(record["cursor_end"], json!({"kind": "end"}));

    // Retries by class are what the simulator served: every 429 and every 5xx
    // was retried, and nothing else was.
    let stats = world.sim.stats();
    let by_class = &record["errors"]["retries_by_class"];
    let served_429 = stats.source.rate_limited
        + stats.source.rate_limited_date
        + stats.dest.rate_limited
        + stats.dest.rate_limited_date;
    let served_5xx = stats.source.server_errors + stats.dest.server_errors;
    assert!(
        served_429 > 0 && served_5xx > 0,
        "no faults served: {stats:?}"
    );
    assert_eq!(by_class["rate_limited"], served_429, "{record}\n{stats:?}");
    assert_eq!(by_class["server_error"], served_5xx, "{record}\n{stats:?}");
    assert_eq!(
        (
            &by_class["timeout"],
            &by_class["connection"],
            &by_class["other"]
        ),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!(record["retries"], served_429 + served_5xx);

    // The examples are real: written ids are in the destination, dead-lettered
    // ones in the dead letters.
    let written: Vec<&str> = record["samples"]["written"]
        .as_array()
        .expect("written ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(written.len(), 5, "{record}");
    let in_destination: HashSet<String> = world
        .sim
        .dest_dump()
        .objects
        .into_iter()
        .map(|o| o.external_id)
        .collect();
    for id in &written {
        assert!(
            in_destination.contains(*id),
            "{id} is not in the destination"
        );
    }
    let dead: Vec<&str> = record["samples"]["dead_lettered"]
        .as_array()
        .expect("dead-lettered ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!dead.is_empty(), "{record}");
    let store = world.store().await;
    let letters: HashSet<String> = store
        .dead_letters(SYNC)
        .await
        .expect("dead letters")
        .into_iter()
        .map(|d| d.source_id)
        .collect();
    store.close().await;
    for id in &dead {
        assert!(letters.contains(*id), "{id} has no dead letter");
    }

    // `runs show` gives the same record, by the full id or the short one a list shows.
    let run_id = run["run_id"].as_str().expect("run id");
    assert_eq!(&show(&world, run_id).await, record);
    let out = world.highwater(&["runs", "show", &run_id[..13]]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    for part in [
        format!("run {run_id} of sync \"invoices\": incremental run, completed"),
        "watermark".to_owned(),
        format!("written              {}", run["counters"]["written"]),
        format!(
            "retries              {} (429: {served_429}, 5xx: {served_5xx}, timeout: 0, connection: 0, other: 0)",
            run["retries"]
        ),
        format!("written, e.g.        {}", written.join(", ")),
        "#1 ".to_owned(),
    ] {
        assert!(text.contains(&part), "{part:?} missing from:\n{text}");
    }
    let out = world.highwater(&["runs", SYNC]).await;
    let table = stdout(&out);
    for part in [&run_id[..13], "completed", "dead-lettered", "retries"] {
        assert!(table.contains(part), "{part:?} missing from:\n{table}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_stopped_by_max_pages_is_open_with_its_reason_until_resumed() {
    let mut setup = Setup::new(Style::Keyset, Mode::Put);
    setup.page_size = 50;
    let world = World::start("runs-stopped", SimConfig::new(62, 400), &setup).await;
    let out = world
        .highwater(&["run", SYNC, "--max-pages", "2", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let first = report(&out);

    let record = &runs(&world).await[0];
    assert_eq!(record["run_id"], first["run_id"]);
    assert_eq!(record["status"], "open");
    assert_eq!(record["last_outcome"], "stopped");
    assert_eq!(record["stop_reason"], "max-pages reached");
    assert!(record["ended_at"].is_null(), "an open run has not ended");
    assert_eq!(record["counters"], first["counters"]);
    assert_eq!(record["invocations"][0]["counters"], first["session"]);
    assert_eq!(record["retries"], first["retries"]);
    assert_ne!(record["cursor_end"], json!({"kind": "start"}));
    let table = stdout(&world.highwater(&["runs", SYNC]).await);
    assert!(table.contains("open: stopped"), "{table}");
    assert!(table.contains("max-pages reached"), "{table}");

    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let second = report(&out);
    assert_eq!(second["run_id"], first["run_id"]);

    let records = runs(&world).await;
    assert_eq!(records.len(), 1, "a resumed run is the same run");
    let record = &records[0];
    assert_eq!(record["status"], "completed");
    assert_eq!(outcomes(record), [json!("stopped"), json!("completed")]);
    let [stopped, completed] = [&record["invocations"][0], &record["invocations"][1]];
    assert_eq!(stopped["stop_reason"], "max-pages reached");
    assert_eq!(stopped["counters"], first["session"]);
    assert_eq!(stopped["counters_at_end"], first["counters"]);
    assert_eq!(completed["counters"], second["session"]);
    assert_eq!(
        completed["cursor_start"], stopped["cursor_end"],
        "the resumed invocation starts where the stopped one left its checkpoint"
    );
    assert_eq!(record["counters"], second["counters"]);
    let retries = |r: &Value| r["retries"].as_u64().expect("retries");
    assert_eq!(retries(record), retries(&first) + retries(&second));
    assert_eq!(
        &show(&world, second["run_id"].as_str().expect("id")).await,
        record
    );
    world.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_runs_are_in_the_history_with_their_error_whether_resumable_or_not() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.page_size = 50;
    setup.max_attempts = 2;
    let world = World::start("runs-failed", SimConfig::new(63, 300), &setup).await;
    let config = std::fs::read_to_string(&world.config).expect("read config");
    // Port 9 (discard) on loopback: nothing listens there.
    let write_config = |text: &str| std::fs::write(&world.config, text).expect("write config");
    let no_destination = config.replace(&world.sim.dest_url(), "http://127.0.0.1:9");
    let no_source = config.replace(&world.sim.source_url(), "http://127.0.0.1:9");

    // The destination is unreachable: writes were attempted, and may have landed
    // for all the run can tell, so it stays open, resumable, with its error said.
    write_config(&no_destination);
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let failure = report(&out);
    assert_eq!(failure["resumable"], true);
    let run_id = failure["run_id"].as_str().expect("run id").to_owned();
    let record = &runs(&world).await[0];
    assert_eq!(record["run_id"], run_id.as_str());
    assert_eq!(record["status"], "open");
    assert_eq!(record["last_outcome"], "failed", "{}", describe(&out));
    assert!(record["ended_at"].is_null(), "{record}");
    assert_eq!(record["counters"], failure["counters"]);
    let last_error = &record["errors"]["last_error"];
    assert_eq!(last_error["class"], "destination:retries_exhausted");
    assert_eq!(last_error["message"], failure["error"]);
    assert_eq!(
        record["errors"]["failures_by_class"],
        json!({"destination:retries_exhausted": 1})
    );
    let by_class = &record["errors"]["retries_by_class"];
    assert!(
        by_class["connection"].as_u64().is_some_and(|n| n > 0),
        "{record}"
    );
    assert_eq!(
        record["retries"], by_class["connection"],
        "only connections failed"
    );
    let table = stdout(&world.highwater(&["runs", SYNC]).await);
    assert!(table.contains("open: failed"), "{table}");
    assert!(table.contains("destination kept failing"), "{table}");

    // Fixed, the next invocation resumes the same run and completes it.
    write_config(&config);
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let done = report(&out);
    assert_eq!(
        (&done["run_id"], &done["resumed"]),
        (&json!(run_id), &json!(true))
    );
    let record = show(&world, &run_id).await;
    assert_eq!(record["status"], "completed");
    assert_eq!(outcomes(&record), [json!("failed"), json!("completed")]);
    assert_eq!(record["invocations"][0]["error"], failure["error"]);
    assert_eq!(record["invocations"][1]["counters"], done["session"]);
    assert_eq!(record["counters"], done["counters"]);
    assert_eq!(
        record["errors"]["failures_by_class"],
        json!({"destination:retries_exhausted": 1}),
        "a completed run still says what it went through"
    );
    world.assert_exact().await;

    // The source is unreachable: nothing was done, so nothing is resumed, but
    // the history keeps the attempt, failed.
    write_config(&no_source);
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let failure = report(&out);
    assert_eq!(failure["resumable"], false);
    let records = runs(&world).await;
    let ids: Vec<&Value> = records.iter().map(|r| &r["run_id"]).collect();
    assert_eq!(ids, [&failure["run_id"], &json!(run_id)], "newest first");
    let record = &records[0];
    assert_eq!(record["status"], "failed");
    assert_eq!(record["last_outcome"], "failed");
    assert!(record["ended_at"].is_string(), "{record}");
    assert_eq!(record["counters"], failure["counters"]);
    assert_eq!(
        record["errors"]["last_error"]["class"],
        "source:retries_exhausted"
    );
    assert_eq!(record["errors"]["last_error"]["message"], failure["error"]);
    let status = report(&world.highwater(&["status", "--json"]).await);
    assert!(
        status["syncs"][0]["open_run"].is_null(),
        "nothing to resume"
    );
    let table = stdout(&world.highwater(&["runs", SYNC]).await);
    assert!(table.contains("failed"), "{table}");
    write_config(&config);
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let next = report(&out);
    assert_eq!(next["resumed"], false, "a failed run is not resumed");
    assert_ne!(next["run_id"], failure["run_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_to_runs_is_refused_and_changes_nothing() {
    let world = World::start(
        "runs-bad-input",
        SimConfig::new(64, 100),
        &Setup::new(Style::Cursor, Mode::Put),
    )
    .await;
    // No state store yet: said so, and none is created.
    for args in [
        &["runs", SYNC][..],
        &["runs", SYNC, "--json"],
        &["runs", "show", "0190"],
        &["--json", "runs", "show", "0190"],
    ] {
        let out = world.highwater(args).await;
        assert_refused(&out, "no state store yet");
        assert!(!world.has_store().await, "{args:?} created the state store");
    }
    let out = world.highwater(&["runs", "nope"]).await;
    assert_refused(&out, "no sync named \"nope\" (defined: invoices)");
    assert!(!world.has_store().await);

    world.run_to_completion().await;
    world.run_to_completion().await;
    let before = (world.state_dump().await, runs(&world).await);
    assert_eq!(before.1.len(), 2);
    let out = world.highwater(&["runs", "nope", "--json"]).await;
    assert_refused(&out, "no sync named \"nope\" (defined: invoices)");
    let out = world
        .highwater(&["runs", "show", "00000000-0000-7000-8000-000000000000"])
        .await;
    assert_refused(
        &out,
        "no run with id \"00000000-0000-7000-8000-000000000000\"",
    );
    // Both runs' ids start with "0": a prefix must tell them apart.
    let out = world.highwater(&["runs", "show", "0"]).await;
    assert_refused(&out, "\"0\" starts the ids of 2 runs");
    let out = world.highwater(&["runs", "show", ""]).await;
    assert_refused(&out, "runs show: give a run id");
    let out = world.highwater(&["runs"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        (world.state_dump().await, runs(&world).await),
        before,
        "bad input changed the state store"
    );
}
