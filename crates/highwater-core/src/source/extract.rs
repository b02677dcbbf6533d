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

    /// The record as the source gave it.
    pub fn body(&self) -> &Value {
        match self {
            Extracted::Record(r) => &r.body,
            Extracted::Invalid { body, .. } => body,
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
        let last = path.segments().len() - 1;
        for (n, segment) in path.segments().iter().enumerate() {
            let absent =
                n == last && n > 0 && holds_no_array(current) && current.get(segment).is_none();
            // Square answers a search that matched nothing with `{}`.
            let empty = current.as_object().is_some_and(serde_json::Map::is_empty);
            match current.as_object_mut().and_then(|o| o.get_mut(segment)) {
                Some(next) => current = next,
                // QuickBooks answers a query that matched nothing with
                // `{"QueryResponse": {}}`: no array where the records go,
                // nor any other the path could have meant to name. An
                // answer without the path's first field is still refused
                // unless it holds nothing at all: that is a path that
                // names nothing.
                None if absent || empty => return Ok(Vec::new()),
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

/// Whether `value` is an object none of whose fields is an array.
fn holds_no_array(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|fields| !fields.values().any(Value::is_array))
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
                Some(Value::String(_)) => format!("`{}` (id_field) is empty", spec.id_field),
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
    let updated_at = match parse_time(&raw_updated, &spec.time_format) {
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
                // Only an integer too large to hold gets here as a whole number.
                let too_large = match other {
                    Some(Value::Number(n)) => n.is_u64(),
                    Some(Value::String(s)) => {
                        let digits = s.strip_prefix('-').unwrap_or(s);
                        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                    }
                    _ => false,
                };
                let expected = if too_large {
                    "an integer from -2^63 to 2^63-1"
                } else {
                    "an integer"
                };
                let reason = format!("`{field}` (version_field) must be {expected}, found {found}");
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
pub fn parse_time(value: &Value, format: &TimeFormat) -> Result<Timestamp, String> {
    let parsed = match (value, format) {
        (Value::Null, _) => return Err("is missing".to_owned()),
        (Value::String(s), TimeFormat::Rfc3339) => {
            s.parse::<Timestamp>().ok().or_else(|| json_date(s))
        }
        // An API that takes its bounds in a pattern (Jira's JQL) often
        // stamps its records in RFC 3339 all the same.
        (Value::String(s), TimeFormat::Pattern(pattern)) => s
            .parse::<Timestamp>()
            .ok()
            .or_else(|| pattern.read(s))
            .or_else(|| json_date(s)),
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
        // An API whose bounds are epoch numbers may stamp its records in
        // RFC 3339 all the same (HubSpot's search filters take milliseconds;
        // its contacts say `updatedAt: "2024-01-01T03:28:58.411Z"`).
        (Value::String(s), TimeFormat::EpochSeconds) => s
            .parse::<i64>()
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
            .or_else(|| s.parse::<Timestamp>().ok())
            .or_else(|| json_date(s)),
        (Value::String(s), TimeFormat::EpochMillis) => s
            .parse::<i64>()
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .or_else(|| s.parse::<Timestamp>().ok())
            .or_else(|| json_date(s)),
        _ => None,
    };
    parsed.ok_or_else(|| {
        let expected = match format {
            TimeFormat::Rfc3339 => "an RFC 3339 timestamp",
            TimeFormat::EpochSeconds => "epoch seconds or an RFC 3339 timestamp",
            TimeFormat::EpochMillis => "epoch milliseconds or an RFC 3339 timestamp",
            TimeFormat::Pattern(_) => "an RFC 3339 timestamp or one in the `time_format` pattern",
        };
        let hint = match (value, format) {
            (Value::String(s), TimeFormat::Rfc3339) => without_zone(s),
            _ => None,
        }
        .map(|pattern| {
            format!(
                ": it says no zone; where the API writes its times so, set time_format = \"{pattern}\" (and `timezone` where they are not in UTC)"
            )
        })
        .unwrap_or_default();
        format!("must be {expected}, found {}{hint}", short(value))
    })
}

/// The pattern of a date and time written without a zone
/// (`2024-06-01T08:30:00`, WordPress's `modified_gmt`), which RFC 3339
/// refuses: the first of the usual ones that reads it back.
fn without_zone(text: &str) -> Option<&'static str> {
    const USUAL: [&str; 6] = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    USUAL.into_iter().find(|pattern| {
        crate::timepattern::TimePattern::new(pattern, jiff::tz::TimeZone::UTC, "UTC")
            .is_ok_and(|p| p.read(text).is_some())
    })
}

/// The JSON date of .NET serializers, which Xero's and older Microsoft APIs
/// write: `/Date(1573755038314+0000)/`, milliseconds since the epoch (the
/// offset says only where it was written).
fn json_date(text: &str) -> Option<Timestamp> {
    let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let digits = inner
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(inner, |(i, _)| &inner[..i]);
    let offset = &inner[digits.len()..];
    let offset_ok = offset.is_empty()
        || (offset.len() == 5
            && offset.starts_with(['+', '-'])
            && offset[1..].bytes().all(|b| b.is_ascii_digit()));
    if !offset_ok {
        return None;
    }
    Timestamp::from_millisecond(digits.parse().ok()?).ok()
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
    use crate::source::bounds::format_time;
    use proptest::prelude::*;
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
        // QuickBooks's answer to a query that matched nothing.
        let customers = FieldPath::parse("QueryResponse.Customer");
        assert_eq!(
            records_array(
                json!({"QueryResponse": {}, "time": "2026-01-01"}),
                &customers
            ),
            Ok(Vec::new())
        );
        // Square's: an answer that holds nothing, whatever the path.
        for path in [&path, &customers] {
            assert_eq!(records_array(json!({}), path), Ok(Vec::new()));
        }
        // A path that names another array than the one there is refused.
        assert_eq!(
            records_array(json!({"QueryResponse": {"Customers": []}}), &customers),
            Err("the answer has no `QueryResponse.Customer` field (records_path)".to_owned())
        );
    }

    #[test]
    fn times_parse_in_each_format() {
        let t = parse_time(&json!("2026-01-02T03:04:05.123456Z"), &TimeFormat::Rfc3339);
        assert_eq!(t.map(|t| t.as_microsecond() % 1_000_000), Ok(123_456));
        let ms = parse_time(&json!(1_700_000_000_123i64), &TimeFormat::EpochMillis);
        assert_eq!(ms.map(|t| t.as_millisecond()), Ok(1_700_000_000_123));
        assert!(parse_time(&json!(17), &TimeFormat::Rfc3339).is_err());
        // HubSpot's: bounds in milliseconds, records in RFC 3339.
        assert_eq!(
            parse_time(&json!("2024-01-01T03:28:58.411Z"), &TimeFormat::EpochMillis),
            "2024-01-01T03:28:58.411Z"
                .parse::<Timestamp>()
                .map_err(|e| e.to_string())
        );
        // Xero's.
        assert_eq!(
            parse_time(&json!("/Date(1573755038314+0000)/"), &TimeFormat::Rfc3339),
            Timestamp::from_millisecond(1_573_755_038_314).map_err(|e| e.to_string())
        );
        assert_eq!(
            parse_time(&json!("/Date(-1000)/"), &TimeFormat::Rfc3339),
            Timestamp::from_millisecond(-1000).map_err(|e| e.to_string())
        );
        for broken in ["/Date()/", "/Date(12x)/", "/Date(1+00)/", "Date(1)"] {
            assert!(
                parse_time(&json!(broken), &TimeFormat::Rfc3339).is_err(),
                "{broken}"
            );
        }
    }

    /// The source part of a valid config, read once: the fields under test are
    /// set on a copy per case.
    fn base_source() -> &'static SourceSpec {
        static SOURCE: std::sync::LazyLock<SourceSpec> = std::sync::LazyLock::new(|| {
            let text = r#"
                [[sync]]
                name = "s"
                source = { base_url = "https://api.example.com", pagination = { style = "cursor" } }
                destination = { type = "jsonl", file = "out.jsonl" }
            "#;
            let config = crate::config::parse(text, std::path::Path::new("hw.toml"), &|_| None)
                .unwrap_or_else(|e| unreachable!("{e}"));
            config.syncs[0].source.clone()
        });
        &SOURCE
    }

    fn invalid_reason(body: Value) -> String {
        let mut spec = base_source().clone();
        spec.version_field = Some(FieldPath::parse("version"));
        match extract(body, &spec) {
            Extracted::Invalid { reason, .. } => reason,
            Extracted::Record(record) => format!("a record: {record:?}"),
        }
    }

    #[test]
    fn a_time_without_a_zone_is_refused_with_the_pattern_that_reads_it() {
        let refused = |text: &str| parse_time(&json!(text), &TimeFormat::Rfc3339).err();
        expect_test::expect![[r#"must be an RFC 3339 timestamp, found "2024-06-01T08:30:00": it says no zone; where the API writes its times so, set time_format = "%Y-%m-%dT%H:%M:%S" (and `timezone` where they are not in UTC)"#]].assert_eq(&refused("2024-06-01T08:30:00").unwrap_or_default());
        let pattern = |text: &str| without_zone(text);
        assert_eq!(
            pattern("2024-06-01 08:30:00.250"),
            Some("%Y-%m-%d %H:%M:%S%.f")
        );
        assert_eq!(pattern("2024-06-01T08:30"), Some("%Y-%m-%dT%H:%M"));
        assert_eq!(pattern("2024-06-01"), None);
        assert_eq!(pattern("June 1st"), None);
        // One with a zone is not named as without one.
        assert_eq!(pattern("2024-06-01T08:30:00+02"), None);
        assert_eq!(pattern("2024-06-01T08:30:00 CET"), None);
    }

    #[test]
    fn an_empty_id_is_called_empty_not_the_wrong_type() {
        assert_eq!(
            invalid_reason(json!({"id": "", "updated_at": "2026-01-01T00:00:00Z"})),
            "`id` (id_field) is empty"
        );
    }

    #[test]
    fn a_version_too_large_to_hold_says_the_range_it_must_fit() {
        let at = "2026-01-01T00:00:00Z";
        assert_eq!(
            invalid_reason(json!({"id": 1, "updated_at": at, "version": u64::MAX})),
            "`version` (version_field) must be an integer from -2^63 to 2^63-1, found the number 18446744073709551615"
        );
        assert_eq!(
            invalid_reason(json!({"id": 1, "updated_at": at, "version": "-9223372036854775809"})),
            "`version` (version_field) must be an integer from -2^63 to 2^63-1, found the string \"-9223372036854775809\""
        );
        assert_eq!(
            invalid_reason(json!({"id": 1, "updated_at": at, "version": 1.5})),
            "`version` (version_field) must be an integer, found the number 1.5"
        );
    }

    /// The whole seconds of the last and the first timestamp jiff holds
    /// (`Timestamp::MAX` is 9999-12-30T22:00:00.999999999Z).
    const LAST_SECOND: i64 = 253_402_207_200;
    const FIRST_SECOND: i64 = -377_705_116_800;

    /// Integers that sit at the edges of what the formats and jiff can hold.
    const EDGE_INTEGERS: &[i64] = &[
        0,
        -1,
        1,
        i64::MIN,
        i64::MAX,
        LAST_SECOND,
        LAST_SECOND + 1,
        FIRST_SECOND,
        FIRST_SECOND - 1,
        LAST_SECOND * 1000 + 999,
        LAST_SECOND * 1000 + 1000,
        FIRST_SECOND * 1000,
        FIRST_SECOND * 1000 - 1,
        1_700_000_000,
        1_700_000_000_123,
        i64::MAX / 1000,
        i64::MAX / 1_000_000,
    ];

    const EDGE_FLOATS: &[f64] = &[
        0.0,
        -0.0,
        0.5,
        -0.5,
        1_700_000_000.123_456,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        1e-300,
        9.3e18,
        -9.3e18,
        1.8e19,
        9.3e12,
        253_402_207_200.999,
        253_402_207_201.0,
        -377_705_116_800.0,
        -377_705_116_800.5,
    ];

    fn json_number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            Just(Value::from(u64::MAX)),
            // NaN and infinities have no JSON form; from_f64 turns them away.
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            proptest::sample::select(EDGE_INTEGERS.to_vec()).prop_map(Value::from),
            proptest::sample::select(EDGE_FLOATS.to_vec()).prop_map(Value::from),
            (FIRST_SECOND..=LAST_SECOND).prop_map(Value::from),
            (FIRST_SECOND * 1000..=LAST_SECOND * 1000).prop_map(Value::from),
        ]
    }

    /// Any timestamp jiff can hold, to the nanosecond.
    fn timestamp() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            (FIRST_SECOND..=LAST_SECOND, 0i32..1_000_000_000),
            (1_500_000_000i64..1_900_000_000, 0i32..1_000_000_000),
            (-2i64..2, 0i32..1_000_000_000),
        ]
        .prop_map(|(s, ns)| {
            Timestamp::new(s, ns).unwrap_or_else(|e| unreachable!("{s}s {ns}ns: {e}"))
        })
    }

    fn json_string() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            Just(String::new()),
            "-?[0-9]{1,25}",
            "-?[0-9]{1,12}\\.[0-9]{1,9}",
            // RFC 3339 look-alikes, valid or not.
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|z|[+-][0-9]{2}:[0-9]{2})?",
            "[+-][0-9]{6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
            timestamp().prop_map(|t| t.to_string()),
            "[ \\t]*[0-9]{10}[ \\t]*",
            "[\u{0}-\u{1f}\u{7f}\u{80}-\u{10ffff}]{1,20}",
        ]
    }

    fn json_key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => proptest::sample::select(vec!["id", "updated_at", "version", "data", "items", "next", ""])
                .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    /// Any JSON value, a few levels deep, biased towards the keys records use.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            json_number(),
            json_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((json_key(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// A record as an API might send it: each field highwater reads present or
    /// not, well-formed or not, at the top or nested under `data`.
    fn record_body() -> impl Strategy<Value = Value> {
        let id = prop_oneof![
            (1u64..1_000_000).prop_map(Value::from),
            "[a-z0-9_-]{1,12}".prop_map(Value::String),
            json_value(),
        ];
        let updated_at = prop_oneof![
            timestamp().prop_map(|t| Value::String(t.to_string())),
            (FIRST_SECOND..=LAST_SECOND).prop_map(Value::from),
            json_value(),
        ];
        let version = prop_oneof![
            any::<i64>().prop_map(Value::from),
            // Integers past what a version can hold, as a number or a string.
            ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::from),
            "-?[0-9]{19,25}".prop_map(Value::String),
            json_value(),
        ];
        (
            proptest::option::of(id),
            proptest::option::of(updated_at),
            proptest::option::of(version),
            proptest::collection::vec((json_key(), json_value()), 0..3),
            any::<bool>(),
        )
            .prop_map(|(id, updated_at, version, extra, nested)| {
                let mut record = serde_json::Map::new();
                for (key, value) in extra {
                    record.insert(key, value);
                }
                for (key, value) in [("id", id), ("updated_at", updated_at), ("version", version)] {
                    if let Some(value) = value {
                        record.insert(key.to_owned(), value);
                    }
                }
                if nested {
                    json!({ "data": record })
                } else {
                    Value::Object(record)
                }
            })
    }

    /// Whether a reason says a value must be of a kind it already is: such a
    /// reason sends whoever reads the dead letter looking in the wrong place.
    fn contradicts(reason: &str, value: Option<&Value>) -> bool {
        let digits = |s: &str| {
            let s = s.strip_prefix('-').unwrap_or(s);
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
        };
        match value {
            Some(Value::String(s)) if digits(s) => {
                reason.contains("must be a string") || reason.contains("must be an integer,")
            }
            Some(Value::String(_)) => reason.contains("must be a string"),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                reason.contains("must be an integer,")
            }
            _ => false,
        }
    }

    fn time_format() -> impl Strategy<Value = TimeFormat> {
        let pattern = |pattern: &str, zone: &str| {
            let tz = jiff::tz::TimeZone::get(zone).unwrap_or_else(|e| panic!("{zone}: {e}"));
            let pattern = crate::timepattern::TimePattern::new(pattern, tz, zone)
                .unwrap_or_else(|e| panic!("{pattern}: {e}"));
            TimeFormat::Pattern(Box::new(pattern))
        };
        proptest::sample::select(vec![
            TimeFormat::Rfc3339,
            TimeFormat::EpochSeconds,
            TimeFormat::EpochMillis,
            pattern("%Y/%m/%d %H:%M", "Europe/Paris"),
            pattern("%Y-%m-%dT%H:%M:%S%z", "America/New_York"),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any answer body gives the records array or an error that names
        /// `records_path`, never a panic.
        #[test]
        fn records_array_takes_any_body(
            body in json_value(),
            path in proptest::sample::select(vec!["", "data", "items", "data.items", "data..id", "id"]),
        ) {
            let path = FieldPath::parse(path);
            let expected = path.get(&body).cloned();
            let parent = path
                .segments()
                .split_last()
                .map(|(_, parents)| FieldPath::parse(&parents.join(".")))
                .and_then(|parent| parent.get(&body).cloned());
            // An empty object on the way: an answer that holds nothing.
            let emptied = (0..path.segments().len()).any(|n| {
                FieldPath::parse(&path.segments()[..n].join("."))
                    .get(&body)
                    .is_some_and(|v| v.as_object().is_some_and(serde_json::Map::is_empty))
            });
            match records_array(body, &path) {
                // An object with no array in it holds no records.
                Ok(records) if expected.is_none() => {
                    prop_assert!(records.is_empty());
                    prop_assert!(
                        emptied
                            || (path.segments().len() > 1
                                && parent.as_ref().is_some_and(holds_no_array)),
                        "{:?}",
                        parent
                    );
                }
                Ok(records) => prop_assert_eq!(Some(Value::Array(records)), expected),
                Err(message) => {
                    prop_assert!(message.contains("(records_path)"), "{}", message);
                    prop_assert!(!matches!(expected, Some(Value::Array(_))), "{}", message);
                }
            }
        }

        /// Any record comes out as a record with a non-empty id and the fields
        /// its spec points at, or as invalid with its body kept whole and a
        /// reason that names the field and the config key behind it, and never
        /// says the value must be a kind it already is.
        #[test]
        fn extract_takes_any_record(
            body in record_body(),
            nested in any::<bool>(),
            with_version in any::<bool>(),
            format in time_format(),
        ) {
            let mut spec = base_source().clone();
            let field = |name: &str| FieldPath::parse(&if nested { format!("data.{name}") } else { name.to_owned() });
            spec.id_field = field("id");
            spec.updated_at_field = field("updated_at");
            spec.version_field = with_version.then(|| field("version"));
            spec.time_format = format.clone();
            match extract(body.clone(), &spec) {
                Extracted::Record(record) => {
                    prop_assert!(!record.id().is_empty());
                    let id = spec.id_field.get(&body);
                    let shown = match id {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        other => return Err(TestCaseError::fail(format!("id from {other:?}"))),
                    };
                    prop_assert_eq!(record.id(), shown.as_str());
                    prop_assert_eq!(record.key.id_is_number, matches!(id, Some(Value::Number(_))));
                    let raw = spec.updated_at_field.get(&body).cloned().unwrap_or(Value::Null);
                    prop_assert_eq!(Ok(record.updated_at()), parse_time(&raw, &format));
                    prop_assert_eq!(&record.updated_at_raw, &raw);
                    prop_assert_eq!(record.version.is_some(), with_version);
                    prop_assert_eq!(&record.body, &body);
                }
                Extracted::Invalid { id, body: kept, reason } => {
                    prop_assert!(!id.is_empty());
                    prop_assert_eq!(&kept, &body);
                    let named = [
                        (&spec.id_field, "id_field"),
                        (&spec.updated_at_field, "updated_at_field"),
                    ]
                    .into_iter()
                    .chain(spec.version_field.as_ref().map(|f| (f, "version_field")))
                    .find(|(field, key)| reason.starts_with(&format!("`{field}` ({key}) "))
                        || reason == format!("record has no `{field}` ({key})"));
                    let Some((field, _)) = named else {
                        return Err(TestCaseError::fail(format!("names no field: {reason}")));
                    };
                    prop_assert!(!contradicts(&reason, field.get(&body)), "{}", reason);
                }
            }
        }

        /// Any JSON value read as a time in any format is a timestamp or a reason
        /// that says what was expected, never a panic.
        #[test]
        fn parse_time_takes_any_value(value in json_value(), format in time_format()) {
            if let Err(reason) = parse_time(&value, &format) {
                let expected = match format {
                    TimeFormat::Rfc3339 => "an RFC 3339 timestamp",
                    TimeFormat::EpochSeconds => "epoch seconds or an RFC 3339 timestamp",
                    TimeFormat::EpochMillis => "epoch milliseconds or an RFC 3339 timestamp",
                    TimeFormat::Pattern(_) => "an RFC 3339 timestamp or one in the `time_format` pattern",
                };
                prop_assert!(
                    reason == "is missing" || reason.starts_with(&format!("must be {expected}, found ")),
                    "{}", reason
                );
            }
        }

        /// A time written for the API in any format reads back as the same time,
        /// to that format's precision, whether the API echoes it as a string or
        /// as a JSON number.
        #[test]
        fn times_round_trip_through_each_format(at in timestamp(), format in time_format()) {
            // Before 1970 some zones kept local mean time, seconds off UTC's
            // minutes; a pattern's bounds are the window's, from recent times.
            prop_assume!(!matches!(format, TimeFormat::Pattern(_)) || at.as_second() > 0);
            let written = format_time(at, &format);
            let unit = match &format {
                TimeFormat::Rfc3339 => 1,
                TimeFormat::EpochSeconds => 1_000_000_000,
                TimeFormat::EpochMillis => 1_000_000,
                TimeFormat::Pattern(pattern) => match pattern.unit() {
                    jiff::Unit::Minute => 60_000_000_000,
                    _ => 1_000_000_000,
                },
            };
            let mut echoes = vec![Value::String(written.clone())];
            if matches!(format, TimeFormat::EpochSeconds | TimeFormat::EpochMillis) {
                echoes.push(serde_json::from_str(&written).unwrap_or_else(|e| unreachable!("{written}: {e}")));
            }
            for echo in echoes {
                let read = parse_time(&echo, &format);
                prop_assert!(read.is_ok(), "{} read back as {:?}", written, read);
                let read = read.unwrap_or_else(|_| unreachable!());
                let lost = at.as_nanosecond() - read.as_nanosecond();
                prop_assert!(lost.abs() < unit, "{} lost {}ns", written, lost);
                prop_assert_eq!(read.as_nanosecond() % unit, 0, "{}", written);
            }
        }

        /// Epoch seconds with a fraction, as some APIs write them, read to within
        /// a millisecond anywhere in jiff's range (an `f64` holds no more there).
        #[test]
        fn fractional_epoch_seconds_read_close_to_their_value(
            seconds in (FIRST_SECOND + 1) as f64..LAST_SECOND as f64,
        ) {
            let read = parse_time(&json!(seconds), &TimeFormat::EpochSeconds);
            prop_assert!(read.is_ok(), "{} read as {:?}", seconds, read);
            let read = read.unwrap_or_else(|_| unreachable!());
            let off = (read.as_microsecond() as f64 / 1e6 - seconds).abs();
            prop_assert!(off < 1e-3, "{} read as {}", seconds, read);
        }
    }
}
