//! `highwater state copy --to postgres://…`: a SQLite store with open dead
//! letters, a completed history, record events and an audit entry moves into
//! an empty PostgreSQL schema; the next run on PostgreSQL resumes from the same
//! high-water mark and writes nothing again. The copy is refused while a run
//! is open, and into a schema that holds runs already; a refused copy copies
//! nothing. A PostgreSQL store that does not answer is named, without its
//! password, and nothing runs.

use serde_json::Value;
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, postgres_url, report, stderr};

async fn json(world: &World, args: &[&str]) -> Value {
    let out = world.highwater(args).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}\n{}", describe(&out));
    report(&out)
}

/// What `status`, `runs` and `dlq list` say of the sync, less where the store
/// is and the lag, which grows as the test goes.
async fn seen(world: &World) -> (Value, String, String) {
    let mut status = json(world, &["--json", "status"]).await;
    status["state"] = Value::Null;
    status["syncs"][0]["lag_seconds"] = Value::Null;
    (
        status,
        lines(world, &["--json", "runs", SYNC]).await,
        lines(world, &["--json", "dlq", "list", SYNC]).await,
    )
}

/// A command's JSON lines, one per run or dead letter.
async fn lines(world: &World, args: &[&str]) -> String {
    let out = world.highwater(args).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}\n{}", describe(&out));
    crate::util::stdout(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copied_store_resumes_from_the_same_mark_and_rewrites_nothing() {
    let mut sim = SimConfig::new(83, 500);
    sim.invalid_ratio = 0.02;
    let world = World::start("state-copy", sim, &Setup::new(Style::Cursor, Mode::Put)).await;
    world.use_file_state();
    let schema = crate::util::fresh_schema(&world.dir);
    let to = postgres_url();
    let copy = [
        "state",
        "copy",
        "--to",
        to.as_str(),
        "--schema",
        schema.as_str(),
    ];

    // A run left open (stopped by its page budget) is not copied.
    let out = world.highwater(&["run", SYNC, "--max-pages", "1"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let out = world.highwater(&copy).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("is open") && stderr(&out).contains("nothing was copied"),
        "{}",
        describe(&out)
    );
    world.run_to_completion().await;
    world.run_to_completion().await;
    // One dead letter discarded (in the audit log), the others left open.
    let letters = lines(&world, &["--json", "dlq", "list", SYNC]).await;
    let first: Value = letters
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a dead letter");
    let id = first["source_id"].as_str().expect("its source id");
    let discarded = id.to_owned();
    let out = world
        .highwater(&[
            "dlq",
            "discard",
            SYNC,
            "--id",
            id,
            "--reason",
            "before the move",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    world.sim.update_record("inv_000007");
    world.run_to_completion().await;
    let before = seen(&world).await;
    let dead = before.2.lines().count();
    assert!(dead > 0, "no open dead letters to copy");
    let story = json(&world, &["--json", "explain", SYNC, "inv_000007"]).await;

    let copied = json(
        &world,
        &["--json", "state", "copy", "--to", &to, "--schema", &schema],
    )
    .await;
    assert!(
        copied["rows"]["ledger"].as_u64().unwrap_or(0) > 400,
        "{copied}"
    );
    assert_eq!(copied["rows"]["audit_log"], 1, "{copied}");

    // Into a schema that holds runs: refused.
    let out = world.highwater(&copy).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("already holds"), "{}", describe(&out));

    // The config now names the copy: everything reads as it did.
    world.use_postgres_schema(&schema);
    assert_eq!(seen(&world).await, before, "the copy reads otherwise");
    assert_eq!(
        json(&world, &["--json", "explain", SYNC, "inv_000007"]).await,
        story
    );
    let writes = world.sim.stats().dest.writes_applied;
    let run = json(&world, &["--json", "run", SYNC]).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    let mark: jiff::Timestamp = before.0["syncs"][0]["high_water_mark"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a high-water mark");
    let lower: jiff::Timestamp = run["lower_bound"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a lower bound");
    assert_eq!(
        lower,
        mark - jiff::SignedDuration::from_hours(3),
        "the run on the copy did not start from the same mark less the lookback: {run}"
    );
    assert_eq!(run["counters"]["written"], 0, "{run}");
    assert_eq!(world.sim.stats().dest.writes_applied, writes);
    let after = lines(&world, &["--json", "dlq", "list", SYNC]).await;
    assert_eq!(after.lines().count(), dead, "{after}");
    // Every record but the one discarded by hand is where it belongs.
    let others: std::collections::HashSet<String> = world
        .sim
        .source_records()
        .into_iter()
        .map(|r| r.id)
        .filter(|id| id != &discarded)
        .collect();
    let v = world.verify_only(&others).await;
    assert!(v.is_exact(), "{v}");
}

/// A PostgreSQL state store that does not answer: `run` and `status` say which
/// store (without its password) and why, and nothing is read or written.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_postgres_store_is_named_and_nothing_runs() {
    let world = World::start(
        "state-unreachable",
        SimConfig::new(84, 50),
        &Setup::new(Style::Cursor, Mode::Put),
    )
    .await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let start = text.find("[[sync]]").expect("a sync");
    std::fs::write(
        &world.config,
        format!(
            "[state]\nurl = \"postgres://hw:hunter2@127.0.0.1:1/ops\"\n\n{}",
            &text[start..]
        ),
    )
    .expect("config");
    for args in [&["run", SYNC][..], &["status"][..]] {
        let out = world.highwater(args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}\n{}", describe(&out));
        let message = stderr(&out);
        assert!(
            message.contains("postgres://127.0.0.1:1/ops (schema highwater)"),
            "{args:?}: the store is not named:\n{message}"
        );
        assert!(
            !message.contains("hunter2"),
            "the password shows:\n{message}"
        );
    }
    let stats = world.sim.stats();
    assert_eq!((stats.source.requests, stats.dest.requests), (0, 0));
}
