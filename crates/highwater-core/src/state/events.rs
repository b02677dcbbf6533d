//! What happened to each record in each run, kept for `highwater explain`: one
//! row per commit holding that commit's events as one JSONB array, so that the
//! log costs an append per page rather than an index insert per record, and is
//! pruned by age. Reading one record's story scans the retained rows; that is
//! an operator's question, asked rarely, and worth less than the write path.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::{Row, Sqlite, Transaction};

use super::{StateError, Store, json_rows, micros};

/// What a run did with one copy of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordAction {
    /// Written to the destination.
    Written,
    /// The destination already had this payload.
    Unchanged,
    /// Older than what was written (or what the destination holds): skipped.
    Stale,
    /// Could not be written; the reason says why.
    DeadLettered,
    /// Still the payload that was dead-lettered before: not tried again.
    StillDeadLettered,
    /// Read back after a late write had set it back, and written again.
    Repaired,
}

impl RecordAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordAction::Written => "written",
            RecordAction::Unchanged => "unchanged",
            RecordAction::Stale => "stale",
            RecordAction::DeadLettered => "dead_lettered",
            RecordAction::StillDeadLettered => "still_dead_lettered",
            RecordAction::Repaired => "repaired",
        }
    }
}

/// One record's event in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEvent {
    pub source_id: String,
    /// The page of the run that read it, counted from 1 across invocations;
    /// `None` for what the run did at its end (a repair).
    pub page: Option<u64>,
    pub action: RecordAction,
    pub version: Option<i64>,
    /// `None` for a record the source served without a usable `updated_at`.
    pub updated_at: Option<Timestamp>,
    pub dest_id: Option<String>,
    /// Requests the write took (0 when nothing was sent).
    pub attempts: u32,
    /// The dead letter's reason, or what was repaired.
    pub detail: Option<String>,
}

/// An event as `explain` shows it: with the run and the commit's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoryEvent {
    pub run_id: String,
    pub at: Timestamp,
    pub event: RecordEvent,
}

type EventRow<'a> = (
    &'a str,
    Option<u64>,
    RecordAction,
    Option<i64>,
    Option<i64>,
    &'a Option<String>,
    u32,
    &'a Option<String>,
);

/// An event as read back: [`EventRow`] with owned values.
type StoredEvent = (
    String,
    Option<u64>,
    RecordAction,
    Option<i64>,
    Option<i64>,
    Option<String>,
    u32,
    Option<String>,
);

/// Appends a commit's events, in the commit's transaction.
pub(super) async fn append(
    tx: &mut Transaction<'_, Sqlite>,
    sync: &str,
    run_id: &str,
    now: i64,
    events: &[RecordEvent],
) -> Result<(), StateError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<EventRow<'_>> = events
        .iter()
        .map(|e| {
            (
                e.source_id.as_str(),
                e.page,
                e.action,
                e.version,
                e.updated_at.map(Timestamp::as_microsecond),
                &e.dest_id,
                e.attempts,
                &e.detail,
            )
        })
        .collect();
    sqlx::query(
        "INSERT INTO record_events (sync, at, run_id, seq, events)
         SELECT ?1, ?2, ?3, COALESCE(MAX(seq), 0) + 1, jsonb(?4)
         FROM record_events WHERE sync = ?1 AND at = ?2 AND run_id = ?3",
    )
    .bind(sync)
    .bind(now)
    .bind(run_id)
    .bind(json_rows(&rows)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Every retained event of one record, oldest first.
    pub async fn record_story(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<Vec<StoryEvent>, StateError> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.at, json(e.value) AS event
             FROM record_events AS r, jsonb_each(r.events) AS e
             WHERE r.sync = ? AND e.value ->> 0 = ?
             ORDER BY r.at, r.seq, e.key",
        )
        .bind(sync)
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("event")?;
                let (source_id, page, action, version, updated_at, dest_id, attempts, detail): StoredEvent =
                    serde_json::from_str(&text)
                    .map_err(|e| StateError::Corrupt(format!("record event: {e}")))?;
                Ok(StoryEvent {
                    run_id: row.try_get("run_id")?,
                    at: micros(row.try_get("at")?)?,
                    event: RecordEvent {
                        source_id,
                        page,
                        action,
                        version,
                        updated_at: updated_at.map(micros).transpose()?,
                        dest_id,
                        attempts,
                        detail,
                    },
                })
            })
            .collect()
    }

    /// Forgets the events of `sync` older than `before`; returns how many
    /// commits' worth went.
    pub async fn prune_events(&self, sync: &str, before: Timestamp) -> Result<u64, StateError> {
        let done = sqlx::query("DELETE FROM record_events WHERE sync = ? AND at < ?")
            .bind(sync)
            .bind(before.as_microsecond())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
