//! `mode = "batch"`: many records per request, each answered on its own. An
//! item refused is dead-lettered alone and an item failed for now is sent
//! again; a batch refused whole is halved until the record it cannot take
//! stands alone; a batch without a clear answer is sent again only to an
//! endpoint that upserts, and otherwise stops the run, naming it.

use std::time::Duration;

use simsaas::{SimConfig, Verification};

use crate::util::{Mode, SYNC, Setup, Style, World, describe};

/// Dead letters of the sync: (source id, reason).
async fn dead_letters(world: &World) -> Vec<(String, String)> {
    let store = world.store().await;
    let dead = store.dead_letters(SYNC).await.expect("dead letters");
    store.close().await;
    dead.into_iter().map(|d| (d.source_id, d.error)).collect()
}

/// At least `least` records were dead-lettered, each with its letter, every
/// one refused alone (400 or 422).
async fn refused_items_dead_lettered(world: &World, v: &Verification, least: usize) {
    let dead = dead_letters(world).await;
    assert!(
        v.dead_lettered >= least && dead.len() == v.dead_lettered,
        "{v}"
    );
    assert!(
        dead.iter()
            .all(|(_, reason)| reason.contains("HTTP 400") || reason.contains("HTTP 422")),
        "{dead:?}"
    );
}

/// Runs the sync with its endpoint said not to upsert (`upsert = false`):
/// the run fails; what it printed.
async fn failed_as_no_upsert(world: &World) -> String {
    let text = std::fs::read_to_string(&world.config).expect("config");
    std::fs::write(
        &world.config,
        text.replace("upsert = true", "upsert = false"),
    )
    .expect("config");
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A world whose destination fails `ratio` of a batch's items alone, each
/// answered `status` (`item_retry_after` its wait), with `extra` lines in
/// its destination table; no record invalid or poisoned.
async fn items_failing_alone(
    name: &str,
    seed: u64,
    records: usize,
    failing: (f64, u16, Option<Duration>),
    setup: &Setup,
    extra: &str,
) -> World {
    let mut sim = SimConfig::new(seed, records);
    sim.poisoned_ratio = 0.0;
    sim.invalid_ratio = 0.0;
    (
        sim.dest.item_fail_ratio,
        sim.dest.item_fail_status,
        sim.dest.item_retry_after,
    ) = failing;
    let world = World::start(name, sim, setup).await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let error = "result_error_field = \"error\"\n";
    assert!(text.contains(error), "{text}");
    std::fs::write(
        &world.config,
        text.replace(error, &format!("{error}{extra}")),
    )
    .expect("config");
    world
}

/// One invocation completes, exact, nothing dead-lettered, with at least
/// `failed` items failed alone on the way.
async fn completes_despite_items_failed(world: &World, failed: u64) {
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = world.assert_exact().await;
    assert_eq!(v.dead_lettered, 0, "{v}");
    let stats = world.sim.stats();
    assert!(stats.dest.item_failures >= failed, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn items_are_answered_alone_refused_ones_dead_lettered_and_failed_ones_sent_again() {
    let mut sim = SimConfig::new(131, 2_000);
    sim.poisoned_ratio = 0.02;
    sim.invalid_ratio = 0.0;
    sim.dest.item_fail_ratio = 0.1;
    let world = World::start("batch-items", sim, &Setup::new(Style::Cursor, Mode::Batch)).await;
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    let stats = world.sim.stats();
    assert!(stats.dest.item_failures > 50, "{stats:?}");
    // Batches of 50: far fewer requests than records, even with items sent again.
    assert!(
        stats.dest.requests < 2_000 / 10,
        "{} requests for 2,000 records",
        stats.dest.requests
    );
    refused_items_dead_lettered(&world, &v, 20).await;
}

/// A world whose batch endpoint lists the items not written apart from its
/// results (`sim`'s with `batch_errors_apart`), the sync told where.
async fn errors_listed_apart(name: &str, mut sim: SimConfig) -> World {
    sim.invalid_ratio = 0.0;
    sim.dest.batch_errors_apart = true;
    let world = World::start(name, sim, &Setup::new(Style::Cursor, Mode::Batch)).await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let apart = "errors_path = \"errors\"\nerror_id_field = \"context.ids\"\n\
                 error_message_field = \"message\"\nupsert = true";
    std::fs::write(
        &world.config,
        text.replace("result_error_field = \"error\"\nupsert = true", apart),
    )
    .expect("config");
    world
}

/// An answer that lists the items not written apart from its results, in
/// another order (HubSpot's batch endpoints): each error is matched by the
/// ids it names, refused ones dead-lettered with its message, failed ones
/// sent again.
#[tokio::test(flavor = "multi_thread")]
async fn errors_listed_apart_from_the_results_are_matched_by_the_ids_they_name() {
    let mut sim = SimConfig::new(134, 2_000);
    sim.poisoned_ratio = 0.02;
    sim.dest.item_fail_ratio = 0.1;
    let world = errors_listed_apart("batch-apart", sim).await;
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    assert!(world.sim.stats().dest.item_failures > 50);
    let dead = dead_letters(&world).await;
    assert!(
        v.dead_lettered >= 20 && dead.len() == v.dead_lettered,
        "{v}"
    );
    // The error's own status and message, not the whole error.
    assert!(
        dead.iter().all(|(_, reason)| (reason.contains("HTTP 400: ")
            || reason.contains("HTTP 422: "))
            && !reason.contains("context")),
        "{dead:?}"
    );
}

/// Errors listed apart that name no record (some of HubSpot's carry no
/// `context.ids`): the batch is halved and sent again to the upsert until
/// each record without a result stands alone, then dead-lettered with the
/// error's reason, or sent again for one that failed for now.
#[tokio::test(flavor = "multi_thread")]
async fn errors_listed_apart_naming_no_record_are_found_by_halving_the_batch() {
    let mut sim = SimConfig::new(139, 1_000);
    sim.poisoned_ratio = 0.01;
    sim.dest.item_fail_ratio = 0.02;
    sim.dest.batch_errors_unnamed = true;
    let world = errors_listed_apart("batch-apart-unnamed", sim).await;
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    assert!(world.sim.stats().dest.item_failures > 5);
    refused_items_dead_lettered(&world, &v, 5).await;
}

/// An answer that lists only the items not written, each by its place in
/// the batch (Braze's): a record named is dead-lettered with the error's
/// reason, every other is written — in batches halved and sent again too,
/// whose places are their own.
#[tokio::test(flavor = "multi_thread")]
async fn errors_naming_their_items_by_place_leave_the_others_written() {
    let mut sim = SimConfig::new(135, 2_000);
    sim.poisoned_ratio = 0.02;
    sim.invalid_ratio = 0.0;
    sim.dest.item_fail_ratio = 0.0;
    sim.dest.batch_errors_by_place = true;
    let world = World::start(
        "batch-by-place",
        sim,
        &Setup::new(Style::Cursor, Mode::Batch),
    )
    .await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let braze = "item_results = false\nerrors_path = \"errors\"\nerror_index_field = \"index\"\n\
                 error_message_field = \"type\"\nupsert = true";
    let changed = text
        .replace("result_error_field = \"error\"\nupsert = true", braze)
        .replace("results_path = \"results\"\n", "")
        .replace("result_id_field = \"external_id\"\n", "")
        .replace("result_status_field = \"status\"\n", "");
    assert!(
        changed.contains("error_index_field") && !changed.contains("result_"),
        "{changed}"
    );
    std::fs::write(&world.config, changed).expect("config");
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    let dead = dead_letters(&world).await;
    assert!(
        v.dead_lettered >= 20 && dead.len() == v.dead_lettered,
        "{v}"
    );
    // The error's own reason, as a refusal: Braze's errors carry no status,
    // and none is made up for them.
    assert!(
        dead.iter().all(|(_, reason)| reason
            .starts_with("destination refused it in its answer to the batch: ")
            && !reason.contains("HTTP")
            && !reason.contains("input_array")),
        "{dead:?}"
    );
}

/// Items answered 429 one by one use up none of `max_attempts`, as a whole
/// request answered 429 does not: every item of every batch is refused twice
/// in a row for the rate limit and written at its third attempt, in one
/// invocation with `max_attempts = 2`; with `rate_limited_for` shorter than
/// the waits, the run stops saying the endpoint kept answering 429.
#[tokio::test(flavor = "multi_thread")]
async fn items_answered_429_use_up_no_attempt() {
    let mut setup = Setup::new(Style::Cursor, Mode::Batch);
    setup.max_attempts = 2;
    let world =
        items_failing_alone("batch-items-429", 137, 600, (1.0, 429, None), &setup, "").await;
    completes_despite_items_failed(&world, 1_200).await;

    let text = std::fs::read_to_string(&world.config).expect("config");
    let text = text.replace(
        "max_attempts = 2\n",
        "max_attempts = 2\nrate_limited_for = \"1ms\"\n",
    );
    assert!(text.contains("rate_limited_for"), "{text}");
    std::fs::write(&world.config, text).expect("config");
    let out = world.highwater(&["reset", SYNC, "--forget-ledger"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        crate::util::stderr(&out).contains("destination kept answering 429"),
        "{}",
        describe(&out)
    );
}

/// Items answered 429 with a wait of their own (`result_retry_after_field`,
/// as Microsoft Graph's batch answers each item with its `Retry-After`):
/// no request reaches the destination before the wait has passed.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_s_own_wait_holds_every_request_back() {
    let world = items_failing_alone(
        "batch-item-retry-after",
        141,
        600,
        (0.05, 429, Some(Duration::from_millis(700))),
        &Setup::new(Style::Cursor, Mode::Batch),
        "result_retry_after_field = \"retry_after\"\n",
    )
    .await;
    completes_despite_items_failed(&world, 5).await;
    world.assert_retry_after_respected();
}

/// An item refused under a status that means refused (409 here), whose
/// reason names a failure for now (`result_transient_errors`, as
/// Salesforce's `UNABLE_TO_LOCK_ROW`), is sent again: none dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_refused_for_a_reason_named_transient_is_sent_again() {
    let world = items_failing_alone(
        "batch-transient-errors",
        138,
        1_000,
        (0.2, 409, None),
        &Setup::new(Style::Cursor, Mode::Batch),
        "result_transient_errors = [\"temporarily unavailable\"]\n",
    )
    .await;
    completes_despite_items_failed(&world, 100).await;
}

/// A result without the status `result_status_field` names says nothing of
/// its item: never taken for written. The run stops saying which key to
/// fix, resumable; fixed, the next run is exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_result_without_the_status_it_was_said_to_carry_is_not_taken_for_written() {
    let mut sim = SimConfig::new(139, 300);
    sim.poisoned_ratio = 0.0;
    sim.invalid_ratio = 0.0;
    let mut setup = Setup::new(Style::Cursor, Mode::Batch);
    setup.max_attempts = 2;
    let world = World::start("batch-no-status", sim, &setup).await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let status = "result_status_field = \"status\"\n";
    assert!(text.contains(status), "{text}");
    std::fs::write(
        &world.config,
        text.replace(status, "result_status_field = \"state\"\n"),
    )
    .expect("config");
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        crate::util::stderr(&out).contains("has no status at `state` (result_status_field)"),
        "{}",
        describe(&out)
    );
    std::fs::write(&world.config, text).expect("config");
    world.run_to_completion().await;
    world.assert_exact().await;
}

/// Results matched by position that come in another order (the simulator
/// answers in reverse, as HubSpot may answer in any order) are not taken
/// for their places' records: the run stops saying to match them by
/// external id; so matched, each record gets its own destination id.
#[tokio::test(flavor = "multi_thread")]
async fn results_out_of_order_are_not_matched_by_position() {
    let mut sim = SimConfig::new(140, 300);
    sim.poisoned_ratio = 0.0;
    sim.invalid_ratio = 0.0;
    sim.dest.batch_errors_apart = true;
    let mut setup = Setup::new(Style::Cursor, Mode::Batch);
    setup.max_attempts = 2;
    let world = World::start("batch-out-of-order", sim, &setup).await;
    let text = std::fs::read_to_string(&world.config)
        .expect("config")
        .replace("upsert = true\n", "upsert = true\ndest_id_field = \"id\"\n");
    let by_id = "result_id_field = \"external_id\"\n";
    assert!(
        text.contains(by_id) && text.contains("dest_id_field"),
        "{text}"
    );
    std::fs::write(&world.config, text.replace(by_id, "")).expect("config");
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        crate::util::stderr(&out).contains("results are not in the order of the records"),
        "{}",
        describe(&out)
    );
    std::fs::write(&world.config, text).expect("config");
    world.run_to_completion().await;
    world.assert_exact().await;
    let held = world.dest_ids();
    let store = world.store().await;
    let ledger = store.ledger(SYNC).await.expect("ledger");
    store.close().await;
    assert_eq!(ledger.len(), 300);
    for entry in ledger {
        assert_eq!(
            entry.dest_id.as_ref(),
            held.get(&entry.external_id),
            "{}",
            entry.source_id
        );
    }
}

/// The sync's item results' keys replaced by `with`: an answer that says
/// nothing of each item.
fn without_item_results(world: &World, with: &str) {
    let text = std::fs::read_to_string(&world.config).expect("config");
    let items = "results_path = \"results\"\nresult_id_field = \"external_id\"\n\
                 result_status_field = \"status\"\nresult_error_field = \"error\"\n";
    assert!(text.contains(items), "{text}");
    std::fs::write(&world.config, text.replace(items, with)).expect("config");
}

/// An endpoint that answers for the whole batch only (`item_results =
/// false`): a 2xx writes every record of it, and a batch refused is halved
/// until the record it cannot take stands alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_answered_as_a_whole_writes_every_record_of_it() {
    let mut sim = SimConfig::new(135, 1_000);
    sim.poisoned_ratio = 0.01;
    sim.invalid_ratio = 0.0;
    sim.dest.batch_refuses_whole = true;
    sim.dest.batch_answers_whole = true;
    let world = World::start(
        "batch-whole-answer",
        sim,
        &Setup::new(Style::Cursor, Mode::Batch),
    )
    .await;
    without_item_results(&world, "item_results = false\n");
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    assert!(v.dead_lettered >= 5, "{v}");
    assert!(world.sim.stats().dest.requests < 1_000 / 5);
}

/// A job whose answer only counts the records it did not write (as
/// Klaviyo's bulk import does, `failed_count`): its batch is halved, sent
/// again to the upsert, until each record so counted stands alone and is
/// dead-lettered; the others are written.
#[tokio::test(flavor = "multi_thread")]
async fn failures_a_job_counts_but_does_not_name_are_found_by_halving_its_batch() {
    let mut sim = SimConfig::new(138, 1_000);
    sim.poisoned_ratio = 0.01;
    sim.invalid_ratio = 0.0;
    sim.dest.batch_job_polls = Some(1);
    sim.dest.batch_answers_counts = true;
    let world = World::start(
        "batch-counted-failures",
        sim,
        &Setup::new(Style::Cursor, Mode::Batch),
    )
    .await;
    let counted = "item_results = false\n\
                   failed_count_field = \"job_status.failed_count\"\n\
                   job = { url_field = \"job_status.url\", status_field = \"job_status.status\", \
                   poll = \"10ms\" }\n";
    without_item_results(&world, counted);
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    let dead = dead_letters(&world).await;
    assert!(v.dead_lettered >= 5 && dead.len() == v.dead_lettered, "{v}");
    assert!(
        dead.iter().all(|(_, reason)| reason.contains(
            "sent alone, the destination's answer counts 1 failed at `job_status.failed_count`"
        )),
        "{dead:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_refused_whole_is_halved_until_each_refused_record_stands_alone() {
    let mut sim = SimConfig::new(132, 1_000);
    sim.poisoned_ratio = 0.01;
    sim.invalid_ratio = 0.0;
    sim.dest.batch_refuses_whole = true;
    let world = World::start("batch-whole", sim, &Setup::new(Style::Cursor, Mode::Batch)).await;
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    let poisoned = world
        .sim
        .source_records()
        .iter()
        .filter(|r| r.rejection.is_some())
        .count();
    assert!(poisoned >= 5, "{poisoned}");
    assert_eq!(v.dead_lettered, poisoned, "{v}");
    let dead = dead_letters(&world).await;
    assert!(
        dead.iter()
            .all(|(_, reason)| reason.contains("nothing of the batch was applied")),
        "{dead:?}"
    );
}

/// An endpoint that refuses every request — here, the records' array sent
/// under a field it does not read — is not taken to refuse every record:
/// after ten records refused alone and no request taken, the run stops
/// saying so, having sent a few requests per batch (halving each down to
/// every record would send two per record) and dead-lettered nothing.
/// Fixed, the run completes, exact.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_refusing_every_request_stops_the_run_before_dead_letters() {
    let mut sim = SimConfig::new(134, 2_000);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let world = World::start(
        "batch-refuses-all",
        sim,
        &Setup::new(Style::Cursor, Mode::Batch),
    )
    .await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let field = "batch_field = \"records\"";
    assert!(text.contains(field), "{text}");
    std::fs::write(&world.config, text.replace(field, "batch_field = \"data\"")).expect("config");
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refuses the requests themselves") && stderr.contains("batch_field"),
        "{stderr}"
    );
    // Each request refused is counted as such (it never reaches the gate
    // that counts requests).
    let refused = world.sim.stats().dest.rejected;
    assert!((10..600).contains(&refused), "{refused} requests refused");
    assert_eq!(dead_letters(&world).await, Vec::new());
    std::fs::write(&world.config, text).expect("config");
    world.run_to_completion().await;
    world.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_without_a_clear_answer_stops_the_run_naming_it_unless_the_endpoint_upserts() {
    let mut sim = SimConfig::new(133, 600);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    sim.dest.commit_then_timeout_ratio = 0.3;
    sim.dest.slow_delay = Duration::from_millis(900);
    let mut setup = Setup::new(Style::Cursor, Mode::Batch);
    setup.timeout = "300ms";
    let world = World::start("batch-unknown", sim, &setup).await;
    let stderr = failed_as_no_upsert(&world).await;
    assert!(
        stderr.contains("got no clear answer") && stderr.contains("not sent again"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(inv_"),
        "the batch is named by its ids: {stderr}"
    );
    // Resumable: once the endpoint answers clearly, the run completes, exact.
    world.sim.set_dest_faults(simsaas::DestFaults::default());
    world.run_to_completion().await;
    world.assert_exact().await;
}

/// A world whose batch endpoint answers with a job (as Zendesk's do), done
/// after `polls` asks for its state, `fail_ratio` of jobs failing with
/// nothing applied; the sync told where the job and its results are.
async fn batches_run_as_jobs(name: &str, seed: u64, polls: u32, fail_ratio: f64) -> World {
    let mut sim = SimConfig::new(seed, 1_500);
    sim.poisoned_ratio = 0.02;
    sim.invalid_ratio = 0.0;
    sim.dest.item_fail_ratio = 0.05;
    sim.dest.batch_job_polls = Some(polls);
    sim.dest.batch_job_fail_ratio = fail_ratio;
    let world = World::start(name, sim, &Setup::new(Style::Cursor, Mode::Batch)).await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let results = "results_path = \"results\"\n";
    assert!(text.contains(results), "{text}");
    let job = "results_path = \"job_status.results\"\n\
               job = { url_field = \"job_status.url\", status_field = \"job_status.status\", \
               poll = \"10ms\" }\n";
    std::fs::write(&world.config, text.replace(results, job)).expect("config");
    world
}

/// Each batch's job is asked for its state until done, and its results are
/// read as a batch's: refused items dead-lettered alone, failed ones sent
/// again; a job that failed is sent again whole (the endpoint upserts).
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_answered_with_a_job_is_read_from_the_job_once_done() {
    let world = batches_run_as_jobs("batch-jobs", 136, 2, 0.2).await;
    world.run_to_completion().await;
    let v = world.assert_exact().await;
    let stats = world.sim.stats();
    assert!(stats.dest.jobs_failed >= 3, "{stats:?}");
    assert!(stats.dest.item_failures >= 10, "{stats:?}");
    // Every batch of 50 was asked for at least three times (twice working).
    assert!(stats.dest.job_polls >= 3 * 1_500 / 50, "{stats:?}");
    refused_items_dead_lettered(&world, &v, 10).await;
}

/// A job that failed, to an endpoint that is not an upsert, stops the run
/// naming its batch, resumable; a job never done in time leaves its batch
/// unknown just as well.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_without_results_stops_the_run_naming_its_batch_unless_the_endpoint_upserts() {
    let world = batches_run_as_jobs("batch-job-failed", 137, 1, 0.5).await;
    let stderr = failed_as_no_upsert(&world).await;
    assert!(
        stderr.contains("got no clear answer (the job at")
            && stderr.contains("ended \"failed\" without results")
            && stderr.contains("not sent again")
            && stderr.contains("(inv_"),
        "{stderr}"
    );

    world.sim.set_dest_faults(simsaas::DestFaults {
        batch_job_polls: Some(1_000),
        ..Default::default()
    });
    let text = std::fs::read_to_string(&world.config).expect("config");
    std::fs::write(
        &world.config,
        text.replace("poll = \"10ms\"", "poll = \"10ms\", timeout = \"200ms\""),
    )
    .expect("config");
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("was not done after 200ms (job.timeout)"),
        "{stderr}"
    );

    // Resumable: once jobs finish, the run completes, exact.
    world.sim.set_dest_faults(simsaas::DestFaults {
        batch_job_polls: Some(1),
        ..Default::default()
    });
    world.run_to_completion().await;
    world.assert_exact().await;
}
