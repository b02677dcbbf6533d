//! Owns reading records out of an answer: the records array at its configured path,
//! and each record's id, `updated_at` and version. A record whose own fields are
//! broken becomes [`Extracted::Invalid`] (to be dead-lettered); an answer that is
//! not what the config describes is an error for the whole page.

use jiff::Timestamp;
use serde_json::Value;

use crate::config::{SourceSpec, TimeFormat};
use crate::record::{FieldPath, RecordKey, SourceRecord};

/// One entry of a page.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    Record(SourceRecord),
    /// The record lacks or garbles a field highwater needs; dead-letter it.
    Invalid {
        id: String,
        body: Value,
        reason: String,
    },
}

impl Extracted {
    /// The source id, or a stand-in derived from the body when it has none.
    pub fn id(&self) -> &str {
        match self {
            Extracted::Record(r) => r.id(),
            Extracted::Invalid { id, .. } => id,
        }
    }
}

/// Takes the records array out of an answer's body.
pub fn records_array(body: Value, path: &FieldPath) -> Result<Vec<Value>, String> {
    let shown = if path.is_root() {
        "the body".to_owned()
    } else {
        format!("`{path}`")
    };
    let found = if path.is_root() {
        Some(body)
    } else {
        let mut body = body;
        let mut current = &mut body;
        for segment in path.segments() {
            match current.as_object_mut().and_then(|o| o.get_mut(segment)) {
                Some(next) => current = next,
                None => return Err(describe_missing(path)),
            }
        }
        Some(current.take())
    };
    match found {
        Some(Value::Array(records)) => Ok(records),
        Some(other) => Err(format!(
            "{shown} (records_path) should be an array of records, found {}",
            kind(&other)
        )),
        None => Err(describe_missing(path)),
    }
}

fn describe_missing(path: &FieldPath) -> String {
    format!("the answer has no `{path}` field (records_path)")
}

/// Pulls id, `updated_at` and version out of one record.
pub fn extract(body: Value, spec: &SourceSpec) -> Extracted {
    let (id, id_is_number) = match spec.id_field.get(&body) {
        Some(Value::String(s)) if !s.is_empty() => (s.clone(), false),
        Some(Value::Number(n)) => (n.to_string(), true),
        other => {
            let reason = match other {
                None | Some(Value::Null) => format!("record has no `{}` (id_field)", spec.id_field),
                Some(v) => format!(
                    "`{}` (id_field) must be a string or number, found {}",
                    spec.id_field,
                    kind(v)
                ),
            };
            return Extracted::Invalid {
                id: stand_in_id(&body),
                body,
                reason,
            };
        }
    };
    let raw_updated = spec
        .updated_at_field
        .get(&body)
        .cloned()
        .unwrap_or(Value::Null);
    let updated_at = match parse_time(&raw_updated, spec.time_format) {
        Ok(t) => t,
        Err(problem) => {
            let reason = format!("`{}` (updated_at_field) {problem}", spec.updated_at_field);
            return Extracted::Invalid { id, body, reason };
        }
    };
    let version = match &spec.version_field {
        None => None,
        Some(field) => match field.get(&body) {
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(Value::String(s)) if s.parse::<i64>().is_ok() => s.parse::<i64>().ok(),
            other => {
                let found = other.map_or("nothing".to_owned(), kind);
                let reason = format!("`{field}` (version_field) must be an integer, found {found}");
                return Extracted::Invalid { id, body, reason };
            }
        },
    };
    Extracted::Record(SourceRecord {
        key: RecordKey {
            updated_at,
            id,
            id_is_number,
        },
        updated_at_raw: raw_updated,
        version,
        body,
    })
}

/// Reads a time value as the API writes it.
pub fn parse_time(value: &Value, format: TimeFormat) -> Result<Timestamp, String> {
    let parsed = match (value, format) {
        (Value::Null, _) => return Err("is missing".to_owned()),
        (Value::String(s), TimeFormat::Rfc3339) => s.parse::<Timestamp>().ok(),
        (Value::Number(n), TimeFormat::EpochSeconds) => n
            .as_i64()
            .and_then(|s| Timestamp::from_second(s).ok())
            .or_else(|| {
                n.as_f64()
                    .and_then(|f| Timestamp::from_microsecond((f * 1e6) as i64).ok())
            }),
        (Value::Number(n), TimeFormat::EpochMillis) => n
            .as_i64()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok()),
        (Value::String(s), TimeFormat::EpochSeconds) => s
            .parse::<i64>()
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok()),
        (Value::String(s), TimeFormat::EpochMillis) => s
            .parse::<i64>()
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok()),
        _ => None,
    };
    parsed.ok_or_else(|| {
        let expected = match format {
            TimeFormat::Rfc3339 => "an RFC 3339 timestamp",
            TimeFormat::EpochSeconds => "epoch seconds",
            TimeFormat::EpochMillis => "epoch milliseconds",
        };
        format!("must be {expected}, found {}", short(value))
    })
}

/// A stable id for a record that has none, so its dead letter can be found again.
fn stand_in_id(body: &Value) -> String {
    let hash = blake3::hash(body.to_string().as_bytes());
    format!("?{}", &hash.to_hex()[..16])
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => format!("the number {value}"),
        Value::String(_) => format!("the string {}", short(value)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!(
            "{}…",
            &text[..text.char_indices().nth(57).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_path_errors_say_what_was_found() {
        let path = FieldPath::parse("data");
        assert_eq!(
            records_array(json!({"result": "ok"}), &path),
            Err("the answer has no `data` field (records_path)".to_owned())
        );
        assert_eq!(
            records_array(json!({"data": {"a": 1}}), &path),
            Err("`data` (records_path) should be an array of records, found an object".to_owned())
        );
        assert_eq!(
            records_array(json!([1, 2]), &FieldPath::parse("")).map(|r| r.len()),
            Ok(2)
        );
    }

    #[test]
    fn times_parse_in_each_format() {
        let t = parse_time(&json!("2026-01-02T03:04:05.123456Z"), TimeFormat::Rfc3339);
        assert_eq!(t.map(|t| t.as_microsecond() % 1_000_000), Ok(123_456));
        let ms = parse_time(&json!(1_700_000_000_123i64), TimeFormat::EpochMillis);
        assert_eq!(ms.map(|t| t.as_millisecond()), Ok(1_700_000_000_123));
        assert!(parse_time(&json!(17), TimeFormat::Rfc3339).is_err());
    }
}
