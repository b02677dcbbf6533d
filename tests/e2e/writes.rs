//! Write paths where the promise is easy to break: a POST whose payload changed
//! under the same version, a 5xx answering a write that was applied, a write that
//! lands after the client gave up, and a lookup that does not filter.

use std::time::Duration;

use serde_json::Value;
use simsaas::{DestFaults, SimConfig};

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report, stderr};

const READ_PATH: &str = "read_path = \"/v1/contacts/by-external-id/{external_id}\"";

/// A mapping fix changes every payload while no version changes: each POST then
/// carries a body the destination has never seen, under a key of its own, and is
/// applied — not answered from the destination's memory of the old body.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_payload_under_the_same_version_is_written_in_post_mode() {
    let mut setup = Setup::new(Style::Cursor, Mode::Post);
    let world = World::start("post-mapping-fix", SimConfig::new(61, 300), &setup).await;
    world.run_to_completion().await;
    world.assert_exact().await;
    setup.fields_extra = "plan = \"status\"".into();
    world.rewrite(&setup);
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let written = report(&out)["counters"]["written"].as_u64().unwrap_or(0);
    let dump = world.sim.dest_dump();
    let without: Vec<&str> = dump
        .objects
        .iter()
        .filter(|o| o.body.get("plan").is_none())
        .map(|o| o.external_id.as_str())
        .collect();
    assert!(
        without.is_empty(),
        "{} of {} objects never got the new field although {written} writes were reported, e.g. {:?}",
        without.len(),
        dump.objects.len(),
        &without[..without.len().min(5)]
    );
    world.assert_exact().await;
}

/// A proxy answers 502 after the CRM committed a create: the create must not be
/// sent again blindly, or the record exists twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_after_a_committed_create_never_duplicates_in_lookup_mode() {
    let mut sim = SimConfig::new(62, 600);
    sim.dest.commit_then_502_ratio = 0.03;
    let mut setup = Setup::new(Style::Keyset, Mode::Lookup);
    setup.timeout = "300ms";
    let world = World::start("commit-then-502", sim, &setup).await;
    world.run_to_completion().await;
    let stats = world.sim.stats();
    assert!(stats.dest.commit_then_502 > 0, "{stats:?}");
    world.assert_exact().await;
}

/// The CRM holds version 2 of every record past the client's timeout (1.9 times
/// it: within twice, so the test is not flaky) and then applies it; the client
/// meanwhile went on — after retries that got through, or killed — and the next
/// run writes version 3. The held version 2 lands over it. The run must read such
/// records back before it completes and write again what went back. (In post mode
/// a retry carries the same key, so only a write in flight at a kill can land late.)
#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_lands_late_is_read_back_and_repaired() {
    let cases = [
        (Mode::Lookup, false),
        (Mode::Lookup, true),
        (Mode::Put, false),
        (Mode::Put, true),
        (Mode::Post, true),
    ];
    for (mode, killed) in cases {
        let mut setup = Setup::new(Style::Cursor, mode);
        setup.timeout = "1s";
        setup.concurrency = 32;
        if mode != Mode::Lookup {
            setup.dest_extra = READ_PATH.into();
        }
        let name = format!(
            "late-{mode:?}-{}",
            if killed { "killed" } else { "retried" }
        );
        let world = World::start(&name, records(20), &setup).await;
        let (repaired, said) = overtake_late_writes(&world, &setup, killed).await;
        // The records are read back once the writes unanswered in time can
        // no longer land; the wait until then is said, not silent.
        assert!(
            said.contains("until writes whose answers never came can no longer land"),
            "{name}: {said}"
        );
        let dump = world.sim.dest_dump();
        assert!(
            !dump.late_regressions.is_empty(),
            "{name}: no late write landed over a newer one: the test proves nothing\n{dump:?}"
        );
        world.assert_exact().await;
        assert!(
            !repaired.is_empty(),
            "{name}: late writes set records back but none was repaired"
        );
    }
}

/// A run is killed while its writes of version 2 are held for 4 s, and its
/// resumption completes: they may still land. The next run is killed while
/// its writes of version 3 are held briefly, and its resumption writes
/// version 3 again — the newest write announced of each record — before the
/// held version 2s land over it. The run reads the records back before it
/// completes, and writes again what went back: the write it repeated is not
/// the only one that may still land.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_write_below_a_repeated_one_is_still_read_back() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.timeout = "1s";
    setup.concurrency = 32;
    setup.dest_extra = format!("{READ_PATH}\nlate_write_window = \"6s\"");
    let world = World::start("late-below-repeated", records(20), &setup).await;
    world.run_to_completion().await;
    let sim = world.sim.clone();
    let held = |after| DestFaults {
        delayed_apply_ratio: 1.0,
        delayed_apply_after: after,
        ..DestFaults::default()
    };
    update_all(&sim);
    sim.set_dest_faults(held(Duration::from_secs(4)));
    kill_once_held(&world, 20).await;
    sim.set_dest_faults(DestFaults::default());
    world.run_to_completion().await;
    update_all(&sim);
    sim.set_dest_faults(held(Duration::from_millis(300)));
    kill_once_held(&world, 40).await;
    sim.set_dest_faults(DestFaults::default());
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dump = sim.dest_dump();
    assert!(
        !dump.late_regressions.is_empty(),
        "no late write landed over a newer one: the test proves nothing\n{dump:?}"
    );
    world.assert_exact().await;
}

/// Starts a run and kills it once the destination holds `held` writes in all.
async fn kill_once_held(world: &World, held: u64) {
    let mut child = world.spawn(&["run", SYNC]);
    for _ in 0..300 {
        if world.sim.stats().dest.delayed_apply >= held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let stats = world.sim.stats();
    assert!(stats.dest.delayed_apply >= held, "{stats:?}");
}

/// Without a way to read back, the run cannot see what a late write set back.
/// A PUT is sent again once the late writes can no longer land, which leaves
/// the destination holding it; a POST, which an API may not take twice, is
/// named in the report instead.
#[tokio::test(flavor = "multi_thread")]
async fn records_that_cannot_be_read_back_are_sent_again_or_named() {
    for (mode, name) in [(Mode::Put, "late-resent"), (Mode::Post, "late-unverified")] {
        let mut setup = Setup::new(Style::Cursor, mode);
        setup.timeout = "1s";
        setup.concurrency = 32;
        let world = World::start(name, records(20), &setup).await;
        let sim = world.sim.clone();
        let faults = late_writes(&setup);
        let held_for = faults.delayed_apply_after;
        sim.set_dest_faults(faults);
        world.run_to_completion().await;
        sim.set_dest_faults(DestFaults::default());
        update_all(&sim);
        let out = world.highwater(&["run", SYNC, "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let listed = |key: &str| report(&out)[key].as_array().map_or(0, Vec::len);
        let (resent, unverified) = (listed("resent"), listed("unverified"));
        if mode == Mode::Put {
            assert_eq!((resent, unverified), (20, 0), "{}", describe(&out));
            tokio::time::sleep(held_for).await;
            assert!(
                !sim.dest_dump().late_regressions.is_empty(),
                "no late write landed over a newer one: the test proves nothing"
            );
            world.assert_exact().await;
        } else {
            assert_eq!((resent, unverified), (0, 20), "{}", describe(&out));
        }
    }
}

/// A record written again at a run's end (here sent again, with no way to
/// read back) may itself meet a timeout: its held attempt lands after the
/// next run's newer write unless that run knows of it. Version 1's writes
/// are held (each lands late), version 2 is written and then sent again
/// with its attempts held too, and version 3 goes out while those land:
/// the last run waits them out and sends version 3 again.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_sent_again_at_a_run_s_end_may_land_late_too() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.timeout = "1s";
    setup.concurrency = 32;
    let world = World::start("late-resend", records(20), &setup).await;
    let sim = world.sim.clone();
    let faults = late_writes(&setup);
    sim.set_dest_faults(faults.clone());
    world.run_to_completion().await;
    sim.set_dest_faults(DestFaults::default());
    update_all(&sim);
    // Version 2 goes out plainly; the run then waits for version 1's held
    // writes, and its sending again meets held attempts.
    let applied = sim.stats().dest.writes_applied;
    let mut child = world.spawn(&["run", SYNC]);
    for _ in 0..500 {
        if sim.stats().dest.writes_applied >= applied + 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Held for as long as the late-write window (three timeouts) allows,
    // so that they land after the next run has written.
    sim.set_dest_faults(DestFaults {
        delayed_apply_after: Duration::from_millis(2_800),
        ..faults
    });
    let held = sim.stats().dest.delayed_apply;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the run ends")
        .expect("status");
    assert!(status.success(), "{status:?}");
    assert!(
        sim.stats().dest.delayed_apply >= held + 20,
        "the writes sent again were not held: the test proves nothing"
    );
    sim.set_dest_faults(DestFaults::default());
    update_all(&sim);
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !sim.dest_dump().late_regressions.is_empty(),
        "no late write landed over a newer one: the test proves nothing"
    );
    world.assert_exact().await;
}

/// Where the destination compares versions itself, a late write older than what
/// it holds is refused there, and nothing needs repairing.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_precondition_refuses_late_older_writes() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.timeout = "1s";
    setup.concurrency = 32;
    setup.dest_extra = format!("version_header = \"{}\"", simsaas::VERSION_HEADER);
    let world = World::start("late-precondition", records(20), &setup).await;
    let (repaired, _) = overtake_late_writes(&world, &setup, false).await;
    assert!(repaired.is_empty(), "{repaired:?}");
    let stats = world.sim.stats();
    assert!(stats.dest.preconditions_failed > 0, "{stats:?}");
    assert!(world.sim.dest_dump().late_regressions.is_empty());
    world.assert_exact().await;
}

/// An API that ignores the lookup's filter answers with other records' objects:
/// highwater must not update one of them. Two objects claiming one record are for
/// a person to merge: the record is dead-lettered with both ids, never written.
#[tokio::test(flavor = "multi_thread")]
async fn lookups_check_the_external_id_they_find() {
    let mut sim = SimConfig::new(64, 300);
    sim.dest.lookup_ignores_filter = true;
    let world = World::start(
        "lookup-filter",
        sim,
        &Setup::new(Style::Offset, Mode::Lookup),
    )
    .await;
    world.run_to_completion().await;
    world.assert_exact().await;

    let mut sim = SimConfig::new(65, 50);
    sim.dest.lookup_ignores_filter = false;
    let world = World::start(
        "lookup-twins",
        sim,
        &Setup::new(Style::Cursor, Mode::Lookup),
    )
    .await;
    let twin = world
        .sim
        .source_records()
        .into_iter()
        .find(|r| r.rejection.is_none())
        .map(|r| r.id)
        .unwrap_or_default();
    let client = highwater_core::http::client()
        .build()
        .expect("an HTTP client");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let created: serde_json::Value = client
            .post(format!("{}/v1/contacts", world.sim.dest_url()))
            .bearer_auth("sim-token")
            .json(&serde_json::json!({ "external_id": twin }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("create a twin")
            .json()
            .await
            .expect("created object");
        ids.push(created["id"].as_str().unwrap_or_default().to_owned());
    }
    world.run_to_completion().await;
    let store = world.store().await;
    let dead = store.dead_letters(SYNC).await.expect("dead letters");
    let letter = dead
        .iter()
        .find(|d| d.source_id == twin)
        .unwrap_or_else(|| panic!("{twin} was not dead-lettered: {dead:?}"));
    assert!(
        ids.iter().all(|id| letter.error.contains(id.as_str())),
        "{}",
        letter.error
    );
    let v = world.verify().await;
    assert_eq!(v.missing, Vec::<String>::new(), "{v}");
    assert_eq!(v.duplicates, std::slice::from_ref(&twin), "{v}");
    assert_eq!(v.healthy_dead_lettered, [twin], "{v}");
}

fn records(n: usize) -> SimConfig {
    let mut sim = SimConfig::new(63, n);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    sim
}

/// Every write held for 1.9 times the client's timeout before it is applied.
fn late_writes(setup: &Setup) -> DestFaults {
    let timeout: Duration = setup
        .timeout
        .parse::<jiff::SignedDuration>()
        .ok()
        .and_then(|d| d.try_into().ok())
        .unwrap_or(Duration::from_secs(1));
    DestFaults {
        delayed_apply_ratio: 1.0,
        delayed_apply_after: timeout.mul_f64(1.9),
        ..DestFaults::default()
    }
}

fn update_all(sim: &simsaas::SimSaas) {
    for record in sim.source_records() {
        sim.update_record(&record.id);
    }
}

/// Version 1 written plainly; version 2 written with every attempt held past the
/// client's timeout (the third gets through), or killed while its first attempts
/// are held; then, with faults off, version 3 at once, while held version 2s are
/// still to land. Waits until they all have, and returns the records the last
/// run repaired, with what it logged.
async fn overtake_late_writes(
    world: &World,
    setup: &Setup,
    killed: bool,
) -> (Vec<serde_json::Value>, String) {
    world.run_to_completion().await;
    let sim = world.sim.clone();
    update_all(&sim);
    let faults = late_writes(setup);
    let held_for = faults.delayed_apply_after;
    sim.set_dest_faults(faults);
    if killed {
        let mut child = world.spawn(&["run", SYNC]);
        for _ in 0..200 {
            if sim.stats().dest.delayed_apply >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sim.stats().dest.delayed_apply >= 20, "{:?}", sim.stats());
        let _ = child.start_kill();
        let _ = child.wait().await;
        // The killed run is resumed first, with its own watermark: the record has
        // moved past it, so the held write is neither confirmed nor repeated.
        sim.set_dest_faults(DestFaults::default());
        update_all(&sim);
        world.run_to_completion().await;
    } else {
        world.run_to_completion().await;
    }
    sim.set_dest_faults(DestFaults::default());
    update_all(&sim);
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    tokio::time::sleep(held_for).await;
    let repaired = report(&out)["repaired"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (repaired, stderr(&out))
}

/// A record written before under another external id (here: the mapping's
/// template changed, and fifteen records changed at the source; those the
/// lookback reads again change too) is written under its new one, and the
/// run warns that a destination keyed by external id keeps the object of
/// the old one: the first ten by name, then how many in all.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_written_under_another_external_id_is_named() {
    let mut sim = SimConfig::new(39, 300);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let world = World::start("rekeyed", sim, &Setup::new(Style::Cursor, Mode::Put)).await;
    let out = world.run_to_completion().await;
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("external_id_changed"),
        "{}",
        describe(&out)
    );
    let text = std::fs::read_to_string(&world.config).expect("config");
    let template = "external_id = \"{id}\"";
    assert!(text.contains(template), "{text}");
    std::fs::write(
        &world.config,
        text.replace(template, "external_id = \"c-{id}\""),
    )
    .expect("config");
    for record in world.sim.source_records().into_iter().take(15) {
        assert!(
            world.sim.update_record(&record.id).is_some(),
            "{}",
            record.id
        );
    }
    let out = world.run_to_completion().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["event"] == "external_id_changed")
        .collect();
    let (named, summary): (Vec<&Value>, Vec<&Value>) =
        events.iter().partition(|e| e.get("was").is_some());
    assert_eq!(named.len(), 10, "{stderr}");
    assert!(
        named
            .iter()
            .all(|e| e["now"].as_str() == Some(&format!("c-{}", e["was"].as_str().unwrap_or("?")))),
        "{named:?}"
    );
    let [summary] = summary.as_slice() else {
        panic!("one summary: {stderr}")
    };
    let changed = summary["records"].as_u64().unwrap_or(0);
    assert!(changed >= 15, "{summary}");
    // Both objects of each are at the destination: the warning's point.
    let held = world.sim.dest_dump().objects.len() as u64;
    assert_eq!(held, 300 + changed);
}
