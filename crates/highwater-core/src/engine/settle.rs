//! Owns what a run settles with the destination before it may complete: writes
//! that may land late. A request that got no clear answer, or was in flight at a
//! crash, can still be applied for a while — over a newer version written since.
//! Two things follow, both settled by reading the record back once that while has
//! passed: a record written again meanwhile is compared with what the destination
//! holds and rewritten if it went back; a record held back below a write an earlier
//! attempt announced (a floor the ledger does not confirm) is resolved only once
//! the destination shows that write arrived.
//! Invariant: decides from what the destination answers, never from a guess: what
//! cannot be read back is named, not assumed.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::config::{SyncSpec, TimeFormat};
use crate::record::FieldPath;
use crate::sink::{Held, Sink, SinkError};
use crate::source::extract::parse_time;
use crate::state::Intent;
use crate::stop::Stop;

use super::decide::is_older;

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
    pub(super) fn holds_at_least(
        &self,
        object: &Value,
        version: Option<i64>,
        updated_at: Timestamp,
        payload: Option<&Value>,
    ) -> Option<bool> {
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

/// Whether `object` holds every field of `payload` with the same value.
fn contains(object: &Value, payload: &Value) -> bool {
    match (object, payload) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|v| contains(v, value))),
        _ => object == payload,
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
    sink: &Sink,
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
        Held::Object { dest_id, object } => {
            match compare.holds_at_least(&object, floor.version, floor.updated_at, None) {
                Some(true) => FloorCheck::Landed { dest_id },
                Some(false) => FloorCheck::Unconfirmed(format!(
                    "{version} was sent by an earlier attempt and never arrived: the destination holds an older one"
                )),
                None => FloorCheck::Unconfirmed(format!(
                    "{version} was sent by an earlier attempt, and the destination's object does not say which version it holds (map the source's version into a field)"
                )),
            }
        }
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
    sink: &Sink,
    stop: &Stop,
    compare: &Compare,
    readback: &crate::state::Readback,
) -> Result<ReadBack, SinkError> {
    wait_until(readback.settles_at, stop).await?;
    Ok(match sink.read_back(&readback.external_id, stop).await? {
        Held::Nothing => ReadBack::Behind {
            held: "nothing".into(),
            dest_id: None,
        },
        Held::Object { dest_id, object } => {
            let holds = compare.holds_at_least(
                &object,
                readback.version,
                readback.updated_at,
                Some(&readback.payload),
            );
            if holds == Some(true) {
                ReadBack::Holds
            } else {
                let held = match compare {
                    Compare::Version(field) | Compare::UpdatedAt(field, _) => field
                        .get(&object)
                        .map_or_else(|| "an object without it".into(), Value::to_string),
                    Compare::Payload => "another payload".into(),
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
            compare.holds_at_least(&object, Some(5), at(0), None),
            Some(true)
        );
        assert_eq!(
            compare.holds_at_least(&object, Some(6), at(0), None),
            Some(false)
        );
        let text = json!({"meta": {"version": "7"}});
        assert_eq!(
            compare.holds_at_least(&text, Some(6), at(0), None),
            Some(true)
        );
        // Without it, only a payload can tell.
        let bare = json!({"name": "a"});
        assert_eq!(compare.holds_at_least(&bare, Some(5), at(0), None), None);
        assert_eq!(
            compare.holds_at_least(&bare, Some(5), at(0), Some(&json!({"name": "a"}))),
            Some(true)
        );
    }

    #[test]
    fn timestamps_decide_where_the_object_carries_one() {
        let compare = Compare::UpdatedAt(FieldPath::parse("changed"), TimeFormat::EpochSeconds);
        let object = json!({"changed": 100});
        assert_eq!(
            compare.holds_at_least(&object, None, at(100), None),
            Some(true)
        );
        assert_eq!(
            compare.holds_at_least(&object, None, at(101), None),
            Some(false)
        );
    }

    #[test]
    fn a_payload_is_held_when_every_field_of_it_is() {
        let payload = json!({"a": 1, "b": {"c": [1, 2]}});
        let object = json!({"id": "ct_1", "a": 1, "b": {"c": [1, 2], "d": true}});
        assert_eq!(
            Compare::Payload.holds_at_least(&object, None, at(0), Some(&payload)),
            Some(true)
        );
        let behind = json!({"a": 1, "b": {"c": [1]}});
        assert_eq!(
            Compare::Payload.holds_at_least(&behind, None, at(0), Some(&payload)),
            Some(false)
        );
        assert_eq!(
            Compare::Payload.holds_at_least(&object, None, at(0), None),
            None
        );
    }
}
