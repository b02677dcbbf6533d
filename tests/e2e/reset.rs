//! `highwater reset`: the next run re-reads from where the sync was rewound to,
//! skipping what is unchanged unless the ledger was forgotten; an open run is
//! abandoned only when forced; each reset is in the audit log; bad input changes
//! nothing.

use highwater_core::state::AuditAction;
use serde_json::Value;
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report, stderr};

async fn ok_json(world: &World, args: &[&str]) -> Value {
    let out = world.highwater(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    report(&out)
}

async fn refused(world: &World, args: &[&str], expected: &str) {
    let before = world.state_dump().await;
    let out = world.highwater(args).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains(expected),
        "expected {expected:?}:\n{}",
        describe(&out)
    );
    assert_eq!(
        world.state_dump().await,
        before,
        "refused, yet the state changed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_rewinds_the_sync_and_says_so_in_the_audit_log() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.lookback = "5m";
    setup.page_size = 50;
    let world = World::start("reset", SimConfig::new(53, 600), &setup).await;
    refused(&world, &["reset", SYNC], "no state store yet").await;
    assert!(!world.has_store().await);

    ok_json(&world, &["run", SYNC, "--json"]).await;
    let source = world.sim.source_records();
    let to = source[400].updated_at;
    let from_to: usize = source.iter().filter(|r| r.updated_at >= to).count();
    refused(&world, &["reset", "nope"], "no sync named \"nope\"").await;
    refused(
        &world,
        &["reset", SYNC, "--to", "last week"],
        "expected a time",
    )
    .await;

    // Rewound with the ledger kept: re-read from `to`, nothing written again.
    let done = ok_json(
        &world,
        &[
            "reset",
            SYNC,
            "--to",
            &to.to_string(),
            "--reason",
            "check the last hour",
            "--json",
        ],
    )
    .await;
    let status = ok_json(&world, &["status", "--json"]).await;
    assert_eq!(status["syncs"][0]["high_water_mark"], to.to_string());
    let rerun = ok_json(&world, &["run", SYNC, "--json"]).await;
    assert_eq!(rerun["lower_bound"], to.to_string(), "{rerun}");
    assert_eq!(rerun["counters"]["read"], from_to as u64, "{rerun}");
    assert_eq!(rerun["counters"]["written"], 0, "{rerun}");

    // Rewound to the start with the ledger forgotten: everything written again,
    // and still exactly once in the destination.
    let forgot = ok_json(&world, &["reset", SYNC, "--forget-ledger", "--json"]).await;
    assert!(
        forgot["ledger_rows_forgotten"].as_u64().unwrap_or(0) > 500,
        "{forgot}"
    );
    let again = ok_json(&world, &["run", SYNC, "--json"]).await;
    assert!(again["lower_bound"].is_null(), "{again}");
    let valid = source.iter().filter(|r| r.rejection.is_none()).count() as u64;
    assert_eq!(again["counters"]["written"], valid, "{again}");
    world.assert_exact().await;

    // An open run is abandoned only when forced.
    ok_json(&world, &["reset", SYNC, "--forget-ledger", "--json"]).await;
    let out = world
        .highwater(&["run", SYNC, "--max-pages", "1", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let open = report(&out)["run_id"].clone();
    refused(&world, &["reset", SYNC, "--to", &to.to_string()], "--force").await;
    let forced = ok_json(
        &world,
        &["reset", SYNC, "--to", &to.to_string(), "--force", "--json"],
    )
    .await;
    assert_eq!(forced["abandoned_run"], open);
    let fresh = ok_json(&world, &["run", SYNC, "--json"]).await;
    assert_ne!(fresh["run_id"], open);
    assert_eq!(fresh["resumed"], false);
    assert_eq!(fresh["lower_bound"], to.to_string());
    world.assert_exact().await;

    // Every reset is in the audit log, newest first, with what it did.
    let store = world.store().await;
    let log = store.audit_log(SYNC, 10).await.expect("audit log");
    store.close().await;
    let resets: Vec<_> = log
        .iter()
        .filter(|r| r.entry.action == AuditAction::Reset)
        .collect();
    assert_eq!(resets.len(), 4, "{log:?}");
    assert_eq!(resets[0].entry.details["abandoned_run"], open);
    let first = resets[3];
    assert_eq!(first.id, done["audit_id"].as_i64().expect("audit id"));
    assert_eq!(first.entry.reason.as_deref(), Some("check the last hour"));
    assert_eq!(first.entry.details["to"], to.to_string());
}

/// The external ids of a JSON Lines file's records; none when it is missing.
fn ids(file: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let object: Value = serde_json::from_str(line).expect("a JSON line");
            object["external_id"].as_str().expect("an id").to_owned()
        })
        .collect()
}

/// The config names another destination than the one the sync's ledger
/// describes (another file): the run is refused, naming both and the way on,
/// with nothing read or written, since it would skip every record the ledger
/// says is written; after `reset --forget-ledger` the new destination gets
/// every record, and the old one is then the one refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_into_another_destination_than_the_ledger_s_is_refused() {
    let setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("moved", SimConfig::new(61, 300), &setup).await;
    let first = world.dir.join("first.jsonl");
    world.use_jsonl_destination(&first, None);
    ok_json(&world, &["run", SYNC, "--json"]).await;
    let written = ids(&first);
    assert!(written.len() > 200, "{}", written.len());

    let second = world.dir.join("second.jsonl");
    world.use_jsonl_destination(&second, None);
    let before = world.state_dump().await;
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let message = stderr(&out);
    for expected in [
        "the destination changed",
        "first.jsonl",
        "second.jsonl",
        "highwater reset",
        "--forget-ledger",
        "--destination-moved",
    ] {
        assert!(message.contains(expected), "{expected:?}:\n{message}");
    }
    let dry = world.highwater(&["run", SYNC, "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(1), "{}", describe(&dry));
    assert!(
        stderr(&dry).contains("the destination changed"),
        "{}",
        describe(&dry)
    );
    assert_eq!(
        world.state_dump().await,
        before,
        "refused, yet the state changed"
    );
    assert!(ids(&second).is_empty(), "nothing written to the new file");

    ok_json(&world, &["reset", SYNC, "--forget-ledger", "--json"]).await;
    ok_json(&world, &["run", SYNC, "--json"]).await;
    assert_eq!(ids(&second), written, "the new file holds every record");

    world.use_jsonl_destination(&first, None);
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("second.jsonl"), "{}", describe(&out));
}

/// The file taken away after a run (deleted, or moved without saying so):
/// the next run stops, saying so and the way on, rather than take every
/// record in it for written; after `reset --forget-ledger` every record is
/// written again.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_taken_away_is_not_taken_for_written() {
    let setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("file-gone", SimConfig::new(63, 300), &setup).await;
    let file = world.dir.join("out.jsonl");
    world.use_jsonl_destination(&file, None);
    ok_json(&world, &["run", SYNC, "--json"]).await;
    let held = ids(&file);
    assert!(held.len() > 200, "{}", held.len());
    std::fs::remove_file(&file).expect("remove the file");

    let before = world.state_dump().await;
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    for expected in ["out.jsonl", "not found", "reset <sync> --forget-ledger"] {
        assert!(
            stderr(&out).contains(expected),
            "{expected:?}: {}",
            describe(&out)
        );
    }
    assert!(!file.exists(), "nothing written");
    assert_eq!(world.state_dump().await, before, "the state changed");

    ok_json(&world, &["reset", SYNC, "--forget-ledger", "--json"]).await;
    ok_json(&world, &["run", SYNC, "--json"]).await;
    assert_eq!(ids(&file), held, "every record written again");
}

/// The destination moved (its file to another place): told so, the run keeps
/// the ledger and writes nothing again, the audit log says from where to where,
/// and the next runs take the new place as the sync's. Told so when nothing
/// moved, it changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_said_to_have_moved_keeps_its_ledger() {
    let setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("moved-place", SimConfig::new(62, 300), &setup).await;
    let first = world.dir.join("first.jsonl");
    world.use_jsonl_destination(&first, None);
    let done = ok_json(&world, &["run", SYNC, "--json"]).await;
    assert!(
        done["counters"]["written"].as_u64().unwrap_or(0) > 200,
        "{done}"
    );
    let held = std::fs::read_to_string(&first).expect("the file");
    let moved = world.dir.join("moved.jsonl");
    std::fs::rename(&first, &moved).expect("move the file");
    world.use_jsonl_destination(&moved, None);

    let out = world
        .highwater(&["run", SYNC, "--destination-moved", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for expected in ["the destination moved", "first.jsonl", "moved.jsonl"] {
        assert!(
            stderr(&out).contains(expected),
            "{expected:?}: {}",
            describe(&out)
        );
    }
    let again = ok_json(&world, &["run", SYNC, "--json"]).await;
    for report in [report(&out), again] {
        assert_eq!(report["counters"]["written"], 0, "{report}");
    }
    assert_eq!(
        std::fs::read_to_string(&moved).expect("the file"),
        held,
        "nothing written again"
    );
    let store = world.store().await;
    let log = store.audit_log(SYNC, 10).await.expect("audit log");
    assert_eq!(log.len(), 1, "{log:?}");
    let entry = &log[0].entry;
    assert_eq!(entry.action.as_str(), "destination_moved");
    let (from, to) = (&entry.details["from"], &entry.details["to"]);
    assert!(
        from.as_str().is_some_and(|f| f.ends_with("first.jsonl")),
        "{from}"
    );
    assert!(
        to.as_str().is_some_and(|t| t.ends_with("moved.jsonl")),
        "{to}"
    );

    let out = world.highwater(&["run", SYNC, "--destination-moved"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stderr(&out).contains("nothing moved"), "{}", describe(&out));
    assert_eq!(store.audit_log(SYNC, 10).await.expect("audit log").len(), 1);
}
