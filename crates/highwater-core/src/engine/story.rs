//! What `explain` is told about each record a run resolves: the copy that was
//! read (id, version, `updated_at`) and what became of it.

use super::*;

/// Which copy of a record an event is about.
pub(super) struct Seen {
    pub(super) id: String,
    version: Option<i64>,
    updated_at: Option<Timestamp>,
}

impl Seen {
    pub(super) fn of(record: &Extracted) -> Seen {
        match record {
            Extracted::Record(r) => Seen::of_record(r),
            Extracted::Invalid { id, .. } => Seen {
                id: id.clone(),
                version: None,
                updated_at: None,
            },
        }
    }

    pub(super) fn of_record(record: &SourceRecord) -> Seen {
        Seen {
            id: record.id().to_owned(),
            version: record.version,
            updated_at: Some(record.updated_at()),
        }
    }

    /// The event `explain` shows for this copy, read on the run's `page`.
    pub(super) fn event(self, page: Option<u64>, resolution: &Resolution) -> RecordEvent {
        let (action, dest_id, attempts, detail) = match resolution {
            Resolution::Written {
                ledger, attempts, ..
            } => (
                RecordAction::Written,
                ledger.dest_id.clone(),
                *attempts,
                None,
            ),
            Resolution::Unchanged { ledger } => (
                RecordAction::Unchanged,
                ledger.as_ref().and_then(|l| l.dest_id.clone()),
                0,
                None,
            ),
            Resolution::Stale { ledger } => (
                RecordAction::Stale,
                ledger.as_ref().and_then(|l| l.dest_id.clone()),
                0,
                None,
            ),
            Resolution::DeadLettered(letter) => (
                RecordAction::DeadLettered,
                None,
                0,
                Some(format!("{}: {}", letter.stage, letter.error)),
            ),
            Resolution::StillDeadLettered => (RecordAction::StillDeadLettered, None, 0, None),
            Resolution::Deleted { ledger, attempts } => (
                RecordAction::Deleted,
                ledger.dest_id.clone(),
                *attempts,
                (*attempts == 0).then(|| "not at the destination: tombstone only".to_owned()),
            ),
        };
        RecordEvent {
            source_id: self.id,
            page,
            action,
            version: self.version,
            updated_at: self.updated_at,
            dest_id,
            attempts,
            detail,
        }
    }
}
