//! `highwater run <sync>` and `highwater backfill <sync>`: holds the sync's lock,
//! runs or resumes the run of the plan with a progress bar on a terminal, stops
//! cleanly on Ctrl-C or a budget, and prints the run report.

use std::io::IsTerminal;
use std::time::Duration;

use highwater_core::alert;
use highwater_core::engine::{self, FailureCause, Plan, Progress, RunOptions, RunOutcome};
use highwater_core::state;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{CliError, Context, Exit, logging, metrics, print, render};

/// A plan the sync's config gives nothing to do is refused before anything
/// is locked, opened or written.
fn refuse_unconfigured(
    spec: &highwater_core::config::SyncSpec,
    plan: &Plan,
) -> Result<(), CliError> {
    use highwater_core::config::DeleteFeed;
    if matches!(plan, Plan::Full { .. }) && spec.deletes.is_none() {
        return Err(CliError::Usage(format!(
            "sync {:?}: --full deletes what the source no longer has, and the sync has no [sync.deletes] saying how (`delete_path`, and `full_delete_limit`)",
            spec.name
        )));
    }
    if *plan == Plan::Deletes {
        let feed = spec.deletes.as_ref().map(|d| &d.feed);
        if !matches!(feed, Some(DeleteFeed::Endpoint(_))) {
            let why = match feed {
                Some(DeleteFeed::Marker { .. }) => {
                    "its deletions are marked in its records, which every run applies; `--deletes` reads a deletes endpoint (`path` in [sync.deletes])"
                }
                _ => {
                    "it has no [sync.deletes] with a `path` (an endpoint listing deleted ids); `run --full` finds deletions without one"
                }
            };
            return Err(CliError::Usage(format!(
                "sync {:?}: nothing for --deletes to read: {why}",
                spec.name
            )));
        }
    }
    Ok(())
}

/// What the command line asks of a run besides its plan.
#[derive(Debug, Default)]
pub struct Flags {
    pub max_runtime: Option<Duration>,
    pub max_pages: Option<u64>,
    /// `--destination-moved`: the ledger takes the config's destination as
    /// its own before the run.
    pub destination_moved: bool,
}

pub async fn run(
    ctx: &mut Context,
    sync: &str,
    plan: Plan,
    flags: Flags,
) -> Result<Exit, CliError> {
    let config = ctx.config()?;
    let spec = ctx.sync(sync)?;
    refuse_unconfigured(&spec, &plan)?;
    let alone = !spec.destination.takes_concurrent_runs();
    let store = ctx.open_store().await?;
    let lock = store
        .lock_run(sync, plan.kind(), alone)
        .await
        .map_err(|e| match e.held_by() {
            Some((_, holder)) if alone => CliError::Failed(format!(
                "sync {sync:?} is running ({holder}); not starting a second run: its destination is written by lookup then create, or is a file, where two runs at once could write one record twice, so its runs of every kind take turns"
            )),
            _ => CliError::failed(e),
        })?;
    // Every write of the run checks the lock is still its own (a lease can be lost).
    let store = store.fenced(&lock);
    let bar = std::io::stderr().is_terminal().then(progress_bar);
    logging::init(bar.clone(), ctx.log_format);
    for warning in &config.warnings {
        tracing::warn!(
            event = highwater_core::obs::CONFIG_WARNING,
            "{}",
            warning.in_file(&config.file)
        );
    }
    if flags.destination_moved {
        let now = spec.destination.identity();
        match store
            .move_destination(sync, &now, None)
            .await
            .map_err(CliError::failed)?
        {
            Some(was) => tracing::warn!(
                event = highwater_core::obs::DESTINATION_MOVED,
                "the destination moved: the ledger of sync {sync:?} described {was}, and describes {now} from now on; the records it holds are taken as written there, and are not written again (`highwater reconcile {sync}` compares a sample with the destination)"
            ),
            None => tracing::info!(
                event = highwater_core::obs::DESTINATION_MOVED,
                "--destination-moved: the ledger of sync {sync:?} describes {now} already, or none yet; nothing moved"
            ),
        }
    }
    let (metrics_addr, metrics_file) = ctx.metrics.clone();
    let metrics = metrics::start(metrics_addr, metrics_file).await?;

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(shutdown.clone(), || {
        eprintln!("stopping at the next checkpoint (press Ctrl-C again to quit at once)");
    }));
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let ticker = bar.clone().map(|bar| tokio::spawn(draw(bar, progress_rx)));
    let options = RunOptions {
        max_runtime: flags.max_runtime,
        max_pages: flags.max_pages,
        merge_rows: Some(config.state.merge_rows),
        event_retention: Some(config.state.event_retention),
    };
    let result = engine::run(&spec, &store, plan, options, shutdown, &progress_tx).await;
    signals.abort();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    raise_alerts(&spec, &store, &result).await;
    // What a halt kept as dead letters: those of the pages it committed.
    let kept = match &result {
        Err(f) if matches!(f.cause, FailureCause::Surge { .. }) => store
            .unresolved_dead_letters(sync)
            .await
            .ok()
            .map(|letters| letters.len()),
        _ => None,
    };
    ctx.close_releasing(lock).await;
    // A metrics file that cannot be written does not change how the run ended.
    if let Some(Err(e)) = metrics.map(metrics::Metrics::finish) {
        eprintln!("{e}");
    }

    // The run's outcome is the exit code: a report nobody reads changes nothing.
    match result {
        Ok(report) => {
            let _ = if ctx.json {
                print(render::report_json(&report))
            } else {
                print(render::report(&report).trim_end())
            };
            Ok(match report.outcome {
                RunOutcome::Completed => Exit::Complete,
                RunOutcome::Stopped(_) => Exit::Stopped,
            })
        }
        // Another range's backfill is open, or the destination is not the
        // ledger's: nothing was started or changed.
        Err(failure)
            if matches!(
                failure.cause,
                FailureCause::OtherRunOpen { .. } | FailureCause::DestinationChanged { .. }
            ) =>
        {
            Err(CliError::Usage(format!("sync {sync:?}: {}", failure.cause)))
        }
        // The failure is the run's report: it goes out as one, not as a CLI error.
        Err(failure) => {
            if ctx.json {
                let _ = print(render::failure_json(sync, &failure));
            }
            eprint!("{}", render::failure(sync, &failure, kept));
            Ok(Exit::Failed)
        }
    }
}

/// The sync's alerts, after the invocation: what they did is logged, and an
/// alert that cannot be raised does not change how the run ended.
pub(super) async fn raise_alerts(
    spec: &highwater_core::config::SyncSpec,
    store: &state::Store,
    result: &Result<engine::RunReport, engine::RunFailure>,
) {
    let ended = match result {
        Ok(report) => alert::Ended {
            run_id: Some(&report.run_id),
            failure: None,
            counters: report.counters,
        },
        // Refused before anything started: nothing happened to alert about.
        Err(failure) if matches!(failure.cause, FailureCause::OtherRunOpen { .. }) => return,
        // Another worker took the sync over and goes on with the run.
        Err(failure) if failure.cause.lost_lease() => return,
        Err(failure) => alert::Ended {
            run_id: failure.run_id.as_deref(),
            failure: Some(failure.cause.to_string()),
            counters: failure.counters,
        },
    };
    if let Err(e) = alert::raise(spec, store, &ended).await {
        tracing::warn!(
            event = highwater_core::obs::ALERT_UNDELIVERED,
            sync = %spec.name,
            "alerts not raised: {e}"
        );
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

async fn draw(bar: ProgressBar, mut progress: watch::Receiver<Progress>) {
    let started = tokio::time::Instant::now();
    while progress.changed().await.is_ok() {
        let p = progress.borrow_and_update().clone();
        let c = p.counters;
        bar.set_message(format!(
            "{}run {} · pages {} · read {} · written {} · unchanged {} · stale {} · dead-lettered {} · {}",
            if p.resumed { "resumed " } else { "" },
            render::short_id(&p.run_id),
            c.pages,
            c.read,
            c.written,
            c.unchanged,
            c.stale,
            c.dead_lettered,
            render::rate(c.written, started.elapsed()),
        ));
    }
}

/// First Ctrl-C or SIGTERM: `first` says so, and the runs finish the page in
/// hand and checkpoint. A second one exits at once (the checkpoint protocol
/// makes that safe too).
pub(super) async fn watch_signals(shutdown: CancellationToken, first: fn()) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return,
    };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            first();
            shutdown.cancel();
        } else {
            std::process::exit(130);
        }
    }
}
