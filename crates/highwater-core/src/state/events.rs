//! One record's story, for `highwater explain`: what happened to it in each run
//! (one row per commit holding that commit's events as one JSONB array, so that
//! the log costs an append per page rather than an index insert per record, and
//! is pruned by age), and where it stands now (ledger, dead letter, a write
//! announced and not confirmed). Reading one record's story scans the retained
//! rows; that is an operator's question, asked rarely, and worth less than the
//! write path.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{DeadLetterResolution, DeadLetterStage, Intent, LedgerEntry};

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
    /// Written again at the end of a run over a late write that may have
    /// set it back: read back and found behind, or, where it cannot be read
    /// back, sent again once that write could no longer land.
    Repaired,
    /// Deleted at the source, and so at the destination (or never written
    /// there): the ledger keeps a tombstone.
    Deleted,
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
            RecordAction::Deleted => "deleted",
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

/// A record's dead letter, resolved or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterState {
    pub stage: DeadLetterStage,
    pub error: String,
    pub attempts: i64,
    pub first_failed_at: Timestamp,
    pub last_failed_at: Timestamp,
    /// When a later write of the record succeeded, or it was discarded.
    pub resolved_at: Option<Timestamp>,
    /// Which of the two; `None` while it is unresolved.
    pub resolution: Option<DeadLetterResolution>,
}

/// Where one record stands in the state store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordState {
    /// What was last written (or confirmed unchanged), staged rows included.
    pub ledger: Option<LedgerEntry>,
    pub dead_letter: Option<DeadLetterState>,
    /// A write announced and not known to have settled: the destination may
    /// hold this version.
    pub announced: Option<Intent>,
    /// Written again while an older write may still land: read back before
    /// the run completes.
    pub to_read_back: bool,
}

/// An event as `explain` shows it: with the run and the commit's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoryEvent {
    pub run_id: String,
    pub at: Timestamp,
    pub event: RecordEvent,
}

/// An event as stored: source id, page, action, version, `updated_at`,
/// destination id, attempts, detail.
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

/// A commit's events as they are stored.
pub(super) fn event_rows(events: &[RecordEvent]) -> Vec<EventRow<'_>> {
    events
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
        .collect()
}

/// An event as read back: [`EventRow`] with owned values.
pub(super) type StoredEvent = (
    String,
    Option<u64>,
    RecordAction,
    Option<i64>,
    Option<i64>,
    Option<String>,
    u32,
    Option<String>,
);
