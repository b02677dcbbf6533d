//! `highwater dlq`: the dead letters a run left are exactly the records the
//! simulator made invalid or poisoned, each with a reason naming its cause;
//! `show` gives one in full; `discard` needs a reason, refuses unknown ids and a
//! running sync without changing anything, keeps the discarded rows out of every
//! unresolved count, records itself in the audit log, and a later run does not
//! try a discarded record again — until it changes at the source. `replay` tries
//! dead letters again with the current config: a record a mapping fix makes
//! valid is written exactly once and its letter resolved; one still failing keeps
//! its letter with another attempt.

use std::collections::{BTreeMap, BTreeSet};

use highwater_core::state::{self, AuditAction, AuditScope, DeadLetterResolution, RecordAction};
use serde_json::Value;
use simsaas::{Rejection, SimConfig};

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report, stderr, stdout};

/// The fields of a `dlq list --json` line, as README documents them.
const LIST_FIELDS: [&str; 7] = [
    "attempts",
    "first_failed_at",
    "last_failed_at",
    "reason",
    "run_id",
    "source_id",
    "stage",
];

async fn list_json(world: &World) -> Vec<Value> {
    let out = world.highwater(&["dlq", "list", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    stdout(&out)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{}", describe(&out)))
        })
        .collect()
}

fn listed_ids(lines: &[Value]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| l["source_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn show_json(world: &World, id: &str) -> Value {
    let out = world.highwater(&["dlq", "show", SYNC, id, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    report(&out)
}

async fn unresolved_in_status(world: &World) -> i64 {
    let out = world.highwater(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    report(&out)["syncs"][0]["dead_letters"]
        .as_i64()
        .unwrap_or_else(|| panic!("no dead-letter count:\n{}", describe(&out)))
}

/// The stage a record refused for this cause is dead-lettered at, and whether
/// the reason names the cause (the mapping's complaint, or the status).
fn expected_stage(rejection: Rejection) -> &'static str {
    match rejection {
        Rejection::Invalid => "mapping",
        Rejection::Status400 | Rejection::Status422 => "destination",
    }
}

fn names_the_cause(rejection: Rejection, reason: &str) -> bool {
    match rejection {
        Rejection::Invalid => reason.contains("required field") || reason.contains("must be"),
        Rejection::Status400 => reason.contains("HTTP 400"),
        Rejection::Status422 => reason.contains("HTTP 422"),
    }
}

/// Everything a refused command must leave as it was: the store's tables as
/// `state_dump` prints them, and the audit log.
async fn snapshot(world: &World) -> (String, usize) {
    let store = world.store().await;
    let audit = store.audit_log(SYNC, 100).await.expect("audit log").len();
    store.close().await;
    (world.state_dump().await, audit)
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_lists_shows_and_discards_and_a_later_run_does_not_retry_discarded_letters() {
    let mut sim = SimConfig::new(91, 300);
    sim.invalid_ratio = 0.03;
    sim.poisoned_ratio = 0.03;
    // The default three-hour lookback: every later run reads every record again.
    let setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("dlq-flow", sim, &setup).await;
    let first = report(&world.highwater(&["run", SYNC, "--json"]).await);
    let first_run = first["run_id"].as_str().expect("run id").to_owned();

    let source = world.sim.source_records();
    let rejected: BTreeMap<String, Rejection> = source
        .iter()
        .filter_map(|r| r.rejection.map(|why| (r.id.clone(), why)))
        .collect();
    let ids_of = |wanted: fn(Rejection) -> bool| -> Vec<String> {
        rejected
            .iter()
            .filter(|(_, why)| wanted(**why))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let invalid = ids_of(|why| why == Rejection::Invalid);
    let poisoned = ids_of(|why| why != Rejection::Invalid);
    assert!(
        invalid.len() >= 2 && poisoned.len() >= 2,
        "the simulator made too few bad records: {rejected:?}"
    );

    // `list --json`: exactly the records the simulator made bad, oldest first,
    // each with the documented fields and a reason that names the cause.
    let lines = list_json(&world).await;
    assert_eq!(lines.len(), rejected.len(), "one line per dead letter");
    assert_eq!(
        listed_ids(&lines),
        rejected.keys().cloned().collect::<BTreeSet<_>>()
    );
    let mut order = Vec::new();
    for line in &lines {
        let fields: Vec<&str> = line
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, LIST_FIELDS, "{line}");
        let id = line["source_id"].as_str().expect("source id");
        let why = rejected[id];
        let reason = line["reason"].as_str().expect("reason");
        assert_eq!(line["stage"], expected_stage(why), "{line}");
        assert!(names_the_cause(why, reason), "{why:?}: {line}");
        assert_eq!(line["attempts"], 1, "{line}");
        assert_eq!(line["run_id"], first_run.as_str(), "{line}");
        let first_failed: jiff::Timestamp = line["first_failed_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("first_failed_at: {line}"));
        let last_failed: jiff::Timestamp = line["last_failed_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("last_failed_at: {line}"));
        assert!(first_failed <= last_failed, "{line}");
        order.push((first_failed, id.to_owned()));
    }
    assert!(order.is_sorted(), "not oldest first: {order:?}");
    // The table people read names them all too.
    let out = world.highwater(&["dlq", "list", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    for id in rejected.keys() {
        assert!(text.contains(id.as_str()), "{id} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!("{} unresolved", rejected.len())),
        "{text}"
    );
    // A refusal quoting the API's JSON answer shows the answer's message.
    assert!(
        text.contains("HTTP 422: email domain not allowed")
            || text.contains("HTTP 400: email rejected"),
        "{text}"
    );

    // `show`: one in full, the record as the source served it.
    let (bad, poison) = (invalid[0].clone(), poisoned[0].clone());
    let shown = show_json(&world, &bad).await;
    let body = &source.iter().find(|r| r.id == bad).expect("record").body;
    assert_eq!(&shown["payload"], body, "{shown}");
    assert_eq!(shown["stage"], "mapping", "{shown}");
    assert!(shown["resolution"].is_null(), "{shown}");
    let listed = lines.iter().find(|l| l["source_id"] == bad.as_str());
    assert_eq!(
        Some(&shown["reason"]),
        listed.map(|l| &l["reason"]),
        "show and list give one reason"
    );
    let out = world.highwater(&["dlq", "show", SYNC, &poison]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("destination answered HTTP 4"), "{text}");
    assert!(text.contains("state          unresolved"), "{text}");
    assert!(text.contains("poison-4"), "the payload is shown:\n{text}");
    let out = world.highwater(&["dlq", "show", SYNC, "inv_999999"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no dead letter for source id \"inv_999999\""),
        "{}",
        describe(&out)
    );

    // Refused discards change nothing: no reason (clap), a blank one, neither
    // ids nor --all, and an id without an unresolved dead letter among good ones.
    let before = snapshot(&world).await;
    for args in [
        &["dlq", "discard", SYNC, "--id", bad.as_str()][..],
        &[
            "dlq",
            "discard",
            SYNC,
            "--id",
            bad.as_str(),
            "--reason",
            "  ",
        ][..],
        &["dlq", "discard", SYNC, "--reason", "no ids"][..],
        &[
            "dlq",
            "discard",
            SYNC,
            "--all",
            "--id",
            bad.as_str(),
            "--reason",
            "both",
        ][..],
    ] {
        let out = world.highwater(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", describe(&out));
    }
    let out = world
        .highwater(&["dlq", "discard", SYNC, "--id", &bad])
        .await;
    assert!(
        stderr(&out).contains("--reason"),
        "clap names the missing flag:\n{}",
        describe(&out)
    );
    let out = world
        .highwater(&[
            "dlq",
            "discard",
            SYNC,
            "--id",
            &bad,
            "--id",
            "inv_999999",
            "--reason",
            "typo",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no unresolved dead letter for source id \"inv_999999\"")
            && stderr(&out).contains("nothing was discarded"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        snapshot(&world).await,
        before,
        "a refused discard changed the store"
    );

    // Discard two, by id, with a reason.
    let reason = "test customers, never billed";
    let out = world
        .highwater(&[
            "dlq", "discard", SYNC, "--id", &bad, "--id", &poison, "--reason", reason,
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("discarded 2 dead letters"),
        "{}",
        describe(&out)
    );
    let lines = list_json(&world).await;
    let mut remaining: BTreeSet<String> = rejected.keys().cloned().collect();
    remaining.remove(&bad);
    remaining.remove(&poison);
    assert_eq!(
        listed_ids(&lines),
        remaining,
        "discarded letters are not listed"
    );
    assert_eq!(unresolved_in_status(&world).await, remaining.len() as i64);
    let shown = show_json(&world, &bad).await;
    let resolution = &shown["resolution"];
    assert_eq!(resolution["how"], "discarded", "{shown}");
    assert_eq!(resolution["reason"], reason, "{shown}");
    assert_eq!(
        resolution["audit"]["action"], "dead_letter_discard",
        "{shown}"
    );
    assert_eq!(shown["payload"], *body, "the row is kept whole: {shown}");
    let text = stdout(&world.highwater(&["dlq", "show", SYNC, &bad]).await);
    assert!(text.contains("state          discarded "), "{text}");
    assert!(text.contains(reason), "{text}");
    // explain tells a discarded dead letter from an open or a written one.
    let out = world.highwater(&["explain", SYNC, &bad, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let story = report(&out);
    assert_eq!(
        story["now"]["dead_letter"]["resolution"], "discarded",
        "{story}"
    );
    let text = stdout(&world.highwater(&["explain", SYNC, &bad]).await);
    assert!(text.contains("dead letter (discarded "), "{text}");

    // The audit log holds the discard: its ids and its reason.
    let store = world.store().await;
    let log = store.audit_log(SYNC, 10).await.expect("audit log");
    store.close().await;
    assert_eq!(log.len(), 1, "{log:?}");
    let entry = &log[0];
    assert_eq!(entry.id, resolution["audit"]["id"].as_i64().unwrap_or(-1));
    assert_eq!(entry.entry.action, AuditAction::DeadLetterDiscard);
    assert_eq!(entry.entry.reason.as_deref(), Some(reason));
    let AuditScope::Records { ids } = &entry.entry.scope else {
        panic!("a discard touches records: {entry:?}");
    };
    assert_eq!(
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([bad.clone(), poison.clone()])
    );

    // Discarded once is not unresolved: a second discard of it is bad input.
    let out = world
        .highwater(&["dlq", "discard", SYNC, "--id", &bad, "--reason", "again"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    // --all: the rest.
    let out = world
        .highwater(&[
            "dlq",
            "discard",
            SYNC,
            "--all",
            "--reason",
            "bad batch from the old billing import",
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let done = report(&out);
    assert_eq!(done["discarded"], remaining.len(), "{done}");
    let discarded: BTreeSet<String> = done["source_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect();
    assert_eq!(discarded, remaining);
    assert!(list_json(&world).await.is_empty());
    assert_eq!(unresolved_in_status(&world).await, 0);
    let text = stdout(&world.highwater(&["dlq", "list", SYNC]).await);
    assert!(text.contains("no unresolved dead letters"), "{text}");

    // The next run reads every record again and tries none of the discarded
    // ones: the destination refuses nothing more, and each letter stays
    // discarded with the one attempt it had.
    let refused_before = world.sim.stats().dest.rejected;
    let second = report(&world.highwater(&["run", SYNC, "--json"]).await);
    assert_eq!(second["outcome"], "completed", "{second}");
    let second_run = second["run_id"].as_str().expect("run id").to_owned();
    assert_eq!(
        world.sim.stats().dest.rejected,
        refused_before,
        "a discarded record was sent to the destination again"
    );
    assert!(list_json(&world).await.is_empty());
    assert_eq!(unresolved_in_status(&world).await, 0);
    let store = world.store().await;
    for id in rejected.keys() {
        let letter = store
            .dead_letter(SYNC, id)
            .await
            .expect("dead letter")
            .unwrap_or_else(|| panic!("{id}: the discarded row is gone"));
        assert_eq!(letter.summary.attempts, 1, "{id} was tried again");
        assert_eq!(
            letter.resolution.map(|r| r.how),
            Some(DeadLetterResolution::Discarded),
            "{id}"
        );
        let story = store.record_story(SYNC, id).await.expect("story");
        assert!(
            story.iter().any(
                |e| e.run_id == second_run && e.event.action == RecordAction::StillDeadLettered
            ),
            "{id}: the second run did not read it (the test proves nothing): {story:?}"
        );
    }
    store.close().await;

    // A discarded record that changes at the source is tried again like any
    // changed record; still poisoned, it is an unresolved dead letter again.
    world.sim.update_record(&poison).expect("record exists");
    let third = report(&world.highwater(&["run", SYNC, "--json"]).await);
    assert_eq!(third["outcome"], "completed", "{third}");
    assert_eq!(
        world.sim.stats().dest.rejected,
        refused_before + 1,
        "the changed record was tried once"
    );
    let lines = list_json(&world).await;
    assert_eq!(listed_ids(&lines), BTreeSet::from([poison.clone()]));
    assert_eq!(lines[0]["attempts"], 2, "{}", lines[0]);
    assert_eq!(unresolved_in_status(&world).await, 1);
    let store = world.store().await;
    assert_eq!(
        store.audit_log(SYNC, 10).await.expect("audit log").len(),
        2,
        "the audit log keeps both discards"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_refuses_bad_input_and_a_running_sync_changing_nothing() {
    let mut sim = SimConfig::new(92, 100);
    sim.invalid_ratio = 0.05;
    sim.poisoned_ratio = 0.0;
    let world = World::start("dlq-refusals", sim, &Setup::new(Style::Cursor, Mode::Put)).await;

    // No state store yet: bad input, and nothing is created (not even a lock).
    for args in [
        &["dlq", "list", SYNC][..],
        &["dlq", "show", SYNC, "inv_000001"][..],
        &["dlq", "discard", SYNC, "--all", "--reason", "early"][..],
    ] {
        let out = world.highwater(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", describe(&out));
        assert!(
            stderr(&out).contains("no state store yet"),
            "{args:?}\n{}",
            describe(&out)
        );
    }
    assert!(!world.has_store().await);
    assert!(!world.dir.join("locks").exists());

    world.run_to_completion().await;
    let letters = list_json(&world).await;
    assert_eq!(letters.len(), 5, "{letters:?}");
    let before = snapshot(&world).await;

    // An unknown sync is bad input, for each subcommand.
    for args in [
        &["dlq", "list", "nope"][..],
        &["dlq", "show", "nope", "inv_000001"][..],
        &["dlq", "discard", "nope", "--all", "--reason", "wrong sync"][..],
    ] {
        let out = world.highwater(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", describe(&out));
        assert!(
            stderr(&out).contains("no sync named \"nope\""),
            "{args:?}\n{}",
            describe(&out)
        );
    }

    // While any run of the sync goes on (here a backfill's lock is held),
    // nothing is discarded, and the message says why.
    let lock = world
        .store()
        .await
        .lock_run(SYNC, state::RunKind::Backfill, false)
        .await
        .expect("the sync's backfill lock");
    let out = world
        .highwater(&["dlq", "discard", SYNC, "--all", "--reason", "mid-run"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("sync \"{SYNC}\" is running its backfill run ("))
            && message.contains(&std::process::id().to_string())
            && message.contains("nothing was discarded"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        snapshot(&world).await,
        before,
        "a refused discard changed the store"
    );
    // Reading needs no lock.
    assert_eq!(list_json(&world).await.len(), 5);
    lock.release().await;

    let out = world
        .highwater(&["dlq", "discard", SYNC, "--all", "--reason", "after the run"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("discarded 5 dead letters"),
        "{}",
        describe(&out)
    );
    // Nothing left: said so, and nothing recorded.
    let out = world
        .highwater(&["dlq", "discard", SYNC, "--all", "--reason", "again"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("nothing to discard"),
        "{}",
        describe(&out)
    );
    let store = world.store().await;
    assert_eq!(store.audit_log(SYNC, 10).await.expect("audit log").len(), 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_fixed_in_config_is_replayed_and_written_exactly_once() {
    let mut sim = SimConfig::new(37, 400);
    sim.invalid_ratio = 0.03;
    sim.poisoned_ratio = 0.0;
    let world = World::start("dlq-replay", sim, &Setup::new(Style::Cursor, Mode::Put)).await;
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let invalid: BTreeSet<String> = world
        .sim
        .source_records()
        .into_iter()
        .filter(|r| r.rejection == Some(Rejection::Invalid))
        .map(|r| r.id)
        .collect();
    assert!(invalid.len() >= 5, "{invalid:?}");
    let letters = list_json(&world).await;
    assert_eq!(letters.len(), invalid.len());

    // Bad input replays nothing.
    let before = world.state_dump().await;
    let out = world
        .highwater(&["dlq", "replay", SYNC, "--id", "inv_999999"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("inv_999999"), "{}", describe(&out));
    let out = world.highwater(&["dlq", "replay", SYNC]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(world.state_dump().await, before);

    // Replayed with the config unchanged: it fails the same way, one more attempt.
    let first = invalid.iter().next().expect("an invalid record").clone();
    let out = world
        .highwater(&["dlq", "replay", SYNC, "--id", &first, "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let replay = report(&out);
    assert_eq!(replay["counters"]["read"], 1, "{replay}");
    assert_eq!(replay["counters"]["dead_lettered"], 1, "{replay}");
    let letter = report(
        &world
            .highwater(&["dlq", "show", SYNC, &first, "--json"])
            .await,
    );
    assert_eq!(letter["attempts"], 2, "{letter}");
    assert_eq!(letter["stage"], "mapping", "{letter}");

    // The mapping is fixed: the fields those records lack are no longer required.
    let text = std::fs::read_to_string(&world.config).expect("config");
    let fixed = text.replace(
        "[sync.mapping.required]\nemail = \"string\"\namount_cents = \"integer\"\n",
        "",
    );
    assert_ne!(fixed, text, "the required table was not found in:\n{text}");
    std::fs::write(&world.config, fixed).expect("write config");
    let before = world.sim.dest_dump();
    let out = world
        .highwater(&["dlq", "replay", SYNC, "--all", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let replay = report(&out);
    assert_eq!(
        replay["counters"]["written"],
        invalid.len() as u64,
        "{replay}"
    );
    assert!(list_json(&world).await.is_empty(), "every letter resolved");
    let after = world.sim.dest_dump();
    let new: Vec<_> = after
        .objects
        .iter()
        .filter(|o| {
            !before
                .objects
                .iter()
                .any(|b| b.external_id == o.external_id)
        })
        .collect();
    let written: BTreeSet<String> = new.iter().map(|o| o.external_id.clone()).collect();
    assert_eq!(
        written, invalid,
        "exactly the dead-lettered records were written"
    );
    assert!(new.iter().all(|o| o.writes == 1), "{new:?}");
    assert_eq!(after.objects.len(), before.objects.len() + invalid.len());

    // Replaying again finds nothing to do; the run history and explain tell it.
    let out = world
        .highwater(&["dlq", "replay", SYNC, "--all", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report(&out)["counters"]["read"], 0);
    let story = report(&world.highwater(&["explain", SYNC, &first, "--json"]).await);
    let kinds: Vec<(String, String)> = story["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("?").to_owned(),
                e["action"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("incremental", "dead_lettered"),
        ("replay", "dead_lettered"),
        ("replay", "written"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(kinds, expected, "{story}");
    assert!(
        story["now"]["dead_letter"]["resolved_at"].is_string(),
        "{story}"
    );
    let store = world.store().await;
    let replays = store
        .audit_log(SYNC, 10)
        .await
        .expect("audit log")
        .into_iter()
        .filter(|r| r.entry.action == AuditAction::DeadLetterReplay)
        .count();
    store.close().await;
    assert_eq!(replays, 3, "one audit row per replay that ran");
}

/// A mapping that refuses every record halts the run at its dead-letter
/// budget, and the message says what then stays dead-lettered and how to
/// write it once the cause is fixed: the run resumes from its checkpoint,
/// the replay writes the rest, and the destination is exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_halted_by_its_dead_letters_says_how_to_write_them_once_fixed() {
    // Past the window of 200 records, and a run too short to fill it, judged
    // at its end by all it resolved.
    for records in [1_000, 100] {
        halted_by_its_dead_letters(records).await;
    }
}

async fn halted_by_its_dead_letters(records: usize) {
    let mut sim = SimConfig::new(38, records);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start(&format!("dlq-surge-{records}"), sim, &setup).await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let required = "amount_cents = \"integer\"\n";
    assert!(text.contains(required), "{text}");
    std::fs::write(
        &world.config,
        text.replace(required, "amount_cents = \"string\"\n"),
    )
    .expect("config");
    let halted = world.highwater(&["run", SYNC]).await;
    assert_eq!(halted.status.code(), Some(1), "{}", describe(&halted));
    assert!(
        stderr(&halted).contains("halted: "),
        "{}",
        describe(&halted)
    );
    // The letters committed before the halt stay, and the message says how
    // many. A surge halts at once, and how many pages were committed by
    // then varies with the load (under load, none): only the short run,
    // halted once every page is committed, says how many.
    let left = list_json(&world).await.len();
    if records < 200 {
        assert_eq!(left, records, "the short run refused every record");
    }
    let said = if left == 0 {
        "no dead letter was kept: the run halted before committing a page that held one".to_owned()
    } else {
        format!(
            "the {left} records dead-lettered before the halt stay dead letters when the run resumes: once the cause is fixed, `highwater dlq replay {SYNC} --all` writes them"
        )
    };
    assert!(
        stderr(&halted).contains(&said),
        "{said}\n{}",
        describe(&halted)
    );

    std::fs::write(&world.config, &text).expect("config");
    world.run_to_completion().await;
    assert_eq!(
        list_json(&world).await.len(),
        left,
        "the letters stay until replayed"
    );
    let out = world
        .highwater(&["dlq", "replay", SYNC, "--all", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report(&out)["counters"]["written"], left as u64);
    assert!(list_json(&world).await.is_empty());
    let v = world.assert_exact().await;
    assert_eq!(v.dead_lettered, 0, "{v}");
}
