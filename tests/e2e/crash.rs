//! The crash test: for every pagination style (cursor, next URL in the body and in
//! a `Link` header, keyset, offset, page) and every HTTP write mode, 5,000 records
//! with every fault on and the data changing underneath, the binary is killed with
//! SIGKILL at 20 or more seeded random instants. A kill counts only if it landed
//! mid-run: the process committed progress and the run was still open. Between
//! kills, nothing is duplicated and no destination object's version goes back
//! (unless a write held past the client's timeout landed late, which the run must
//! repair). Then the killed run is finished, and — before any further run — every
//! record it was responsible for that did not change meanwhile must be exactly
//! right: the lookback is minutes, not the data's two hours, so a later run cannot
//! hide what the killed one lost. Only then does the next run pick up what changed
//! during the first, and everything is checked again; and a last run, with
//! nothing new, re-reads its lookback through lagging replicas and must change
//! nothing, nor write anything. Staged ledger rows are merged every 500 rows,
//! so kills land between and during merges, and past 2,000 records the merges
//! go through the ledger's second level. Records
//! are deleted at the source too, throughout: a deletes run every few kills, and
//! after each completed run, must leave every deleted record gone from the
//! destination, and none comes back between kills. The seed is in every message
//! so a failure can be replayed. A JSON Lines destination has a crash test of
//! its own, checked on the file and its log.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use highwater_core::state::RunKind;
use simsaas::{SimConfig, SimStats};

use crate::deletes::deletes_endpoint;
use crate::util::{
    KillDelays, Mode, SYNC, Setup, Style, Versions, World, describe, progress, wait_bounded,
};

const RECORDS: usize = 5_000;
/// Kills that must land mid-run in each crash test: twenty in the full
/// matrix (`HIGHWATER_FULL=1`), twelve in the covering set `.ci/run` runs
/// otherwise, to keep its time.
fn kills() -> usize {
    if std::env::var("HIGHWATER_FULL").is_ok_and(|v| v == "1") {
        20
    } else {
        12
    }
}
const READ_PATH: &str = "read_path = \"/v1/contacts/by-external-id/{external_id}\"";

async fn crash_and_recover(style: Style, mode: Mode, seed: u64) {
    let mut sim = SimConfig::new(seed, RECORDS).with_all_faults();
    sim.source.latency = Duration::from_millis(5);
    sim.dest.latency = Duration::from_millis(4);
    // Each slow answer, commit-then-timeout or late write holds its page for a
    // client timeout; these rates keep every fault present without making the
    // run crawl.
    sim.dest.slow_ratio = 0.002;
    sim.dest.commit_then_timeout_ratio = 0.004;
    sim.dest.commit_then_502_ratio = 0.004;
    sim.dest.delayed_apply_ratio = 0.004;
    // A 429 pauses every request for its Retry-After (a second or two): enough
    // to meet both forms in every run, few enough that runs still finish.
    // The source gets a few hundred requests in all, so its faults are frequent.
    sim.source.rate_limit_ratio = 0.03;
    sim.source.rate_limit_date_ratio = 0.02;
    sim.source.burst_start_ratio = 0.05;
    sim.source.slow_ratio = 0.03;
    sim.dest.rate_limit_ratio = 0.0005;
    sim.dest.rate_limit_date_ratio = 0.0003;
    if mode == Mode::Batch {
        // Fifty records a request: as many faults per record take fifty
        // times the rate per request.
        sim.dest.slow_ratio = 0.04;
        sim.dest.commit_then_timeout_ratio = 0.04;
        sim.dest.commit_then_502_ratio = 0.04;
        sim.dest.delayed_apply_ratio = 0.04;
        sim.dest.rate_limit_ratio = 0.02;
        sim.dest.rate_limit_date_ratio = 0.01;
        // And a request takes longer: at 4 ms for fifty records the run
        // could finish before twenty kills had landed, at 20 ms it still
        // did on a quiet machine (18 landed in 33 attempts), and at 40 ms
        // once commits no longer waited on the run loop (19 in 26).
        sim.dest.latency = Duration::from_millis(60);
    }
    sim.mutations.max = 300;
    sim.mutations.interval = Duration::from_millis(10);
    // Updates, late updates (well within the lookback) and inserts; a record
    // inserted with an old timestamp is a backfill's business, not a run's.
    sim.mutations.weights = [2, 1, 1, 0];
    // And hard deletes, about one mutation in nine: into the deletes feed.
    sim.mutations.delete_weights = [1, 0, 0];
    sim.mutations.late_by = Duration::from_secs(60);
    let mut setup = Setup::new(style, mode);
    setup.timeout = "300ms";
    // Three timeouts, the default.
    let mut late_window = Duration::from_millis(900);
    setup.lookback = "5m";
    if mode != Mode::Lookup {
        setup.dest_extra = READ_PATH.into();
    }
    if mode == Mode::Batch {
        // A held batch carries fifty records, and lands when the simulator's
        // task gets a core again: on two loaded cores that can be well past
        // its 450 ms. The window a late write may land in is the contract the
        // run relies on, so it is given room here.
        late_window = Duration::from_secs(3);
        setup.dest_extra.push_str("\nlate_write_window = \"3s\"");
    }
    // Held writes land after 1.5 client timeouts.
    sim.dest.delayed_apply_after = Duration::from_millis(450);
    // Ledger merges every 500 rows (the least allowed), so that kills land
    // both between merges (staged rows left for the next invocation) and
    // during them, and so that, past 2,000 records, merges go into the
    // ledger's second level and that level into the ledger, in turn.
    setup.merge_rows = Some(500);
    setup.deletes = deletes_endpoint(mode);
    let name = format!("crash-{style:?}-{mode:?}");
    let world = World::start(&name, sim, &setup).await;
    let at_start: HashMap<String, i64> = world
        .sim
        .source_records()
        .into_iter()
        .map(|r| (r.id, r.version))
        .collect();
    // A lookup-mode run first waits out the late-write window (three timeouts)
    // before it creates a record an earlier, killed process may have created:
    // its kills land across and after that wait, so that they interrupt pages
    // being written, not only the wait.
    let mut delays = KillDelays::new(
        seed,
        match mode {
            Mode::Lookup => 300..1800,
            Mode::Put | Mode::Post | Mode::Batch => 60..500,
        },
    );
    let mut versions = Versions::default();
    // Records a completed deletes run removed: gone for good (none is re-created).
    let mut gone: HashSet<String> = HashSet::new();
    let mut landed = 0;
    let mut attempts = 0;
    let kills = kills();
    while landed < kills && attempts < 100 {
        attempts += 1;
        let before = progress(&world, RunKind::Incremental).await;
        let mut child = world.spawn(&["run", SYNC]);
        if let Some(status) = wait_bounded(&mut child, delays.next()).await {
            assert!(
                status.code() != Some(2),
                "seed {seed}: the run refused its config"
            );
            if status.success() {
                break;
            }
            continue;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        let after = progress(&world, RunKind::Incremental).await;
        let mid_run = after.is_some_and(|a| before.is_none_or(|b| a > b));
        delays.landed(mid_run);
        if mid_run {
            landed += 1;
            // Deletions applied between kills, with the killed run left open.
            if landed % 5 == 0 {
                apply_deletes(&world, &mut gone, seed).await;
            }
        }
        // Between crashes: nothing is ever duplicated, even transiently, and
        // nothing goes back but what a late write set back.
        let dump = world.sim.dest_dump();
        let mut ids: Vec<&str> = dump
            .objects
            .iter()
            .map(|o| o.external_id.as_str())
            .collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(
            before,
            ids.len(),
            "seed {seed}: duplicate objects after a kill"
        );
        assert_eq!(
            dump.duplicate_applications, 0,
            "seed {seed}: a POST was applied twice"
        );
        versions.check(&dump, seed);
        let back: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| gone.contains(*id))
            .collect();
        assert!(
            back.is_empty(),
            "seed {seed}: deleted records came back after a kill: {back:?}"
        );
    }
    assert!(
        landed >= kills,
        "seed {seed} {style:?}/{mode:?}: only {landed} of {attempts} kills landed mid-run"
    );
    eprintln!("seed {seed} {style:?}/{mode:?}: {landed} of {attempts} kills landed mid-run");
    world.sim.stop_mutations();
    let killed_run = open_run_id(&world)
        .await
        .unwrap_or_else(|| panic!("seed {seed}: no run was open after the kills"));

    // The killed run, finished: its own result, with no later run to hide a loss.
    world.run_to_completion().await;
    apply_deletes(&world, &mut gone, seed).await;
    let store = world.store().await;
    let (completed, _) = store
        .last_completed(SYNC, RunKind::Incremental)
        .await
        .expect("runs")
        .unwrap_or_else(|| panic!("seed {seed}: no completed run"));
    store.close().await;
    assert_eq!(
        completed.run_id, killed_run,
        "seed {seed}: the completed run is not the one that was killed"
    );
    let unchanged: HashSet<String> = world
        .sim
        .source_records()
        .into_iter()
        .filter(|r| at_start.get(&r.id) == Some(&r.version))
        .map(|r| r.id)
        .collect();
    let own = world.verify_only(&unchanged).await;
    assert!(
        own.is_exact() && own.source_records > 0,
        "seed {seed} {style:?}/{mode:?}: the killed run's own result is wrong:\n{own}{}",
        late_writes(&world, late_window)
    );

    // The next run picks up what changed while the first ran.
    world.run_to_completion().await;
    apply_deletes(&world, &mut gone, seed).await;
    assert!(
        !gone.is_empty(),
        "seed {seed}: no record was deleted at the source"
    );
    let v = world.verify().await;
    assert!(
        v.is_exact() && v.expected_written > 0 && v.dead_lettered > 0,
        "seed {seed} {style:?}/{mode:?}: the destination does not match the source:\n{v}{}",
        late_writes(&world, late_window)
    );

    // Nothing changes now, and a run re-reads its lookback: every record
    // changed during the first run was read at its latest version, and a
    // replica serving an older one again (the stale-replica fault, whose
    // chance comes mostly here) must change nothing. Its ledger knows every
    // record at its latest version, so it writes none either.
    // A write the last run sent and the simulator held may still land, within
    // the late-write window: it is that run's write, not this one's.
    tokio::time::sleep(2 * late_window).await;
    let applied = world.sim.stats().dest.writes_applied;
    world.run_to_completion().await;
    let again = world.verify().await;
    assert!(
        again.is_exact() && again.expected_written == v.expected_written,
        "seed {seed} {style:?}/{mode:?}: a run with nothing new changed the destination:\n{again}{}",
        late_writes(&world, late_window)
    );
    let rewritten = world.sim.stats().dest.writes_applied - applied;
    assert_eq!(
        rewritten, 0,
        "seed {seed} {style:?}/{mode:?}: a run with nothing new wrote {rewritten} records again"
    );

    // Rewound to the start with the ledger kept, a run re-reads every record,
    // not only its lookback: the ledger still knows each at its latest
    // version, whichever run and merge put it there, so it writes none.
    let out = world.highwater(&["reset", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let applied = world.sim.stats().dest.writes_applied;
    world.run_to_completion().await;
    let rewritten = world.sim.stats().dest.writes_applied - applied;
    assert_eq!(
        rewritten, 0,
        "seed {seed} {style:?}/{mode:?}: a run re-reading everything wrote {rewritten} records again"
    );
    assert_faults_served(&world.sim.stats(), seed);
}

/// What a failure message adds about held writes: the run relies on each
/// landing within its late-write window, and one the simulator applied later
/// (its task kept from a core that long) broke that contract, so a wrong
/// destination then says nothing of the run.
fn late_writes(world: &World, window: Duration) -> String {
    let took = world.sim.stats().dest.delayed_apply_max_ms;
    if u128::from(took) < window.as_millis() {
        format!(
            "\n(every held write landed within {took} ms, inside the late-write window of {window:?})"
        )
    } else {
        format!(
            "\n(the simulator applied a held write {took} ms after it arrived, past the \
             late-write window of {window:?}: the machine was too loaded for this test)"
        )
    }
}

/// Runs the deletes feed to completion: every record deleted at the source
/// before it started is then gone from the destination, removed once, and
/// stays gone.
async fn apply_deletes(world: &World, gone: &mut HashSet<String>, seed: u64) {
    // Deleted before the run starts, so at or below its watermark; the data
    // may still be changing while it runs.
    let deleted = world.sim.deleted_ids();
    world.deletes_to_completion().await;
    let held: HashSet<String> = world
        .sim
        .dest_dump()
        .objects
        .into_iter()
        .map(|o| o.external_id)
        .collect();
    let left: Vec<&String> = deleted.iter().filter(|id| held.contains(*id)).collect();
    assert!(
        left.is_empty(),
        "seed {seed}: deleted at the source, still at the destination: {left:?}"
    );
    let twice: Vec<(String, u64)> = world
        .sim
        .deletes_applied()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: deleted more than once: {twice:?}"
    );
    gone.extend(deleted);
}

/// Every fault the run is meant to survive was served at least once.
fn assert_faults_served(stats: &SimStats, seed: u64) {
    let (s, d) = (&stats.source, &stats.dest);
    let served = [
        ("source 429", s.rate_limited + s.rate_limited_date),
        ("source 5xx", s.server_errors),
        ("source slow answer", s.slow),
        ("stale replica", s.stale_served),
        ("destination 429", d.rate_limited + d.rate_limited_date),
        ("destination 5xx", d.server_errors),
        ("destination slow write", d.slow),
        ("commit then timeout", d.commit_then_timeout),
        ("commit then 502", d.commit_then_502),
        ("late write", d.delayed_apply),
        ("rejected record", d.rejected),
    ];
    let missing: Vec<&str> = served
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(what, _)| *what)
        .collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: faults never served: {missing:?}\n{stats:?}"
    );
}

async fn open_run_id(world: &World) -> Option<String> {
    let store = world.store().await;
    let open = store
        .open_run(SYNC, RunKind::Incremental)
        .await
        .expect("open run");
    store.close().await;
    open.map(|(run, _)| run.run_id)
}

macro_rules! crash_tests {
    ($($name:ident: $style:expr, $mode:expr, $seed:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                crash_and_recover($style, $mode, $seed).await;
            }
        )*
    };
}

// Every style and every mode at least once (put three times, post twice,
// lookup and batch once), and next URLs that number pages: the covering set
// that `.ci/run` runs.
crash_tests! {
    cursor_put: Style::Cursor, Mode::Put, 101;
    next_url_body_lookup: Style::NextUrlBody, Mode::Lookup, 105;
    next_url_link_post: Style::NextUrlLink, Mode::Post, 109;
    offset_post: Style::Offset, Mode::Post, 115;
    page_put: Style::Page, Mode::Put, 116;
    keyset_batch: Style::Keyset, Mode::Batch, 119;
    page_link_put: Style::PageLink, Mode::Put, 125;
}

/// The other eighteen combinations: with the first six above, every pagination
/// style with every write mode; and next URLs that count an offset. `.ci/run`
/// leaves them out unless `HIGHWATER_FULL=1`.
mod full {
    use super::*;

    crash_tests! {
        cursor_lookup: Style::Cursor, Mode::Lookup, 102;
        cursor_post: Style::Cursor, Mode::Post, 103;
        next_url_body_put: Style::NextUrlBody, Mode::Put, 104;
        next_url_body_post: Style::NextUrlBody, Mode::Post, 106;
        next_url_link_put: Style::NextUrlLink, Mode::Put, 107;
        next_url_link_lookup: Style::NextUrlLink, Mode::Lookup, 108;
        keyset_put: Style::Keyset, Mode::Put, 110;
        keyset_lookup: Style::Keyset, Mode::Lookup, 111;
        keyset_post: Style::Keyset, Mode::Post, 112;
        offset_put: Style::Offset, Mode::Put, 113;
        offset_lookup: Style::Offset, Mode::Lookup, 114;
        page_lookup: Style::Page, Mode::Lookup, 117;
        page_post: Style::Page, Mode::Post, 118;
        cursor_batch: Style::Cursor, Mode::Batch, 120;
        next_url_body_batch: Style::NextUrlBody, Mode::Batch, 121;
        next_url_link_batch: Style::NextUrlLink, Mode::Batch, 122;
        offset_batch: Style::Offset, Mode::Batch, 123;
        page_batch: Style::Page, Mode::Batch, 124;
        offset_link_post: Style::OffsetLink, Mode::Post, 126;
    }
}

/// The crash test for a JSON Lines destination: 20,000 records from a source
/// with its faults on, in pages of 1,000 (each more than the log keeps in
/// memory before it writes, so kills find lines on disk that no commit covers
/// yet), the binary SIGKILLed at seeded random instants (8 landing mid-run)
/// and every third run stopped with SIGTERM instead. Its log is set aside and
/// compacted every 3,000 lines, so kills land while logs are set aside and
/// compacted. Between kills, the file and its logs, opened and resumed as the
/// next run resumes them, hold only lines whose version the ledger or an
/// announcement holds, never take a version back, and the file never holds
/// an id twice; once a run completes, the file holds every record once, at
/// its version.
#[tokio::test(flavor = "multi_thread")]
async fn jsonl_file_survives_kills() {
    use highwater_core::sink::Held;
    use highwater_core::sink::jsonl::{JsonLinesSink, config::JsonLinesSpec};

    let seed = 131;
    let mut sim = SimConfig::new(seed, 20_000);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    sim.source.latency = Duration::from_millis(120);
    sim.source.rate_limit_ratio = 0.02;
    sim.source.burst_start_ratio = 0.03;
    sim.source.slow_ratio = 0.02;
    let mut setup = Setup::new(Style::Keyset, Mode::Put);
    setup.timeout = "300ms";
    setup.page_size = 1000;
    setup.merge_rows = Some(500);
    let world = World::start("crash-jsonl", sim, &setup).await;
    let spec = JsonLinesSpec {
        path: world.dir.join("out").join("contacts.jsonl"),
        external_id_field: "external_id".into(),
        compact_lines: 3000,
    };
    world.use_jsonl_destination(&spec.path, Some(spec.compact_lines));
    let source = world.sim.source_records();
    // What the destination holds is what a run resumed at the last commit's
    // position finds: what a crash left past it is dropped then.
    let held = |spec: &JsonLinesSpec, position: Option<String>| -> HashMap<String, i64> {
        let sink = JsonLinesSink::open(spec.clone())
            .unwrap_or_else(|e| panic!("seed {seed}: the file cannot be opened: {e}"));
        sink.resume(position.as_deref())
            .unwrap_or_else(|e| panic!("seed {seed}: the file cannot be resumed: {e}"));
        let mut versions = HashMap::new();
        for record in &source {
            match sink.try_read_back(&record.id) {
                Ok(Held::Object { object, .. }) => {
                    versions.insert(record.id.clone(), object["version"].as_i64().unwrap_or(-1));
                }
                Ok(Held::Nothing) => {}
                Err(e) => panic!("seed {seed}: {} cannot be read back: {e}", record.id),
            }
        }
        versions
    };
    let mut delays = KillDelays::new(seed, 50..700);
    let mut seen: HashMap<String, i64> = HashMap::new();
    let (mut landed, mut attempts, mut compacted_mid_run) = (0, 0, false);
    while landed < 8 && attempts < 60 {
        attempts += 1;
        let before = progress(&world, RunKind::Incremental).await;
        let mut child = world.spawn(&["run", SYNC]);
        if let Some(status) = wait_bounded(&mut child, delays.next()).await {
            assert!(status.success(), "seed {seed}: the run failed");
            break;
        }
        // Every third run is stopped instead: it commits what it resolved,
        // and its end cuts off what no commit covers and compacts the rest
        // into the file.
        let stopped = attempts % 3 == 0
            && std::process::Command::new("kill")
                .args(["-TERM", &child.id().expect("pid").to_string()])
                .status()
                .is_ok_and(|s| s.success());
        if !stopped
            || tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let after = progress(&world, RunKind::Incremental).await;
        let mid_run = after.is_some_and(|a| before.is_none_or(|b| a > b));
        delays.landed(mid_run);
        if mid_run {
            landed += 1;
        }
        if !world.has_store().await {
            continue;
        }
        let store = world.store().await;
        let position = store.sink_position(SYNC).await.expect("position");
        let now = held(&spec, position);
        // Every line the destination keeps landed with its ledger row or its
        // announcement: a later copy from a lagging source is never written
        // over it unnoticed.
        store.merge_staged(SYNC).await.expect("merge");
        let floors = store.floors(SYNC, None).await.expect("floors").newest;
        let ids: Vec<&str> = now.keys().map(String::as_str).collect();
        let known = store.known(SYNC, &ids, &[]).await.expect("ledger");
        store.close().await;
        for (id, version) in &now {
            let at_least = |v: Option<i64>| v.is_some_and(|v| v >= *version);
            assert!(
                at_least(known.ledger.get(id).and_then(|e| e.version))
                    || at_least(floors.get(id).and_then(|f| f.version)),
                "seed {seed}: {id} at version {version} in the destination, \
                 neither in the ledger nor announced"
            );
        }
        for (id, version) in &seen {
            let current = now.get(id).copied();
            assert!(
                current.is_some_and(|c| c >= *version),
                "seed {seed}: {id} went from version {version} to {current:?} after a kill"
            );
        }
        seen = now;
        let text = std::fs::read_to_string(&spec.path).unwrap_or_default();
        // No run has completed yet: only a compaction of a log set aside
        // writes the file.
        compacted_mid_run |= !text.is_empty();
        let mut ids: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split("\"external_id\":\"").nth(1)?.split('"').next())
            .collect();
        let lines = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(lines, ids.len(), "seed {seed}: an id twice in the file");
    }
    assert!(
        landed >= 4,
        "seed {seed}: only {landed} kills landed mid-run"
    );
    assert!(
        compacted_mid_run,
        "seed {seed}: no log was set aside and compacted before a kill"
    );
    let out = world.run_to_completion().await;
    assert!(out.status.success(), "seed {seed}: the last run failed");
    let text = std::fs::read_to_string(&spec.path).expect("file");
    let mut lines: HashMap<String, i64> = HashMap::new();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let id = row["external_id"].as_str().expect("id").to_owned();
        assert!(
            lines
                .insert(id, row["version"].as_i64().unwrap_or(-1))
                .is_none(),
            "seed {seed}: an id twice in the file"
        );
    }
    let expected: HashMap<String, i64> = source.iter().map(|r| (r.id.clone(), r.version)).collect();
    assert_eq!(lines, expected, "seed {seed}: the file is not the source");
    let logs: Vec<_> = std::fs::read_dir(spec.path.parent().expect("dir"))
        .expect("dir")
        .filter_map(|entry| {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.starts_with("contacts.jsonl.").then_some(name)
        })
        .collect();
    assert!(
        logs.is_empty(),
        "seed {seed}: the completed run left logs or runs beside the file: {logs:?}"
    );
}
