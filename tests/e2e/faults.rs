//! One test per fault the simulated SaaS can inject: each turns that fault on, runs
//! the sync to completion, checks the fault was really served, and compares the
//! destination with the source.

use std::time::Duration;

use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report};

fn quiet(seed: u64, records: usize) -> SimConfig {
    SimConfig::new(seed, records)
}

/// The destination matches the source, and no request broke a `Retry-After`.
async fn exact(world: &World) -> simsaas::Verification {
    let v = world.assert_exact().await;
    world.assert_retry_after_respected();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_with_retry_after_seconds_are_waited_out() {
    let mut sim = quiet(11, 600);
    sim.source.rate_limit_ratio = 0.2;
    sim.dest.rate_limit_ratio = 0.02;
    sim.source.retry_after_secs = 1;
    sim.dest.retry_after_secs = 1;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.page_size = 20;
    let world = World::start("retry-after-secs", sim, &setup).await;
    world.run_to_completion().await;
    let stats = world.sim.stats();
    assert!(
        stats.source.rate_limited > 0 && stats.dest.rate_limited > 0,
        "{stats:?}"
    );
    exact(&world).await;
}

/// A destination that limits requests with a token bucket, fails with 5xx, commits
/// slowly and sends each 429's body a while after its head, at concurrency 8: a
/// 429 holds back every request to that API — writes, lookups, creates, retries —
/// until its deadline. The same for a source read alone, into a file.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_holds_back_every_request_until_its_deadline() {
    for mode in [Mode::Put, Mode::Lookup] {
        let mut sim = quiet(25, 1200);
        sim.dest.rate_limit_rps = Some(150.0);
        sim.dest.latency = Duration::from_millis(2);
        sim.dest.burst_start_ratio = 0.02;
        sim.dest.commit_then_timeout_ratio = 0.01;
        sim.dest.slow_delay = Duration::from_millis(400);
        sim.dest.rate_limit_body_delay = Duration::from_millis(400);
        sim.source.rate_limit_ratio = 0.05;
        sim.source.rate_limit_body_delay = Duration::from_millis(400);
        let mut setup = Setup::new(Style::Cursor, mode);
        setup.timeout = "300ms";
        setup.page_size = 50;
        let world = World::start(&format!("holdoff-{mode:?}"), sim, &setup).await;
        world.run_to_completion().await;
        let stats = world.sim.stats();
        assert!(
            stats.dest.rate_limited > 0
                && stats.source.rate_limited > 0
                && stats.dest.server_errors > 0
                && stats.dest.commit_then_timeout > 0,
            "{mode:?}: {stats:?}"
        );
        exact(&world).await;
    }
    let mut sim = quiet(26, 1500);
    sim.source.rate_limit_ratio = 0.05;
    sim.source.rate_limit_date_ratio = 0.02;
    sim.source.slow_ratio = 0.02;
    sim.source.slow_delay = Duration::from_millis(500);
    sim.source.rate_limit_body_delay = Duration::from_millis(500);
    let mut setup = Setup::new(Style::Keyset, Mode::Put);
    setup.timeout = "300ms";
    setup.page_size = 20;
    let world = World::start("holdoff-jsonl", sim, &setup).await;
    world.use_jsonl_destination(&world.dir.join("out.jsonl"), None);
    world.run_to_completion().await;
    let stats = world.sim.stats();
    assert!(
        stats.source.rate_limited > 0 && stats.source.slow > 0,
        "{stats:?}"
    );
    world.assert_retry_after_respected();
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_with_retry_after_http_dates_are_waited_out() {
    let mut sim = quiet(12, 600);
    sim.source.rate_limit_date_ratio = 0.2;
    sim.dest.rate_limit_date_ratio = 0.01;
    let mut setup = Setup::new(Style::Keyset, Mode::Put);
    setup.page_size = 20;
    let world = World::start("retry-after-date", sim, &setup).await;
    let started = std::time::Instant::now();
    world.run_to_completion().await;
    let stats = world.sim.stats();
    assert!(
        stats.source.rate_limited_date > 0 && stats.dest.rate_limited_date > 0,
        "{stats:?}"
    );
    // An HTTP-date about a second ahead is a floor on the wait.
    assert!(started.elapsed() >= Duration::from_millis(900));
    exact(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_error_bursts_are_retried() {
    let mut sim = quiet(13, 1000);
    sim.source.burst_start_ratio = 0.1;
    sim.source.burst_len = 3;
    sim.dest.burst_start_ratio = 0.02;
    sim.dest.burst_len = 4;
    let mut setup = Setup::new(Style::NextUrlBody, Mode::Lookup);
    setup.page_size = 20;
    let world = World::start("bursts", sim, &setup).await;
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stats = world.sim.stats();
    assert!(
        stats.source.server_errors >= 3 && stats.dest.server_errors >= 4,
        "{stats:?}"
    );
    let retries = report(&out)["retries"].as_u64().unwrap_or(0);
    assert!(
        retries >= stats.source.server_errors + stats.dest.server_errors,
        "{retries} retries for {stats:?}"
    );
    exact(&world).await;
}

/// A page answered 200 with a proxy's HTML page in place of JSON is asked
/// for again, as a 503 would be; the retries are counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_is_not_json_under_a_200_is_asked_for_again() {
    for (n, style) in [Style::Cursor, Style::Keyset, Style::Offset]
        .into_iter()
        .enumerate()
    {
        let mut sim = quiet(15 + n as u64, 600);
        sim.source.not_json_ratio = 0.1;
        let mut setup = Setup::new(style, Mode::Put);
        setup.page_size = 20;
        let world = World::start(&format!("not-json-{style:?}"), sim, &setup).await;
        let out = world.highwater(&["run", SYNC, "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let stats = world.sim.stats();
        assert!(stats.source.not_json >= 2, "{stats:?}");
        let retries = report(&out)["retries"].as_u64().unwrap_or(0);
        assert!(
            retries >= stats.source.not_json,
            "{retries} retries for {stats:?}"
        );
        exact(&world).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_slower_than_the_timeout_are_retried() {
    let mut sim = quiet(14, 600);
    sim.source.slow_ratio = 0.1;
    sim.source.slow_delay = Duration::from_millis(1500);
    sim.dest.slow_ratio = 0.02;
    sim.dest.slow_delay = Duration::from_millis(1500);
    let mut setup = Setup::new(Style::Offset, Mode::Put);
    setup.timeout = "500ms";
    setup.page_size = 20;
    let world = World::start("slow", sim, &setup).await;
    world.run_to_completion().await;
    let stats = world.sim.stats();
    assert!(stats.source.slow > 0 && stats.dest.slow > 0, "{stats:?}");
    exact(&world).await;
}

/// The destination applies the write and then never answers in time: every mode
/// must retry only through its idempotent path, and create nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn commit_then_timeout_never_duplicates_in_any_mode() {
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        let mut sim = quiet(15 + i as u64, 500);
        sim.dest.commit_then_timeout_ratio = 0.05;
        sim.dest.slow_delay = Duration::from_millis(900);
        let mut setup = Setup::new(Style::Cursor, mode);
        setup.timeout = "300ms";
        let world = World::start(&format!("commit-timeout-{mode:?}"), sim, &setup).await;
        world.run_to_completion().await;
        let stats = world.sim.stats();
        assert!(stats.dest.commit_then_timeout > 0, "{mode:?}: {stats:?}");
        exact(&world).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn poisoned_and_invalid_records_are_dead_lettered_with_their_reason() {
    let mut sim = quiet(18, 1000);
    sim.poisoned_ratio = 0.03;
    sim.invalid_ratio = 0.03;
    let world = World::start("poison", sim, &Setup::new(Style::Page, Mode::Post)).await;
    world.run_to_completion().await;
    let v = exact(&world).await;
    assert!(v.dead_lettered >= 30, "{v}");
    let store = world.store().await;
    let dead = store.dead_letters(crate::util::SYNC).await.expect("dlq");
    let reasons: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("HTTP 422")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("HTTP 400")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("required field `email`") || r.contains("must be an integer")),
        "{reasons:?}"
    );
    assert!(dead.iter().all(|d| !d.payload.is_null() && d.attempts >= 1));
    // Running again does not retry records whose dead letter is unchanged.
    let before = world.sim.stats().dest.rejected;
    world.run_to_completion().await;
    assert_eq!(world.sim.stats().dest.rejected, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_rate_limit_is_respected() {
    let mut sim = quiet(19, 600);
    sim.dest.rate_limit_rps = Some(300.0);
    let world = World::start("dest-rps", sim, &Setup::new(Style::Cursor, Mode::Put)).await;
    world.run_to_completion().await;
    assert!(world.sim.stats().dest.rate_limited > 0);
    exact(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inserts_and_updates_during_a_run_are_picked_up_by_the_next() {
    let mut sim = quiet(20, 1500);
    sim.source.latency = Duration::from_millis(5);
    sim.mutations.max = 150;
    sim.mutations.interval = Duration::from_millis(5);
    sim.mutations.weights = [3, 0, 2, 0];
    let world = World::start(
        "live-changes",
        sim,
        &Setup::new(Style::Cursor, Mode::Lookup),
    )
    .await;
    world.run_to_completion().await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    world.sim.stop_mutations();
    assert!(world.sim.mutations_done() > 0);
    world.run_to_completion().await;
    exact(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn late_updates_are_caught_by_lag_and_lookback() {
    let mut sim = quiet(21, 1500);
    sim.source.latency = Duration::from_millis(5);
    sim.mutations.max = 100;
    sim.mutations.interval = Duration::from_millis(5);
    sim.mutations.late_by = Duration::from_secs(180);
    sim.mutations.weights = [0, 1, 0, 0];
    let mut setup = Setup::new(Style::Keyset, Mode::Put);
    setup.lag = "1m";
    setup.lookback = "10m";
    let world = World::start("late-updates", sim, &setup).await;
    world.run_to_completion().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    world.sim.stop_mutations();
    assert!(world.sim.mutations_done() > 0, "no late update was made");
    // The late updates are older than now but newer than the first watermark.
    world.run_to_completion().await;
    exact(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_records_sharing_one_timestamp_are_all_read() {
    let mut sim = quiet(22, 1000);
    sim.shared_timestamp_ratio = 0.6;
    let mut setup = Setup::new(Style::Keyset, Mode::Put);
    setup.page_size = 50;
    let world = World::start("shared-ts", sim, &setup).await;
    let records = world.sim.source_records();
    let shared = records
        .iter()
        .filter(|r| r.updated_at == records[records.len() / 2].updated_at)
        .count();
    assert!(shared >= 500, "only {shared} records share the timestamp");
    world.run_to_completion().await;
    exact(&world).await;
}

/// An API sorting by `updated_at` alone may serve the records sharing one in
/// another order at every request (ServiceNow by `sys_updated_on`): an offset
/// walk reads each page's last group of them again whole, and says the order
/// moves. A group longer than half a page cannot be read so: the run stops
/// at its checkpoint, saying why, and resumes with a larger page.
#[tokio::test(flavor = "multi_thread")]
async fn ties_in_another_order_at_each_request_are_read_whole_or_the_run_stops() {
    for style in [Style::Offset, Style::OffsetLink] {
        let mut sim = quiet(25, 2000);
        // Whole ten seconds: about three records share each `updated_at`.
        sim.shared_timestamp_ratio = 0.0;
        sim.timestamp_step_ms = 10_000;
        sim.source.unstable_ties = true;
        let mut setup = Setup::new(style, Mode::Put);
        setup.page_size = 50;
        let world = World::start(&format!("unstable-ties-{style:?}"), sim, &setup).await;
        let out = world.run_to_completion().await;
        assert!(
            crate::util::stderr(&out).contains("in another order from one request to the next"),
            "{style:?}: {}",
            describe(&out)
        );
        exact(&world).await;
    }
    // A page walk's two requests a page are two orders: it stops where a
    // group spans two pages, and once the listing is sorted whole, the run
    // resumed from its checkpoint comes out exact.
    let mut sim = quiet(25, 2000);
    sim.shared_timestamp_ratio = 0.0;
    sim.timestamp_step_ms = 10_000;
    sim.source.unstable_ties = true;
    let mut setup = Setup::new(Style::Page, Mode::Put);
    setup.page_size = 50;
    let world = World::start("unstable-ties-Page", sim, &setup).await;
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = crate::util::stderr(&out);
    assert!(
        err.contains("a walk by page numbers reads a page and the one before it")
            && err.contains("some share one across two pages"),
        "{err}"
    );
    let mut stable = world.sim.source_faults();
    stable.unstable_ties = false;
    world.sim.set_source_faults(stable);
    world.run_to_completion().await;
    exact(&world).await;

    // Two hundred records share one `updated_at`: more than half of 50.
    let mut sim = quiet(26, 2000);
    sim.shared_timestamp_ratio = 0.1;
    sim.source.unstable_ties = true;
    let mut setup = Setup::new(Style::Offset, Mode::Put);
    setup.page_size = 50;
    let world = World::start("unstable-ties-long", sim, &setup).await;
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = crate::util::stderr(&out);
    assert!(
        err.contains("or more share one at a page's end") && err.contains("ask for pages of"),
        "{err}"
    );
    let written = world.dest_ids().len();
    assert!(
        written > 0 && written < 2000,
        "{written} written before the stop"
    );
    setup.page_size = 500;
    world.rewrite(&setup);
    world.run_to_completion().await;
    exact(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_versions_never_regress_the_destination() {
    let mut sim = quiet(23, 800);
    sim.source.stale_version_ratio = 0.5;
    sim.mutations.max = 300;
    sim.mutations.interval = Duration::from_millis(2);
    sim.mutations.weights = [1, 0, 0, 0];
    let world = World::start(
        "stale-versions",
        sim,
        &Setup::new(Style::Cursor, Mode::Post),
    )
    .await;
    world.run_to_completion().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    world.sim.stop_mutations();
    for _ in 0..3 {
        world.run_to_completion().await;
    }
    let stats = world.sim.stats();
    assert!(stats.source.stale_served > 0, "{stats:?}");
    exact(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn offset_and_page_shifts_skip_nothing() {
    for style in [
        Style::Offset,
        Style::Page,
        Style::PageLink,
        Style::OffsetLink,
    ] {
        let mut sim = quiet(24, 3000);
        sim.source.latency = Duration::from_millis(10);
        sim.mutations.max = 400;
        sim.mutations.interval = Duration::from_millis(2);
        // Backdated inserts land before the reader; for offsets, updates also move
        // rows out from before it. A page-number API needs two requests per page, and
        // a removal and an insert that cancel out between them cannot be seen (see
        // `PageWalk`), so pages are checked against inserts, as the design asks.
        // Next URLs that number pages are walked as pages, and checked
        // against updates: each moves a record out from before the reader.
        // Next URLs that count an offset are walked as offsets.
        sim.mutations.weights = match style {
            Style::Page => [0, 0, 0, 1],
            Style::PageLink => [1, 0, 0, 0],
            _ => [1, 0, 0, 2],
        };
        let mut setup = Setup::new(style, Mode::Put);
        setup.page_size = 50;
        let world = World::start(&format!("offset-shift-{style:?}"), sim, &setup).await;
        let live = crate::util::stdout(&world.run_to_completion().await);
        // Nothing older than what was written was served: a record read
        // again where the pages moved is the same copy, not a stale one.
        let stale = live
            .lines()
            .find_map(|line| line.trim().strip_prefix("stale "))
            .and_then(|rest| rest.split_whitespace().next());
        assert_eq!(stale, Some("0"), "{style:?}: {live}");
        let shifts = world.sim.mutations_done();
        assert!(shifts > 20, "only {shifts} changes landed during the run");
        // The run that was live during the shifts skipped no row that stayed put;
        // rows inserted behind its position, or changed, belong to the next run.
        let first = world.verify().await;
        let records = world.sim.source_records();
        let skipped: Vec<&String> = first
            .missing
            .iter()
            .filter(|id| {
                let stayed_put = records.iter().any(|r| &r.id == *id && r.version == 1);
                let original = id
                    .trim_start_matches("inv_")
                    .parse::<usize>()
                    .is_ok_and(|n| n <= 3000);
                stayed_put && original
            })
            .collect();
        assert!(
            skipped.is_empty(),
            "{style:?}: the live run skipped rows that never moved: {skipped:?}\n{first}"
        );
        tokio::time::sleep(Duration::from_millis(900)).await;
        world.sim.stop_mutations();
        world.run_to_completion().await;
        exact(&world).await;
    }
}
