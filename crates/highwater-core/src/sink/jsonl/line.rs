//! Owns one line of the JSON Lines destination: a record's line, written from
//! its payload and external id; the external id of a record's line, found
//! without building the record; and a deletion's line.
//! Invariant: no IO.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::sink::WithField;

/// What one line of the log says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// The record's whole line, holding this external id.
    Record(String),
    /// The record with this external id is deleted.
    Delete(String),
}

impl Line {
    pub(super) fn id(&self) -> &str {
        match self {
            Line::Record(id) | Line::Delete(id) => id,
        }
    }
}

/// A record's line: its payload with the external id under `field` (over
/// any value of the payload's there), keys in order, newline-terminated. A
/// payload that is not an object is written as it is.
pub(super) fn record_line(
    payload: &Value,
    field: &str,
    external_id: &str,
) -> serde_json::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(256);
    match payload {
        // Written as a copy of the payload with the id inserted would be, without
        // the copy: a sync into JSON Lines spent 2.5% of its time cloning payloads.
        Value::Object(object) => serde_json::to_writer(
            &mut line,
            &WithField {
                object,
                field,
                value: external_id,
            },
        )?,
        other => serde_json::to_writer(&mut line, other)?,
    }
    line.push(b'\n');
    Ok(line)
}

/// A deletion's line in the log: `["delete","<external id>"]`. A record's line
/// is an object, so the two are never confused.
pub(super) fn delete_line(external_id: &str) -> Vec<u8> {
    let mut line = b"[\"delete\",".to_vec();
    // A string always serializes.
    let _ = serde_json::to_writer(&mut line, external_id);
    line.extend_from_slice(b"]\n");
    line
}

/// Reads a line of the log (without its newline).
pub(super) fn parse(line: &[u8], field: &str) -> Result<Line, String> {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => match serde_json::from_slice::<(String, String)>(line) {
            Ok((op, id)) if op == "delete" => Ok(Line::Delete(id)),
            Ok((op, _)) => Err(format!("unknown operation {op:?}")),
            Err(e) => Err(e.to_string()),
        },
        _ => record_id(line, field).map(Line::Record),
    }
}

/// The external id a record's line holds under `field`, read without building
/// the record (other values are skipped, not allocated).
pub(super) fn record_id(line: &[u8], field: &str) -> Result<String, String> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let id = IdOf(field)
        .deserialize(&mut de)
        .and_then(|id| de.end().map(|()| id))
        .map_err(|e| e.to_string())?;
    id.ok_or_else(|| format!("no `{field}` string"))
}

/// Deserializes an object into the string under one key, skipping the rest.
struct IdOf<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for IdOf<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for IdOf<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a JSON object with a `{}` string", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(is_field) = map.next_key_seed(KeyIs(self.0))? {
            if is_field {
                id = Some(map.next_value::<String>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(id)
    }
}

/// Deserializes a key into whether it is the one wanted, without allocating.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_line_is_known_by_its_top_level_id_only() {
        let line = br#"{"a":{"external_id":"inner"},"external_id":"x\"1","z":[1,{"b":null}]}"#;
        assert_eq!(record_id(line, "external_id"), Ok("x\"1".to_owned()));
        assert_eq!(parse(line, "external_id"), Ok(Line::Record("x\"1".into())));
        assert!(record_id(br#"{"a":1}"#, "external_id").is_err());
        assert!(record_id(br#"{"external_id":7}"#, "external_id").is_err());
        assert!(record_id(br#"{"external_id":"x""#, "external_id").is_err());
        assert!(record_id(br#"{"external_id":"x"} {}"#, "external_id").is_err());
    }

    /// The line a record's payload with its id inserted serializes to.
    fn inserted(payload: &Value, field: &str, id: &str) -> Vec<u8> {
        let mut row = payload.clone();
        if let Some(object) = row.as_object_mut() {
            object.insert(field.to_owned(), Value::String(id.to_owned()));
        }
        let mut line = serde_json::to_vec(&row).expect("a value serializes");
        line.push(b'\n');
        line
    }

    #[test]
    fn a_record_line_is_its_payload_with_the_id_in_key_order() {
        let payloads = [
            serde_json::json!({}),
            serde_json::json!({"a": 1, "z": {"y": [1, null]}}),
            serde_json::json!({"external_id": "old", "b": "x\"y"}),
            serde_json::json!({"external_idx": 1, "external_i": 2, "f": 3}),
            serde_json::json!({"zzz": true}),
            serde_json::json!("not an object"),
            serde_json::json!([1, 2]),
        ];
        for payload in &payloads {
            let line = record_line(payload, "external_id", "c \"1\"").expect("a line");
            assert_eq!(
                line,
                inserted(payload, "external_id", "c \"1\""),
                "{payload}"
            );
        }
        let line = record_line(&payloads[1], "external_id", "c1").expect("a line");
        assert_eq!(
            record_id(&line[..line.len() - 1], "external_id"),
            Ok("c1".into())
        );
    }

    #[test]
    fn a_deletion_line_reads_back_as_itself() {
        let line = delete_line("a \"b\"");
        let without_newline = &line[..line.len() - 1];
        assert_eq!(
            parse(without_newline, "external_id"),
            Ok(Line::Delete("a \"b\"".into()))
        );
        assert!(parse(br#"["upsert","a"]"#, "external_id").is_err());
    }
}
