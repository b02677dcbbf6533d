//! Deletes: the deletes endpoint applied once per record across SIGKILLs, the
//! soft-delete marker applied by the regular run, a deleted record never brought
//! back by an older copy and written again once re-created, `explain` telling a
//! deleted record's story, and `--deletes` refused, changing nothing, where the
//! sync has nothing for it to read.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use highwater_core::state::RunKind;
use simsaas::{Deletion, SimConfig};

use crate::util::{
    KillDelays, Mode, SYNC, Setup, Style, World, describe, progress, report, stderr, stdout,
    wait_bounded,
};

/// `[sync.deletes]` reading the simulator's deletes feed, deleting the way
/// each write mode addresses a record.
pub fn deletes_endpoint(mode: Mode) -> String {
    let delete_path = match mode {
        Mode::Lookup => "/v1/contacts/{dest_id}",
        Mode::Put | Mode::Post | Mode::Batch => "/v1/contacts/by-external-id/{external_id}",
    };
    format!(
        r#"path = "/v1/invoices/deleted"
records_path = "data"
deleted_at_field = "deleted_at"
lower_bound_param = "updated_after"
upper_bound_param = "updated_before"
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}
delete_path = "{delete_path}""#
    )
}

fn soft_delete_marker(mode: Mode) -> String {
    let endpoint = deletes_endpoint(mode);
    let delete_path = endpoint
        .lines()
        .find(|l| l.starts_with("delete_path"))
        .unwrap_or_default();
    format!("marker_field = \"deleted\"\nmarker_value = true\n{delete_path}")
}

/// Live, valid record ids, spread over the dataset.
fn pick(world: &World, every: usize) -> Vec<String> {
    world
        .sim
        .source_records()
        .into_iter()
        .filter(|r| r.rejection.is_none())
        .step_by(every)
        .map(|r| r.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn deletions_are_applied_exactly_once_across_kills() {
    for mode in [Mode::Put, Mode::Lookup] {
        let mut sim = SimConfig::new(201, 600);
        sim.poisoned_ratio = 0.0;
        let mut setup = Setup::new(Style::Cursor, mode);
        // Small pages and a slow destination: a deletes run commits many pages
        // over a second or two, so kills land inside it.
        setup.page_size = 10;
        setup.concurrency = 2;
        setup.deletes = deletes_endpoint(mode);
        let world = World::start(&format!("deletes-kills-{mode:?}"), sim, &setup).await;
        world.run_to_completion().await;
        let deleted = pick(&world, 6);
        for id in &deleted {
            assert!(world.sim.delete_record(id, Deletion::Hard), "{id}");
        }
        let mut dest = world.sim.dest_faults();
        dest.latency = Duration::from_millis(25);
        world.sim.set_dest_faults(dest.clone());

        let mut delays = KillDelays::new(201, 150..700);
        let (mut landed, mut attempts) = (0, 0);
        while landed < 3 && attempts < 15 {
            attempts += 1;
            let before = progress(&world, RunKind::Deletes).await;
            let mut child = world.spawn(&["run", SYNC, "--deletes"]);
            if let Some(status) = wait_bounded(&mut child, delays.next()).await {
                assert!(
                    status.code() != Some(2),
                    "{mode:?}: the run refused its config"
                );
                if status.success() {
                    break;
                }
                continue;
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            let mid_run = progress(&world, RunKind::Deletes)
                .await
                .is_some_and(|a| before.is_none_or(|b| a > b));
            delays.landed(mid_run);
            if mid_run {
                landed += 1;
            }
            // Between kills: no record that is still at the source is deleted.
            let held: HashSet<String> = world
                .sim
                .dest_dump()
                .objects
                .into_iter()
                .map(|o| o.external_id)
                .collect();
            let live = world.sim.source_records();
            assert!(
                live.iter()
                    .filter(|r| r.rejection.is_none())
                    .all(|r| held.contains(&r.id)),
                "{mode:?}: a record not deleted at the source left the destination"
            );
        }
        assert!(
            landed >= 1,
            "{mode:?}: none of {attempts} kills landed inside the deletes run"
        );
        dest.latency = Duration::ZERO;
        world.sim.set_dest_faults(dest);
        world.deletes_to_completion().await;

        let applied = world.sim.deletes_applied();
        let twice: Vec<(&String, &u64)> = applied.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            twice.is_empty(),
            "{mode:?}: deleted more than once: {twice:?}"
        );
        let mut gone: Vec<&String> = applied.keys().collect();
        gone.sort();
        let mut expected: Vec<&String> = deleted.iter().collect();
        expected.sort();
        assert_eq!(gone, expected, "{mode:?}: the deletes applied");
        let v = world.assert_exact().await;
        assert_eq!(v.dest_records, v.expected_written, "{mode:?}: {v}");

        // Applied again from the lookback, nothing is deleted twice.
        let out = world.highwater(&["run", SYNC, "--deletes", "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let again = report(&out);
        assert_eq!(again["counters"]["deleted"], 0, "{again}");
        assert_eq!(again["counters"]["unchanged"], deleted.len(), "{again}");
        assert_eq!(world.sim.deletes_applied(), applied);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_records_story_says_deleted_and_a_recreated_one_is_written_again() {
    let mut sim = SimConfig::new(202, 200);
    sim.poisoned_ratio = 0.0;
    sim.invalid_ratio = 0.02;
    let mut setup = Setup::new(Style::Keyset, Mode::Post);
    setup.deletes = deletes_endpoint(Mode::Post);
    let world = World::start("deletes-story", sim, &setup).await;
    world.run_to_completion().await;
    let ids = pick(&world, 40);
    let (deleted, recreated) = (&ids[0], &ids[1]);
    let never_written = world
        .sim
        .source_records()
        .into_iter()
        .find(|r| r.rejection.is_some())
        .map(|r| r.id)
        .expect("an invalid record");
    for id in [deleted, recreated] {
        assert!(world.sim.delete_record(id, Deletion::Hard));
    }
    world.deletes_to_completion().await;
    let out = world.highwater(&["explain", SYNC, deleted]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("deleted at the destination") && text.contains("ledger: deleted at"),
        "{text}"
    );

    // Re-created after its deletion: written again by the next run.
    assert!(world.sim.delete_record(recreated, Deletion::Recreate));
    world.run_to_completion().await;
    let held: HashMap<String, Option<i64>> = world
        .sim
        .dest_dump()
        .objects
        .into_iter()
        .map(|o| {
            (
                o.external_id,
                o.body.get("version").and_then(|v| v.as_i64()),
            )
        })
        .collect();
    assert!(!held.contains_key(deleted.as_str()));
    let version = world
        .sim
        .source_records()
        .into_iter()
        .find(|r| &r.id == recreated)
        .map(|r| r.version);
    assert_eq!(held.get(recreated.as_str()).copied().flatten(), version);
    world.assert_exact().await;

    // Never written (it was dead-lettered): tombstoned, and the DELETE that
    // makes sure (another run may have written it) finds nothing.
    assert!(world.sim.delete_record(&never_written, Deletion::Hard));
    world.deletes_to_completion().await;
    assert_eq!(
        world.sim.deletes_applied().get(never_written.as_str()),
        None
    );
    let json = world
        .highwater(&["explain", SYNC, &never_written, "--json"])
        .await;
    let story = report(&json);
    let last = story["events"]
        .as_array()
        .and_then(|events| events.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["action"], "deleted", "{story}");
    assert_eq!(
        story["now"]["ledger"]["external_id"],
        never_written.as_str(),
        "{story}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_deleted_records_are_deleted_and_never_brought_back_by_an_older_copy() {
    let mut sim = SimConfig::new(203, 300);
    sim.poisoned_ratio = 0.0;
    let mut setup = Setup::new(Style::Offset, Mode::Put);
    setup.deletes = soft_delete_marker(Mode::Put);
    setup.dest_extra = "read_path = \"/v1/contacts/by-external-id/{external_id}\"".into();
    let world = World::start("deletes-soft", sim, &setup).await;
    world.run_to_completion().await;
    let soft = pick(&world, 25);
    for id in &soft {
        assert!(world.sim.delete_record(id, Deletion::Soft), "{id}");
    }
    // The dry run tells them apart as the run will.
    let out = world.highwater(&["run", SYNC, "--dry-run", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let dry = report(&out);
    assert_eq!(dry["delete"], soft.len(), "{dry}");
    assert_eq!(dry["update"], 0, "{dry}");
    world.run_to_completion().await;
    let held: HashSet<String> = world
        .sim
        .dest_dump()
        .objects
        .into_iter()
        .map(|o| o.external_id)
        .collect();
    let left: Vec<&String> = soft.iter().filter(|id| held.contains(*id)).collect();
    assert!(left.is_empty(), "soft-deleted, still there: {left:?}");
    world.assert_exact().await;
    // Reconciled, a record marked deleted is not missing from the destination.
    let out = world
        .highwater(&["reconcile", SYNC, "--sample", "all", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // A lagging replica serves every record's previous version: the copies
    // from before the deletion are stale, and none is written again.
    let mut source = world.sim.source_faults();
    source.stale_version_ratio = 1.0;
    world.sim.set_source_faults(source);
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ran = report(&out);
    assert!(
        ran["counters"]["stale"].as_u64() >= Some(soft.len() as u64),
        "{ran}"
    );
    let back: Vec<String> = world
        .sim
        .dest_dump()
        .objects
        .into_iter()
        .map(|o| o.external_id)
        .filter(|id| soft.contains(id))
        .collect();
    assert!(back.is_empty(), "brought back by an older copy: {back:?}");
    let applied = world.sim.deletes_applied();
    assert!(
        soft.iter().all(|id| applied.get(id) == Some(&1)),
        "{applied:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_without_a_deletes_endpoint_are_refused_and_change_nothing() {
    let sim = SimConfig::new(204, 50);
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("deletes-refused", sim, &setup).await;
    // No [sync.deletes]: nothing is created, not even the state store.
    let out = world.highwater(&["run", SYNC, "--deletes"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("nothing for --deletes to read")
            && stderr(&out).contains("[sync.deletes]"),
        "{}",
        describe(&out)
    );
    assert!(!world.has_store().await);

    // A marker is applied by every run, not by --deletes.
    world.run_to_completion().await;
    setup.deletes = soft_delete_marker(Mode::Put);
    world.rewrite(&setup);
    let before = world.state_dump().await;
    let out = world.highwater(&["run", SYNC, "--deletes"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("marked in its records"),
        "{}",
        describe(&out)
    );
    assert_eq!(world.state_dump().await, before);

    // A dry run of deletes is not a thing: clap says so.
    let out = world
        .highwater(&["run", SYNC, "--deletes", "--dry-run"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("--dry-run"), "{}", describe(&out));
    assert_eq!(world.state_dump().await, before);
}

/// `[sync.deletes]` with no feed: only `run --full` finds deletions.
const FULL_ONLY: &str = "delete_path = \"/v1/contacts/by-external-id/{external_id}\"";

fn held(world: &World) -> HashSet<String> {
    world
        .sim
        .dest_dump()
        .objects
        .into_iter()
        .map(|o| o.external_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_run_deletes_what_the_source_no_longer_has_and_refuses_a_mass_delete() {
    let mut sim = SimConfig::new(205, 200);
    sim.poisoned_ratio = 0.0;
    let mut setup = Setup::new(Style::Keyset, Mode::Put);
    // Records updated since are past the full run's watermark: still the source's.
    setup.lag = "5m";
    setup.deletes = FULL_ONLY.into();
    let world = World::start("deletes-full", sim, &setup).await;
    world.run_to_completion().await;
    let written = held(&world);
    let ids = pick(&world, 10);
    let (gone, updated) = (&ids[..8], &ids[8..11]);
    for id in gone {
        assert!(world.sim.delete_record(id, Deletion::Hard));
    }
    for id in updated {
        assert!(world.sim.update_record(id).is_some());
    }
    let out = world.highwater(&["run", SYNC, "--full", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ran = report(&out);
    assert_eq!(ran["counters"]["deleted"], gone.len(), "{ran}");
    let now = held(&world);
    let expected: HashSet<String> = written
        .iter()
        .filter(|id| !gone.contains(id))
        .cloned()
        .collect();
    assert_eq!(now, expected, "exactly the vanished records are deleted");
    let applied = world.sim.deletes_applied();
    assert_eq!(applied.len(), gone.len());
    assert!(
        gone.iter().all(|id| applied.get(id) == Some(&1)),
        "{applied:?}"
    );
    let out = world.highwater(&["explain", SYNC, &gone[0]]).await;
    assert!(
        stdout(&out).contains("deleted at the destination"),
        "{}",
        describe(&out)
    );

    // A third of what is left vanishes: refused, nothing deleted, exit 1.
    let many: Vec<String> = pick(&world, 3);
    for id in &many {
        world.sim.delete_record(id, Deletion::Hard);
    }
    let out = world.highwater(&["run", SYNC, "--full"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("refusing to delete {} of the", many.len()))
            && message.contains("full_delete_limit (10.0%)")
            && message.contains("--allow-mass-delete")
            && message.contains("nothing was deleted"),
        "{message}"
    );
    assert_eq!(held(&world), now, "a refused mass delete deletes nothing");
    assert_eq!(world.sim.deletes_applied(), applied);

    // Said on purpose, it goes ahead.
    let out = world
        .highwater(&["run", SYNC, "--full", "--allow-mass-delete"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let left: Vec<&String> = many
        .iter()
        .filter(|id| held(&world).contains(*id))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    world.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_run_needs_a_deletes_table_and_takes_no_dry_run() {
    let sim = SimConfig::new(206, 30);
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("deletes-full-refused", sim, &setup).await;
    let out = world.highwater(&["run", SYNC, "--full"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no [sync.deletes]"),
        "{}",
        describe(&out)
    );
    assert!(!world.has_store().await, "nothing is created");
    for args in [
        &["run", SYNC, "--allow-mass-delete"][..],
        &["run", SYNC, "--full", "--dry-run"],
        &["run", SYNC, "--full", "--deletes"],
    ] {
        let out = world.highwater(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    assert!(!world.has_store().await, "nothing is created");
    setup.deletes = FULL_ONLY.into();
    world.rewrite(&setup);
    let out = world.highwater(&["run", SYNC, "--deletes"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("run --full"), "{}", describe(&out));
    assert!(!world.has_store().await, "nothing is created");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_repair_deletes_extras_only_for_a_sync_that_deletes() {
    let mut sim = SimConfig::new(207, 120);
    sim.poisoned_ratio = 0.0;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.dest_extra = "read_path = \"/v1/contacts/by-external-id/{external_id}\"".into();
    let world = World::start("deletes-reconcile", sim, &setup).await;
    world.run_to_completion().await;
    let gone = pick(&world, 30);
    for id in &gone {
        assert!(world.sim.delete_record(id, Deletion::Hard));
    }
    let before = held(&world);

    // No [sync.deletes]: the extras are reported and kept, and the repair says why.
    let out = world.highwater(&["reconcile", SYNC, "--repair"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{} extra record(s) not deleted: sync \"{SYNC}\" has no [sync.deletes]",
            gone.len()
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(held(&world), before);
    assert!(world.sim.deletes_applied().is_empty());

    // A sync that deletes: the repair deletes them, once; reconciliation is clean after.
    setup.deletes = FULL_ONLY.into();
    world.rewrite(&setup);
    let out = world.highwater(&["reconcile", SYNC, "--repair"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let now = held(&world);
    assert!(
        gone.iter().all(|id| !now.contains(id)),
        "{}",
        describe(&out)
    );
    assert_eq!(now.len(), before.len() - gone.len());
    let applied = world.sim.deletes_applied();
    assert!(
        gone.iter().all(|id| applied.get(id) == Some(&1)),
        "{applied:?}"
    );
    let out = world.highwater(&["reconcile", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let explained = world.highwater(&["explain", SYNC, &gone[0]]).await;
    assert!(
        stdout(&explained).contains("repair"),
        "{}",
        describe(&explained)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_delete_update_marks_the_object_and_no_older_copy_unmarks_it() {
    let mut sim = SimConfig::new(208, 150);
    sim.poisoned_ratio = 0.0;
    let mut setup = Setup::new(Style::Cursor, Mode::Lookup);
    setup.deletes =
        "marker_field = \"deleted\"\nmarker_value = true\nsoft_delete = { deleted = true }".into();
    let world = World::start("deletes-soft-update", sim, &setup).await;
    world.run_to_completion().await;
    let soft = pick(&world, 20);
    for id in &soft {
        assert!(world.sim.delete_record(id, Deletion::Soft));
    }
    let marked = |world: &World| -> HashMap<String, (Option<i64>, bool)> {
        world
            .sim
            .dest_dump()
            .objects
            .into_iter()
            .filter(|o| soft.contains(&o.external_id))
            .map(|o| {
                let version = o.body.get("version").and_then(|v| v.as_i64());
                let deleted = o.body.get("deleted") == Some(&serde_json::Value::Bool(true));
                (o.external_id, (version, deleted))
            })
            .collect()
    };
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        report(&out)["counters"]["deleted"],
        soft.len(),
        "{}",
        describe(&out)
    );
    let versions: HashMap<String, i64> = world
        .sim
        .source_records()
        .into_iter()
        .map(|r| (r.id, r.version))
        .collect();
    let expected: HashMap<String, (Option<i64>, bool)> = soft
        .iter()
        .map(|id| (id.clone(), (versions.get(id).copied(), true)))
        .collect();
    assert_eq!(
        marked(&world),
        expected,
        "each kept, marked, at its deleted version"
    );
    assert!(
        world.sim.deletes_applied().is_empty(),
        "a soft delete sends no DELETE"
    );
    world.assert_exact().await;
    let out = world.highwater(&["explain", SYNC, &soft[0]]).await;
    assert!(
        stdout(&out).contains("deleted at the destination"),
        "{}",
        describe(&out)
    );

    // Older copies from a lagging replica are stale: nothing is unmarked.
    let mut source = world.sim.source_faults();
    source.stale_version_ratio = 1.0;
    world.sim.set_source_faults(source);
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(marked(&world), expected);
}

/// An API that lists only its newest records unless asked for a time
/// (Freshdesk's tickets): a full run reads from the sync's `start`, and finds
/// nothing vanished. A sync without `start` cannot tell its listing is
/// short, and deletes what it left out (under `full_delete_limit`); a
/// reconciliation finds those missing and its repair writes them back,
/// though the ledger holds them deleted, since the source serves them live.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_run_reads_from_start_and_a_repair_undoes_what_a_short_listing_deleted() {
    let mut sim = SimConfig::new(206, 200);
    sim.poisoned_ratio = 0.0;
    sim.invalid_ratio = 0.0;
    sim.source.unbounded_newest = Some(190);
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.deletes = FULL_ONLY.into();
    setup.dest_extra = "read_path = \"/v1/contacts/by-external-id/{external_id}\"".into();
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3);
    setup.source_extra = format!("start = \"{start}\"");
    let world = World::start("deletes-short-listing", sim, &setup).await;
    world.run_to_completion().await;
    let written = held(&world);
    assert_eq!(written.len(), 200);
    let out = world.highwater(&["run", SYNC, "--full", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ran = report(&out);
    assert_eq!(ran["counters"]["deleted"], 0, "{ran}");
    assert_eq!(held(&world), written, "nothing deleted");

    setup.source_extra = String::new();
    world.rewrite(&setup);
    let out = world.highwater(&["run", SYNC, "--full", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        report(&out)["counters"]["deleted"],
        10,
        "{}",
        describe(&out)
    );
    assert_eq!(held(&world).len(), 190);

    let out = world
        .highwater(&["reconcile", SYNC, "--sample", "all", "--repair", "--json"])
        .await;
    let found: serde_json::Value = stdout(&out)
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let missing = found["missing"].as_array().map_or(0, Vec::len);
    assert_eq!(missing, 10, "{}", describe(&out));
    assert_eq!(held(&world), written, "{}", describe(&out));
    world.assert_exact().await;

    // A `start` moved later: what the ledger holds from before it is not
    // listed, and not deleted either.
    let later = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(60);
    setup.source_extra = format!("start = \"{later}\"");
    world.rewrite(&setup);
    let out = world.highwater(&["run", SYNC, "--full", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report(&out)["counters"]["deleted"], 0, "{}", describe(&out));
    assert_eq!(held(&world), written);
}
