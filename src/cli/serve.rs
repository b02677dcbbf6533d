//! `highwater serve`: runs every sync that has a `schedule` on it, a few at a
//! time, in one process, and serves `/health`, `/status`, `/metrics` and
//! `POST /syncs/{name}/run`, `/pause` and `/resume`. A run still going when its
//! next is due is not doubled (the sync runs again once it ends); a sync whose
//! schedule came due since its last completed run (missed while nothing served
//! it) runs at once. SIGHUP reads the config again; SIGTERM or Ctrl-C stops
//! every run at its next checkpoint, then the process exits.
//! Invariants: a sync has at most one run going in the process, and takes the
//! same lock as `highwater run`, so a `run` from a shell and the daemon never
//! run one sync at once; the daemon's own failures to run a sync are in its
//! status, never a reason to stop serving the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use highwater_core::config::{Config, SyncSpec};
use highwater_core::engine::{self, Plan, Progress, RunOptions, RunOutcome};
use highwater_core::schedule::Schedule;
use highwater_core::state::{RunKind, Store};
use highwater_core::stop::StopReason;
use jiff::Timestamp;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::run::{raise_alerts, watch_signals};
use super::{CliError, Context, Exit, logging};

/// How one sync stands in the daemon.
#[derive(Debug, Default)]
struct Slot {
    paused: bool,
    /// Asked for through the API: runs next, paused or not.
    asked: bool,
    /// Since when its run has been going (or waiting for a free place).
    running: Option<Timestamp>,
    /// When it runs next; `None`: only when asked to.
    due: Option<Timestamp>,
    last: Option<Value>,
}

struct Daemon {
    /// Replaced whole on SIGHUP; a run holds the one it started with.
    config: Mutex<Arc<Config>>,
    store: Store,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// Wakes the scheduler: a run asked for, resumed, or ended.
    wake: Notify,
    places: Semaphore,
    shutdown: CancellationToken,
    metrics: PrometheusHandle,
}

impl Daemon {
    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn spec(&self, name: &str) -> Option<SyncSpec> {
        self.config().syncs.iter().find(|s| s.name == name).cloned()
    }
}

/// When a sync is first due in this daemon: at once when it is scheduled and
/// never completed a run, or missed one while nothing served it; `None` when
/// it runs only when asked to.
async fn first_due(
    store: &Store,
    spec: &SyncSpec,
    now: Timestamp,
) -> Result<Option<Timestamp>, CliError> {
    if spec.schedule.is_none() {
        return Ok(None);
    }
    let last = store
        .last_completed(&spec.name, RunKind::Incremental)
        .await
        .map_err(CliError::failed)?
        .and_then(|(run, _)| run.completed_at);
    Ok(match last {
        None => Some(now),
        Some(last) => next_due(spec, last).map(|due| due.max(now)),
    })
}

/// When a scheduled sync runs next after `from`, plus a random share of its jitter.
fn next_due(spec: &SyncSpec, from: Timestamp) -> Option<Timestamp> {
    let schedule = spec.schedule.as_ref()?;
    let jitter = Duration::from_millis(fastrand::u64(
        0..=u64::try_from(schedule.jitter.as_millis()).unwrap_or(u64::MAX),
    ));
    schedule
        .when
        .next_after(from)?
        .checked_add(jiff::SignedDuration::try_from(jitter).ok()?)
        .ok()
}

pub async fn serve(ctx: &mut Context, listen: SocketAddr, places: usize) -> Result<Exit, CliError> {
    let config = ctx.config()?;
    logging::init(None, ctx.log_format);
    let store = ctx.open_store().await?;
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| CliError::Failed(format!("cannot record metrics: {e}")))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Usage(format!("--listen {listen}: cannot listen there: {e}")))?;

    let now = Timestamp::now();
    let mut slots = BTreeMap::new();
    let paused = store.paused_syncs().await.map_err(CliError::failed)?;
    for spec in &config.syncs {
        let due = first_due(&store, spec, now).await?;
        slots.insert(
            spec.name.clone(),
            Slot {
                due,
                paused: paused.contains(&spec.name),
                ..Slot::default()
            },
        );
    }
    let daemon = Arc::new(Daemon {
        config: Mutex::new(Arc::clone(&config)),
        store,
        slots: Mutex::new(slots),
        wake: Notify::new(),
        places: Semaphore::new(places.max(1)),
        shutdown: CancellationToken::new(),
        metrics,
    });
    // SIGTERM or Ctrl-C: every run stops at its next checkpoint, then the
    // daemon exits; a second one exits at once.
    let signals = tokio::spawn(watch_signals(daemon.shutdown.clone(), || {
        tracing::info!("stopping every run at its next checkpoint");
    }));
    let reloads = tokio::spawn(reload_on_hangup(Arc::clone(&daemon)));
    let shares = tokio::spawn(share_limits(Arc::clone(&daemon)));
    let app = axum::Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(render_metrics))
        .route("/syncs/{name}/run", post(run_now))
        .route("/syncs/{name}/pause", post(pause))
        .route("/syncs/{name}/resume", post(resume))
        .with_state(Arc::clone(&daemon));
    let stopped = daemon.shutdown.clone();
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the daemon's HTTP server stopped");
        }
    });
    tracing::info!(
        addr = %listen,
        syncs = config.syncs.len(),
        places,
        "serving"
    );

    // A run's future stays on this thread (the engine's is not `Send`).
    tokio::task::LocalSet::new()
        .run_until(schedule(&daemon))
        .await;

    signals.abort();
    reloads.abort();
    shares.abort();
    let _ = server.await;
    ctx.close().await;
    tracing::info!("stopped");
    Ok(Exit::Complete)
}

/// Starts each sync when it is due, until the daemon shuts down; then waits
/// for the runs going to stop at their checkpoints.
async fn schedule(daemon: &Arc<Daemon>) {
    let mut runs = JoinSet::new();
    while !daemon.shutdown.is_cancelled() {
        let now = Timestamp::now();
        let (due, next): (Vec<(String, bool)>, Option<Timestamp>) = {
            let mut slots = daemon.slots();
            let mut due = Vec::new();
            for (name, slot) in slots.iter_mut() {
                if slot.running.is_some() {
                    continue;
                }
                if slot.asked || (!slot.paused && slot.due.is_some_and(|at| at <= now)) {
                    due.push((name.clone(), slot.asked));
                    slot.asked = false;
                    slot.running = Some(now);
                    slot.due = daemon.spec(name).and_then(|spec| next_due(&spec, now));
                }
            }
            // A sync whose run is going is due again when it ends, which wakes this.
            let next = slots
                .values()
                .filter(|s| !s.paused && s.running.is_none())
                .filter_map(|s| s.due)
                .min();
            (due, next)
        };
        for (name, asked) in due {
            runs.spawn_local(run_one(Arc::clone(daemon), name, asked));
        }
        let sleep = next.map_or(Duration::from_secs(3600), |at| {
            Duration::try_from(now.duration_until(at)).unwrap_or_default()
        });
        tokio::select! {
            () = daemon.shutdown.cancelled() => {}
            () = daemon.wake.notified() => {}
            Some(_) = runs.join_next(), if !runs.is_empty() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
    while runs.join_next().await.is_some() {}
}

/// One run of a sync: a place among the daemon's, the sync's lock, the run,
/// its alerts; how it ended goes into the sync's status. Workers sharing a
/// store take turns by the lock: one that finds it held tries again a lease
/// later (so it takes over from a worker that died), and one that takes it
/// runs only what the shared history says is due — an open run to resume, a
/// run asked for, or the schedule's next since the last completed run,
/// whichever worker ran that.
async fn run_one(daemon: Arc<Daemon>, name: String, asked: bool) {
    let config = daemon.config();
    let ended = |last: Value, due: Due| {
        let mut slots = daemon.slots();
        if daemon.spec(&name).is_none() {
            // Removed from the config while it ran.
            slots.remove(&name);
        } else if let Some(slot) = slots.get_mut(&name) {
            slot.running = None;
            slot.last = Some(last);
            match due {
                Due::AsPlanned => {}
                Due::Retry(at) => slot.due = Some(slot.due.map_or(at, |due| due.min(at))),
                Due::At(at) => slot.due = at,
            }
        }
        drop(slots);
        daemon.wake.notify_one();
    };
    let Some(spec) = config.syncs.iter().find(|s| s.name == name).cloned() else {
        ended(Value::Null, Due::AsPlanned);
        return;
    };
    let place = tokio::select! {
        place = daemon.places.acquire() => place.ok(),
        () = daemon.shutdown.cancelled() => None,
    };
    let Some(_place) = place else {
        ended(
            json!({ "outcome": "not_started", "ended_at": Timestamp::now().to_string() }),
            Due::AsPlanned,
        );
        return;
    };
    let alone = !spec.destination.takes_concurrent_runs();
    let lock = match daemon
        .store
        .lock_run(&name, RunKind::Incremental, alone)
        .await
    {
        Ok(lock) => lock,
        Err(e) => {
            let retry = e.held_by().is_some().then(|| {
                Timestamp::now()
                    .checked_add(
                        jiff::SignedDuration::try_from(config.state.lease).unwrap_or_default(),
                    )
                    .unwrap_or_else(|_| Timestamp::now())
            });
            tracing::warn!(sync = %name, "not run: {e}");
            ended(
                json!({
                    "outcome": "not_started",
                    "error": e.to_string(),
                    "ended_at": Timestamp::now().to_string(),
                }),
                retry.map_or(Due::AsPlanned, Due::Retry),
            );
            return;
        }
    };
    if !asked {
        match due_by_history(&daemon.store, &spec).await {
            Ok(None) => {}
            Ok(Some(due)) => {
                // Another worker ran it since this one planned; next as its
                // schedule says from that run.
                lock.release().await;
                ended(
                    json!({ "outcome": "not_due", "ended_at": Timestamp::now().to_string() }),
                    Due::At(Some(due)),
                );
                return;
            }
            Err(e) => {
                lock.release().await;
                tracing::warn!(sync = %name, "not run: {e}");
                ended(
                    json!({
                        "outcome": "not_started",
                        "error": e.to_string(),
                        "ended_at": Timestamp::now().to_string(),
                    }),
                    Due::AsPlanned,
                );
                return;
            }
        }
    }
    let options = RunOptions {
        max_runtime: None,
        max_pages: None,
        merge_rows: Some(config.state.merge_rows),
        event_retention: Some(config.state.event_retention),
    };
    let (progress, _) = watch::channel(Progress::default());
    // Its share of each API's limit counts this run before it sends anything.
    share_now(&daemon).await;
    let store = daemon.store.fenced(&lock);
    let result = engine::run(
        &spec,
        &store,
        Plan::Incremental,
        options,
        daemon.shutdown.child_token(),
        &progress,
    )
    .await;
    raise_alerts(&spec, &store, &result).await;
    lock.release().await;
    let at = Timestamp::now().to_string();
    // A worker that lost its lease leaves the run to the one that took it.
    let fenced = match &result {
        Err(failure) => failure.cause.lost_lease(),
        Ok(report) => report.outcome == RunOutcome::Stopped(StopReason::LeaseLost),
    };
    let due = if fenced {
        Due::Retry(
            Timestamp::now()
                .checked_add(jiff::SignedDuration::try_from(config.state.lease).unwrap_or_default())
                .unwrap_or_else(|_| Timestamp::now()),
        )
    } else {
        Due::AsPlanned
    };
    let last = match result {
        Ok(report) => json!({
            "outcome": match report.outcome {
                RunOutcome::Completed => "completed",
                RunOutcome::Stopped(_) => "stopped",
            },
            "run_id": report.run_id,
            "written": report.session.written,
            "dead_lettered": report.session.dead_lettered,
            "ended_at": at,
        }),
        Err(failure) => json!({
            "outcome": "failed",
            "run_id": failure.run_id,
            "error": failure.cause.to_string(),
            "ended_at": at,
        }),
    };
    ended(last, due);
}

/// How often each API's share of its limit is looked at again.
const SHARE_EVERY: Duration = Duration::from_millis(250);

/// Keeps this worker to its share of each API's configured limit: with N live
/// workers holding syncs that call an API, each paces itself to one N-th of
/// it (the holders are those of the store's leases; with a SQLite store, this
/// process alone).
async fn share_limits(daemon: Arc<Daemon>) {
    loop {
        share_now(&daemon).await;
        tokio::time::sleep(SHARE_EVERY).await;
    }
}

async fn share_now(daemon: &Daemon) {
    let holders = match daemon.store.lease_holders().await {
        Ok(holders) => holders,
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell which workers hold which syncs");
            return;
        }
    };
    let config = daemon.config();
    let mut workers: BTreeMap<String, (url::Origin, std::collections::BTreeSet<&str>)> =
        BTreeMap::new();
    for spec in &config.syncs {
        for origin in spec.api_origins() {
            let entry = workers
                .entry(origin.ascii_serialization())
                .or_insert_with(|| (origin, Default::default()));
            entry.1.extend(
                holders
                    .iter()
                    .filter(|(sync, _)| *sync == spec.name)
                    .map(|(_, owner)| owner.as_str()),
            );
        }
    }
    for (origin, owners) in workers.values() {
        let count = u32::try_from(owners.len()).unwrap_or(u32::MAX).max(1);
        highwater_core::policy::RateGate::share(origin, count);
    }
}

/// How a sync's next run is planned once this one ends or is not started.
enum Due {
    /// As the scheduler planned it when it started this one.
    AsPlanned,
    /// At this time at the latest: another worker holds the sync now.
    Retry(Timestamp),
    /// At this time, as the shared history says.
    At(Option<Timestamp>),
}

/// `None` when the sync is due now by the store's history (an open run to
/// resume, or its schedule come due since its last completed run); otherwise
/// when it is.
async fn due_by_history(store: &Store, spec: &SyncSpec) -> Result<Option<Timestamp>, CliError> {
    let now = Timestamp::now();
    if store
        .open_run(&spec.name, RunKind::Incremental)
        .await
        .map_err(CliError::failed)?
        .is_some()
    {
        return Ok(None);
    }
    Ok(first_due(store, spec, now).await?.filter(|due| *due > now))
}

async fn health(State(daemon): State<Arc<Daemon>>) -> (StatusCode, Json<Value>) {
    if daemon.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "stopping" })),
        )
    } else {
        (StatusCode::OK, Json(json!({ "status": "ok" })))
    }
}

async fn render_metrics(State(daemon): State<Arc<Daemon>>) -> String {
    daemon.metrics.render()
}

async fn status(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, (StatusCode, String)> {
    let now = Timestamp::now();
    let mut syncs = Vec::new();
    for spec in &daemon.config().syncs {
        let stored = daemon
            .store
            .status(&spec.name)
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mark = stored.high_water_mark();
        // Which worker (or process) runs it now, whichever daemon that is.
        let holder = daemon
            .store
            .lock_holder(&spec.name, RunKind::Incremental)
            .await;
        let slots = daemon.slots();
        let slot = slots.get(&spec.name);
        syncs.push(json!({
            "sync": spec.name,
            "schedule": spec.schedule.as_ref().map(|s| {
                let mut shown = match &s.when {
                    Schedule::Every(every) => json!({ "every_seconds": every.as_secs() }),
                    Schedule::Cron(cron, tz) => json!({
                        "cron": cron.to_string(),
                        "timezone": tz.iana_name(),
                    }),
                };
                shown["jitter_seconds"] = json!(s.jitter.as_secs());
                shown
            }),
            "paused": slot.is_some_and(|s| s.paused),
            "running_since": slot.and_then(|s| s.running).map(|t| t.to_string()),
            "next_run_at": slot.and_then(|s| s.due).map(|t| t.to_string()),
            "last_run": slot.and_then(|s| s.last.clone()),
            "open_run": stored.open_run.as_ref().map(|(run, _)| run.run_id.clone()),
            "held_by": holder,
            "high_water_mark": mark.map(|t| t.to_string()),
            "lag_seconds": mark.map(|t| (now.as_second() - t.as_second()).max(0)),
            "dead_letters": stored.dead_letters,
        }));
    }
    Ok(Json(json!({ "syncs": syncs })))
}

type Answer = (StatusCode, Json<Value>);

fn not_found(name: &str) -> Answer {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no sync named {name:?}") })),
    )
}

/// Applies `change` to the named sync's slot; 404 when there is none.
fn with_slot(daemon: &Daemon, name: &str, change: impl FnOnce(&mut Slot) -> Answer) -> Answer {
    let answer = match daemon.slots().get_mut(name) {
        Some(slot) => change(slot),
        None => not_found(name),
    };
    daemon.wake.notify_one();
    answer
}

async fn run_now(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Answer {
    with_slot(&daemon, &name, |slot| {
        if slot.running.is_some() {
            return (
                StatusCode::CONFLICT,
                Json(json!({ "error": "running", "sync": name })),
            );
        }
        slot.asked = true;
        (
            StatusCode::ACCEPTED,
            Json(json!({ "sync": name, "queued": true })),
        )
    })
}

async fn pause(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Answer {
    set_paused(&daemon, &name, true).await
}

async fn resume(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Answer {
    set_paused(&daemon, &name, false).await
}

/// Pauses or resumes a sync's schedule, in the state store first: a pause
/// outlives the daemon.
async fn set_paused(daemon: &Daemon, name: &str, paused: bool) -> Answer {
    if !daemon.slots().contains_key(name) {
        return not_found(name);
    }
    if let Err(e) = daemon.store.set_paused(name, paused).await {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        );
    }
    with_slot(daemon, name, |slot| {
        slot.paused = paused;
        (
            StatusCode::OK,
            Json(json!({ "sync": name, "paused": paused })),
        )
    })
}

/// SIGHUP: the config file is read again. A sync's next run uses the new
/// config; a run going finishes on the one it started with. A config that
/// does not validate, or moves the state store, is refused and the daemon
/// keeps serving the one it has.
async fn reload_on_hangup(daemon: Arc<Daemon>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangups.recv().await.is_some() {
        let old = daemon.config();
        let new = match highwater_core::config::load(&old.file) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("config not reloaded, still serving the previous one: {e}");
                continue;
            }
        };
        if new.state.store != old.state.store {
            tracing::error!(
                "config not reloaded, still serving the previous one: the state store moves from {} to {}, which takes a restart",
                old.state.store,
                new.state.store
            );
            continue;
        }
        let now = Timestamp::now();
        let mut added = Vec::new();
        for spec in &new.syncs {
            let before = old.syncs.iter().find(|s| s.name == spec.name);
            match before {
                Some(before) if before.schedule == spec.schedule => {}
                _ => match first_due(&daemon.store, spec, now).await {
                    Ok(due) => added.push((spec.name.clone(), due)),
                    Err(e) => tracing::error!(sync = %spec.name, "not scheduled: {e}"),
                },
            }
        }
        let mut slots = daemon.slots();
        for (name, due) in added {
            slots.entry(name).or_default().due = due;
        }
        // A sync gone from the config leaves when its run, if any, ends.
        slots.retain(|name, slot| {
            slot.running.is_some() || new.syncs.iter().any(|s| &s.name == name)
        });
        drop(slots);
        *daemon.config.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        tracing::info!("config reloaded");
        daemon.wake.notify_one();
    }
}
