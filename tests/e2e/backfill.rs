//! `highwater backfill`: a range of history the incremental sync never read is
//! read with a checkpoint of its own — resumable, never under another range —
//! and the destination ends exact, while the sync's high-water mark does not
//! move. Bad ranges are refused, changing nothing.

use serde_json::Value;
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report, stderr};

async fn high_water_mark(world: &World) -> Value {
    let out = world.highwater(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    report(&out)["syncs"][0]["high_water_mark"].clone()
}

fn assert_refused(out: &std::process::Output, expected: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    assert!(
        stderr(out).contains(expected),
        "expected {expected:?} in:\n{}",
        describe(out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_reads_history_the_sync_skipped_without_moving_its_high_water_mark() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.page_size = 50;
    let world = World::start("backfill", SimConfig::new(97, 1_200), &setup).await;
    let records = world.sim.source_records();
    // The sync starts halfway through the data: the older half is history.
    let start = records[records.len() / 2].updated_at;
    let first = records[0].updated_at;
    setup.source_extra = format!("start = \"{start}\"");
    world.rewrite(&setup);

    let incremental = report(&world.highwater(&["run", SYNC, "--json"]).await);
    let before = world.verify().await;
    assert!(
        !before.missing.is_empty(),
        "the history before `start` should be missing: {before:?}"
    );
    let hwm = high_water_mark(&world).await;
    assert_eq!(hwm, incremental["watermark"]);

    let (from, to) = (first.to_string(), start.to_string());
    // Bad ranges and names change nothing.
    assert_refused(
        &world
            .highwater(&["backfill", SYNC, "--from", &to, "--to", &from])
            .await,
        "is not before --to",
    );
    let out = world
        .highwater(&["backfill", SYNC, "--from", "yesterday", "--to", &to])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_refused(
        &world
            .highwater(&["backfill", "nope", "--from", &from, "--to", &to])
            .await,
        "no sync named \"nope\"",
    );

    // Stopped after two pages: resumable, and only under the same range.
    let out = world
        .highwater(&[
            "backfill",
            SYNC,
            "--from",
            &from,
            "--to",
            &to,
            "--max-pages",
            "2",
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stopped = report(&out);
    assert_eq!(stopped["counters"]["pages"], 2, "{stopped}");
    // status shows the open backfill beside the sync's own run.
    let status = report(&world.highwater(&["status", "--json"]).await);
    let open = &status["syncs"][0]["other_open_runs"];
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(open[0]["kind"], "backfill", "{status}");
    assert_eq!(open[0]["run_id"], stopped["run_id"], "{status}");
    assert_eq!(
        open[0]["lower_bound"].as_str(),
        Some(from.as_str()),
        "{status}"
    );
    let other = world.sim.source_records()[records.len() / 4]
        .updated_at
        .to_string();
    assert_refused(
        &world
            .highwater(&["backfill", SYNC, "--from", &other, "--to", &to])
            .await,
        "a backfill run over",
    );
    // The incremental sync runs beside it, untouched.
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let second_incremental = report(&out);

    let out = world
        .highwater(&["backfill", SYNC, "--from", &from, "--to", &to, "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let backfill = report(&out);
    assert_eq!(
        backfill["run_id"], stopped["run_id"],
        "the same run resumed"
    );
    assert_eq!(backfill["resumed"], true);
    assert_eq!(backfill["lower_bound"].as_str(), Some(from.as_str()));
    assert_eq!(backfill["watermark"].as_str(), Some(to.as_str()));
    assert!(
        backfill["counters"]["written"].as_u64().unwrap_or(0) > 0,
        "{backfill}"
    );

    // Everything up to the sync's watermark is now exact, and the backfill did
    // not move the high-water mark: only the incremental run did.
    world.assert_exact().await;
    assert_eq!(
        high_water_mark(&world).await,
        second_incremental["watermark"]
    );
    let out = world.highwater(&["runs", SYNC, "--json"]).await;
    let mut kinds: Vec<String> = crate::util::stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| {
            format!(
                "{} {}",
                r["kind"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("?")
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "backfill completed",
            "incremental completed",
            "incremental completed"
        ]
    );
}
