//! Owns the state store: runs and their history, checkpoints, the ledger, dead
//! letters and the audit log of operator actions. [`Store`] is its interface,
//! the same for every backend; each backend (`sqlite/`: one embedded file) is
//! the only code that speaks its SQL. The types here are what runs and
//! commands read and write, whatever the backend.
//! Invariants: a page's ledger rows, dead letters and checkpoint are committed
//! in one transaction; a completed run leaves no staged rows; timestamps are
//! integer epoch microseconds; the high-water mark is the watermark of the last
//! completed incremental run, derived, never stored apart; kinds, statuses,
//! outcomes, stages, resolutions and audit actions are stored by their names in
//! [`names`].

mod audit;
mod claim;
mod copy;
mod dlq;
mod events;
mod history;
pub mod lock;
mod names;
mod operating;
mod postgres;
mod private;
mod reset;
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{StateSpec, StoreLocation};

pub use audit::{AuditEntry, AuditRecord, AuditScope};
use claim::add_other;
pub use claim::{Announced, Behind};
pub use copy::{Copied, CopyError};
pub use dlq::{DeadLetterDetail, DeadLetterSummary, DiscardScope, Discarded, Resolved};
pub use events::{DeadLetterState, RecordAction, RecordEvent, RecordState, StoryEvent};
use events::{StoredEvent, event_rows};
pub use history::{Invocation, InvocationEnd, RunRecord, Samples};
pub use lock::{LockError, RunLock};
pub use names::{
    AuditAction, DeadLetterResolution, DeadLetterStage, IncidentKind, InvocationOutcome, RunKind,
    RunStatus, UnknownName,
};
pub use operating::Incident;
pub use reset::{HighWaterMark, ResetDone, ResetError, ResetRequest};
pub use sqlite::lock::{
    SyncLock, SyncLocks, acquire, acquire_all, acquire_for_run, holder as lock_holder,
};
pub use sqlite::shared;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("state store {path}: migration failed: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("state store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("state store holds a checkpoint it cannot read: {0}")]
    Corrupt(String),
    /// A name outside its closed set, read from the store or about to be written.
    #[error("state store: {0}")]
    Name(#[from] UnknownName),
    /// The transaction shared with a destination table in the store's file
    /// was rolled back: rows the run was told are written are not.
    #[error(
        "state store: the transaction shared with the destination table was rolled back after a failure; the run stops here and its next attempt resumes from its last commit"
    )]
    SharedTransactionLost,
    /// The run's lease ran out or was taken over: another worker may be
    /// running the sync now.
    #[error(
        "the lease of sync {sync:?} ({kinds} runs) was lost — this worker was paused or cut off past its expiry, or another took it over; this run sends and commits nothing more, and the worker holding the lease now resumes it"
    )]
    LeaseLost { sync: String, kinds: String },
}

/// What a run has done so far; committed with each checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub pages: u64,
    pub read: u64,
    pub written: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub dead_lettered: u64,
    pub beyond_watermark: u64,
    pub requests: u64,
    /// Records deleted (or tombstoned) for a deletion at the source.
    #[serde(default)]
    pub deleted: u64,
}

impl Counters {
    /// What was added since `earlier` (one invocation's share of a run).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            pages: self.pages.saturating_sub(earlier.pages),
            read: self.read.saturating_sub(earlier.read),
            written: self.written.saturating_sub(earlier.written),
            unchanged: self.unchanged.saturating_sub(earlier.unchanged),
            stale: self.stale.saturating_sub(earlier.stale),
            dead_lettered: self.dead_lettered.saturating_sub(earlier.dead_lettered),
            beyond_watermark: self
                .beyond_watermark
                .saturating_sub(earlier.beyond_watermark),
            requests: self.requests.saturating_sub(earlier.requests),
            deleted: self.deleted.saturating_sub(earlier.deleted),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub sync: String,
    pub kind: RunKind,
    pub status: RunStatus,
    pub lower_bound: Option<Timestamp>,
    pub watermark: Timestamp,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub cursor: Value,
    pub counters: Counters,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub source_id: String,
    pub external_id: String,
    pub dest_id: Option<String>,
    pub version: Option<i64>,
    pub updated_at: Timestamp,
    pub payload_hash: String,
    pub run_id: String,
    /// A tombstone: the record was deleted at the source at this time and is
    /// gone from the destination. `version` and `updated_at` stay those of
    /// the last copy written, or of the deletion when it is newer.
    pub deleted_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub source_id: String,
    pub run_id: String,
    pub stage: DeadLetterStage,
    pub error: String,
    pub payload: Value,
    /// Record body and sync config; the same fingerprint is not tried again.
    pub fingerprint: String,
    pub attempts: i64,
    pub last_failed_at: Timestamp,
}

/// What the store knows about a page's records before they are written.
#[derive(Debug, Default)]
pub struct Known {
    pub ledger: HashMap<String, LedgerEntry>,
    /// Source id → fingerprint of its dead letter, unresolved or discarded: that
    /// payload, under that config, is not tried again.
    pub dead: HashMap<String, String>,
    /// External id → the source id whose ledger row holds it, for the external
    /// ids asked about.
    pub holders: HashMap<String, String>,
}

/// A write that may reach the destination: announced before it is sent (the
/// version the destination may hold from the moment the request leaves), or
/// sent and left without a clear answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub source_id: String,
    pub version: Option<i64>,
    pub updated_at: Timestamp,
    /// When it has landed or never will; unknown for a write announced before a
    /// crash, whose request left at the latest when its process died.
    pub settles_at: Option<Timestamp>,
}

/// A record written again while an older write of it may still land: it is read
/// back once `settles_at` has passed, and written again if it went back.
#[derive(Debug, Clone, PartialEq)]
pub struct Readback {
    pub source_id: String,
    pub external_id: String,
    pub dest_id: Option<String>,
    pub version: Option<i64>,
    pub updated_at: Timestamp,
    pub payload: Value,
    pub payload_hash: String,
    pub settles_at: Timestamp,
}

/// Writes announced together, in one commit, under one id.
#[derive(Debug, Clone, Default)]
pub struct IntentBatch {
    pub id: String,
    pub intents: Vec<Intent>,
}

/// Everything one commit changes, at once.
#[derive(Debug, Default)]
pub struct PageCommit {
    /// Writes about to be sent.
    pub announce: Option<IntentBatch>,
    /// Batches whose writes have all settled and committed: no longer floors.
    pub retire: Vec<String>,
    pub ledger: Vec<LedgerEntry>,
    pub dead_letters: Vec<DeadLetter>,
    /// Source ids written successfully, whose old dead letters are now resolved.
    pub resolved: Vec<String>,
    /// Writes that got no clear answer and may still land: floors until the run
    /// completes (or later, when they have not settled by then).
    pub unsettled: Option<IntentBatch>,
    /// Records to read back before the run completes.
    pub readbacks: Vec<Readback>,
    /// Merge every staged ledger row of the sync, these included, into the ledger.
    pub merge: bool,
    /// What the commit's pages did with each record, for `explain`.
    pub events: Vec<RecordEvent>,
}

/// Per-sync summary for `status`.
#[derive(Debug, Clone)]
pub struct SyncStatus {
    pub open_run: Option<(RunRow, Checkpoint)>,
    pub last_completed: Option<(RunRow, Checkpoint)>,
    pub dead_letters: i64,
    pub ledger_records: i64,
    /// The last completed incremental run's watermark, or a later reset.
    pub mark: HighWaterMark,
    /// Open runs of the other kinds (a backfill, a replay, a repair), which the
    /// same command with the same plan resumes.
    pub other_open: Vec<(RunRow, Checkpoint)>,
    /// Its schedule is paused (`highwater serve` does not run it until resumed).
    pub paused: bool,
}

impl SyncStatus {
    pub fn high_water_mark(&self) -> Option<Timestamp> {
        self.mark.at()
    }
}

/// The state store: one of its backends, each the only code that speaks its
/// SQL. Every method means the same on each; a backend's own trade-offs are
/// documented where it implements them.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Calls the same method on whichever backend the store is.
macro_rules! on_backend {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($s) => $call,
            Backend::Postgres($s) => $call,
        }
    };
}

/// What the store says of a confirmed commit.
#[derive(Debug, Default)]
pub struct Committed {
    /// Which announced writes it refused or put behind another run's.
    pub announced: Announced,
    /// Its ledger rows (and every earlier commit's) are now what lookups read:
    /// at once in PostgreSQL, with a merge of staged rows in SQLite.
    pub visible: bool,
}

impl Store {
    /// Opens (creating if needed) and migrates the SQLite store at `path`.
    pub async fn open(path: &Path) -> Result<Store, StateError> {
        Ok(Store {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(path).await?),
        })
    }

    /// Opens (creating if needed) and migrates the store the config names.
    pub async fn connect(spec: &StateSpec) -> Result<Store, StateError> {
        let backend = match &spec.store {
            StoreLocation::File(path) => Backend::Sqlite(sqlite::SqliteStore::open(path).await?),
            StoreLocation::Postgres { url, schema } => {
                let location = postgres::PgLocation {
                    url: url.expose().to_owned(),
                    schema: schema.clone(),
                    lease: spec.lease,
                };
                Backend::Postgres(postgres::PgStore::open(&location).await?)
            }
        };
        Ok(Store { backend })
    }

    /// Whether the store the config names holds anything yet: a command that
    /// only reads it never creates it.
    pub async fn exists(spec: &StateSpec) -> Result<bool, StateError> {
        match &spec.store {
            StoreLocation::File(path) => Ok(path.exists()),
            StoreLocation::Postgres { url, schema } => {
                postgres::PgStore::exists(url.expose(), schema).await
            }
        }
    }

    /// Takes the lock of `sync`'s runs of `kind` — every kind's when the
    /// sync's runs take turns (`alone`) — for a run about to start.
    pub async fn lock_run(
        &self,
        sync: &str,
        kind: RunKind,
        alone: bool,
    ) -> Result<RunLock, LockError> {
        let kinds: &[RunKind] = if alone { RunKind::ALL } else { &[kind] };
        self.lock_kinds(sync, kinds).await
    }

    /// Takes the locks of every run kind of `sync`: no run of it can start or
    /// go on while an operator command changes what they read.
    pub async fn lock_all(&self, sync: &str) -> Result<RunLock, LockError> {
        self.lock_kinds(sync, RunKind::ALL).await
    }

    async fn lock_kinds(&self, sync: &str, kinds: &[RunKind]) -> Result<RunLock, LockError> {
        let held = match &self.backend {
            Backend::Sqlite(s) => lock::Held::Files(s.lock(sync, kinds)?),
            Backend::Postgres(s) => lock::Held::Lease(s.lease(sync, kinds).await?),
        };
        Ok(RunLock { held })
    }

    /// Closes the store and lets `lock` go, in the order the backend needs: a
    /// SQLite store's shared transaction is rolled back before its file lock
    /// goes; a lease is deleted while the store's connections are still open.
    pub async fn close_releasing(self, lock: RunLock) {
        match self.backend {
            Backend::Sqlite(s) => {
                s.close().await;
                drop(lock);
            }
            Backend::Postgres(s) => {
                lock.release().await;
                s.close().await;
            }
        }
    }

    /// This store, its writes fenced by `lock`: with a lease, every write
    /// transaction checks it is still held, and [`Store::check_lease`] says
    /// whether a write may be sent.
    pub fn fenced(&self, lock: &RunLock) -> Store {
        match (&self.backend, &lock.held) {
            (Backend::Postgres(s), lock::Held::Lease(leases)) => Store {
                backend: Backend::Postgres(s.fenced(leases.fence())),
            },
            _ => self.clone(),
        }
    }

    /// Whether a write may be sent now: always, unless the store is fenced by
    /// a lease that ran out by this process's clock or was taken over.
    pub fn check_lease(&self) -> Result<(), StateError> {
        match &self.backend {
            Backend::Postgres(s) => s.check_fence(),
            Backend::Sqlite(_) => Ok(()),
        }
    }

    /// Who runs `sync`'s runs of `kind` now: the process holding the lock, or
    /// the worker holding the lease; `None` when nobody does.
    pub async fn lock_holder(&self, sync: &str, kind: RunKind) -> Option<String> {
        match &self.backend {
            Backend::Sqlite(s) => s.lock_holder(sync, kind),
            Backend::Postgres(s) => s.lease_holder(sync, kind).await.ok().flatten(),
        }
    }

    /// Which workers run which syncs now, as `(sync, worker)`: those holding
    /// leases in a PostgreSQL store; none for a SQLite store, whose runs are
    /// on one machine.
    pub async fn lease_holders(&self) -> Result<Vec<(String, String)>, StateError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(s) => s.lease_holders().await,
        }
    }

    /// Commits what the run has resolved and the writes it is about to send
    /// (see each backend's `commit_page`); the acknowledgement says which
    /// writes went ahead and whether the rows are visible to lookups yet.
    pub async fn commit_page(
        &self,
        sync: &str,
        run_id: &str,
        page: &PageCommit,
        cursor: Option<&Value>,
        counters: &Counters,
    ) -> Result<Committed, StateError> {
        Ok(match &self.backend {
            Backend::Sqlite(s) => Committed {
                announced: s.commit_page(sync, run_id, page, cursor, counters).await?,
                visible: page.merge,
            },
            Backend::Postgres(s) => Committed {
                announced: s.commit_page(sync, run_id, page, cursor, counters).await?,
                visible: true,
            },
        })
    }

    /// The SQLite store's pool, for tests that read its tables directly.
    #[cfg(test)]
    pub(crate) fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match &self.backend {
            Backend::Sqlite(s) => s.pool(),
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    /// Closes the store, letting go of its connections.
    pub async fn close(self) {
        match self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }

    /// The open run of a sync, if any.
    pub async fn open_run(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        on_backend!(self, s => s.open_run(sync, kind).await)
    }

    /// The last completed run of a sync, if any.
    pub async fn last_completed(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        on_backend!(self, s => s.last_completed(sync, kind).await)
    }

    /// Stores a new open run, its starting checkpoint and its first invocation,
    /// before anything is fetched.
    pub async fn begin_run(&self, run: &RunRow, cursor: &Value) -> Result<(), StateError> {
        on_backend!(self, s => s.begin_run(run, cursor).await)
    }

    /// Gives up a run that made no progress: nothing of it is resumed, and the next
    /// run plans its window afresh, as if it had never started; it stays in the
    /// history as failed.
    pub async fn abandon_run(&self, run_id: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.abandon_run(run_id).await)
    }

    /// What the ledger and dead-letter queue know of these source ids, and which
    /// source ids the ledger has holding these external ids. A discarded dead
    /// letter is known as an unresolved one is: its fingerprint keeps the same
    /// payload from being tried again (a changed one is). Staged ledger rows
    /// are not read: a run merges those of earlier invocations before its first
    /// lookup and keeps its own in memory until they are merged.
    pub async fn known(
        &self,
        sync: &str,
        ids: &[&str],
        external_ids: &[&str],
    ) -> Result<Known, StateError> {
        on_backend!(self, s => s.known(sync, ids, external_ids).await)
    }

    /// Every write of the run `run_id` (every run's, with `None`), or of a run
    /// that ended, not known to have settled, newest version per source id:
    /// after a crash the destination may hold any of them, so nothing older may
    /// be written over them until the run completes. Another open run's writes
    /// are weighed when each write is announced instead (`claim`): that run may
    /// be running.
    pub async fn floors(
        &self,
        sync: &str,
        run_id: Option<&str>,
    ) -> Result<HashMap<String, Intent>, StateError> {
        on_backend!(self, s => s.floors(sync, run_id).await)
    }

    /// The records of a sync waiting to be read back: those of the run `run_id`,
    /// whatever invocation wrote them, and those left by runs that ended; an open
    /// run of another kind, which may be running now, reads back its own.
    pub async fn readbacks(&self, sync: &str, run_id: &str) -> Result<Vec<Readback>, StateError> {
        on_backend!(self, s => s.readbacks(sync, run_id).await)
    }

    pub async fn status(&self, sync: &str) -> Result<SyncStatus, StateError> {
        on_backend!(self, s => s.status(sync).await)
    }

    /// How many of a sync's dead letters are open (not resolved).
    pub async fn open_dead_letters(&self, sync: &str) -> Result<i64, StateError> {
        on_backend!(self, s => s.open_dead_letters(sync).await)
    }

    /// The open runs of a sync other than its run of `kind`, oldest first.
    pub async fn open_runs_besides(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Vec<(RunRow, Checkpoint)>, StateError> {
        on_backend!(self, s => s.open_runs_besides(sync, kind).await)
    }

    /// Unresolved dead letters of a sync, oldest first.
    pub async fn dead_letters(&self, sync: &str) -> Result<Vec<DeadLetter>, StateError> {
        on_backend!(self, s => s.dead_letters(sync).await)
    }

    /// The ledger of a sync, by source id, with its staged rows applied in the order
    /// a merge would apply them.
    pub async fn ledger(&self, sync: &str) -> Result<Vec<LedgerEntry>, StateError> {
        on_backend!(self, s => s.ledger(sync).await)
    }

    /// Merges ledger rows staged by an earlier invocation of `sync`, so that
    /// [`Store::known`] sees them; a no-op, without a write, when there are none.
    pub async fn merge_staged(&self, sync: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.merge_staged(sync).await)
    }

    /// Completes a run: from now on its watermark is the sync's high-water mark.
    /// Every announced write has settled and every record read back, except the
    /// writes in `unsettled`, which may still land: they stay floors for the
    /// next run.
    pub async fn complete_run(
        &self,
        run_id: &str,
        cursor: &Value,
        counters: &Counters,
        unsettled: &[Intent],
    ) -> Result<(), StateError> {
        on_backend!(self, s => s.complete_run(run_id, cursor, counters, unsettled).await)
    }

    /// Of `ids`, those another run that is running now has a write of
    /// announced and not yet settled: a run that went behind such a write
    /// waits for it before it reads the record back.
    pub async fn pending_elsewhere(
        &self,
        sync: &str,
        run_id: &str,
        ids: &[&str],
    ) -> Result<HashSet<String>, StateError> {
        on_backend!(self, s => s.pending_elsewhere(sync, run_id, ids).await)
    }

    /// The unresolved dead letters of a sync, oldest first.
    pub async fn unresolved_dead_letters(
        &self,
        sync: &str,
    ) -> Result<Vec<DeadLetterSummary>, StateError> {
        on_backend!(self, s => s.unresolved_dead_letters(sync).await)
    }

    /// The next unresolved dead letters to replay, by source id after `after`,
    /// restricted to `ids` when given: the record each keeps, as it was read.
    pub async fn dead_letters_to_replay(
        &self,
        sync: &str,
        after: Option<&str>,
        ids: Option<&[String]>,
        limit: u32,
    ) -> Result<Vec<(String, Value)>, StateError> {
        on_backend!(self, s => s.dead_letters_to_replay(sync, after, ids, limit).await)
    }

    /// One record's dead letter, resolved or not, with its payload.
    pub async fn dead_letter(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<Option<DeadLetterDetail>, StateError> {
        on_backend!(self, s => s.dead_letter(sync, source_id).await)
    }

    /// Discards dead letters: marks them resolved as discarded, keeping their
    /// rows, and records the discard with its reason in the audit log, in one
    /// transaction. Ids without an unresolved dead letter refuse the whole
    /// discard, so that a typo never discards half of what was meant.
    pub async fn discard_dead_letters(
        &self,
        sync: &str,
        scope: DiscardScope<'_>,
        reason: &str,
    ) -> Result<Discarded, StateError> {
        on_backend!(self, s => s.discard_dead_letters(sync, scope, reason).await)
    }

    /// Every retained event of one record, oldest first.
    pub async fn record_story(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<Vec<StoryEvent>, StateError> {
        on_backend!(self, s => s.record_story(sync, source_id).await)
    }

    /// Where one record stands: its ledger row (the latest, staged or merged),
    /// its dead letter, a write announced for it and not settled.
    pub async fn record_state(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<RecordState, StateError> {
        on_backend!(self, s => s.record_state(sync, source_id).await)
    }

    /// Forgets the events of `sync` older than `before`; returns how many
    /// commits' worth went.
    pub async fn prune_events(&self, sync: &str, before: Timestamp) -> Result<u64, StateError> {
        on_backend!(self, s => s.prune_events(sync, before).await)
    }

    /// Records a new invocation of an open run, resumed from its checkpoint. An
    /// earlier invocation that never recorded its end was killed: the caller holds
    /// the sync's lock, so it is not running any more.
    pub async fn resume_run(&self, run_id: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.resume_run(run_id).await)
    }

    /// Records how the run's current invocation ended; its cursor at the end is
    /// the run's checkpoint.
    pub async fn end_invocation(
        &self,
        run_id: &str,
        end: &InvocationEnd,
    ) -> Result<(), StateError> {
        on_backend!(self, s => s.end_invocation(run_id, end).await)
    }

    /// The runs of a sync, newest first, at most `limit` of them.
    pub async fn runs(&self, sync: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        on_backend!(self, s => s.runs(sync, limit).await)
    }

    /// One run's audit record, by its id.
    pub async fn run_record(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        on_backend!(self, s => s.run_record(run_id).await)
    }

    /// Ids of runs (of any sync) that start with `prefix`, at most `limit`: people
    /// type the short id a list shows.
    pub async fn run_ids_starting_with(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StateError> {
        on_backend!(self, s => s.run_ids_starting_with(prefix, limit).await)
    }

    /// Records an operator action done outside a transaction of the store's own;
    /// returns its id. An action that changes the store records itself in the same
    /// transaction instead (a discard does).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StateError> {
        on_backend!(self, s => s.audit(entry).await)
    }

    /// A sync's newest `limit` entries, newest first.
    pub async fn audit_log(&self, sync: &str, limit: u32) -> Result<Vec<AuditRecord>, StateError> {
        on_backend!(self, s => s.audit_log(sync, limit).await)
    }

    /// One entry, by id.
    pub async fn audit_record(&self, id: i64) -> Result<Option<AuditRecord>, StateError> {
        on_backend!(self, s => s.audit_record(id).await)
    }

    pub async fn high_water_mark(&self, sync: &str) -> Result<HighWaterMark, StateError> {
        on_backend!(self, s => s.high_water_mark(sync).await)
    }

    /// Rewinds the sync's high-water mark, as one transaction.
    pub async fn reset(&self, request: &ResetRequest) -> Result<ResetDone, ResetError> {
        on_backend!(self, s => s.reset(request).await)
    }

    /// The open incident of `kind` for `sync`: the one already open, unchanged,
    /// or a new one with this run and reason.
    pub async fn open_incident(
        &self,
        sync: &str,
        kind: IncidentKind,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<Incident, StateError> {
        on_backend!(self, s => s.open_incident(sync, kind, run_id, reason).await)
    }

    /// The incident's webhook call was answered.
    pub async fn incident_notified(&self, incident_id: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.incident_notified(incident_id).await)
    }

    /// The condition of `kind` no longer holds for `sync`: its open incident,
    /// if any, closes, and the next time it holds is a new incident.
    pub async fn close_incident(&self, sync: &str, kind: IncidentKind) -> Result<(), StateError> {
        on_backend!(self, s => s.close_incident(sync, kind).await)
    }

    /// Pauses or resumes a sync's schedule.
    pub async fn set_paused(&self, sync: &str, paused: bool) -> Result<(), StateError> {
        on_backend!(self, s => s.set_paused(sync, paused).await)
    }

    /// The syncs whose schedule is paused.
    pub async fn paused_syncs(&self) -> Result<Vec<String>, StateError> {
        on_backend!(self, s => s.paused_syncs().await)
    }

    /// Shares the store's write transaction from now on, with a destination
    /// table in its file; the handle that destination writes through.
    /// `None` for a store that is not a SQLite file.
    pub fn share_writes(&self) -> Option<std::sync::Arc<shared::SharedWrites>> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s.share_writes()),
            Backend::Postgres(_) => None,
        }
    }
}

/// Adds an announced write to the floors: the newest version per record is
/// its floor, and it settles when the last of them has (or never, as far as
/// anyone knows).
fn add_floor(floors: &mut HashMap<String, Intent>, intent: Intent) {
    match floors.get_mut(&intent.source_id) {
        Some(floor) => {
            let settles_at = match (floor.settles_at, intent.settles_at) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            if (intent.version, intent.updated_at) > (floor.version, floor.updated_at) {
                *floor = intent;
            }
            floor.settles_at = settles_at;
        }
        None => {
            floors.insert(intent.source_id.clone(), intent);
        }
    }
}

/// One announced write as stored: `[source_id, version, updated_at,
/// settles_at, announced_at]`.
type IntentRow<'a> = (&'a String, Option<i64>, i64, Option<i64>, i64);

/// An intent batch's rows.
fn intent_rows(batch: Option<&IntentBatch>, now: i64) -> Vec<IntentRow<'_>> {
    batch
        .iter()
        .flat_map(|b| &b.intents)
        .map(|i| {
            (
                &i.source_id,
                i.version,
                i.updated_at.as_microsecond(),
                i.settles_at.map(|t| t.as_microsecond()),
                now,
            )
        })
        .collect()
}

/// The first [`SAMPLE_IDS`] distinct ids of a commit: all a run may keep of it.
fn sample_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut sample: Vec<&str> = Vec::with_capacity(SAMPLE_IDS);
    for id in ids {
        if sample.len() == SAMPLE_IDS {
            break;
        }
        if !sample.contains(&id) {
            sample.push(id);
        }
    }
    sample
}

/// A row of either backend, read by column name: what the decoders of the
/// store's types need, so each type is read from a row in one place.
trait Columns {
    fn text(&self, column: &str) -> Result<String, StateError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StateError>;
    fn int(&self, column: &str) -> Result<i64, StateError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StateError>;
}

macro_rules! columns_of {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> Result<String, StateError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, StateError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn int(&self, column: &str) -> Result<i64, StateError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, StateError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}
columns_of!(sqlx::sqlite::SqliteRow);
columns_of!(sqlx::postgres::PgRow);

fn ledger_entry(row: &impl Columns) -> Result<LedgerEntry, StateError> {
    Ok(LedgerEntry {
        source_id: row.text("source_id")?,
        external_id: row.text("external_id")?,
        dest_id: row.opt_text("dest_id")?,
        version: row.opt_int("version")?,
        updated_at: micros(row.int("updated_at")?)?,
        payload_hash: row.text("payload_hash")?,
        run_id: row.text("run_id")?,
        deleted_at: row.opt_int("deleted_at")?.map(micros).transpose()?,
    })
}

fn readback(row: &impl Columns) -> Result<Readback, StateError> {
    Ok(Readback {
        source_id: row.text("source_id")?,
        external_id: row.text("external_id")?,
        dest_id: row.opt_text("dest_id")?,
        version: row.opt_int("version")?,
        updated_at: micros(row.int("updated_at")?)?,
        payload: serde_json::from_str(&row.text("payload")?)
            .map_err(|e| StateError::Corrupt(format!("read-back payload: {e}")))?,
        payload_hash: row.text("payload_hash")?,
        settles_at: micros(row.int("settles_at")?)?,
    })
}

/// An unresolved dead letter; a payload that is not JSON is kept as text.
fn dead_letter(row: &impl Columns) -> Result<DeadLetter, StateError> {
    let payload = row.text("payload")?;
    Ok(DeadLetter {
        source_id: row.text("source_id")?,
        run_id: row.text("run_id")?,
        stage: row.text("stage")?.parse()?,
        error: row.text("error")?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
        fingerprint: row.text("fingerprint")?,
        attempts: row.int("attempts")?,
        last_failed_at: micros(row.int("last_failed_at")?)?,
    })
}

fn run_with_checkpoint(row: &impl Columns) -> Result<(RunRow, Checkpoint), StateError> {
    let run = RunRow {
        run_id: row.text("run_id")?,
        sync: row.text("sync")?,
        kind: row.text("kind")?.parse()?,
        status: row.text("status")?.parse()?,
        lower_bound: row.opt_int("lower_bound")?.map(micros).transpose()?,
        watermark: micros(row.int("watermark")?)?,
        started_at: micros(row.int("started_at")?)?,
        updated_at: micros(row.int("updated_at")?)?,
        completed_at: row.opt_int("completed_at")?.map(micros).transpose()?,
    };
    let corrupt = |e: serde_json::Error| StateError::Corrupt(e.to_string());
    let checkpoint = Checkpoint {
        cursor: serde_json::from_str(&row.text("cursor")?).map_err(corrupt)?,
        counters: serde_json::from_str(&row.text("counters")?).map_err(corrupt)?,
        updated_at: micros(row.int("checkpoint_at")?)?,
    };
    Ok((run, checkpoint))
}

/// Source ids a run keeps as examples of what it wrote and dead-lettered.
pub const SAMPLE_IDS: usize = 5;

fn counters_json(counters: &Counters) -> String {
    serde_json::to_string(counters).unwrap_or_else(|_| "{}".into())
}

/// Now, to the microsecond the store keeps, so that what is returned is what
/// is read back.
fn now() -> Result<Timestamp, StateError> {
    micros(Timestamp::now().as_microsecond())
}

fn micros(value: i64) -> Result<Timestamp, StateError> {
    Timestamp::from_microsecond(value).map_err(|e| StateError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests;
