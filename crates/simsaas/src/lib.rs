//! `simsaas`: a simulated billing API (source) and CRM API (destination)
//! with seeded, deterministic faults, used by highwater's integration tests,
//! benches and demo. This file owns the public configuration types and the
//! `SimSaas` handle (listeners, server tasks, the mutation task, shutdown).
//!
//! The engine never depends on this crate; it only ever talks to it over HTTP.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod auth;
mod dataset;
mod dest;
mod faults;
mod holdoff;
mod http;
mod source;
mod stats;
pub mod verify;

pub use dataset::{Deletion, Rejection, SourceRecord};
pub use dest::{DestDump, DestObject, VERSION_HEADER};
pub use holdoff::IN_FLIGHT_GRACE;
pub use stats::{SideStats, SimStats};
pub use verify::{Verification, verify, verify_ids};

use auth::AuthGate;
use dataset::Dataset;
use faults::{Burst, DestFaultState, SIDE_DEST, SIDE_SOURCE};
use holdoff::Holdoff;
use stats::Counters;

/// Everything about one simulated pair of APIs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Initial dataset size.
    pub records: usize,
    /// Fraction of records that share ONE identical `updated_at`.
    pub shared_timestamp_ratio: f64,
    /// The initial records' `updated_at` falls on multiples of this many
    /// milliseconds, so that records share it in small groups as they do
    /// where an API keeps whole seconds (1: hardly ever).
    pub timestamp_step_ms: u32,
    /// Fraction of records that must fail mapping validation.
    pub invalid_ratio: f64,
    /// Fraction of records the destination rejects with 400/422.
    pub poisoned_ratio: f64,
    pub source_auth: SimAuth,
    pub dest_auth: SimAuth,
    pub source: SourceFaults,
    pub dest: DestFaults,
    pub mutations: Mutations,
}

impl SimConfig {
    /// No faults, no mutations, `Bearer("sim-token")` on both sides.
    pub fn new(seed: u64, records: usize) -> Self {
        SimConfig {
            seed,
            records,
            shared_timestamp_ratio: 0.1,
            timestamp_step_ms: 1,
            invalid_ratio: 0.01,
            poisoned_ratio: 0.01,
            source_auth: SimAuth::Bearer("sim-token".to_owned()),
            dest_auth: SimAuth::Bearer("sim-token".to_owned()),
            source: SourceFaults::default(),
            dest: DestFaults::default(),
            mutations: Mutations::default(),
        }
    }

    /// A moderate mix of every fault a sync can survive: rate limits (both
    /// `Retry-After` forms, bodies after heads), short 5xx bursts, rare slow
    /// answers, stale replicas, a destination token bucket, commit-then-timeout,
    /// commit-then-502, writes applied after the client gave up, and a
    /// bounded stream of mutations. Pagination loops and broken bodies stay
    /// off because no sync can finish through them, and ties in another order
    /// at each request because no offset walk reads through them whole a
    /// group longer than half a page (the shared timestamp's).
    pub fn with_all_faults(mut self) -> Self {
        // Every 429 closes the client's gate for a second or two, so rate limits are
        // rarer than the other faults: frequent enough to be met in every run, rare
        // enough that a run of a few thousand records still finishes in seconds.
        self.source = SourceFaults {
            latency: Duration::from_millis(1),
            rate_limit_ratio: 0.01,
            rate_limit_date_ratio: 0.005,
            retry_after_secs: 1,
            burst_start_ratio: 0.01,
            burst_len: 3,
            slow_ratio: 0.005,
            slow_delay: Duration::from_secs(3),
            stale_version_ratio: 0.1,
            loop_pagination: false,
            bad_body: None,
            not_json_ratio: 0.005,
            rate_limit_body_delay: Duration::from_millis(200),
            unbounded_newest: None,
            unstable_ties: false,
        };
        self.dest = DestFaults {
            latency: Duration::from_millis(1),
            rate_limit_rps: Some(2000.0),
            rate_limit_headers: LimitHeaders::RetryAfterOnly,
            rate_limit_penalty: None,
            rate_limit_window: None,
            rate_limit_ratio: 0.001,
            rate_limit_date_ratio: 0.0005,
            retry_after_secs: 1,
            burst_start_ratio: 0.01,
            burst_len: 3,
            slow_ratio: 0.005,
            commit_then_timeout_ratio: 0.01,
            commit_then_502_ratio: 0.005,
            delayed_apply_ratio: 0.003,
            delayed_apply_after: Duration::from_millis(1500),
            slow_delay: Duration::from_secs(3),
            rate_limit_body_delay: Duration::from_millis(200),
            lookup_ignores_filter: false,
            item_fail_ratio: 0.02,
            item_fail_status: 503,
            item_retry_after: None,
            batch_refuses_whole: false,
            batch_errors_apart: false,
            batch_errors_by_place: false,
            batch_answers_whole: false,
            batch_answers_counts: false,
            batch_errors_unnamed: false,
            batch_job_polls: None,
            batch_job_fail_ratio: 0.0,
        };
        self.mutations = Mutations {
            max: 50,
            interval: Duration::from_millis(20),
            late_by: Duration::from_secs(180),
            weights: [4, 2, 2, 1],
            delete_weights: [0, 0, 0],
        };
        self
    }
}

/// How a side authenticates requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimAuth {
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
    ApiKeyHeader {
        header: String,
        key: String,
    },
    ApiKeyQuery {
        param: String,
        key: String,
    },
    OAuth2 {
        client_id: String,
        client_secret: String,
        token_ttl: Duration,
        /// The refresh-token grant instead of client credentials, starting
        /// from this token: every answer gives a new one and spends the one
        /// presented, as Xero's endpoint does.
        refresh_token: Option<String>,
    },
}

/// Faults of the source API, decided per data request.
#[derive(Debug, Clone)]
pub struct SourceFaults {
    /// A data request's time from arrival to answer, the page's generation
    /// included (slow faults add theirs on top).
    pub latency: Duration,
    /// 429 with `Retry-After: <retry_after_secs>`.
    pub rate_limit_ratio: f64,
    /// 429 with `Retry-After: <HTTP-date>` about 1-2 s ahead.
    pub rate_limit_date_ratio: f64,
    pub retry_after_secs: u64,
    /// Chance a request starts a 5xx burst.
    pub burst_start_ratio: f64,
    /// Consecutive requests answered 500/502/503/504 (cycled).
    pub burst_len: u32,
    /// Response delayed by `slow_delay`, then answered normally.
    pub slow_ratio: f64,
    pub slow_delay: Duration,
    /// Chance to serve a record's previous version (a lagging replica).
    pub stale_version_ratio: f64,
    /// The API repeats the same next token / link / page forever.
    pub loop_pagination: bool,
    /// Every data response is broken this way.
    pub bad_body: Option<BadBody>,
    /// Chance a data request is answered as `BadBody::NotJson` or
    /// `BadBody::Empty` is (every other time each), once: a proxy's or CDN's
    /// page under a 200, or an answer cut off before its first byte, the
    /// API behind it well.
    pub not_json_ratio: f64,
    /// A 429's head goes out at once, its body only after this long: a client
    /// that waits for the body before it holds back lets other requests through.
    pub rate_limit_body_delay: Duration,
    /// Without a lower bound (`updated_after`), the cursor, links, offset and
    /// page listings hold only the newest this many records of their range,
    /// as some APIs list only recent records unless asked for a time
    /// (Freshdesk: tickets of the last 30 days, unless `updated_since`).
    pub unbounded_newest: Option<usize>,
    /// The offset and page listings serve the records sharing an
    /// `updated_at` in another order at every request, as an API sorting by
    /// that field alone may (ServiceNow ordered by `sys_updated_on` only).
    pub unstable_ties: bool,
}

impl Default for SourceFaults {
    fn default() -> Self {
        SourceFaults {
            latency: Duration::ZERO,
            rate_limit_ratio: 0.0,
            rate_limit_date_ratio: 0.0,
            retry_after_secs: 1,
            burst_start_ratio: 0.0,
            burst_len: 3,
            slow_ratio: 0.0,
            slow_delay: Duration::from_secs(10),
            stale_version_ratio: 0.0,
            loop_pagination: false,
            bad_body: None,
            not_json_ratio: 0.0,
            rate_limit_body_delay: Duration::ZERO,
            unbounded_newest: None,
            unstable_ties: false,
        }
    }
}

/// Ways a source response body can be broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadBody {
    /// 200 with `text/html` `<html>maintenance</html>`.
    NotJson,
    /// 200 with `{"result":"ok"}`.
    MissingRecords,
    /// 200 with `application/json` and no body at all.
    Empty,
}

/// Faults of the destination API, decided per write or lookup.
#[derive(Debug, Clone)]
pub struct DestFaults {
    pub latency: Duration,
    /// Token bucket over all writes and lookups, holding one second of them;
    /// 429 + `Retry-After: 1` when empty.
    pub rate_limit_rps: Option<f64>,
    /// What the destination says about that bucket: nothing but the 429's
    /// `Retry-After` (the default), or rate-limit headers on every answer.
    pub rate_limit_headers: LimitHeaders,
    /// Once the bucket is empty, every request is refused for this long, by
    /// a 429 that says nothing of it (no `Retry-After`), as Airtable does
    /// (five a second, then 30 s): instead of the bucket's own 429s.
    pub rate_limit_penalty: Option<Duration>,
    /// Instead of the bucket, a window that rolls: at most `rate_limit_rps`
    /// × this many requests within any such span (HubSpot's 100 per 10 s
    /// may be one), the headers' remaining what the window leaves and
    /// HubSpot's interval this span.
    pub rate_limit_window: Option<Duration>,
    pub rate_limit_ratio: f64,
    pub rate_limit_date_ratio: f64,
    pub retry_after_secs: u64,
    pub burst_start_ratio: f64,
    pub burst_len: u32,
    /// Delayed by `slow_delay`, write NOT applied (then 504).
    pub slow_ratio: f64,
    /// Write applied, then the response is delayed by `slow_delay`.
    pub commit_then_timeout_ratio: f64,
    /// Write applied, then answered 502, as a proxy that gave up on the backend.
    pub commit_then_502_ratio: f64,
    /// Write held for `delayed_apply_after` (past the client's timeout), then
    /// applied: a late write that may land over a newer one.
    pub delayed_apply_ratio: f64,
    pub delayed_apply_after: Duration,
    pub slow_delay: Duration,
    /// As on the source: a 429's body comes this long after its head.
    pub rate_limit_body_delay: Duration,
    /// Lookups answer with every object, whatever external id was asked for.
    pub lookup_ignores_filter: bool,
    /// One item of a batch fails alone (`item_fail_status` for that item,
    /// not applied), by the same per-key attempts as whole writes.
    pub item_fail_ratio: f64,
    /// The status of an item that fails alone: 503 by default; 429 for an
    /// API that rate-limits a batch's items one by one.
    pub item_fail_status: u16,
    /// An item that fails alone says to wait this long (`"retry_after"`, in
    /// seconds, as Microsoft Graph's batch gives each item its own
    /// `Retry-After`); a request arriving sooner is a violation.
    pub item_retry_after: Option<Duration>,
    /// A batch holding a record the destination refuses is refused whole
    /// (422, nothing applied), as an API that checks a batch before applying
    /// any of it does.
    pub batch_refuses_whole: bool,
    /// A batch's answer lists the items not written apart from its results,
    /// as HubSpot's batch endpoints do: `{"results": [...], "errors": [...]}`,
    /// each error `{"status", "message", "context": {"ids": [external id]}}`,
    /// and the results in reverse order.
    pub batch_errors_apart: bool,
    /// With `batch_errors_apart`, the errors name no item (no `context`),
    /// as some of HubSpot's do.
    pub batch_errors_unnamed: bool,
    /// A batch's answer lists only the items not written, each by its place
    /// in the batch, as Braze's `/users/track` does: `{"message": "success",
    /// "errors": [{"type": reason, "input_array": "records", "index": n}]}`.
    pub batch_errors_by_place: bool,
    /// A batch's answer says nothing of its items: `{"accepted": n}` (as
    /// Segment's batch endpoint answers), with `batch_refuses_whole` the
    /// only way a record is refused.
    pub batch_answers_whole: bool,
    /// A batch's answer only counts its items, those written and those not
    /// (`{"total_count", "completed_count", "failed_count"}`), as the job of
    /// Klaviyo's bulk profile import does, with the reasons of those not
    /// written (`"errors"`) but not whose they are.
    pub batch_answers_counts: bool,
    /// The batch endpoint answers with a job to poll (`dest/jobs.rs`), done
    /// after this many polls answered `"working"`.
    pub batch_job_polls: Option<u32>,
    /// Jobs that fail, applying none of their batch (by the first record's
    /// key, never more than a few times in a row).
    pub batch_job_fail_ratio: f64,
}

impl Default for DestFaults {
    fn default() -> Self {
        DestFaults {
            latency: Duration::ZERO,
            rate_limit_rps: None,
            rate_limit_headers: LimitHeaders::RetryAfterOnly,
            rate_limit_penalty: None,
            rate_limit_window: None,
            rate_limit_ratio: 0.0,
            rate_limit_date_ratio: 0.0,
            retry_after_secs: 1,
            burst_start_ratio: 0.0,
            burst_len: 3,
            slow_ratio: 0.0,
            commit_then_timeout_ratio: 0.0,
            commit_then_502_ratio: 0.0,
            delayed_apply_ratio: 0.0,
            delayed_apply_after: Duration::from_secs(3),
            slow_delay: Duration::from_secs(10),
            rate_limit_body_delay: Duration::ZERO,
            lookup_ignores_filter: false,
            item_fail_ratio: 0.0,
            item_fail_status: 503,
            item_retry_after: None,
            batch_refuses_whole: false,
            batch_errors_apart: false,
            batch_errors_by_place: false,
            batch_answers_whole: false,
            batch_answers_counts: false,
            batch_errors_unnamed: false,
            batch_job_polls: None,
            batch_job_fail_ratio: 0.0,
        }
    }
}

/// How the destination tells clients about its token bucket
/// ([`DestFaults::rate_limit_rps`]). With headers, every answer carries the
/// bucket's size as the limit (per one-second window), the whole requests left
/// in it as remaining, and as reset the time until it is full again, rounded up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LimitHeaders {
    /// Only `Retry-After`, on the 429s.
    #[default]
    RetryAfterOnly,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, and `X-RateLimit-Reset` in
    /// seconds from now.
    XRateLimit,
    /// The same with `X-RateLimit-Reset` as an epoch timestamp in seconds (GitHub's).
    XRateLimitEpoch,
    /// IETF `RateLimit-Policy: "bucket";q=<limit>;w=1` and
    /// `RateLimit: "bucket";r=<remaining>;t=<reset>`.
    Ietf,
    /// HubSpot's `X-HubSpot-RateLimit-Max`, `-Remaining` and
    /// `-Interval-Milliseconds: 1000`, with no reset.
    HubSpot,
}

/// Seeded changes to the source dataset while a sync runs.
#[derive(Debug, Clone)]
pub struct Mutations {
    /// Total mutations; 0 = off.
    pub max: usize,
    /// One mutation per tick.
    pub interval: Duration,
    /// How far in the past a late update's `updated_at` is.
    pub late_by: Duration,
    /// Relative weights of: update, late_update, insert, backdated_insert.
    pub weights: [u32; 4],
    /// Relative weights, beside `weights`, of: hard delete (into the deletes
    /// feed), soft delete (`deleted: true`), re-creation of a deleted record.
    /// All zero by default, which leaves every seed's draws as they were.
    pub delete_weights: [u32; 3],
}

impl Default for Mutations {
    fn default() -> Self {
        Mutations {
            max: 0,
            interval: Duration::from_millis(50),
            late_by: Duration::from_secs(180),
            weights: [1, 1, 1, 1],
            delete_weights: [0, 0, 0],
        }
    }
}

/// Poisoning only means another thread panicked mid-update; the simulator's
/// state is still usable for tests, so keep serving rather than cascade.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// State shared by both routers and the mutation task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) seed: u64,
    pub(crate) source_url: String,
    pub(crate) dest_url: String,
    pub(crate) dataset: Mutex<Dataset>,
    pub(crate) source_faults: RwLock<SourceFaults>,
    pub(crate) dest_faults: RwLock<DestFaults>,
    pub(crate) source_burst: Mutex<Burst>,
    pub(crate) dest_fault_state: Mutex<DestFaultState>,
    pub(crate) source_seq: AtomicU64,
    pub(crate) source_stats: Counters,
    pub(crate) dest_stats: Counters,
    pub(crate) source_holdoff: Holdoff,
    pub(crate) dest_holdoff: Holdoff,
    pub(crate) source_auth: AuthGate,
    pub(crate) dest_auth: AuthGate,
    pub(crate) store: Mutex<dest::Store>,
    pub(crate) jobs: Mutex<dest::Jobs>,
    mutations: Mutations,
    mutations_started: AtomicBool,
    mutations_stopped: AtomicBool,
    mutations_done: AtomicUsize,
    mutation_task: Mutex<Option<JoinHandle<()>>>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Mutations begin with the first data request so that a test's setup
    /// time never eats into them.
    pub(crate) fn maybe_start_mutations(self: &Arc<Self>) {
        if self.mutations.max == 0 || self.mutations_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(self);
        let task = tokio::spawn(async move { shared.run_mutations().await });
        *lock(&self.mutation_task) = Some(task);
    }

    async fn run_mutations(&self) {
        let m = self.mutations.clone();
        let mut ticker = tokio::time::interval(m.interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires immediately; the first mutation comes one interval in.
        ticker.tick().await;
        let mut shutdown = self.shutdown.clone();
        for _ in 0..m.max {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let mut ds = lock(&self.dataset);
            // Checked under the dataset lock: `stop_mutations` takes the same
            // lock after setting the flag, so nothing lands after it returns.
            if self.mutations_stopped.load(Ordering::Acquire) {
                return;
            }
            let now_ms = jiff::Timestamp::now().as_millisecond();
            let kind = ds.mutate(&m, now_ms);
            self.mutations_done.fetch_add(1, Ordering::AcqRel);
            drop(ds);
            tracing::trace!(?kind, "simsaas mutation");
        }
    }
}

/// Handle to a running simulator. Cheap to clone; the servers stop when
/// `shutdown` is called or the last clone is dropped.
#[derive(Clone)]
pub struct SimSaas {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for SimSaas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSaas")
            .field("source_url", &self.inner.shared.source_url)
            .field("dest_url", &self.inner.shared.dest_url)
            .finish_non_exhaustive()
    }
}

// Tests, benches and the demo share one handle across tasks.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SimSaas>();
};

struct Handle {
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    servers: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
        for task in lock(&self.servers).drain(..) {
            task.abort();
        }
        if let Some(task) = lock(&self.shared.mutation_task).take() {
            task.abort();
        }
    }
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl SimSaas {
    /// Binds the source and the destination on `127.0.0.1:0` and serves them.
    pub async fn start(cfg: SimConfig) -> std::io::Result<SimSaas> {
        let source_listener = TcpListener::bind("127.0.0.1:0").await?;
        let dest_listener = TcpListener::bind("127.0.0.1:0").await?;
        let source_url = format!("http://{}", source_listener.local_addr()?);
        let dest_url = format!("http://{}", dest_listener.local_addr()?);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let now_ms = jiff::Timestamp::now().as_millisecond();
        let shared = Arc::new(Shared {
            seed: cfg.seed,
            source_url,
            dest_url,
            dataset: Mutex::new(Dataset::generate(&cfg, now_ms)),
            source_faults: RwLock::new(cfg.source),
            dest_faults: RwLock::new(cfg.dest),
            source_burst: Mutex::new(Burst::default()),
            dest_fault_state: Mutex::new(DestFaultState::default()),
            source_seq: AtomicU64::new(0),
            source_stats: Counters::default(),
            dest_stats: Counters::default(),
            source_holdoff: Holdoff::default(),
            dest_holdoff: Holdoff::default(),
            source_auth: AuthGate::new(cfg.source_auth, cfg.seed, SIDE_SOURCE),
            dest_auth: AuthGate::new(cfg.dest_auth, cfg.seed, SIDE_DEST),
            store: Mutex::new(dest::Store::default()),
            jobs: Mutex::new(dest::Jobs::default()),
            mutations: cfg.mutations,
            mutations_started: AtomicBool::new(false),
            mutations_stopped: AtomicBool::new(false),
            mutations_done: AtomicUsize::new(0),
            mutation_task: Mutex::new(None),
            shutdown: shutdown_rx,
        });

        let servers = vec![
            serve(
                source_listener,
                source::router(Arc::clone(&shared)),
                &shared.shutdown,
            ),
            serve(
                dest_listener,
                dest::router(Arc::clone(&shared)),
                &shared.shutdown,
            ),
        ];
        Ok(SimSaas {
            inner: Arc::new(Handle {
                shared,
                shutdown_tx,
                servers: Mutex::new(servers),
            }),
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn source_url(&self) -> String {
        self.inner.shared.source_url.clone()
    }

    pub fn dest_url(&self) -> String {
        self.inner.shared.dest_url.clone()
    }

    /// Current source records, sorted by (updated_at, id).
    pub fn source_records(&self) -> Vec<SourceRecord> {
        lock(&self.inner.shared.dataset).snapshot()
    }

    pub fn dest_dump(&self) -> DestDump {
        lock(&self.inner.shared.store).dump()
    }

    /// Deletes the destination's objects holding `external_id` behind the
    /// client's back; returns how many there were.
    pub fn remove_dest_object(&self, external_id: &str) -> usize {
        lock(&self.inner.shared.store).remove(external_id)
    }

    /// Edits a field of the destination's objects holding `external_id` behind
    /// the client's back; returns how many there were.
    pub fn alter_dest_object(
        &self,
        external_id: &str,
        field: &str,
        value: serde_json::Value,
    ) -> usize {
        lock(&self.inner.shared.store).alter(external_id, field, value)
    }

    pub fn dest_count(&self) -> usize {
        lock(&self.inner.shared.store).count()
    }

    pub fn stats(&self) -> SimStats {
        let shared = &self.inner.shared;
        let side = |counters: &Counters, holdoff: &Holdoff| SideStats {
            rate_limit_incidents: holdoff.incidents(),
            ..counters.snapshot()
        };
        SimStats {
            source: side(&shared.source_stats, &shared.source_holdoff),
            dest: side(&shared.dest_stats, &shared.dest_holdoff),
        }
    }

    /// No mutation is applied after this returns.
    pub fn stop_mutations(&self) {
        let shared = &self.inner.shared;
        shared.mutations_stopped.store(true, Ordering::Release);
        // Wait out a mutation that may be running right now (see run_mutations).
        drop(lock(&shared.dataset));
    }

    /// Gives the record `id` a new version, stamped now, as an update at the
    /// source would. Returns the new version, or `None` when there is no such record.
    pub fn update_record(&self, id: &str) -> Option<i64> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        lock(&self.inner.shared.dataset).update_by_id(id, now_ms)
    }

    /// Deletes, soft-deletes or re-creates the record `id`, stamped now, as a
    /// change at the source would. Returns whether it was there to change.
    pub fn delete_record(&self, id: &str, how: Deletion) -> bool {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        lock(&self.inner.shared.dataset).delete_by_id(id, how, now_ms)
    }

    /// Ids deleted at the source (hard) and not re-created since.
    pub fn deleted_ids(&self) -> Vec<String> {
        lock(&self.inner.shared.dataset).deleted_ids()
    }

    /// DELETE requests that removed an object, per external id.
    pub fn deletes_applied(&self) -> std::collections::HashMap<String, u64> {
        lock(&self.inner.shared.store).deletes_applied()
    }

    pub fn mutations_done(&self) -> usize {
        self.inner.shared.mutations_done.load(Ordering::Acquire)
    }

    /// The source faults in force.
    pub fn source_faults(&self) -> SourceFaults {
        read(&self.inner.shared.source_faults).clone()
    }

    /// The destination faults in force.
    pub fn dest_faults(&self) -> DestFaults {
        read(&self.inner.shared.dest_faults).clone()
    }

    /// Replaces the source faults; an ongoing 5xx burst ends with them.
    pub fn set_source_faults(&self, f: SourceFaults) {
        let shared = &self.inner.shared;
        *write(&shared.source_faults) = f;
        *lock(&shared.source_burst) = Burst::default();
    }

    /// Replaces the destination faults; an ongoing 5xx burst ends with them.
    pub fn set_dest_faults(&self, f: DestFaults) {
        let shared = &self.inner.shared;
        *write(&shared.dest_faults) = f;
        lock(&shared.dest_fault_state).reset_burst();
    }

    /// Stops both servers, letting in-flight requests finish (slow-fault
    /// sleeps are cut short) for up to a few seconds.
    pub async fn shutdown(self) {
        let inner = &self.inner;
        inner.shutdown_tx.send_replace(true);
        let servers: Vec<_> = lock(&inner.servers).drain(..).collect();
        for task in servers {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        let mutation_task = lock(&inner.shared.mutation_task).take();
        if let Some(task) = mutation_task {
            task.abort();
            let _ = task.await;
        }
    }
}

fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    use axum::serve::ListenerExt as _;
    let mut rx = shutdown.clone();
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers on keep-alive connections: avoid Nagle stalls.
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        });
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "simsaas server stopped with an error");
        }
    })
}
