//! The crash test: for every pagination style (the next-URL style taking its URL
//! from the body, or from the `Link` header with `lookup`) and every HTTP write
//! mode, 5,000 records with every fault on and the data changing underneath, the
//! binary is killed with SIGKILL at 20 or more seeded random instants — each one
//! counted only if it landed mid-run — then allowed to finish. The destination
//! must then match the source exactly. Staged ledger rows are merged every 1,000
//! rows, so kills land between and during merges. The seed is in every message so a failure
//! can be replayed.

use std::time::Duration;

use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, wait_bounded};

const RECORDS: usize = 5_000;
const KILLS: usize = 20;

async fn crash_and_recover(style: Style, mode: Mode, seed: u64) {
    let mut sim = SimConfig::new(seed, RECORDS).with_all_faults();
    sim.source.latency = Duration::from_millis(5);
    sim.dest.latency = Duration::from_millis(2);
    // Each slow answer or commit-then-timeout holds its page for a client timeout;
    // these rates keep every fault present without making the run crawl.
    sim.dest.slow_ratio = 0.002;
    sim.dest.commit_then_timeout_ratio = 0.004;
    // A 429 pauses every request for its Retry-After (a second or two): a handful
    // per run is plenty.
    sim.source.rate_limit_ratio = 0.005;
    sim.source.rate_limit_date_ratio = 0.003;
    sim.dest.rate_limit_ratio = 0.0002;
    sim.dest.rate_limit_date_ratio = 0.0001;
    sim.mutations.max = 300;
    sim.mutations.interval = Duration::from_millis(10);
    sim.mutations.weights = [2, 1, 1, 1];
    let mut setup = Setup::new(style, mode);
    setup.timeout = "300ms";
    // Ledger merges every 1,000 rows, so that kills land both between merges
    // (staged rows left for the next invocation) and during them.
    setup.merge_rows = Some(1_000);
    let world = World::start(&format!("crash-{style:?}-{mode:?}"), sim, &setup).await;
    let valid = world
        .sim
        .source_records()
        .iter()
        .filter(|r| r.rejection.is_none())
        .count();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut landed = 0;
    let mut attempts = 0;
    while landed < KILLS && attempts < 100 {
        attempts += 1;
        let mut child = world.spawn(&["run", SYNC]);
        let delay = Duration::from_millis(rng.u64(60..500));
        if let Some(status) = wait_bounded(&mut child, delay).await {
            assert!(
                status.code() != Some(2),
                "seed {seed}: the run refused its config"
            );
            if status.success() {
                break;
            }
            continue;
        }
        let held = world.sim.dest_count();
        let _ = child.start_kill();
        let _ = child.wait().await;
        if held > 0 && held < valid {
            landed += 1;
        }
        // Between crashes: nothing is ever duplicated, even transiently.
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
    }
    assert!(
        landed >= KILLS,
        "seed {seed} {style:?}/{mode:?}: only {landed} of {attempts} kills landed mid-run"
    );
    world.sim.stop_mutations();
    // Finish the run that was killed, then run once more: the overlap picks up the
    // changes that landed behind the reader while it ran.
    world.run_to_completion().await;
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    assert!(v.dead_lettered > 0, "{v}");
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

crash_tests! {
    cursor_put: Style::Cursor, Mode::Put, 101;
    cursor_lookup: Style::Cursor, Mode::Lookup, 102;
    cursor_post: Style::Cursor, Mode::Post, 103;
    next_url_body_put: Style::NextUrlBody, Mode::Put, 104;
    next_url_link_lookup: Style::NextUrlLink, Mode::Lookup, 105;
    next_url_body_post: Style::NextUrlBody, Mode::Post, 106;
    keyset_put: Style::Keyset, Mode::Put, 110;
    keyset_lookup: Style::Keyset, Mode::Lookup, 111;
    keyset_post: Style::Keyset, Mode::Post, 112;
    offset_put: Style::Offset, Mode::Put, 113;
    offset_lookup: Style::Offset, Mode::Lookup, 114;
    offset_post: Style::Offset, Mode::Post, 115;
    page_put: Style::Page, Mode::Put, 116;
    page_lookup: Style::Page, Mode::Lookup, 117;
    page_post: Style::Page, Mode::Post, 118;
}
