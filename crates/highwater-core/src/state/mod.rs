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
mod staged;
mod store;

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::is_older;

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
pub mod shared;
pub use postgres::shared::PgShared;
pub use sqlite::shared::TableSharing;
use store::Backend;
pub use store::{Committed, Store};

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
    /// The transaction shared with a destination table in the store's
    /// database was rolled back: rows the run was told are written are not.
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
    /// Where the destination's own log ends with this commit
    /// ([`Sink::position`](crate::sink::Sink::position)): kept per sync.
    pub sink_position: Option<String>,
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

/// A sync's announced writes that may not have settled, one floor per record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Floors {
    /// Each record's newest write announced, which nothing older may be
    /// written over; it settles when the last of the record's writes has (or
    /// never, as far as anyone knows).
    pub newest: HashMap<String, Intent>,
    /// The oldest version announced of each record announced at several: a
    /// write that repeats the newest may still be overtaken by it.
    pub oldest: HashMap<String, (Option<i64>, Timestamp)>,
}

impl Floors {
    fn add(&mut self, intent: Intent) {
        let Some(floor) = self.newest.get_mut(&intent.source_id) else {
            self.newest.insert(intent.source_id.clone(), intent);
            return;
        };
        let mut oldest = self
            .oldest
            .get(&intent.source_id)
            .copied()
            .unwrap_or((floor.version, floor.updated_at));
        fold(floor, &mut oldest, intent);
        if is_older(oldest.0, oldest.1, floor.version, floor.updated_at) {
            self.oldest.insert(floor.source_id.clone(), oldest);
        }
    }
}

/// Folds `intent` into the writes of its record kept so far: `newest`, which
/// settles when the last of them has (or never, as far as anyone knows), and
/// the `oldest` version below it.
fn fold(newest: &mut Intent, oldest: &mut (Option<i64>, Timestamp), intent: Intent) {
    let settles_at = match (newest.settles_at, intent.settles_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    };
    if is_older(intent.version, intent.updated_at, oldest.0, oldest.1) {
        *oldest = (intent.version, intent.updated_at);
    }
    if is_older(
        newest.version,
        newest.updated_at,
        intent.version,
        intent.updated_at,
    ) {
        *newest = intent;
    }
    newest.settles_at = settles_at;
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
