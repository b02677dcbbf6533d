//! Owns mapping a source record into the destination's shape: selected and renamed
//! (possibly nested) fields, constants, the external id, and the declared required
//! fields with their JSON types. A record that does not fit is refused with the
//! reason — never coerced, never half-mapped.
//! Invariant: pure; the payload hash covers exactly what would be written.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::config::{MappingSpec, TemplatePart};
use crate::record::SourceRecord;

/// A record ready to write.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedRecord {
    pub external_id: String,
    pub payload: Value,
    /// blake3 of the external id and the payload, hex.
    pub hash: String,
}

/// Why a record cannot be mapped; it is dead-lettered with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

/// What a mapped record holds, as a hash (blake3, hex): the external id's
/// template, each field's place and source, each constant. A sync's records
/// written under another fingerprint have other fields.
pub fn fingerprint(spec: &MappingSpec) -> String {
    let mut hasher = blake3::Hasher::new();
    let mut part = |tag: &str, text: &str| {
        for piece in [tag, text] {
            hasher.update(&(piece.len() as u64).to_le_bytes());
            hasher.update(piece.as_bytes());
        }
    };
    for piece in &spec.external_id.parts {
        match piece {
            TemplatePart::Literal(text) => part("literal", text),
            TemplatePart::Field(path) => part("field", &path.to_string()),
            TemplatePart::LowerField(path) => part("lower", &path.to_string()),
        }
    }
    for (to, from) in &spec.fields {
        part("to", &to.to_string());
        part("from", &from.to_string());
    }
    for (to, value) in &spec.constants {
        part("constant", &to.to_string());
        part("value", &value.to_string());
    }
    hasher.finalize().to_hex().to_string()
}

/// Maps one record.
pub fn map_record(spec: &MappingSpec, record: &SourceRecord) -> Result<MappedRecord, MappingError> {
    let external_id = external_id(spec, &record.body)?;
    let mut payload = if spec.fields.is_empty() {
        record.body.clone()
    } else {
        let mut out = Value::Object(Map::new());
        for (target, source) in &spec.fields {
            if let Some(value) = source.get(&record.body)
                && !target.set(&mut out, value.clone())
            {
                return Err(MappingError(format!(
                    "cannot place `{source}` at `{target}`: a parent of `{target}` is not an object"
                )));
            }
        }
        out
    };
    for (target, value) in &spec.constants {
        if !target.set(&mut payload, value.clone()) {
            return Err(MappingError(format!(
                "cannot place the constant at `{target}`: a parent of `{target}` is not an object"
            )));
        }
    }
    for (field, json_type) in &spec.required {
        match field.get(&payload) {
            found @ (None | Some(Value::Null)) => {
                let from = spec
                    .fields
                    .iter()
                    .find(|(target, _)| target == field)
                    .map(|(_, source)| format!(" (from `{source}`)"))
                    .unwrap_or_default();
                let is = if found.is_none() { "missing" } else { "null" };
                return Err(MappingError(format!(
                    "required field `{field}`{from} is {is}"
                )));
            }
            Some(value) if !json_type.matches(value) => {
                return Err(MappingError(format!(
                    "field `{field}` must be {} {}, found {}",
                    article(json_type.name()),
                    json_type.name(),
                    describe(value)
                )));
            }
            Some(_) => {}
        }
    }
    let hash = payload_hash(&external_id, &payload);
    Ok(MappedRecord {
        external_id,
        payload,
        hash,
    })
}

/// The payload as a copy read back from the destination can hold it: without
/// the fields the destination takes but never gives back (`write_only`).
pub fn comparable<'p>(spec: &MappingSpec, payload: &'p Value) -> Cow<'p, Value> {
    if spec.write_only.is_empty() {
        return Cow::Borrowed(payload);
    }
    let mut kept = payload.clone();
    for field in &spec.write_only {
        field.remove(&mut kept);
    }
    Cow::Owned(kept)
}

/// The hash the ledger compares to skip unchanged records. serde_json's map is
/// ordered by key (`preserve_order` is off), so equal payloads hash equally.
pub fn payload_hash(external_id: &str, payload: &Value) -> String {
    // The bytes of `payload.to_string()`, written out whole and hashed in one
    // call: streamed into the hasher, each of serde_json's small writes was an
    // update of its own, and hashing took 7% of the instructions of a sync of
    // 20,000 records into JSON Lines (callgrind); hashed whole, the sync took
    // 5% fewer. Writing a `Value` cannot fail (its keys are strings).
    let mut bytes = Vec::with_capacity(external_id.len() + 512);
    bytes.extend_from_slice(external_id.as_bytes());
    bytes.push(0);
    let _ = serde_json::to_writer(&mut bytes, payload);
    blake3::hash(&bytes).to_hex()[..32].to_owned()
}

/// The external id the mapping gives a record body, alone.
pub fn external_id_of(spec: &MappingSpec, body: &Value) -> Result<String, MappingError> {
    external_id(spec, body)
}

fn external_id(spec: &MappingSpec, body: &Value) -> Result<String, MappingError> {
    let mut id = String::new();
    for part in &spec.external_id.parts {
        match part {
            TemplatePart::Literal(text) => id.push_str(text),
            TemplatePart::LowerField(path) => {
                id.push_str(&external_id_field(path, body)?.to_lowercase())
            }
            TemplatePart::Field(path) => id.push_str(&external_id_field(path, body)?),
        }
    }
    Ok(id)
}

/// One field of the external id, as text.
fn external_id_field(
    path: &crate::record::FieldPath,
    body: &Value,
) -> Result<String, MappingError> {
    match path.get(body) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(MappingError(format!(
            "external id field `{path}` must be a non-empty string or a number, found {}",
            describe(other)
        ))),
        None => Err(MappingError(format!(
            "external id field `{path}` is missing"
        ))),
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    let text = if text.len() > 40 {
        format!(
            "{}…",
            &text[..text.char_indices().nth(37).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    };
    let kind = match value {
        Value::Null => return "null".into(),
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => return "an array".into(),
        Value::Object(_) => return "an object".into(),
    };
    format!("{kind} {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{JsonType, parse_template};
    use crate::record::{FieldPath, RecordKey};

    #[test]
    fn the_payload_hash_is_over_the_compact_json_text() {
        // Ledgers hold these hashes: how they are computed must not drift.
        let payload = serde_json::json!({"name": "Zoë \"Z\"", "n": [1, 2.5, null], "o": {"b": true, "a": "x"}});
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"ext-1\0");
        hasher.update(payload.to_string().as_bytes());
        assert_eq!(
            payload_hash("ext-1", &payload),
            hasher.finalize().to_hex()[..32]
        );
    }
    use jiff::Timestamp;
    use serde_json::json;

    fn spec() -> MappingSpec {
        MappingSpec {
            external_id: parse_template("inv-{id}").unwrap_or_else(|_| unreachable!()),
            fields: vec![
                (
                    FieldPath::parse("email"),
                    FieldPath::parse("customer.email"),
                ),
                (
                    FieldPath::parse("contact.name"),
                    FieldPath::parse("customer.name"),
                ),
                (FieldPath::parse("amount"), FieldPath::parse("amount_cents")),
            ],
            constants: vec![(FieldPath::parse("origin"), json!("billing"))],
            required: vec![
                (FieldPath::parse("email"), JsonType::String),
                (FieldPath::parse("amount"), JsonType::Integer),
            ],
            write_only: Vec::new(),
        }
    }

    fn record(body: Value) -> SourceRecord {
        SourceRecord {
            key: RecordKey {
                updated_at: Timestamp::UNIX_EPOCH,
                id: "1".into(),
                id_is_number: false,
            },
            updated_at_raw: Value::Null,
            version: None,
            body,
        }
    }

    #[test]
    fn maps_renames_nests_and_adds_constants() {
        let body = json!({"id": "7", "customer": {"email": "a@b.c", "name": "Ann"}, "amount_cents": 12, "extra": 1});
        let mapped = map_record(&spec(), &record(body)).expect("maps");
        assert_eq!(mapped.external_id, "inv-7");
        assert_eq!(
            mapped.payload,
            json!({"email": "a@b.c", "contact": {"name": "Ann"}, "amount": 12, "origin": "billing"})
        );
    }

    #[test]
    fn a_field_of_the_external_id_may_be_taken_in_lower_case() {
        let spec = MappingSpec {
            external_id: parse_template("{customer.email|lower}").unwrap_or_else(|e| panic!("{e}")),
            ..spec()
        };
        let body = json!({"id": "7", "customer": {"email": "Jane.Doe+News@Example.COM", "name": "Ann"}, "amount_cents": 12});
        let mapped = map_record(&spec, &record(body)).expect("maps");
        assert_eq!(mapped.external_id, "jane.doe+news@example.com");
        // The payload keeps the value as the source has it.
        assert_eq!(mapped.payload["email"], "Jane.Doe+News@Example.COM");
        assert_eq!(
            parse_template("{email|upper}").err().as_deref(),
            Some("{email|upper}: unknown filter `upper` (the one filter is `|lower`)")
        );
    }

    #[test]
    fn refusals_say_why() {
        let missing = json!({"id": "7", "customer": {}, "amount_cents": 12});
        assert_eq!(
            map_record(&spec(), &record(missing)).map_err(|e| e.0),
            Err("required field `email` (from `customer.email`) is missing".into())
        );
        let null = json!({"id": "7", "customer": {"email": null}, "amount_cents": 12});
        assert_eq!(
            map_record(&spec(), &record(null)).map_err(|e| e.0),
            Err("required field `email` (from `customer.email`) is null".into())
        );
        let wrong = json!({"id": "7", "customer": {"email": "a@b.c"}, "amount_cents": "12.50"});
        assert_eq!(
            map_record(&spec(), &record(wrong)).map_err(|e| e.0),
            Err("field `amount` must be an integer, found string \"12.50\"".into())
        );
        let float = json!({"id": "7", "customer": {"email": "a@b.c"}, "amount_cents": 12.5});
        assert!(map_record(&spec(), &record(float)).is_err());
        let no_id = json!({"customer": {"email": "a@b.c"}, "amount_cents": 1});
        assert_eq!(
            map_record(&spec(), &record(no_id)).map_err(|e| e.0),
            Err("external id field `id` is missing".into())
        );
    }

    #[test]
    fn equal_payloads_hash_equally_whatever_the_key_order() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":3}}"#).unwrap_or_default();
        let b: Value = serde_json::from_str(r#"{"b":{"d":3,"c":2},"a":1}"#).unwrap_or_default();
        assert_eq!(payload_hash("x", &a), payload_hash("x", &b));
        assert_ne!(payload_hash("x", &a), payload_hash("y", &a));
    }
}
