//! Owns the shape of one source record inside highwater: its id, `updated_at`,
//! optional version, body, its position key `(updated_at, id)`, and the dotted
//! [`FieldPath`]s used to reach into JSON.
//! Invariant: knows nothing of HTTP, checkpoints or destinations.

use std::cmp::Ordering;
use std::fmt;

use jiff::Timestamp;
use serde_json::Value;

/// A dotted path into a JSON document (`customer.email`). The empty path is the
/// document itself. Read, a segment of digits indexes an array from 0
/// (`variants.0.sku`, `emails.0.value`); an object's key of digits is still a key;
/// and where an object has no key for a segment, a key of it and the segments
/// after it, dots and all, is looked for (OData's `@odata.nextLink`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    pub fn parse(path: &str) -> FieldPath {
        if path.is_empty() {
            return FieldPath(Vec::new());
        }
        FieldPath(path.split('.').map(str::to_owned).collect())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        get_in(value, &self.0)
    }

    /// Removes the value at this path, if there is one (not inside arrays).
    pub fn remove(&self, target: &mut Value) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        let mut current = target;
        for segment in parents {
            match current.as_object_mut().and_then(|o| o.get_mut(segment)) {
                Some(next) => current = next,
                None => return,
            }
        }
        if let Some(object) = current.as_object_mut() {
            object.remove(last);
        }
    }

    /// Sets the value at this path, making what is missing on the way. A
    /// segment of digits indexes an array it meets, up to one past its end;
    /// where nothing is yet, a segment followed by `0` makes an array
    /// (Notion's `title.0.text.content`), any other an object. Returns false
    /// when a value on the way is neither, or an index is past the end.
    pub fn set(&self, target: &mut Value, new: Value) -> bool {
        let Some((last, parents)) = self.0.split_last() else {
            *target = new;
            return true;
        };
        let mut current = target;
        for (n, segment) in parents.iter().enumerate() {
            let array = self.0[n + 1] == "0";
            let made = child(current, segment, || {
                if array {
                    Value::Array(Vec::new())
                } else {
                    Value::Object(Default::default())
                }
            });
            match made {
                Some(next) => current = next,
                None => return false,
            }
        }
        match child(current, last, || Value::Null) {
            Some(slot) => {
                *slot = new;
                true
            }
            None => false,
        }
    }
}

/// The value at `segments` in `value`. A key found for a segment is followed
/// first; only where that leads nowhere are keys holding dots tried, the
/// longest first, so that a path without them costs nothing more.
fn get_in<'v>(value: &'v Value, segments: &[String]) -> Option<&'v Value> {
    let Some((first, rest)) = segments.split_first() else {
        return Some(value);
    };
    match value {
        Value::Array(items) => get_in(items.get(first.parse::<usize>().ok()?)?, rest),
        Value::Object(object) => {
            if let Some(found) = object.get(first).and_then(|next| get_in(next, rest)) {
                return Some(found);
            }
            (2..=segments.len()).rev().find_map(|end| {
                let next = object.get(&segments[..end].join("."))?;
                get_in(next, &segments[end..])
            })
        }
        _ => None,
    }
}

/// The place of `segment` in `parent`, made with `fresh` when missing: an
/// object's key, or an array's index up to one past its end.
fn child<'v>(
    parent: &'v mut Value,
    segment: &str,
    fresh: impl FnOnce() -> Value,
) -> Option<&'v mut Value> {
    match parent {
        Value::Object(object) => Some(object.entry(segment.to_owned()).or_insert_with(fresh)),
        Value::Array(items) => {
            let index = segment
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| segment.parse::<usize>().ok())??;
            if index == items.len() {
                items.push(fresh());
            }
            items.get_mut(index)
        }
        _ => None,
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A record as read from the source, with the fields highwater needs pulled out.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub key: RecordKey,
    /// The `updated_at` value exactly as the API wrote it, passed back verbatim in
    /// keyset requests so no precision is lost.
    pub updated_at_raw: Value,
    pub version: Option<i64>,
    pub body: Value,
}

impl SourceRecord {
    pub fn id(&self) -> &str {
        &self.key.id
    }

    pub fn updated_at(&self) -> Timestamp {
        self.key.updated_at
    }
}

/// A record's position in source order: `(updated_at, id)`.
///
/// Ids compare as the API would sort its column: numbers numerically, strings
/// byte-wise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    pub updated_at: Timestamp,
    pub id: String,
    pub id_is_number: bool,
}

impl RecordKey {
    /// The resume filter: is this key strictly after `bound`?
    /// `updated_at > t OR (updated_at = t AND id > i)`.
    pub fn is_after(&self, bound: &RecordKey) -> bool {
        self.cmp(bound) == Ordering::Greater
    }
}

impl Ord for RecordKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.updated_at
            .cmp(&other.updated_at)
            .then_with(|| compare_ids(self, other))
    }
}

impl PartialOrd for RecordKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn compare_ids(a: &RecordKey, b: &RecordKey) -> Ordering {
    if a.id_is_number
        && b.id_is_number
        && let (Ok(x), Ok(y)) = (a.id.parse::<i128>(), b.id.parse::<i128>())
    {
        return x.cmp(&y);
    }
    a.id.cmp(&b.id)
}

/// Whether `(version, updated_at)` is older than the other: versions decide when
/// both sides have one, `updated_at` otherwise.
pub fn is_older(
    version: Option<i64>,
    updated_at: Timestamp,
    other_version: Option<i64>,
    other_updated_at: Timestamp,
) -> bool {
    match (version, other_version) {
        (Some(v), Some(w)) => v < w,
        _ => updated_at < other_updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn key(micros: i64, id: u32) -> RecordKey {
        RecordKey {
            updated_at: Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH),
            id: format!("{id}"),
            id_is_number: true,
        }
    }

    #[test]
    fn field_paths_get_and_set_nested_values() {
        let mut doc = json!({"customer": {"email": "a@b"}});
        assert_eq!(
            FieldPath::parse("customer.email").get(&doc),
            Some(&json!("a@b"))
        );
        assert!(FieldPath::parse("contact.name").set(&mut doc, json!("Ann")));
        assert_eq!(doc["contact"]["name"], json!("Ann"));
        assert!(!FieldPath::parse("customer.email.x").set(&mut doc, json!(1)));
        assert_eq!(FieldPath::parse("").get(&doc), Some(&doc));
    }

    #[test]
    fn a_segment_of_digits_indexes_an_array() {
        let doc = json!({"variants": [{"sku": "A-1"}, {"sku": "B-2"}], "by": {"0": "zero"}});
        let get = |path: &str| FieldPath::parse(path).get(&doc).cloned();
        assert_eq!(get("variants.0.sku"), Some(json!("A-1")));
        assert_eq!(get("variants.1.sku"), Some(json!("B-2")));
        assert_eq!(get("variants.2.sku"), None);
        assert_eq!(get("variants.first.sku"), None);
        assert_eq!(get("variants.-1.sku"), None);
        assert_eq!(get("by.0"), Some(json!("zero")));
    }

    /// OData's and Microsoft Graph's keys hold dots: a path reaches them as
    /// written, while a nested key of the same segments is found first.
    #[test]
    fn a_key_holding_dots_is_found_where_no_nested_key_is() {
        let doc = json!({
            "@odata.nextLink": "https://x.test/accounts?$skiptoken=2",
            "value": [{"name": "A", "@odata.etag": "W/\"1\"", "a.b": {"c": 1}}],
            "both": {"x": {"y": "nested"}, "x.y": "flat"},
        });
        let get = |path: &str| FieldPath::parse(path).get(&doc).cloned();
        assert_eq!(
            get("@odata.nextLink"),
            Some(json!("https://x.test/accounts?$skiptoken=2"))
        );
        assert_eq!(get("value.0.@odata.etag"), Some(json!("W/\"1\"")));
        assert_eq!(get("value.0.a.b.c"), Some(json!(1)));
        assert_eq!(get("both.x.y"), Some(json!("nested")));
        assert_eq!(get("@odata.count"), None);
        assert_eq!(get("value.0.a.b.d"), None);
    }

    #[test]
    fn a_segment_of_digits_sets_into_an_array() {
        let mut doc = json!({"by": {}});
        let mut set = |path: &str, value: Value| FieldPath::parse(path).set(&mut doc, value);
        assert!(set("title.0.text.content", json!("Ann")));
        assert!(set("title.0.annotations.bold", json!(true)));
        assert!(set("emails.0", json!("a@b")));
        assert!(set("emails.1", json!("c@d")));
        assert!(!set("emails.3", json!("past the end")));
        assert!(!set("emails.x", json!("not an index")));
        // Where an object is, or nothing and no 0 follows, digits are a key.
        assert!(set("by.2024", json!(1)));
        assert!(set("codes.7.name", json!("seven")));
        assert_eq!(
            doc,
            json!({
                "title": [{"text": {"content": "Ann"}, "annotations": {"bold": true}}],
                "emails": ["a@b", "c@d"],
                "by": {"2024": 1},
                "codes": {"7": {"name": "seven"}},
            })
        );
    }

    #[test]
    fn numeric_ids_sort_numerically_and_strings_bytewise() {
        assert!(key(5, 10).is_after(&key(5, 9)));
        let s = |id: &str| RecordKey {
            updated_at: Timestamp::UNIX_EPOCH,
            id: id.into(),
            id_is_number: false,
        };
        assert!(s("9").is_after(&s("10")));
    }

    proptest! {
        /// Walking a sorted dataset by the resume filter, one page at a time, visits
        /// every record exactly once, however many records share a timestamp.
        #[test]
        fn resume_filter_visits_each_record_once(
            stamps in proptest::collection::vec(0i64..20, 1..300),
            page in 1usize..17,
        ) {
            let mut data: Vec<RecordKey> =
                stamps.iter().enumerate().map(|(i, t)| key(*t, i as u32)).collect();
            data.sort();
            let mut seen = Vec::new();
            let mut cursor: Option<RecordKey> = None;
            for _ in 0..=data.len() {
                let batch: Vec<&RecordKey> = data
                    .iter()
                    .filter(|k| cursor.as_ref().is_none_or(|c| k.is_after(c)))
                    .take(page)
                    .collect();
                let Some(last) = batch.last() else { break };
                cursor = Some((*last).clone());
                seen.extend(batch.into_iter().cloned());
            }
            prop_assert_eq!(seen, data);
        }

        #[test]
        fn resume_filter_is_a_strict_total_order(a in 0i64..5, i in 0u32..5, b in 0i64..5, j in 0u32..5) {
            let (x, y) = (key(a, i), key(b, j));
            prop_assert!(!(x.is_after(&y) && y.is_after(&x)));
            prop_assert_eq!(x == y, !x.is_after(&y) && !y.is_after(&x));
        }
    }
}
