//! Owns writes that may land late, from the moment a write resolves to what the
//! run settles with the destination before it may complete. A request that got
//! no clear answer, or was in flight at a crash, can still be applied for a while
//! — over a newer version written since. Such writes are kept as unsettled; two
//! things follow, both settled by reading the record back once that while has
//! passed: a record written again meanwhile is compared with what the destination
//! holds and rewritten if it went back; a record held back below a write an
//! earlier attempt announced (a floor the ledger does not confirm) is resolved
//! only once the destination shows that write arrived.
//! Invariant: decides from what the destination answers, never from a guess: what
//! cannot be read back is named, not assumed.

use std::time::Duration;

use futures_util::StreamExt;

use jiff::Timestamp;
use serde_json::Value;
use tokio::time::Instant;

use super::decide::is_older;
use super::{
    FailureCause, HeldBack, Resolution, Runner, Seen, Unsettled, WriteJob, arrival_version, signed,
};
use crate::config::{MappingSpec, SyncSpec, TimeFormat};
use crate::http::HttpError;
use crate::mapping::MappedRecord;
use crate::mapping::comparable;
use crate::record::FieldPath;
use crate::sink::{Held, Sink, SinkError, Write};
use crate::source::extract::parse_time;
use crate::state::{
    Intent, IntentBatch, LedgerEntry, PageCommit, Readback, RecordAction, RecordEvent,
};
use crate::stop::Stop;

impl Runner<'_> {
    /// Whether all that is left of the run is records held back below a floor.
    pub(super) fn only_held_back_left(&self) -> bool {
        !self.held_back.is_empty()
            && self.frontier.unresolved() == self.held_back.len()
            && self.in_flight == 0
            && self.unclaimed.is_empty()
            && self.announced.is_empty()
            && self.held.is_empty()
            && self.waiting.is_empty()
    }

    /// Resolves the records held back below a floor: one the run has since
    /// confirmed is judged again; for the rest, the destination is read once the
    /// floor's write can no longer land. A floor it shows arrived resolves the
    /// record as stale; otherwise the run stops, naming the records, so that the
    /// next attempt reads them again (the checkpoint is still before them).
    pub(super) async fn settle_held_back(
        &mut self,
        sink: &dyn Sink,
        stop: &Stop,
    ) -> Result<(), FailureCause> {
        let mut unconfirmed = Vec::new();
        let last = self
            .held_back
            .iter()
            .filter_map(|h| self.unsettled.get(h.arrival.record.id()))
            .map(|u| u.settles_at)
            .max();
        if let Some(last) = last {
            let records = self.held_back.len();
            crate::obs::LateWritesAwaited::emit(&self.spec.name, records, last, "checked");
        }
        for HeldBack {
            seq,
            arrival,
            floor,
        } in std::mem::take(&mut self.held_back)
        {
            let id = arrival.record.id().to_owned();
            let confirmed = self
                .view
                .written(&id)
                .or_else(|| self.pages.get(&seq).and_then(|p| p.known.ledger.get(&id)))
                .is_some_and(|w| {
                    !is_older(w.version, w.updated_at, floor.version, floor.updated_at)
                });
            if confirmed {
                // The ledger holds the floor's version or newer: this copy is older.
                self.resolve(
                    seq,
                    Seen::of(&arrival.record),
                    Resolution::Stale { ledger: None },
                )?;
                continue;
            }
            if self.floors.get(&id) != Some(&floor) {
                // Another copy settled the floor: judged again without it.
                self.route(seq, arrival)?;
                continue;
            }
            let external_id = match &arrival.mapped {
                Some(Ok(mapped)) => mapped.external_id.clone(),
                _ => id.clone(),
            };
            let settles_at = self
                .unsettled
                .get(&id)
                .map_or_else(Timestamp::now, |u| u.settles_at);
            let check = check_floor(sink, stop, &self.compare, &external_id, &floor, settles_at)
                .await
                .map_err(FailureCause::Destination)?;
            match check {
                FloorCheck::Landed { dest_id } => {
                    crate::obs::FloorConfirmed {
                        sync: &self.spec.name,
                        source_id: &id,
                    }
                    .emit();
                    // The payload that went with it is unknown: the next time this
                    // version is read, it is written again rather than skipped.
                    let ledger = LedgerEntry {
                        source_id: id.clone(),
                        external_id,
                        dest_id,
                        version: floor.version,
                        updated_at: floor.updated_at,
                        payload_hash: String::new(),
                        run_id: self.run_id.clone(),
                        deleted_at: None,
                    };
                    self.floors.remove(&id);
                    self.resolve(
                        seq,
                        Seen::of(&arrival.record),
                        Resolution::Stale {
                            ledger: Some(ledger),
                        },
                    )?;
                }
                FloorCheck::Unconfirmed(why) => {
                    let served = arrival_version(&arrival);
                    unconfirmed.push(format!("{id}: the source serves {served}, but {why}"));
                }
            }
        }
        if unconfirmed.is_empty() {
            Ok(())
        } else {
            Err(FailureCause::Unconfirmed(unconfirmed))
        }
    }

    /// Reads back every record written again while an older write of it could
    /// still land, once that write has landed or never will, and writes again
    /// each one the destination holds older. Where it cannot be read back, a
    /// destination that takes a write sent again as it is (a PUT, an upsert)
    /// is sent each record again then; any other names them.
    pub(super) async fn settle_readbacks(
        &mut self,
        sink: &dyn Sink,
        stop: &Stop,
    ) -> Result<(), FailureCause> {
        let mut due: Vec<Readback> = std::mem::take(&mut self.readbacks).into_values().collect();
        if due.is_empty() {
            return Ok(());
        }
        due.sort_by(|a, b| (a.settles_at, &a.source_id).cmp(&(b.settles_at, &b.source_id)));
        if !sink.can_read_back() && !sink.resends_safely() {
            self.unverified = due.into_iter().map(|r| r.source_id).collect();
            crate::obs::RecordsUnverified {
                sync: &self.spec.name,
                source_ids: &self.unverified,
                why: "the destination cannot be read back (set read_path)",
            }
            .emit();
            return Ok(());
        }
        self.wait_for_other_runs(&mut due, stop).await?;
        if let Some(last) = due.iter().map(|r| r.settles_at).max() {
            let doing = if sink.can_read_back() {
                "read back"
            } else {
                "written again"
            };
            crate::obs::LateWritesAwaited::emit(&self.spec.name, due.len(), last, doing);
        }
        // Read back (or, where nothing can be, waited for) as many at a time
        // as the destination takes writes: one at a time, each record held
        // its run's end for a round trip or a retried write of its own.
        let readable = sink.can_read_back();
        let (compare, mapping) = (&self.compare, &self.spec.mapping);
        let found: Vec<(Readback, Result<ReadBack, SinkError>)> =
            futures_util::stream::iter(due.into_iter().map(|readback| async move {
                let found = if readable {
                    read_back(sink, stop, compare, &readback, mapping).await
                } else {
                    wait_until(readback.settles_at, stop)
                        .await
                        .map(|()| ReadBack::Behind {
                            held: "unknown".into(),
                            dest_id: None,
                        })
                };
                (readback, found)
            }))
            .buffered(sink.concurrency().max(1))
            .collect()
            .await;
        let mut behind = Vec::new();
        for (readback, found) in found {
            match found {
                Ok(ReadBack::Holds) => {}
                Ok(ReadBack::Behind { held, dest_id }) => behind.push((readback, held, dest_id)),
                Err(e) if e.is_record_level() => self.unverified_because(&readback.source_id, &e),
                Err(e) => return Err(FailureCause::Destination(e)),
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        // Another run may have written a newer version meanwhile: the
        // rewrites are announced like any write, and refused then.
        let claim = PageCommit {
            announce: Some(IntentBatch {
                id: format!("{}-rewrites", self.invocation),
                intents: behind
                    .iter()
                    .map(|(readback, ..)| Intent {
                        source_id: readback.source_id.clone(),
                        version: readback.version,
                        updated_at: readback.updated_at,
                        settles_at: None,
                    })
                    .collect(),
            }),
            ..PageCommit::default()
        };
        let refused = self
            .store
            .commit_page(&self.spec.name, &self.run_id, &claim, None, &self.counters)
            .await?
            .announced
            .refused;
        behind.retain(|(readback, ..)| !refused.contains(&readback.source_id));
        let records: Vec<MappedRecord> = behind
            .iter()
            .map(|(readback, ..)| MappedRecord {
                external_id: readback.external_id.clone(),
                payload: readback.payload.clone(),
                hash: readback.payload_hash.clone(),
            })
            .collect();
        let written: Vec<Result<crate::sink::Written, SinkError>> =
            futures_util::stream::iter(behind.iter().zip(&records).map(
                |((readback, held, dest_id), record)| {
                    sink.write(
                        Write {
                            source_id: &readback.source_id,
                            record,
                            version: readback.version,
                            updated_at: readback.updated_at,
                            known_dest_id: dest_id.as_deref().or(readback.dest_id.as_deref()),
                            encoded: None,
                            rewrite_over: Some(held.clone()),
                            unsettled_until: None,
                        },
                        stop,
                    )
                },
            ))
            .buffered(sink.concurrency().max(1))
            .collect()
            .await;
        for ((readback, held, dest_id), written) in behind.into_iter().zip(written) {
            let attempts = match written {
                Ok(written) => {
                    // An attempt without a clear answer may still land after
                    // a later run's newer write: the run's end keeps it as
                    // one that may, for the next run to settle.
                    if let Some(since) = written.unsettled_since {
                        self.unsettled_from(
                            readback.version,
                            readback.updated_at,
                            &readback.source_id,
                            since,
                        );
                    }
                    written.attempts
                }
                Err(SinkError::Superseded) => 0,
                Err(e) if e.is_record_level() => {
                    self.unverified_because(&readback.source_id, &e);
                    continue;
                }
                Err(e) => return Err(FailureCause::Destination(e)),
            };
            let detail = if readable {
                crate::obs::RecordRepaired {
                    sync: &self.spec.name,
                    source_id: &readback.source_id,
                    held: &held,
                }
                .emit();
                format!("the destination held {held}; written again")
            } else {
                "the destination cannot be read back: written again once older writes could no longer land".to_owned()
            };
            if !self.event_retention.is_zero() {
                self.closing_events.push(RecordEvent {
                    source_id: readback.source_id.clone(),
                    page: None,
                    action: RecordAction::Repaired,
                    version: readback.version,
                    updated_at: Some(readback.updated_at),
                    dest_id: dest_id.or(readback.dest_id.clone()),
                    attempts,
                    detail: Some(detail),
                });
            }
            if readable {
                self.repaired.push(readback.source_id);
            } else {
                self.resent.push(readback.source_id);
            }
        }
        Ok(())
    }

    /// Records written behind another run's write that had yet to go out are
    /// read back once that run has settled it (committed the page, or kept it
    /// as a write that may land late) and the late-write window has passed
    /// since: before, the destination may not show it yet.
    async fn wait_for_other_runs(
        &mut self,
        due: &mut [Readback],
        stop: &Stop,
    ) -> Result<(), FailureCause> {
        let mut waiting: Vec<&str> = due
            .iter()
            .map(|r| r.source_id.as_str())
            .filter(|id| self.behind_live.contains(*id))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        loop {
            let pending = self
                .store
                .pending_elsewhere(&self.spec.name, &self.run_id, &waiting)
                .await?;
            waiting.retain(|id| pending.contains(*id));
            if waiting.is_empty() {
                break;
            }
            stop.sleep(Duration::from_millis(100))
                .await
                .map_err(|r| FailureCause::Destination(SinkError::Http(HttpError::Stopped(r))))?;
        }
        let now = Timestamp::now();
        let settled = now.saturating_add(signed(self.late_window)).unwrap_or(now);
        for readback in due.iter_mut() {
            if self.behind_live.contains(&readback.source_id) {
                readback.settles_at = readback.settles_at.max(settled);
            }
        }
        due.sort_by(|a, b| (a.settles_at, &a.source_id).cmp(&(b.settles_at, &b.source_id)));
        Ok(())
    }

    /// A record the destination could not be read back for, or not written
    /// again: named in the report, with why in the logs.
    fn unverified_because(&mut self, source_id: &str, error: &SinkError) {
        let ids = [source_id.to_owned()];
        crate::obs::RecordsUnverified {
            sync: &self.spec.name,
            source_ids: &ids,
            why: &error.to_string(),
        }
        .emit();
        self.unverified.extend(ids);
    }

    /// A write succeeded. If an older write of the record may still land over
    /// it, the record is to be read back before the run completes; if this one
    /// got no clear answer at some attempt, it may itself still land, and is
    /// kept (durably, with its page) as such until it settles.
    pub(super) fn note_late_writes(
        &mut self,
        job: &WriteJob,
        ledger: &LedgerEntry,
        unsettled_since: Option<Instant>,
    ) {
        let id = job.record.id();
        let now = Timestamp::now();
        // Another running run's write settles when that run gets to it,
        // whatever the time.
        let overtaken = self.unsettled.get(id).copied().filter(|u| {
            (u.settles_at > now || self.behind_live.contains(id))
                && is_older(
                    u.version,
                    u.updated_at,
                    job.record.version,
                    job.record.updated_at(),
                )
        });
        let Some(page) = self.pages.get_mut(&job.seq) else {
            return;
        };
        if let Some(older) = overtaken
            && !self.refuses_older
        {
            let readback = Readback {
                source_id: id.to_owned(),
                external_id: ledger.external_id.clone(),
                dest_id: ledger.dest_id.clone(),
                version: ledger.version,
                updated_at: ledger.updated_at,
                payload: job.mapped.payload.clone(),
                payload_hash: ledger.payload_hash.clone(),
                settles_at: older.settles_at,
            };
            page.commit.readbacks.push(readback.clone());
            self.readbacks.insert(id.to_owned(), readback);
        }
        let Some(since) = unsettled_since else {
            return;
        };
        let settles_at =
            self.unsettled_from(job.record.version, job.record.updated_at(), id, since);
        if let Some(page) = self.pages.get_mut(&job.seq) {
            page.commit
                .unsettled
                .get_or_insert_with(IntentBatch::default)
                .intents
                .push(Intent {
                    source_id: id.to_owned(),
                    version: job.record.version,
                    updated_at: job.record.updated_at(),
                    settles_at: Some(settles_at),
                });
        }
    }

    /// A write of `source_id` whose last unclear attempt went out at `since`
    /// may land until the late-write window has passed since: kept as
    /// unsettled until then. Returns when it settles.
    fn unsettled_from(
        &mut self,
        version: Option<i64>,
        updated_at: Timestamp,
        source_id: &str,
        since: Instant,
    ) -> Timestamp {
        let now = Timestamp::now();
        let left = signed(self.late_window.saturating_sub(since.elapsed()));
        let settles_at = now.saturating_add(left).unwrap_or(now);
        let entry = self
            .unsettled
            .entry(source_id.to_owned())
            .or_insert(Unsettled {
                version,
                updated_at,
                settles_at,
            });
        entry.settles_at = entry.settles_at.max(settles_at);
        settles_at
    }
}

/// How a destination object tells which version of a record it holds.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Compare {
    /// The mapping writes the source's version into this field.
    Version(FieldPath),
    /// The mapping writes the source's `updated_at` into this field.
    UpdatedAt(FieldPath, TimeFormat),
    /// Neither: the object must hold every field of the payload as written.
    Payload,
}

impl Compare {
    pub(super) fn for_sync(spec: &SyncSpec) -> Compare {
        let target_of = |source: &FieldPath| {
            if spec.mapping.fields.is_empty() {
                // The whole record is the payload: every field keeps its place.
                return Some(source.clone());
            }
            spec.mapping
                .fields
                .iter()
                .find(|(_, from)| from == source)
                .map(|(to, _)| to.clone())
        };
        if let Some(field) = spec.source.version_field.as_ref().and_then(target_of) {
            return Compare::Version(field);
        }
        match target_of(&spec.source.updated_at_field) {
            Some(field) => Compare::UpdatedAt(field, spec.source.time_format.clone()),
            None => Compare::Payload,
        }
    }

    /// Whether `object` holds at least this version of the record (judged by
    /// `payload` when the object carries no version); `None` when it cannot tell.
    /// `held` is the version number the destination keeps beside the object,
    /// which decides where there is one.
    pub(super) fn holds_at_least(
        &self,
        object: &Value,
        held: Option<i64>,
        version: Option<i64>,
        updated_at: Timestamp,
        payload: Option<&Value>,
    ) -> Option<bool> {
        if let Some(held) = held {
            return Some(held >= version.unwrap_or_else(|| updated_at.as_microsecond()));
        }
        let stored = match self {
            Compare::Version(field) => field.get(object).and_then(|v| match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }),
            Compare::UpdatedAt(..) | Compare::Payload => None,
        };
        let stored_at = match self {
            Compare::UpdatedAt(field, format) => {
                field.get(object).and_then(|v| parse_time(v, format).ok())
            }
            Compare::Version(_) | Compare::Payload => None,
        };
        match (stored, stored_at, version) {
            (Some(stored), _, Some(version)) => Some(stored >= version),
            (_, Some(stored_at), _) => Some(!is_older(None, stored_at, None, updated_at)),
            _ => payload.map(|payload| super::holds::contains(object, payload)),
        }
    }
}

/// What reading a record back showed about a floor.
#[derive(Debug, PartialEq)]
pub(super) enum FloorCheck {
    /// The destination holds the floor's version or newer.
    Landed { dest_id: Option<String> },
    /// It does not, or cannot be read: the reason, for the person who reads it.
    Unconfirmed(String),
}

/// Reads the record back once the floor's write can no longer land, and says
/// whether that write arrived.
pub(super) async fn check_floor(
    sink: &dyn Sink,
    stop: &Stop,
    compare: &Compare,
    external_id: &str,
    floor: &Intent,
    settles_at: Timestamp,
) -> Result<FloorCheck, SinkError> {
    let version = match floor.version {
        Some(v) => format!("version {v}"),
        None => format!("the version stamped {}", floor.updated_at),
    };
    if !sink.can_read_back() {
        return Ok(FloorCheck::Unconfirmed(format!(
            "{version} was sent by an earlier attempt and the destination cannot be read back to see whether it arrived (set read_path)"
        )));
    }
    wait_until(settles_at, stop).await?;
    Ok(match sink.read_back(external_id, stop).await? {
        Held::Nothing => FloorCheck::Unconfirmed(format!(
            "{version} was sent by an earlier attempt and never arrived: the destination has no such record"
        )),
        Held::Object {
            dest_id,
            object,
            version: held,
        } => match compare.holds_at_least(&object, held, floor.version, floor.updated_at, None) {
            Some(true) => FloorCheck::Landed { dest_id },
            Some(false) => FloorCheck::Unconfirmed(format!(
                "{version} was sent by an earlier attempt and never arrived: the destination holds an older one"
            )),
            None => FloorCheck::Unconfirmed(format!(
                "{version} was sent by an earlier attempt, and the destination's object does not say which version it holds (map the source's version into a field)"
            )),
        },
    })
}

/// What reading back a record written again showed.
#[derive(Debug, PartialEq)]
pub(super) enum ReadBack {
    /// The destination holds what was written, or newer.
    Holds,
    /// An older write went over it: the destination holds this (for the logs).
    Behind {
        held: String,
        dest_id: Option<String>,
    },
}

/// Reads a record back once every older write of it has landed or never will.
pub(super) async fn read_back(
    sink: &dyn Sink,
    stop: &Stop,
    compare: &Compare,
    readback: &Readback,
    mapping: &MappingSpec,
) -> Result<ReadBack, SinkError> {
    wait_until(readback.settles_at, stop).await?;
    Ok(match sink.read_back(&readback.external_id, stop).await? {
        Held::Nothing => ReadBack::Behind {
            held: "nothing".into(),
            dest_id: None,
        },
        Held::Object {
            dest_id,
            object,
            version,
        } => {
            let holds = compare.holds_at_least(
                &object,
                version,
                readback.version,
                readback.updated_at,
                Some(&comparable(mapping, &readback.payload)),
            );
            if holds == Some(true) {
                ReadBack::Holds
            } else {
                let held = match (version, compare) {
                    (Some(held), _) => format!("version number {held}"),
                    (None, Compare::Version(field) | Compare::UpdatedAt(field, _)) => field
                        .get(&object)
                        .map_or_else(|| "an object without it".into(), Value::to_string),
                    (None, Compare::Payload) => "another payload".into(),
                };
                ReadBack::Behind { held, dest_id }
            }
        }
    })
}

async fn wait_until(at: Timestamp, stop: &Stop) -> Result<(), SinkError> {
    let wait = Timestamp::now()
        .duration_until(at)
        .try_into()
        .unwrap_or(Duration::ZERO);
    stop.sleep(wait)
        .await
        .map_err(|r| SinkError::Http(crate::http::HttpError::Stopped(r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn versions_decide_where_the_object_carries_one() {
        let compare = Compare::Version(FieldPath::parse("meta.version"));
        let object = json!({"meta": {"version": 5}, "name": "a"});
        assert_eq!(
            compare.holds_at_least(&object, None, Some(5), at(0), None),
            Some(true)
        );
        assert_eq!(
            compare.holds_at_least(&object, None, Some(6), at(0), None),
            Some(false)
        );
        let text = json!({"meta": {"version": "7"}});
        assert_eq!(
            compare.holds_at_least(&text, None, Some(6), at(0), None),
            Some(true)
        );
        // Without it, only a payload can tell.
        let bare = json!({"name": "a"});
        assert_eq!(
            compare.holds_at_least(&bare, None, Some(5), at(0), None),
            None
        );
        assert_eq!(
            compare.holds_at_least(&bare, None, Some(5), at(0), Some(&json!({"name": "a"}))),
            Some(true)
        );
    }

    #[test]
    fn timestamps_decide_where_the_object_carries_one() {
        let compare = Compare::UpdatedAt(FieldPath::parse("changed"), TimeFormat::EpochSeconds);
        let object = json!({"changed": 100});
        assert_eq!(
            compare.holds_at_least(&object, None, None, at(100), None),
            Some(true)
        );
        assert_eq!(
            compare.holds_at_least(&object, None, None, at(101), None),
            Some(false)
        );
    }

    #[test]
    fn a_version_number_kept_beside_the_object_decides() {
        let compare = Compare::Payload;
        let object = json!({"name": "a"});
        let micros = at(100).as_microsecond();
        assert_eq!(
            compare.holds_at_least(&object, Some(micros), None, at(100), None),
            Some(true)
        );
        assert_eq!(
            compare.holds_at_least(&object, Some(micros), None, at(101), None),
            Some(false)
        );
        assert_eq!(
            compare.holds_at_least(&object, Some(7), Some(7), at(101), None),
            Some(true)
        );
    }

    #[test]
    fn a_payload_is_held_when_every_field_of_it_is() {
        let payload = json!({"a": 1, "b": {"c": [1, 2]}});
        let object = json!({"id": "ct_1", "a": 1, "b": {"c": [1, 2], "d": true}});
        assert_eq!(
            Compare::Payload.holds_at_least(&object, None, None, at(0), Some(&payload)),
            Some(true)
        );
        let behind = json!({"a": 1, "b": {"c": [1]}});
        assert_eq!(
            Compare::Payload.holds_at_least(&behind, None, None, at(0), Some(&payload)),
            Some(false)
        );
        assert_eq!(
            Compare::Payload.holds_at_least(&object, None, None, at(0), None),
            None
        );
    }
}
