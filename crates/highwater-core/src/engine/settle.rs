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

use jiff::Timestamp;
use serde_json::Value;
use tokio::time::Instant;

use super::decide::is_older;
use super::{
    FailureCause, HeldBack, Resolution, Runner, Seen, Unsettled, WriteJob, arrival_version, signed,
};
use crate::config::{SyncSpec, TimeFormat};
use crate::http::HttpError;
use crate::mapping::MappedRecord;
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
    /// each one the destination holds older. Without a way to read back, names
    /// them instead.
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
        if !sink.can_read_back() {
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
        for readback in due {
            let found = match read_back(sink, stop, &self.compare, &readback).await {
                Ok(found) => found,
                Err(e) if e.is_record_level() => {
                    self.unverified_because(&readback.source_id, &e);
                    continue;
                }
                Err(e) => return Err(FailureCause::Destination(e)),
            };
            let ReadBack::Behind { held, dest_id } = found else {
                continue;
            };
            // Another run may have written a newer version meanwhile: the
            // rewrite is announced like any write, and refused then.
            let claim = PageCommit {
                announce: Some(IntentBatch {
                    id: format!("{}-rewrite-{}", self.invocation, readback.source_id),
                    intents: vec![Intent {
                        source_id: readback.source_id.clone(),
                        version: readback.version,
                        updated_at: readback.updated_at,
                        settles_at: None,
                    }],
                }),
                ..PageCommit::default()
            };
            let announced = self
                .store
                .commit_page(&self.spec.name, &self.run_id, &claim, None, &self.counters)
                .await?
                .announced;
            if announced.refused.contains(&readback.source_id) {
                continue;
            }
            let record = MappedRecord {
                external_id: readback.external_id.clone(),
                payload: readback.payload.clone(),
                hash: readback.payload_hash.clone(),
            };
            let write = Write {
                source_id: &readback.source_id,
                record: &record,
                version: readback.version,
                updated_at: readback.updated_at,
                known_dest_id: dest_id.as_deref().or(readback.dest_id.as_deref()),
                encoded: None,
                rewrite_over: Some(held.clone()),
                unsettled_until: None,
            };
            let attempts = match sink.write(write, stop).await {
                Ok(written) => written.attempts,
                Err(SinkError::Superseded) => 0,
                Err(e) if e.is_record_level() => {
                    self.unverified_because(&readback.source_id, &e);
                    continue;
                }
                Err(e) => return Err(FailureCause::Destination(e)),
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
                    detail: Some(format!("the destination held {held}; written again")),
                });
            }
            crate::obs::RecordRepaired {
                sync: &self.spec.name,
                source_id: &readback.source_id,
                held: &held,
            }
            .emit();
            self.repaired.push(readback.source_id);
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
        let left = signed(self.late_window.saturating_sub(since.elapsed()));
        let settles_at = now.saturating_add(left).unwrap_or(now);
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
        let entry = self.unsettled.entry(id.to_owned()).or_insert(Unsettled {
            version: job.record.version,
            updated_at: job.record.updated_at(),
            settles_at,
        });
        entry.settles_at = entry.settles_at.max(settles_at);
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
            Some(field) => Compare::UpdatedAt(field, spec.source.time_format),
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
                field.get(object).and_then(|v| parse_time(v, *format).ok())
            }
            Compare::Version(_) | Compare::Payload => None,
        };
        match (stored, stored_at, version) {
            (Some(stored), _, Some(version)) => Some(stored >= version),
            (_, Some(stored_at), _) => Some(!is_older(None, stored_at, None, updated_at)),
            _ => payload.map(|payload| contains(object, payload)),
        }
    }
}

/// Whether `object` holds every field of `payload` with the same value. A
/// number is the same by its value: a database gives back `25` for the `25.0`
/// it was sent into a DOUBLE PRECISION column; and so is a timestamp with an
/// offset: PostgreSQL gives back `2026-01-10T06:30:00+00:00` for the
/// `2026-01-10T08:30:00+02:00` it was sent into a `timestamptz` column. A
/// typed column gives back its own form of what it took, and holds the same
/// value: `1` for `true` (SQLite's BOOLEAN), `"[\"a\"]"` for `["a"]` or `"5"`
/// for `5` (a TEXT column), `42` for `"42"` (an INTEGER column), `true` for
/// `"true"`, `"yes"` or `1` (PostgreSQL's BOOLEAN). A number given back
/// with fewer decimals than it was sent with holds it rounded to them:
/// `5.43` for `5.43219` (a NUMERIC(12,2) column, an API keeping cents).
pub(crate) fn contains(object: &Value, payload: &Value) -> bool {
    match (object, payload) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|v| contains(v, value))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| contains(h, w))
        }
        (Value::Number(have), Value::Number(want)) => match (have.as_i64(), want.as_i64()) {
            (Some(have), Some(want)) => have == want,
            _ => have.as_u64().zip(want.as_u64()).map_or_else(
                || have.as_f64() == want.as_f64() || holds_rounded(have, want),
                |(have, want)| have == want,
            ),
        },
        (Value::String(have), Value::String(want)) => {
            have == want
                || have
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|have| want.parse::<jiff::Timestamp>().is_ok_and(|w| have == w))
        }
        (Value::Number(have), Value::Bool(want)) => have.as_i64() == Some(i64::from(*want)),
        (Value::Bool(have), Value::String(want)) => boolean_input(want) == Some(*have),
        (Value::Bool(have), Value::Number(want)) => want.as_i64() == Some(i64::from(*have)),
        (Value::String(have), Value::Number(want)) if holds_epoch(have, want) => true,
        (Value::String(have), _) => {
            serde_json::from_str::<Value>(have).is_ok_and(|have| contains(&have, payload))
        }
        (Value::Number(_), Value::String(want)) => serde_json::from_str::<Value>(want)
            .is_ok_and(|want| want.is_number() && contains(object, &want)),
        _ => object == payload,
    }
}

/// Whether `have` is `want` rounded (half away from zero, as PostgreSQL's
/// NUMERIC rounds) to the decimals `have` shows, when it shows fewer.
fn holds_rounded(have: &serde_json::Number, want: &serde_json::Number) -> bool {
    let have_text = have.to_string();
    let decimals = |text: &str| text.split_once('.').map_or(0, |(_, frac)| frac.len());
    let want_text = want.to_string();
    let places = decimals(&have_text);
    places < decimals(&want_text)
        && rounded(&want_text, places).is_some_and(|r| Some(r) == have.as_f64())
}

/// A plain decimal `text` rounded half away from zero to `places` decimals;
/// `None` for another form (an exponent).
fn rounded(text: &str, places: usize) -> Option<f64> {
    let (sign, body) = text.strip_prefix('-').map_or(("", text), |b| ("-", b));
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) {
        return None;
    }
    if frac.len() <= places {
        return text.parse().ok();
    }
    let mut kept: Vec<u8> = format!("{whole}{}", &frac[..places]).into_bytes();
    if frac.as_bytes()[places] >= b'5' {
        // Carry the one up through the nines.
        let mut at = kept.len();
        loop {
            if at == 0 {
                kept.insert(0, b'1');
                break;
            }
            at -= 1;
            if kept[at] == b'9' {
                kept[at] = b'0';
            } else {
                kept[at] += 1;
                break;
            }
        }
    }
    let point = kept.len() - places;
    let (whole, frac) = kept.split_at(point);
    let whole = String::from_utf8_lossy(whole);
    let frac = String::from_utf8_lossy(frac);
    format!("{sign}{whole}.{frac}0").parse().ok()
}

/// The boolean PostgreSQL reads from `text` into a BOOLEAN column: `true`,
/// `yes`, `on`, `1` and their opposites, any case, trimmed, or a prefix that
/// names one alone (`t`, `ye`, `of`).
fn boolean_input(text: &str) -> Option<bool> {
    let text = text.trim().to_ascii_lowercase();
    let names = |word: &str, shortest: usize| text.len() >= shortest && word.starts_with(&text);
    if names("true", 1) || names("yes", 1) || names("on", 2) || text == "1" {
        Some(true)
    } else if names("false", 1) || names("no", 1) || names("off", 2) || text == "0" {
        Some(false)
    } else {
        None
    }
}

/// Whether `have`, a time a column holds, is the instant `want` counts from
/// the epoch, as a table destination writes a number into a column its owner
/// typed as a time (seconds, or milliseconds from 10^11 on): an instant by
/// its instant, a wall time or a date as UTC's, a date by its day.
fn holds_epoch(have: &str, want: &serde_json::Number) -> bool {
    let Some(seconds) = want.as_f64() else {
        return false;
    };
    let seconds = if seconds.abs() >= crate::sink::table::sql::EPOCH_MILLIS_FROM {
        seconds / 1000.0
    } else {
        seconds
    };
    let Ok(want) = jiff::SignedDuration::try_from_secs_f64(seconds)
        .map_err(|_| ())
        .and_then(|d| jiff::Timestamp::from_duration(d).map_err(|_| ()))
    else {
        return false;
    };
    // PostgreSQL keeps microseconds.
    let want = want.round(jiff::Unit::Microsecond).unwrap_or(want);
    if let Ok(have) = have.parse::<jiff::Timestamp>() {
        return have == want;
    }
    let utc = jiff::tz::Offset::UTC.to_datetime(want);
    // A date alone (`YYYY-MM-DD`) would read as its midnight: a date
    // column holds the day.
    if have.len() == 10 {
        return have
            .parse::<jiff::civil::Date>()
            .is_ok_and(|have| have == utc.date());
    }
    have.parse::<jiff::civil::DateTime>()
        .is_ok_and(|have| have == utc)
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
                Some(&readback.payload),
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
    fn numbers_are_held_by_their_value() {
        let payload = json!({"amount": 25.0, "n": [1, 2.5], "big": u64::MAX});
        let object = json!({"amount": 25, "n": [1.0, 2.5], "big": u64::MAX});
        assert!(contains(&object, &payload));
        assert!(!contains(
            &json!({"amount": 25.5, "n": [1, 2.5], "big": u64::MAX}),
            &payload
        ));
        assert!(!contains(
            &json!({"amount": 25, "n": [1, 2.5, 3], "big": u64::MAX}),
            &payload
        ));
        assert!(!contains(
            &json!({"amount": 25, "n": [1, 2.5], "big": 1}),
            &payload
        ));
    }

    #[test]
    fn a_typed_column_s_own_form_holds_the_value() {
        let payload = json!({"active": true, "off": false, "tags": ["a", "b"], "meta": {"n": 1},
                             "score": 1.5, "key": "42", "name": "5"});
        let object = json!({"active": 1, "off": 0, "tags": "[\"a\",\"b\"]", "meta": "{\"n\": 1}",
                            "score": "1.5", "key": 42, "name": "5"});
        assert!(contains(&object, &payload));
        for (field, other) in [
            ("active", json!(0)),
            ("off", json!("true")),
            ("tags", json!("[\"a\"]")),
            ("tags", json!("a,b")),
            ("score", json!("1.50x")),
            ("key", json!(43)),
            ("name", json!(5.5)),
        ] {
            let mut changed = object.clone();
            changed[field] = other;
            assert!(!contains(&changed, &payload), "{field}: {}", changed[field]);
        }
        // A string that reads as JSON is still only a string.
        assert!(!contains(&json!({"name": 5}), &json!({"name": "five"})));
    }

    /// PostgreSQL's BOOLEAN reads a string as a word or its prefix, any
    /// case, and 1 or 0; it gives back `true` or `false`.
    #[test]
    fn a_boolean_column_holds_the_words_it_reads() {
        for (word, value) in [
            ("true", true),
            ("T", true),
            ("yes", true),
            (" y ", true),
            ("on", true),
            ("1", true),
            ("false", false),
            ("fa", false),
            ("NO", false),
            ("off", false),
            ("of", false),
            ("0", false),
        ] {
            assert!(contains(&json!(value), &json!(word)), "{word}");
            assert!(!contains(&json!(!value), &json!(word)), "{word}");
        }
        for word in ["o", "", "yess", "2", "tru e"] {
            assert!(!contains(&json!(true), &json!(word)), "{word}");
            assert!(!contains(&json!(false), &json!(word)), "{word}");
        }
        assert!(contains(&json!(true), &json!(1)));
        assert!(contains(&json!(false), &json!(0)));
        assert!(!contains(&json!(true), &json!(2)));
    }

    /// A column or an API keeping fewer decimals gives back the number
    /// rounded to them, half away from zero; any other number is another.
    #[test]
    fn a_number_given_back_with_fewer_decimals_holds_it_rounded() {
        for (have, want) in [
            (json!(5.43), json!(5.43219)),
            (json!(3.15), json!(3.145)),
            (json!(-3.15), json!(-3.145)),
            (json!(10.0), json!(9.995)),
            (json!(100.0), json!(99.99)),
            (json!(0.1), json!("0.1049")),
        ] {
            assert!(contains(&have, &want), "{have} holds {want}");
        }
        for (have, want) in [
            (json!(5.43), json!(5.436)),
            (json!(5.5), json!(5.43)),
            (json!(5.432), json!(5.43)),
            (json!(10.0), json!(9.94)),
        ] {
            assert!(!contains(&have, &want), "{have} does not hold {want}");
        }
    }

    /// A number written into a column typed as a time is held as the
    /// instant it counts from the epoch.
    #[test]
    fn a_time_column_holds_the_epoch_number_written_into_it() {
        let payload = json!({"seen": 1700000101, "wall": 1700000101.5, "day": 1700000101,
                             "ms": 1700000101250_i64});
        let object = json!({"seen": "2023-11-14T22:15:01+00:00", "wall": "2023-11-14T22:15:01.5",
                            "day": "2023-11-14", "ms": "2023-11-14T23:15:01.25+01:00"});
        assert!(contains(&object, &payload));
        for (field, other) in [
            ("seen", json!("2023-11-14T22:15:02+00:00")),
            ("wall", json!("2023-11-14T22:15:01")),
            ("day", json!("2023-11-15")),
            ("ms", json!("2023-11-14T22:15:01+00:00")),
            ("seen", json!("soon")),
        ] {
            let mut changed = object.clone();
            changed[field] = other;
            assert!(!contains(&changed, &payload), "{field}: {}", changed[field]);
        }
    }

    #[test]
    fn timestamps_are_held_by_their_instant() {
        let payload = json!({"signup": "2026-01-10T08:30:00+02:00", "day": "2026-01-10"});
        let object = json!({"signup": "2026-01-10T06:30:00+00:00", "day": "2026-01-10"});
        assert!(contains(&object, &payload));
        let later = json!({"signup": "2026-01-10T08:30:00+00:00", "day": "2026-01-10"});
        assert!(!contains(&later, &payload));
        // Without an offset, the instant is not known: the text decides.
        let local = json!({"signup": "2026-01-10T08:30:00", "day": "2026-01-10"});
        assert!(!contains(&local, &payload));
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
