//! `highwater run <sync>`: holds the sync's lock, runs or resumes its run with a
//! progress bar on a terminal, stops cleanly on Ctrl-C or a budget, and prints the
//! run report.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use highwater_core::engine::{self, Progress, RunOptions, RunOutcome};
use highwater_core::state::{self, Store};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, logging, render};

pub async fn run(
    config_path: &Path,
    sync: &str,
    max_runtime: Option<Duration>,
    max_pages: Option<u64>,
    json: bool,
) -> u8 {
    let config = match highwater_core::config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let Some(spec) = config.sync(sync) else {
        let names: Vec<&str> = config.syncs.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "{}: no sync named {sync:?} (defined: {})",
            config.file.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
        return EXIT_USAGE;
    };
    // The lock comes first: a second process must not even open the store.
    let lock = match state::acquire(&config.state.path, sync) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let bar = std::io::stderr().is_terminal().then(progress_bar);
    logging::init(bar.clone());
    for warning in &config.warnings {
        tracing::warn!(
            event = highwater_core::obs::CONFIG_WARNING,
            "{}",
            warning.in_file(&config.file)
        );
    }
    let store = match Store::open(&config.state.path).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(shutdown.clone()));
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let ticker = bar.clone().map(|bar| tokio::spawn(draw(bar, progress_rx)));
    let options = RunOptions {
        max_runtime,
        max_pages,
        merge_rows: Some(config.state.merge_rows),
        event_retention: Some(config.state.event_retention),
    };
    let result = engine::run(spec, &store, options, shutdown, &progress_tx).await;
    signals.abort();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    store.close().await;
    drop(lock);

    match result {
        Ok(report) => {
            if json {
                println!("{}", render::report_json(&report));
            } else {
                print!("{}", render::report(&report));
            }
            match report.outcome {
                RunOutcome::Completed => EXIT_OK,
                RunOutcome::Stopped(_) => EXIT_STOPPED,
            }
        }
        Err(failure) => {
            if json {
                println!("{}", render::failure_json(sync, &failure));
            }
            eprint!("{}", render::failure(sync, &failure));
            EXIT_FAILED
        }
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
            short_id(&p.run_id),
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

fn short_id(run_id: &str) -> &str {
    run_id.get(..13).unwrap_or(run_id)
}

/// First Ctrl-C or SIGTERM: finish the page in hand, checkpoint, exit 3. A second
/// one exits at once (the checkpoint protocol makes that safe too).
async fn watch_signals(shutdown: CancellationToken) {
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
            eprintln!("stopping at the next checkpoint (press Ctrl-C again to quit at once)");
            shutdown.cancel();
        } else {
            std::process::exit(130);
        }
    }
}
