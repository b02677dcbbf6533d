//! Record events in SQLite, one row of JSONB per commit, written with the
//! rest of the commit (`commit.rs`) as this module encodes it.

use super::*;

/// A commit's events as SQLite's JSONB (<https://sqlite.org/jsonb.html>), an
/// array of one array per event ([`EventRow`](crate::state::events)'s
/// fields), for the commit to store as it is. Sent as JSON text, each string
/// was checked for escapes as it was written and parsed again by SQLite's
/// `jsonb()`: a sync of 50,000 records into JSON Lines takes 3% fewer
/// instructions (cachegrind). No crate writes this format; it is SQLite's
/// own, documented and kept stable by SQLite.
pub(super) fn events_jsonb(events: &[RecordEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + events.len() * 64);
    let mut event = Vec::with_capacity(256);
    jsonb::large_array(&mut out, |out| {
        for e in events {
            event.clear();
            jsonb::text(&mut event, &e.source_id);
            jsonb::int_or_null(&mut event, e.page);
            jsonb::text(&mut event, e.action.as_str());
            jsonb::int_or_null(&mut event, e.version);
            jsonb::int_or_null(&mut event, e.updated_at.map(Timestamp::as_microsecond));
            jsonb::text_or_null(&mut event, e.dest_id.as_deref());
            jsonb::int(&mut event, e.attempts);
            jsonb::text_or_null(&mut event, e.detail.as_deref());
            jsonb::header(out, jsonb::ARRAY, event.len());
            out.extend_from_slice(&event);
        }
    });
    out
}

/// The few JSONB elements events are made of. An element is a header — its
/// type in the low four bits of the first byte, and its payload's size in the
/// high four (up to 11), or in the 1, 2, 4 or 8 bytes that follow (12 to 15)
/// — then its payload.
mod jsonb {
    const NULL: u8 = 0;
    const INT: u8 = 3;
    /// Text as it is, which SQLite escapes where JSON needs it when it reads.
    const TEXT_RAW: u8 = 10;
    pub const ARRAY: u8 = 11;

    pub fn header(out: &mut Vec<u8>, kind: u8, size: usize) {
        match size {
            0..=11 => out.push(((size as u8) << 4) | kind),
            12..=0xff => out.extend_from_slice(&[0xc0 | kind, size as u8]),
            0x100..=0xffff => {
                out.push(0xd0 | kind);
                out.extend_from_slice(&(size as u16).to_be_bytes());
            }
            _ => {
                out.push(0xf0 | kind);
                out.extend_from_slice(&(size as u64).to_be_bytes());
            }
        }
    }

    /// An array whose elements `fill` writes, its size (eight bytes, more
    /// than it may need, which the format allows) written once they are.
    pub fn large_array(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        out.push(0xf0 | ARRAY);
        out.extend_from_slice(&[0; 8]);
        fill(out);
        let size = (out.len() - start - 9) as u64;
        out[start + 1..start + 9].copy_from_slice(&size.to_be_bytes());
    }

    pub fn text(out: &mut Vec<u8>, text: &str) {
        header(out, TEXT_RAW, text.len());
        out.extend_from_slice(text.as_bytes());
    }

    pub fn text_or_null(out: &mut Vec<u8>, text: Option<&str>) {
        match text {
            Some(text) => self::text(out, text),
            None => out.push(NULL),
        }
    }

    pub fn int(out: &mut Vec<u8>, value: impl itoa::Integer) {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(value);
        header(out, INT, digits.len());
        out.extend_from_slice(digits.as_bytes());
    }

    pub fn int_or_null(out: &mut Vec<u8>, value: Option<impl itoa::Integer>) {
        match value {
            Some(value) => int(out, value),
            None => out.push(NULL),
        }
    }
}

impl SqliteStore {
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

    /// Where one record stands: its ledger row (the latest, staged or merged),
    /// its dead letter, a write announced for it and not settled.
    pub async fn record_state(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<RecordState, StateError> {
        let mut tx = self.pool.begin().await?;
        let runs = ledger::runs_of(&mut tx, sync).await?;
        let mut found =
            ledger::lookup(&mut tx, &self.runs, false, sync, &runs, &[source_id]).await?;
        let mut staged = scan::Staged::read(&mut tx, sync, Some(source_id)).await?;
        tx.commit().await?;
        let mut row = found.remove(source_id);
        if let Some(later) = staged.next()? {
            row = Some(runs::fold(row, later));
        }
        let ledger = row.map(|row| row.entry);
        let dead_letter = sqlx::query(
            "SELECT stage, error, attempts, first_failed_at, last_failed_at, resolved_at, resolution
             FROM dead_letters WHERE sync = ? AND source_id = ?",
        )
        .bind(sync)
        .bind(source_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| {
            let resolved_at: Option<i64> = row.try_get("resolved_at")?;
            let resolution: Option<String> = row.try_get("resolution")?;
            Ok::<_, StateError>(DeadLetterState {
                stage: row.try_get::<String, _>("stage")?.parse()?,
                error: row.try_get("error")?,
                attempts: row.try_get("attempts")?,
                first_failed_at: micros(row.try_get("first_failed_at")?)?,
                last_failed_at: micros(row.try_get("last_failed_at")?)?,
                resolved_at: resolved_at.map(micros).transpose()?,
                resolution: resolution.map(|r| r.parse()).transpose()?,
            })
        })
        .transpose()?;
        let announced = self.floors(sync, None).await?.newest.remove(source_id);
        let to_read_back: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM readbacks WHERE sync = ? AND source_id = ?)",
        )
        .bind(sync)
        .bind(source_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(RecordState {
            ledger,
            dead_letter,
            announced,
            to_read_back,
        })
    }

    /// Forgets the events of `sync` older than `before`; returns how many
    /// commits' worth went.
    pub async fn prune_events(&self, sync: &str, before: Timestamp) -> Result<u64, StateError> {
        let mut tx = self.writer().await?;
        let done = sqlx::query("DELETE FROM record_events WHERE sync = ? AND at < ?")
            .bind(sync)
            .bind(before.as_microsecond())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sqlx::Connection as _;

    use super::*;

    fn any_event() -> impl Strategy<Value = RecordEvent> {
        let action = prop::sample::select(vec![
            RecordAction::Written,
            RecordAction::Unchanged,
            RecordAction::Stale,
            RecordAction::DeadLettered,
            RecordAction::StillDeadLettered,
            RecordAction::Repaired,
            RecordAction::Deleted,
        ]);
        let text = "(?s).{0,300}";
        (
            (text, any::<Option<u64>>(), action, any::<Option<i64>>()),
            prop::option::of(0i64..4_000_000_000),
            prop::option::of(text),
            any::<u32>(),
            prop::option::of(text),
        )
            .prop_map(
                |((source_id, page, action, version), at, dest_id, attempts, detail)| RecordEvent {
                    source_id,
                    page,
                    action,
                    version,
                    updated_at: at.and_then(|s| Timestamp::from_second(s).ok()),
                    dest_id,
                    attempts,
                    detail,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// SQLite reads the events as the JSON they would have been as text,
        /// and finds each event's source id where `explain` looks for it.
        #[test]
        fn events_read_back_as_their_json(events in prop::collection::vec(any_event(), 0..40)) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            let blob = events_jsonb(&events);
            let (text, valid, ids): (String, bool, String) = runtime.block_on(async {
                let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
                    .await
                    .expect("sqlite");
                sqlx::query_as(
                    "SELECT json(?1), json_valid(?1, 8),
                            (SELECT json_group_array(e.value ->> 0) FROM jsonb_each(?1) AS e)",
                )
                .bind(&blob)
                .fetch_one(&mut conn)
                .await
                .expect("read")
            });
            prop_assert!(valid);
            let read: Value = serde_json::from_str(&text).expect("JSON");
            let wanted = serde_json::to_value(crate::state::events::event_rows(&events))
                .expect("events as JSON");
            prop_assert_eq!(read, wanted);
            let ids: Vec<String> = serde_json::from_str(&ids).expect("ids");
            let wanted: Vec<&str> = events.iter().map(|e| e.source_id.as_str()).collect();
            prop_assert_eq!(ids, wanted);
        }
    }
}
