//! Owns the state store: runs and their history, checkpoints, the ledger, dead
//! letters and the audit log of operator actions, in embedded SQLite (WAL,
//! synchronous commits, versioned migrations).
//! This is the only module that speaks SQL.
//! Invariants: a page's ledger rows (staged, then merged into the ledger in key
//! order), dead letters and checkpoint are committed in one transaction; a
//! completed run leaves no staged rows; timestamps are integer epoch microseconds; the high-water mark is
//! the watermark of the last completed incremental run, derived, never stored apart;
//! kinds, statuses, outcomes, stages, resolutions and audit actions are stored by
//! their names in [`names`].

mod audit;
mod dlq;
mod events;
mod history;
pub mod lock;
mod names;
mod private;
mod reset;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use audit::{AuditEntry, AuditRecord, AuditScope};
pub use dlq::{DeadLetterDetail, DeadLetterSummary, DiscardScope, Discarded, Resolved};
pub use events::{DeadLetterState, RecordAction, RecordEvent, RecordState, StoryEvent};
pub use history::{Invocation, InvocationEnd, RunRecord, Samples};
pub use lock::{LockError, SyncLock, acquire};
pub use names::{
    AuditAction, DeadLetterResolution, DeadLetterStage, InvocationOutcome, RunKind, RunStatus,
    UnknownName,
};
pub use reset::{HighWaterMark, ResetDone, ResetError, ResetRequest};

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

/// Rows go to SQLite as one JSON array per table, unpacked there by `jsonb_each`
/// (which parses the text once and hands each row over as binary JSON): one cached
/// statement whatever the number of rows, where a statement with a placeholder per
/// value would be prepared again for every new row count.
fn json_rows<T: Serialize>(rows: &[T]) -> Result<String, StateError> {
    serde_json::to_string(rows).map_err(|e| StateError::Corrupt(e.to_string()))
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
}

impl SyncStatus {
    pub fn high_water_mark(&self) -> Option<Timestamp> {
        self.mark.at()
    }
}

/// The embedded state store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "intent_batches",
        include_str!("../../migrations/0002_intent_batches.sql"),
    ),
    (
        3,
        "ledger_staging",
        include_str!("../../migrations/0003_ledger_staging.sql"),
    ),
    (
        4,
        "late_writes",
        include_str!("../../migrations/0004_late_writes.sql"),
    ),
    (
        5,
        "record_events",
        include_str!("../../migrations/0005_record_events.sql"),
    ),
    (
        6,
        "run_history",
        include_str!("../../migrations/0006_run_history.sql"),
    ),
    (
        7,
        "audit_log",
        include_str!("../../migrations/0007_audit_log.sql"),
    ),
    (
        8,
        "resets",
        include_str!("../../migrations/0008_resets.sql"),
    ),
];

/// Source ids a run keeps as examples of what it wrote and dead-lettered.
pub const SAMPLE_IDS: usize = 5;

/// Everything [`Store::commit_page`] changes, as one statement list. The
/// placeholders are plain `?`, which sqlx fills across the whole list in the order
/// they appear; numbered ones would stop binding at the first gap in a statement.
/// Ledger rows are staged, one row per commit; [`MERGE_STAGED`] moves them into
/// the ledger.
const COMMIT_PAGE: &str = "
INSERT INTO intents (sync, batch, run_id, rows)
  SELECT sync, batch, run_id, rows FROM (SELECT ? AS sync, ? AS batch, ? AS run_id, ? AS rows)
  WHERE batch IS NOT NULL;
DELETE FROM intents WHERE sync = ? AND batch IN (SELECT value FROM json_each(?));
INSERT INTO ledger_staged (sync, seq, rows, written_at)
  SELECT p.sync, COALESCE((SELECT MAX(seq) FROM ledger_staged WHERE sync = p.sync), 0) + 1, p.rows, p.now
  FROM (SELECT ? AS sync, jsonb(?) AS rows, ? AS now) AS p
  WHERE json_array_length(p.rows) > 0;
-- A write resolves the record's dead letter; one discarded earlier too, since the
-- record is now at the destination, which says more than the discard.
UPDATE dead_letters SET resolved_at = ?, resolution = ?, audit_id = NULL
  WHERE (resolved_at IS NULL OR resolution = ?) AND sync = ?
    AND source_id IN (SELECT value FROM json_each(?));
INSERT INTO dead_letters (sync, source_id, run_id, stage, error, payload, fingerprint, attempts, first_failed_at, last_failed_at)
  SELECT p.sync, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, p.now, p.now
  FROM (SELECT ? AS sync, ? AS now) AS p, jsonb_each(?) WHERE true ORDER BY key
  ON CONFLICT (sync, source_id) DO UPDATE SET
    run_id = excluded.run_id,
    stage = excluded.stage,
    error = excluded.error,
    payload = excluded.payload,
    fingerprint = excluded.fingerprint,
    attempts = dead_letters.attempts + excluded.attempts,
    last_failed_at = excluded.last_failed_at,
    resolved_at = NULL,
    resolution = NULL,
    audit_id = NULL;
UPDATE checkpoints SET cursor = COALESCE(?, cursor), counters = ?, updated_at = ? WHERE run_id = ?;
-- The run's examples: the first ids of its ledger rows and dead letters, up to
-- five (SAMPLE_IDS); once it has five, a commit only reads the array's length.
UPDATE runs SET updated_at = ?,
    sample_written = CASE WHEN json_array_length(sample_written) < 5 THEN (
      SELECT json_group_array(id) FROM (
        SELECT id FROM (
          SELECT 0 AS part, key AS place, value AS id FROM json_each(runs.sample_written)
          UNION ALL
          SELECT 1, key, value FROM json_each(?)
            WHERE value NOT IN (SELECT value FROM json_each(runs.sample_written)))
        ORDER BY part, place LIMIT 5))
      ELSE sample_written END,
    sample_dead_lettered = CASE WHEN json_array_length(sample_dead_lettered) < 5 THEN (
      SELECT json_group_array(id) FROM (
        SELECT id FROM (
          SELECT 0 AS part, key AS place, value AS id FROM json_each(runs.sample_dead_lettered)
          UNION ALL
          SELECT 1, key, value FROM json_each(?)
            WHERE value NOT IN (SELECT value FROM json_each(runs.sample_dead_lettered)))
        ORDER BY part, place LIMIT 5))
      ELSE sample_dead_lettered END
  WHERE run_id = ?;
INSERT INTO intents (sync, batch, run_id, rows)
  SELECT sync, batch, run_id, rows FROM (SELECT ? AS sync, ? AS batch, ? AS run_id, ? AS rows)
  WHERE batch IS NOT NULL;
INSERT INTO readbacks (sync, source_id, run_id, external_id, dest_id, version, updated_at, payload, payload_hash, settles_at)
  SELECT p.sync, value ->> 0, p.run_id, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7
  FROM (SELECT ? AS sync, ? AS run_id) AS p, jsonb_each(?) WHERE true ORDER BY key
  ON CONFLICT (sync, source_id) DO UPDATE SET
    run_id = excluded.run_id,
    external_id = excluded.external_id,
    dest_id = excluded.dest_id,
    version = excluded.version,
    updated_at = excluded.updated_at,
    payload = excluded.payload,
    payload_hash = excluded.payload_hash,
    settles_at = excluded.settles_at;
";

/// Moves a sync's staged ledger rows into the ledger, in one pass over its B-tree:
/// by source id, so each insert starts near the last one, and within an id by
/// commit and place in the commit, so the later copy of a record wins.
const MERGE_STAGED: &str = "
INSERT INTO ledger (sync, source_id, external_id, dest_id, version, updated_at, payload_hash, run_id, written_at)
  SELECT s.sync, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, s.written_at
  FROM ledger_staged AS s, jsonb_each(s.rows)
  WHERE s.sync = ?1 ORDER BY value ->> 0, s.seq, key
  ON CONFLICT (sync, source_id) DO UPDATE SET
    external_id = excluded.external_id,
    dest_id = COALESCE(excluded.dest_id, ledger.dest_id),
    version = excluded.version,
    updated_at = excluded.updated_at,
    payload_hash = excluded.payload_hash,
    run_id = excluded.run_id,
    written_at = excluded.written_at;
DELETE FROM ledger_staged WHERE sync = ?1;
";

impl Store {
    /// Opens (creating if needed) and migrates the store.
    pub async fn open(path: &Path) -> Result<Store, StateError> {
        let shown = path.display().to_string();
        let io = |e| StateError::Open {
            path: shown.clone(),
            source: sqlx::Error::Io(e),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            private::create_dir_all(dir).map_err(io)?;
        }
        // SQLite creates the database as 0644, and its `-wal` and `-shm` files with
        // the database's mode: an empty file made here first is what it then opens.
        match private::file_options()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StateError::Open {
                path: shown.clone(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Statement journals (every multi-row upsert keeps one) stay in memory
            // instead of being written to a temporary file.
            .pragma("temp_store", "memory")
            // A merge of staged ledger rows rewrites most of the ledger's pages in
            // one commit. Checkpointing every 10,000 pages (about 40 MiB of WAL)
            // instead of SQLite's 1,000 copies a page hit by several commits back
            // into the database once, not once per commit (about a quarter less
            // time per commit at 100,000 records in `benches/state.rs`, measured
            // when every commit inserted its rows straight into the ledger).
            .pragma("wal_autocheckpoint", "10000")
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StateError::Open {
                path: shown.clone(),
                source,
            })?;
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&pool)
            .await
            .map_err(|source| StateError::Migrate {
                path: shown,
                source,
            })?;
        Ok(Store { pool })
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    /// The open run of a sync, if any.
    pub async fn open_run(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        let row = sqlx::query(
            "SELECT r.*, c.cursor, c.counters, c.updated_at AS checkpoint_at
             FROM runs r JOIN checkpoints c USING (run_id)
             WHERE r.sync = ? AND r.kind = ? AND r.status = ?",
        )
        .bind(sync)
        .bind(kind.as_str())
        .bind(RunStatus::Open.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| run_with_checkpoint(&r)).transpose()
    }

    /// The last completed run of a sync, if any.
    pub async fn last_completed(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        let row = sqlx::query(
            "SELECT r.*, c.cursor, c.counters, c.updated_at AS checkpoint_at
             FROM runs r JOIN checkpoints c USING (run_id)
             WHERE r.sync = ? AND r.kind = ? AND r.status = ?
             ORDER BY r.completed_at DESC LIMIT 1",
        )
        .bind(sync)
        .bind(kind.as_str())
        .bind(RunStatus::Completed.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| run_with_checkpoint(&r)).transpose()
    }

    /// Stores a new open run, its starting checkpoint and its first invocation,
    /// before anything is fetched.
    pub async fn begin_run(&self, run: &RunRow, cursor: &Value) -> Result<(), StateError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO runs (run_id, sync, kind, status, lower_bound, watermark, started_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.run_id)
        .bind(&run.sync)
        .bind(run.kind.as_str())
        .bind(RunStatus::Open.as_str())
        .bind(run.lower_bound.map(|t| t.as_microsecond()))
        .bind(run.watermark.as_microsecond())
        .bind(run.started_at.as_microsecond())
        .bind(run.updated_at.as_microsecond())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO checkpoints (run_id, cursor, counters, updated_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&run.run_id)
        .bind(cursor.to_string())
        .bind(counters_json(&Counters::default()))
        .bind(run.started_at.as_microsecond())
        .execute(&mut *tx)
        .await?;
        history::begin_invocation(&mut tx, &run.run_id, run.started_at.as_microsecond()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives up a run that made no progress: nothing of it is resumed, and the next
    /// run plans its window afresh, as if it had never started; it stays in the
    /// history as failed.
    pub async fn abandon_run(&self, run_id: &str) -> Result<(), StateError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM intents WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM readbacks WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ? AND status = ?")
            .bind(RunStatus::Failed.as_str())
            .bind(Timestamp::now().as_microsecond())
            .bind(run_id)
            .bind(RunStatus::Open.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
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
        let mut known = Known::default();
        if ids.is_empty() && external_ids.is_empty() {
            return Ok(known);
        }
        let json = |list: &[&str]| {
            serde_json::to_string(list).map_err(|e| StateError::Corrupt(e.to_string()))
        };
        // One statement, one trip to SQLite's thread, for both tables.
        let rows = sqlx::query(
            "SELECT 0 AS kind, source_id, external_id, dest_id, version, updated_at, payload_hash, run_id,
                    NULL AS fingerprint
             FROM ledger WHERE sync = ?1 AND source_id IN (SELECT value FROM json_each(?2))
             UNION ALL
             SELECT 1, source_id, NULL, NULL, NULL, NULL, NULL, NULL, fingerprint
             FROM dead_letters
             WHERE sync = ?1 AND (resolved_at IS NULL OR resolution = ?4)
               AND source_id IN (SELECT value FROM json_each(?2))
             UNION ALL
             SELECT 2, source_id, external_id, NULL, NULL, NULL, NULL, NULL, NULL
             FROM ledger WHERE sync = ?1 AND external_id IN (SELECT value FROM json_each(?3))",
        )
        .bind(sync)
        .bind(json(ids)?)
        .bind(json(external_ids)?)
        .bind(DeadLetterResolution::Discarded.as_str())
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            match row.try_get::<i64, _>("kind")? {
                0 => {
                    let entry = ledger_entry(&row)?;
                    known.ledger.insert(entry.source_id.clone(), entry);
                }
                1 => {
                    known
                        .dead
                        .insert(row.try_get("source_id")?, row.try_get("fingerprint")?);
                }
                _ => {
                    known
                        .holders
                        .insert(row.try_get("external_id")?, row.try_get("source_id")?);
                }
            }
        }
        Ok(known)
    }

    /// Every write a sync announced that is not known to have settled, newest
    /// version per source id: after a crash the destination may hold any of them,
    /// so nothing older may be written over them until the run completes.
    pub async fn floors(&self, sync: &str) -> Result<HashMap<String, Intent>, StateError> {
        let rows = sqlx::query(
            "SELECT e.value ->> 0 AS source_id, e.value ->> 1 AS version, e.value ->> 2 AS updated_at,
                    e.value ->> 3 AS settles_at
             FROM intents, jsonb_each(intents.rows) AS e
             WHERE intents.sync = ?",
        )
        .bind(sync)
        .fetch_all(&self.pool)
        .await?;
        let mut floors: HashMap<String, Intent> = HashMap::new();
        for row in rows {
            let settles_at: Option<i64> = row.try_get("settles_at")?;
            let intent = Intent {
                source_id: row.try_get("source_id")?,
                version: row.try_get("version")?,
                updated_at: micros(row.try_get("updated_at")?)?,
                settles_at: settles_at.map(micros).transpose()?,
            };
            match floors.get_mut(&intent.source_id) {
                Some(floor) => {
                    // The newest version is the floor; it settles when the last
                    // of them has (or never, as far as anyone knows).
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
        Ok(floors)
    }

    /// The records of a sync waiting to be read back, whatever invocation wrote them.
    pub async fn readbacks(&self, sync: &str) -> Result<Vec<Readback>, StateError> {
        let rows = sqlx::query(
            "SELECT source_id, external_id, dest_id, version, updated_at, payload, payload_hash, settles_at
             FROM readbacks WHERE sync = ? ORDER BY settles_at, source_id",
        )
        .bind(sync)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload")?;
                Ok(Readback {
                    source_id: row.try_get("source_id")?,
                    external_id: row.try_get("external_id")?,
                    dest_id: row.try_get("dest_id")?,
                    version: row.try_get("version")?,
                    updated_at: micros(row.try_get("updated_at")?)?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| StateError::Corrupt(format!("read-back payload: {e}")))?,
                    payload_hash: row.try_get("payload_hash")?,
                    settles_at: micros(row.try_get("settles_at")?)?,
                })
            })
            .collect()
    }

    /// Commits what the run has resolved (ledger rows, dead letters, retired
    /// intent batches), the writes it is about to send (a new batch) and — when the
    /// frontier moved — the advanced checkpoint, in one transaction.
    pub async fn commit_page(
        &self,
        sync: &str,
        run_id: &str,
        page: &PageCommit,
        cursor: Option<&Value>,
        counters: &Counters,
    ) -> Result<(), StateError> {
        let now = Timestamp::now().as_microsecond();
        let batch = page.announce.as_ref().filter(|b| !b.intents.is_empty());
        let intents = intent_rows(batch);
        let unsettled = page.unsettled.as_ref().filter(|b| !b.intents.is_empty());
        let readbacks: Vec<_> = page
            .readbacks
            .iter()
            .map(|r| {
                (
                    &r.source_id,
                    &r.external_id,
                    &r.dest_id,
                    r.version,
                    r.updated_at.as_microsecond(),
                    r.payload.to_string(),
                    &r.payload_hash,
                    r.settles_at.as_microsecond(),
                )
            })
            .collect();
        let ledger: Vec<_> = page
            .ledger
            .iter()
            .map(|e| {
                (
                    &e.source_id,
                    &e.external_id,
                    &e.dest_id,
                    e.version,
                    e.updated_at.as_microsecond(),
                    &e.payload_hash,
                    &e.run_id,
                )
            })
            .collect();
        let dead_letters: Vec<_> = page
            .dead_letters
            .iter()
            .map(|d| {
                (
                    &d.source_id,
                    &d.run_id,
                    d.stage.as_str(),
                    &d.error,
                    d.payload.to_string(),
                    &d.fingerprint,
                    d.attempts,
                )
            })
            .collect();
        let sample_written = sample_ids(page.ledger.iter().map(|e| e.source_id.as_str()));
        let sample_dead = sample_ids(page.dead_letters.iter().map(|d| d.source_id.as_str()));
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // One statement list, one trip to SQLite's thread; a part with no rows
        // unpacks an empty array and changes nothing.
        sqlx::query(COMMIT_PAGE)
            .bind(sync)
            .bind(batch.map(|b| &b.id))
            .bind(run_id)
            .bind(json_rows(&intents)?)
            .bind(sync)
            .bind(json_rows(&page.retire)?)
            .bind(sync)
            .bind(json_rows(&ledger)?)
            .bind(now)
            .bind(now)
            .bind(DeadLetterResolution::Written.as_str())
            .bind(DeadLetterResolution::Discarded.as_str())
            .bind(sync)
            .bind(json_rows(&page.resolved)?)
            .bind(sync)
            .bind(now)
            .bind(json_rows(&dead_letters)?)
            .bind(cursor.map(Value::to_string))
            .bind(counters_json(counters))
            .bind(now)
            .bind(run_id)
            .bind(now)
            .bind(json_rows(&sample_written)?)
            .bind(json_rows(&sample_dead)?)
            .bind(run_id)
            .bind(sync)
            .bind(unsettled.map(|b| &b.id))
            .bind(run_id)
            .bind(json_rows(&intent_rows(unsettled))?)
            .bind(sync)
            .bind(run_id)
            .bind(json_rows(&readbacks)?)
            .execute(&mut *tx)
            .await?;
        events::append(&mut tx, sync, run_id, now, &page.events).await?;
        if page.merge {
            merge_staged(&mut tx, sync).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Merges ledger rows staged by an earlier invocation of `sync`, so that
    /// [`Store::known`] sees them; a no-op, without a write, when there are none.
    pub async fn merge_staged(&self, sync: &str) -> Result<(), StateError> {
        let staged: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledger_staged WHERE sync = ?)")
                .bind(sync)
                .fetch_one(&self.pool)
                .await?;
        if staged {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            merge_staged(&mut tx, sync).await?;
            tx.commit().await?;
        }
        Ok(())
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
        let now = Timestamp::now().as_microsecond();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        update_checkpoint(&mut tx, run_id, Some(cursor), counters, now).await?;
        let (sync, kind): (String, String) =
            sqlx::query_as("SELECT sync, kind FROM runs WHERE run_id = ?")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
        merge_staged(&mut tx, &sync).await?;
        // Every announced write of the run has settled: none is a floor any more.
        // An incremental run also settled the floors it found left by runs that
        // ended (it read everything since); a run of another kind read only its
        // own window, and an open run's floors are that run's to settle.
        let incremental = kind == RunKind::Incremental.as_str();
        for statement in [
            "DELETE FROM intents WHERE sync = ?1 AND (run_id = ?2 OR (?3 AND run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = ?1 AND status = ?4)))",
            "DELETE FROM readbacks WHERE sync = ?1 AND (run_id = ?2 OR (?3 AND run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = ?1 AND status = ?4)))",
        ] {
            sqlx::query(statement)
                .bind(&sync)
                .bind(run_id)
                .bind(incremental)
                .bind(RunStatus::Open.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if !unsettled.is_empty() {
            let batch = IntentBatch {
                id: format!("unsettled-{run_id}"),
                intents: unsettled.to_vec(),
            };
            sqlx::query("INSERT INTO intents (sync, batch, run_id, rows) VALUES (?, ?, ?, ?)")
                .bind(&sync)
                .bind(&batch.id)
                .bind(run_id)
                .bind(json_rows(&intent_rows(Some(&batch)))?)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE runs SET status = ?, completed_at = ?, updated_at = ? WHERE run_id = ?",
        )
        .bind(RunStatus::Completed.as_str())
        .bind(now)
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        // The invocation's end goes with the completion, so a completed run never
        // shows an invocation without one; its retries follow in `end_invocation`.
        history::complete_invocation(&mut tx, run_id, cursor, counters, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn status(&self, sync: &str) -> Result<SyncStatus, StateError> {
        let dead_letters: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM dead_letters WHERE sync = ? AND resolved_at IS NULL",
        )
        .bind(sync)
        .fetch_one(&self.pool)
        .await?;
        let ledger_records: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (
               SELECT source_id FROM ledger WHERE sync = ?1
               UNION SELECT value ->> 0 FROM ledger_staged AS s, jsonb_each(s.rows) WHERE s.sync = ?1)",
        )
        .bind(sync)
        .fetch_one(&self.pool)
        .await?;
        Ok(SyncStatus {
            open_run: self.open_run(sync, RunKind::Incremental).await?,
            last_completed: self.last_completed(sync, RunKind::Incremental).await?,
            dead_letters,
            ledger_records,
            mark: self.high_water_mark(sync).await?,
            other_open: self.open_runs_besides(sync, RunKind::Incremental).await?,
        })
    }

    /// The open runs of a sync other than its run of `kind`, oldest first.
    pub async fn open_runs_besides(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Vec<(RunRow, Checkpoint)>, StateError> {
        let rows = sqlx::query(
            "SELECT r.*, c.cursor, c.counters, c.updated_at AS checkpoint_at
             FROM runs r JOIN checkpoints c USING (run_id)
             WHERE r.sync = ? AND r.kind != ? AND r.status = ? ORDER BY r.started_at",
        )
        .bind(sync)
        .bind(kind.as_str())
        .bind(RunStatus::Open.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_with_checkpoint).collect()
    }

    /// Unresolved dead letters of a sync, oldest first.
    pub async fn dead_letters(&self, sync: &str) -> Result<Vec<DeadLetter>, StateError> {
        let rows = sqlx::query(
            "SELECT source_id, run_id, stage, error, payload, fingerprint, attempts, last_failed_at
             FROM dead_letters WHERE sync = ? AND resolved_at IS NULL ORDER BY first_failed_at, source_id",
        )
        .bind(sync)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload")?;
                Ok(DeadLetter {
                    source_id: row.try_get("source_id")?,
                    run_id: row.try_get("run_id")?,
                    stage: row.try_get::<String, _>("stage")?.parse()?,
                    error: row.try_get("error")?,
                    payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
                    fingerprint: row.try_get("fingerprint")?,
                    attempts: row.try_get("attempts")?,
                    last_failed_at: micros(row.try_get("last_failed_at")?)?,
                })
            })
            .collect()
    }

    /// The ledger of a sync, by source id, with its staged rows applied in the order
    /// a merge would apply them.
    pub async fn ledger(&self, sync: &str) -> Result<Vec<LedgerEntry>, StateError> {
        let rows = sqlx::query(
            "SELECT 0 AS seq, 0 AS place, source_id, external_id, dest_id, version, updated_at, payload_hash, run_id
             FROM ledger WHERE sync = ?1
             UNION ALL
             SELECT s.seq, key, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6
             FROM ledger_staged AS s, jsonb_each(s.rows) WHERE s.sync = ?1
             ORDER BY seq, place",
        )
        .bind(sync)
        .fetch_all(&self.pool)
        .await?;
        let mut ledger: BTreeMap<String, LedgerEntry> = BTreeMap::new();
        for row in &rows {
            let entry = ledger_entry(row)?;
            let dest_id = match ledger.get(&entry.source_id) {
                Some(earlier) if entry.dest_id.is_none() => earlier.dest_id.clone(),
                _ => entry.dest_id.clone(),
            };
            ledger.insert(entry.source_id.clone(), LedgerEntry { dest_id, ..entry });
        }
        Ok(ledger.into_values().collect())
    }
}

/// An intent batch's rows: `[source_id, version, updated_at, settles_at]`.
fn intent_rows(batch: Option<&IntentBatch>) -> Vec<(&String, Option<i64>, i64, Option<i64>)> {
    batch
        .iter()
        .flat_map(|b| &b.intents)
        .map(|i| {
            (
                &i.source_id,
                i.version,
                i.updated_at.as_microsecond(),
                i.settles_at.map(|t| t.as_microsecond()),
            )
        })
        .collect()
}

async fn merge_staged(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    sync: &str,
) -> Result<(), StateError> {
    sqlx::query(MERGE_STAGED)
        .bind(sync)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn update_checkpoint(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    run_id: &str,
    cursor: Option<&Value>,
    counters: &Counters,
    now: i64,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE checkpoints SET cursor = COALESCE(?, cursor), counters = ?, updated_at = ? WHERE run_id = ?",
    )
    .bind(cursor.map(Value::to_string))
    .bind(counters_json(counters))
    .bind(now)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE runs SET updated_at = ? WHERE run_id = ?")
        .bind(now)
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
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

fn counters_json(counters: &Counters) -> String {
    serde_json::to_string(counters).unwrap_or_else(|_| "{}".into())
}

fn micros(value: i64) -> Result<Timestamp, StateError> {
    Timestamp::from_microsecond(value).map_err(|e| StateError::Corrupt(e.to_string()))
}

fn ledger_entry(row: &sqlx::sqlite::SqliteRow) -> Result<LedgerEntry, StateError> {
    Ok(LedgerEntry {
        source_id: row.try_get("source_id")?,
        external_id: row.try_get("external_id")?,
        dest_id: row.try_get("dest_id")?,
        version: row.try_get("version")?,
        updated_at: micros(row.try_get("updated_at")?)?,
        payload_hash: row.try_get("payload_hash")?,
        run_id: row.try_get("run_id")?,
    })
}

fn run_with_checkpoint(row: &sqlx::sqlite::SqliteRow) -> Result<(RunRow, Checkpoint), StateError> {
    let lower: Option<i64> = row.try_get("lower_bound")?;
    let completed: Option<i64> = row.try_get("completed_at")?;
    let run = RunRow {
        run_id: row.try_get("run_id")?,
        sync: row.try_get("sync")?,
        kind: row.try_get::<String, _>("kind")?.parse()?,
        status: row.try_get::<String, _>("status")?.parse()?,
        lower_bound: lower.map(micros).transpose()?,
        watermark: micros(row.try_get("watermark")?)?,
        started_at: micros(row.try_get("started_at")?)?,
        updated_at: micros(row.try_get("updated_at")?)?,
        completed_at: completed.map(micros).transpose()?,
    };
    let cursor: String = row.try_get("cursor")?;
    let counters: String = row.try_get("counters")?;
    let checkpoint = Checkpoint {
        cursor: serde_json::from_str(&cursor).map_err(|e| StateError::Corrupt(e.to_string()))?,
        counters: serde_json::from_str(&counters)
            .map_err(|e| StateError::Corrupt(e.to_string()))?,
        updated_at: micros(row.try_get("checkpoint_at")?)?,
    };
    Ok((run, checkpoint))
}

#[cfg(test)]
mod tests;
