//! `highwater explain`: every record's story agrees with what the simulator holds
//! and served — the version written, the destination id, the requests each write
//! took (their retries add up to the 429s and 5xx the destination answered), the
//! dead letters with their reason, a record updated between runs seen by both —
//! and a record no run read says so, with the windows of the runs that could have.

use highwater_core::state::RecordAction;
use serde_json::Value;
use simsaas::{Rejection, SimConfig};

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report, stderr, stdout};

async fn explain_json(world: &World, id: &str) -> Value {
    let out = world.highwater(&["explain", SYNC, id, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    report(&out)
}

fn actions(story: &Value) -> Vec<(String, String, Option<i64>)> {
    story["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {story}"))
        .iter()
        .map(|e| {
            (
                e["run_id"].as_str().unwrap_or_default().to_owned(),
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["version"].as_i64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_tells_each_records_story_as_it_happened() {
    let mut sim = SimConfig::new(83, 400);
    sim.invalid_ratio = 0.02;
    // Rejections after a retried 5xx would spend requests no write event
    // counts; dead letters come from mapping here.
    sim.poisoned_ratio = 0.0;
    sim.dest.rate_limit_ratio = 0.02;
    sim.dest.retry_after_secs = 0;
    sim.dest.burst_start_ratio = 0.02;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    // The next run re-reads only what changed lately.
    setup.lookback = "5m";
    setup.dest_extra = "dest_id_field = \"id\"".into();
    let world = World::start("explain-story", sim, &setup).await;

    // Before anything ran there is no state store: bad input, nothing created.
    let out = world.highwater(&["explain", SYNC, "inv_000001"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no state store yet"),
        "{}",
        describe(&out)
    );
    assert!(!world.has_store().await);

    let first = report(&world.highwater(&["run", SYNC, "--json"]).await);
    let first_run = first["run_id"].as_str().expect("run id").to_owned();

    // Every record's events, read from the store as `explain` reads them.
    let source = world.sim.source_records();
    let objects = world.dest_ids();
    let store = world.store().await;
    let mut retried = 0u64;
    let mut a_retried_write = None;
    let mut a_dead_letter = None;
    for record in &source {
        let story = store.record_story(SYNC, &record.id).await.expect("story");
        assert_eq!(story.len(), 1, "{}: {story:?}", record.id);
        let event = &story[0].event;
        assert_eq!(story[0].run_id, first_run);
        assert_eq!(event.version, Some(record.version), "{}", record.id);
        match record.rejection {
            None => {
                assert_eq!(event.action, RecordAction::Written, "{}", record.id);
                assert_eq!(
                    event.dest_id.as_ref(),
                    objects.get(&record.id),
                    "{}: the destination id written is the object's",
                    record.id
                );
                assert!(event.attempts >= 1, "{event:?}");
                retried += u64::from(event.attempts - 1);
                if event.attempts > 1 {
                    a_retried_write.get_or_insert_with(|| (record.id.clone(), event.attempts));
                }
            }
            Some(Rejection::Invalid) => {
                assert_eq!(event.action, RecordAction::DeadLettered, "{}", record.id);
                let detail = event.detail.as_deref().unwrap_or_default();
                assert!(detail.starts_with("mapping: "), "{}: {detail}", record.id);
                a_dead_letter.get_or_insert_with(|| record.id.clone());
            }
            Some(other) => panic!("{}: unexpected rejection {other:?}", record.id),
        }
    }
    store.close().await;
    let stats = world.sim.stats();
    let served = stats.dest.rate_limited + stats.dest.rate_limited_date + stats.dest.server_errors;
    assert!(served > 0, "no destination faults served: {stats:?}");
    assert_eq!(
        retried, served,
        "the retries of the writes' events are what the destination answered with 429 or 5xx"
    );

    // What a person reads: the requests a retried write took, and a dead
    // letter's reason, in the same words the store keeps.
    let (id, attempts) = a_retried_write.expect("a write that was retried");
    let out = world.highwater(&["explain", SYNC, &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    let expected = format!(
        "written to destination id {:?} ({attempts} requests: {} retried)",
        objects[&id],
        attempts - 1
    );
    assert!(
        text.contains(&expected),
        "expected {expected:?} in:\n{text}"
    );
    let dead = a_dead_letter.expect("a dead-lettered record");
    let story = explain_json(&world, &dead).await;
    let letter = &story["now"]["dead_letter"];
    assert_eq!(letter["stage"], "mapping", "{story}");
    assert!(letter["resolved_at"].is_null(), "{story}");
    assert_eq!(
        format!("mapping: {}", letter["reason"].as_str().unwrap_or_default()),
        story["events"][0]["detail"].as_str().unwrap_or_default(),
        "{story}"
    );
    let text = stdout(&world.highwater(&["explain", SYNC, &dead]).await);
    assert!(text.contains("dead-lettered: mapping: "), "{text}");
    assert!(text.contains("dead letter (open): mapping: "), "{text}");

    // One record changes at the source; the next run reads it again (the
    // lookback covers it) and writes the new version. A record that did not
    // change and is older than the lookback is not read again.
    let healthy: Vec<&simsaas::SourceRecord> =
        source.iter().filter(|r| r.rejection.is_none()).collect();
    let (changed, was) = (healthy[0].id.clone(), healthy[0].version);
    let untouched = healthy[1].id.clone();
    let version = world.sim.update_record(&changed).expect("record exists");
    let second = report(&world.highwater(&["run", SYNC, "--json"]).await);
    let second_run = second["run_id"].as_str().expect("run id").to_owned();
    let story = explain_json(&world, &changed).await;
    assert_eq!(
        actions(&story),
        [
            (first_run.clone(), "written".to_owned(), Some(was)),
            (second_run.clone(), "written".to_owned(), Some(version)),
        ],
        "{story}"
    );
    assert_eq!(story["events"][1]["kind"], "incremental");
    assert_eq!(story["now"]["ledger"]["version"], version, "{story}");
    assert_eq!(
        story["now"]["ledger"]["dest_id"].as_str(),
        objects.get(&changed).map(String::as_str),
        "{story}"
    );
    assert_eq!(story["now"]["ledger"]["run_id"], second_run.as_str());
    let story = explain_json(&world, &untouched).await;
    assert_eq!(
        actions(&story),
        [(
            first_run.clone(),
            "written".to_owned(),
            Some(healthy[1].version)
        )],
        "{story}"
    );

    // A record no run read: said so, with the windows of the runs that could
    // have read it — the newest first.
    let story = explain_json(&world, "inv_999999").await;
    assert_eq!(story["events"], serde_json::json!([]), "{story}");
    assert!(story["now"]["ledger"].is_null(), "{story}");
    let runs: Vec<&str> = story["recent_runs"]
        .as_array()
        .expect("recent runs")
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(runs, [second_run.as_str(), first_run.as_str()]);
    assert_eq!(story["recent_runs"][0]["watermark"], second["watermark"]);
    let text = stdout(&world.highwater(&["explain", SYNC, "inv_999999"]).await);
    assert!(
        text.contains("no run read it") && text.contains("never committed"),
        "{text}"
    );
    let watermark = second["watermark"].as_str().expect("watermark");
    assert!(
        text.contains(&format!("a record updated after {watermark}")),
        "{text}"
    );

    // An unknown sync is bad input.
    let out = world.highwater(&["explain", "nope", &changed]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no sync named \"nope\""),
        "{}",
        describe(&out)
    );
}
