//! Runs of two kinds at once: a backfill over the whole history beside the
//! incremental sync, each in its own process, both killed with SIGKILL at
//! seeded random instants, with every fault on and the data changing
//! underneath, for each write mode that takes runs at once (a lookup sync's
//! runs take turns). The two read the same records, often as different versions, so
//! every write they race on must be refused when the other holds a newer
//! version, and read back (or, for a create, waited for) when the other's older
//! write may still land. Between kills nothing is duplicated and no
//! destination version goes back (but what a late write set back, which the
//! runs must repair); at the end, with both finished, the destination is exact
//! but for records only a lagging replica's older copy reached, where no run
//! could see the new version, and exact once a backfill reads those again.
//! A kill counts only if it landed mid-run: the killed run had committed
//! progress and was still open.

use std::time::Duration;

use highwater_core::state::RunKind;
use simsaas::SimConfig;
use tokio::process::Child;

use crate::util::{Mode, SYNC, Setup, Style, Versions, World, describe, progress};

const RECORDS: usize = 4_000;
const KILLS: usize = 6;

async fn backfill_beside_the_sync(mode: Mode, seed: u64) {
    let mut sim = SimConfig::new(seed, RECORDS).with_all_faults();
    sim.source.latency = Duration::from_millis(5);
    sim.dest.latency = Duration::from_millis(4);
    sim.dest.slow_ratio = 0.002;
    sim.dest.commit_then_timeout_ratio = 0.004;
    sim.dest.commit_then_502_ratio = 0.004;
    sim.dest.delayed_apply_ratio = 0.006;
    sim.dest.delayed_apply_after = Duration::from_millis(450);
    sim.source.rate_limit_ratio = 0.02;
    sim.source.rate_limit_date_ratio = 0.01;
    sim.dest.rate_limit_ratio = 0.0005;
    sim.dest.rate_limit_date_ratio = 0.0003;
    sim.mutations.max = 400;
    sim.mutations.interval = Duration::from_millis(10);
    // Mostly late updates, stamped up to 20 minutes back: the new version
    // lands where both runs still read, and a stale replica serves the old
    // one there to whichever comes second. Updates and inserts too; a record
    // inserted with an old timestamp after the backfill started is read by no
    // run of these.
    sim.mutations.weights = [1, 4, 1, 0];
    let late_by = Duration::from_secs(1200);
    sim.mutations.late_by = late_by;
    let mut setup = Setup::new(Style::Cursor, mode);
    setup.timeout = "300ms";
    setup.lookback = "5m";
    if mode != Mode::Lookup {
        setup.dest_extra = "read_path = \"/v1/contacts/by-external-id/{external_id}\"".into();
    }
    // Both runs' rows merge into the ledger's second level and that level into
    // the ledger, in turn, each by the newest version.
    setup.merge_rows = Some(500);
    let world = World::start(&format!("concurrent-{mode:?}"), sim, &setup).await;
    // The backfill covers the whole history up to now: every record is the
    // business of both runs.
    let from = world.sim.source_records()[0].updated_at.to_string();
    let started_at = jiff::Timestamp::now();
    let to = started_at.to_string();
    let backfill = ["backfill", SYNC, "--from", &from, "--to", &to];
    let incremental = ["run", SYNC];

    let kill_after = 80..900;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut versions = Versions::default();
    let (mut landed_incremental, mut landed_backfill) = (0, 0);
    let mut backfill_done = false;
    let mut rounds = 0;
    while (landed_incremental < KILLS || landed_backfill < KILLS) && rounds < 60 {
        rounds += 1;
        let before = (
            progress(&world, RunKind::Incremental).await,
            progress(&world, RunKind::Backfill).await,
        );
        let mut runs: Vec<(RunKind, Child, Duration)> = vec![(
            RunKind::Incremental,
            world.spawn(&incremental),
            Duration::from_millis(rng.u64(kill_after.clone())),
        )];
        if !backfill_done {
            runs.push((
                RunKind::Backfill,
                world.spawn(&backfill),
                Duration::from_millis(rng.u64(kill_after.clone())),
            ));
        }
        // Each is killed at its own instant, unless it ended first.
        runs.sort_by_key(|(_, _, at)| *at);
        let started = tokio::time::Instant::now();
        for (kind, child, at) in &mut runs {
            tokio::time::sleep_until(started + *at).await;
            match child.try_wait().expect("wait") {
                Some(status) => {
                    assert_ne!(status.code(), Some(2), "seed {seed}: {kind} refused");
                    if *kind == RunKind::Backfill && status.success() {
                        backfill_done = true;
                    }
                }
                None => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
        }
        // A late update lands at most `late_by` back, behind the incremental
        // run's lookback: once the backfill has completed, no run reads it, so
        // the data stops changing then.
        if backfill_done {
            world.sim.stop_mutations();
        }
        let after = (
            progress(&world, RunKind::Incremental).await,
            progress(&world, RunKind::Backfill).await,
        );
        if after.0.is_some_and(|a| before.0.is_none_or(|b| a > b)) {
            landed_incremental += 1;
        }
        if after.1.is_some_and(|a| before.1.is_none_or(|b| a > b)) {
            landed_backfill += 1;
        }
        let dump = world.sim.dest_dump();
        let mut ids: Vec<&str> = dump
            .objects
            .iter()
            .map(|o| o.external_id.as_str())
            .collect();
        ids.sort_unstable();
        let all = ids.len();
        ids.dedup();
        assert_eq!(
            all,
            ids.len(),
            "seed {seed}: duplicate objects after a kill"
        );
        assert_eq!(
            dump.duplicate_applications, 0,
            "seed {seed}: a POST was applied twice"
        );
        versions.check(&dump, seed);
    }
    assert!(
        landed_incremental >= KILLS && landed_backfill >= KILLS,
        "seed {seed} {mode:?}: kills landed mid-run: incremental {landed_incremental}, backfill {landed_backfill} in {rounds} rounds"
    );
    world.sim.stop_mutations();

    // Both finish, side by side again, then the sync picks up what changed
    // while they ran.
    let (inc, bf) = tokio::join!(
        world.highwater(&incremental),
        finish_backfill(&world, &backfill, backfill_done)
    );
    assert!(
        matches!(inc.status.code(), Some(0 | 1)),
        "seed {seed}: {}",
        describe(&inc)
    );
    assert_eq!(bf, Some(0), "seed {seed}: the backfill did not complete");
    world.run_to_completion().await;
    let dump = world.sim.dest_dump();
    versions.check(&dump, seed);
    // Exact but for what only the lagging replica showed: a late update moves
    // a record into the last stretch of the history, behind the incremental
    // runs' lookback, where the backfill alone reads it; where each read of
    // it that committed met the replica's previous version (a killed run's
    // read of the new one committed nothing), no run saw the new one. Such a
    // record holds the version before the source's, at the destination and in
    // the ledger, and a backfill over that stretch, the replica caught up,
    // brings it.
    let v = world.verify().await;
    let late_from = started_at
        .checked_sub(late_by + Duration::from_secs(60))
        .expect("a time");
    let source = world.sim.source_records();
    let stale: Vec<&str> = v.stale.iter().map(String::as_str).collect();
    let store = world.store().await;
    let ledger = store.known(SYNC, &stale, &[]).await.expect("ledger").ledger;
    store.close().await;
    for id in &v.stale {
        let record = source
            .iter()
            .find(|r| &r.id == id)
            .expect("a source record");
        let held = dump
            .objects
            .iter()
            .find(|o| &o.external_id == id)
            .and_then(|o| o.body["version"].as_i64());
        // The ledger too holds the older version: no run took the new one
        // in and left it unwritten.
        let recorded = ledger.get(id.as_str()).and_then(|e| e.version);
        assert!(
            record.updated_at >= late_from && held == Some(record.version - 1) && recorded == held,
            "seed {seed}: {id} stale where no lagging replica explains it (ledger {recorded:?}):\n{v}"
        );
    }
    let mut rest = v.clone();
    rest.stale.clear();
    assert!(rest.is_exact(), "seed {seed}:\n{v}");
    let mut faults = world.sim.source_faults();
    faults.stale_version_ratio = 0.0;
    world.sim.set_source_faults(faults);
    let (late_from, now) = (late_from.to_string(), jiff::Timestamp::now().to_string());
    let repair = ["backfill", SYNC, "--from", &late_from, "--to", &now];
    assert_eq!(
        finish_backfill(&world, &repair, false).await,
        Some(0),
        "seed {seed}: the backfill of the late updates did not complete"
    );
    let v = world.assert_exact().await;
    assert!(v.dead_lettered > 0, "{v}");
    let store = world.store().await;
    for kind in [RunKind::Incremental, RunKind::Backfill] {
        assert!(
            store.open_run(SYNC, kind).await.expect("runs").is_none(),
            "seed {seed}: a {kind} run is still open"
        );
    }
    store.close().await;
}

/// Runs the backfill until it completes (a few resumable failures allowed);
/// its exit code.
async fn finish_backfill(world: &World, args: &[&str], done: bool) -> Option<i32> {
    if done {
        return Some(0);
    }
    let mut code = None;
    for _ in 0..5 {
        code = world.highwater(args).await.status.code();
        if code == Some(0) {
            break;
        }
    }
    code
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_and_the_sync_killed_side_by_side_put() {
    backfill_beside_the_sync(Mode::Put, 201).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_and_the_sync_killed_side_by_side_post() {
    backfill_beside_the_sync(Mode::Post, 203).await;
}

/// A destination written by lookup, then create, cannot tell a create of
/// another process from none: the sync's runs of every kind take turns, and a
/// second one is refused while one runs, having read nothing.
#[tokio::test(flavor = "multi_thread")]
async fn runs_of_a_lookup_sync_take_turns() {
    let mut sim = SimConfig::new(204, 3_000);
    sim.source.latency = Duration::from_millis(40);
    let mut setup = Setup::new(Style::Cursor, Mode::Lookup);
    setup.page_size = 20;
    let world = World::start("concurrent-lookup", sim, &setup).await;
    let from = world.sim.source_records()[0].updated_at.to_string();
    let to = jiff::Timestamp::now().to_string();
    let mut first = world.spawn(&["run", SYNC]);
    for _ in 0..200 {
        if world.sim.dest_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(world.sim.dest_count() > 0, "the sync never started writing");
    let out = world
        .highwater(&["backfill", SYNC, "--from", &from, "--to", &to])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = crate::util::stderr(&out);
    assert!(
        message.contains("sync \"invoices\" is running (process ")
            && message.contains("written by lookup then create")
            && message.contains("take turns"),
        "{message}"
    );
    assert!(
        first.try_wait().expect("wait").is_none(),
        "the sync stopped"
    );
    let store = world.store().await;
    assert!(
        store
            .open_run(SYNC, RunKind::Backfill)
            .await
            .expect("runs")
            .is_none(),
        "the refused backfill opened a run"
    );
    store.close().await;
    let _ = first.start_kill();
    let _ = first.wait().await;
    // Once it has gone, the backfill runs.
    let out = world
        .highwater(&["backfill", SYNC, "--from", &from, "--to", &to])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
