//! `highwater run --dry-run`: against a destination holding part of the data, and
//! again after records changed at the source, its counts are what the following
//! real run does; it writes nothing — not to the destination, not to the state
//! store, which it does not even create.

use serde_json::Value;
use simsaas::{Rejection, SimConfig};

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report};

async fn dry(world: &World) -> Value {
    let before = (world.sim.dest_dump(), world.state_dump().await);
    let out = world.highwater(&["run", SYNC, "--dry-run", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        (world.sim.dest_dump(), world.state_dump().await),
        before,
        "a dry run changed the destination or the state store"
    );
    report(&out)
}

/// The dry run's counts against what the real run (this invocation) did.
fn assert_foretold(dry: &Value, real: &Value) {
    let session = &real["session"];
    let written = dry["create"].as_u64().unwrap_or(0) + dry["update"].as_u64().unwrap_or(0);
    assert_eq!(
        (
            written,
            &dry["unchanged"],
            &dry["stale"],
            &dry["dead_letter"],
            &dry["read"]
        ),
        (
            session["written"].as_u64().unwrap_or(0),
            &session["unchanged"],
            &session["stale"],
            &session["dead_lettered"],
            &session["read"]
        ),
        "dry run:\n{dry}\nreal run:\n{real}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_foretells_the_next_run_and_writes_nothing() {
    let mut sim = SimConfig::new(71, 600);
    sim.invalid_ratio = 0.02;
    // What the destination will refuse cannot be foreseen.
    sim.poisoned_ratio = 0.0;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.page_size = 50;
    setup.dest_extra = "read_path = \"/v1/contacts/by-external-id/{external_id}\"".into();
    let world = World::start("dry-run", sim, &setup).await;

    // Before anything ran: everything is new, and no state store is created.
    let first = dry(&world).await;
    assert!(
        !world.has_store().await,
        "a dry run created the state store"
    );
    let source = world.sim.source_records();
    let invalid = source
        .iter()
        .filter(|r| r.rejection == Some(Rejection::Invalid))
        .count() as u64;
    assert_eq!(first["create"], source.len() as u64 - invalid, "{first}");
    assert_eq!(first["dead_letter"], invalid, "{first}");
    assert!(first["resumes"].is_null());

    // The destination holds part of the data; the open run is what the dry run
    // foretells, from its checkpoint.
    let out = world.highwater(&["run", SYNC, "--max-pages", "3"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let held = world.sim.dest_count();
    assert!(held > 0 && held < source.len(), "{held}");
    let partial = dry(&world).await;
    assert!(partial["resumes"].is_string(), "{partial}");
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let real = report(&out);
    assert_eq!(partial["resumes"], real["run_id"]);
    assert_foretold(&partial, &real);

    // Records change at the source: the next run updates them, and the dry run
    // names the fields that change, read from the destination's copies.
    let healthy: Vec<&simsaas::SourceRecord> =
        source.iter().filter(|r| r.rejection.is_none()).collect();
    for record in healthy.iter().take(3) {
        world.sim.update_record(&record.id).expect("record exists");
    }
    let next = dry(&world).await;
    assert_eq!(next["update"], 3, "{next}");
    assert_eq!(next["create"], 0, "{next}");
    for update in next["samples"]["update"]
        .as_array()
        .expect("update samples")
    {
        let fields: Vec<&str> = update["changed_fields"]
            .as_array()
            .unwrap_or_else(|| panic!("no changed fields: {next}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(fields.contains(&"version"), "{next}");
    }
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_foretold(&next, &report(&out));
    world.assert_exact().await;
}
