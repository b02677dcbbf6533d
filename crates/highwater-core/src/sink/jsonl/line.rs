//! Owns one line of the JSON Lines destination: a record's line, written from
//! its payload and external id; the external id of a record's line, found
//! without building the record (in a line known to be valid, by following its
//! strings and brackets only); and a deletion's line.
//! Invariant: no IO.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::error::Category;

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

/// Reads a line known to be whole, valid JSON: one this destination wrote,
/// or read through once with [`parse`] (the compacted file at open). Its id
/// is found by [`scan_id`] where that suffices, by [`parse`] otherwise.
pub(super) fn parse_valid(line: &[u8], field: &str) -> Result<Line, String> {
    match scan_id(line, field) {
        Some(id) => Ok(Line::Record(id)),
        None => parse(line, field),
    }
}

/// The id under `field` of a line known to be valid JSON, found by
/// following its strings and brackets only (`rawjson`); `None` where that is
/// not enough to be sure of it (a key or an id with an escape, a line of
/// another shape), for [`parse`] to read. A compaction reads every line of the
/// file, its runs and logs; reading their ids with serde_json, which checks
/// every value it skips, was 40% of its time.
fn scan_id(line: &[u8], field: &str) -> Option<String> {
    crate::rawjson::find(line, &[field])
        .and_then(crate::rawjson::plain_string)
        .map(str::to_owned)
}

/// The external id a record's line holds under `field`, read without building
/// the record (other values are skipped, not allocated).
pub(super) fn record_id(line: &[u8], field: &str) -> Result<String, String> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let id = IdOf(field)
        .deserialize(&mut de)
        .and_then(|id| de.end().map(|()| id))
        .map_err(|e| {
            // serde_json places its error in the line as in a file of its own
            // ("at line 1 column 2"): the caller says which line.
            let shown = e.to_string();
            let message = shown
                .rsplit_once(" at line ")
                .map_or(shown.as_str(), |(m, _)| m);
            match e.classify() {
                Category::Syntax | Category::Eof => {
                    format!("not JSON ({message} at column {})", e.column())
                }
                Category::Data | Category::Io => message.to_owned(),
            }
        })?;
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
    use proptest::prelude::*;

    use super::*;
    use crate::rawjson::tests::json;

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

    #[test]
    fn a_scan_finds_the_id_or_leaves_the_line_to_the_parser() {
        let field = "external_id";
        let found = [
            (r#"{"external_id":"c1"}"#, "c1"),
            (
                r#" { "a" : [1, {"external_id": "no"}, "]}\"" ] , "external_id" : "c2" , "z": -1.5e3 } "#,
                "c2",
            ),
            (
                r#"{"a":"\\","external_id":"ç 3","b":{"c":[[]]},"d":null}"#,
                "ç 3",
            ),
            (r#"{"external_id":"old","external_id":"new"}"#, "new"),
        ];
        for (line, id) in found {
            assert_eq!(
                scan_id(line.as_bytes(), field).as_deref(),
                Some(id),
                "{line}"
            );
            assert_eq!(
                record_id(line.as_bytes(), field).as_deref(),
                Ok(id),
                "{line}"
            );
        }
        let left = [
            r#"{"external_id":"a\"b"}"#,
            r#"{"external\u005fid":"x"}"#,
            r#"{"external_id":7}"#,
            r#"{"a":1}"#,
            r#"{}"#,
            r#"["delete","x"]"#,
            r#"{"external_id":"x""#,
            r#"{"external_id":"x"} {}"#,
            r#"{"external_id":"x",}"#,
            r#"{"a":"unterminated}"#,
        ];
        for line in left {
            assert_eq!(scan_id(line.as_bytes(), field), None, "{line}");
        }
        assert_eq!(
            parse_valid(br#"{"external_id":"a\"b"}"#, field),
            Ok(Line::Record("a\"b".into()))
        );
        assert_eq!(
            parse_valid(br#"["delete","x"]"#, field),
            Ok(Line::Delete("x".into()))
        );
    }

    proptest! {
        /// Whatever a line holds, a scan that answers agrees with the parser,
        /// and a record's line as written is always read.
        #[test]
        fn a_scan_agrees_with_the_parser(
            payload in json("[a-z_\"\\\\]{0,12}"),
            id in "[ -~\\PC]{0,10}",
            pretty in any::<bool>(),
        ) {
            let field = "external_id";
            let line = record_line(&payload, field, &id).expect("a line");
            let line = &line[..line.len() - 1];
            prop_assert_eq!(parse_valid(line, field), parse(line, field));
            if let Some(found) = scan_id(line, field) {
                prop_assert_eq!(Ok(found), record_id(line, field));
            }
            let spaced = if pretty {
                serde_json::to_vec_pretty(&payload).expect("a value serializes")
            } else {
                serde_json::to_vec(&payload).expect("a value serializes")
            };
            if let Some(found) = scan_id(&spaced, field) {
                prop_assert_eq!(Ok(found), record_id(&spaced, field));
            }
            if payload.is_object() {
                prop_assert_eq!(parse_valid(line, field), Ok(Line::Record(id)));
            }
        }
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
