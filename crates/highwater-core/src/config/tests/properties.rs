//! Property tests: whatever the file holds, `parse` answers with a config or
//! with problems a person can act on, never a panic.

use proptest::prelude::*;

use super::*;

/// Configs that together use every key of the file, each valid as written; the
/// properties below break a few of their lines at a time.
const BASES: &[&str] = &[
    VALID,
    r#"
[state]
path = "state.db"
merge_rows = 1000
first_run_ids = 0

[[sync]]
name = "orders"

[sync.source]
base_url = "https://shop.example.com"
path = "/orders"
timeout = "10s"
rate_limit = 5.5
error_path = "error"
id_field = "order.id"
updated_at_field = "order.updated"
time_format = "epoch_millis"
page_size_param = "per_page"
sorted = true
auth = { type = "api_key", key = "${SHOP_KEY}", header = "X-Key" }

[sync.source.pagination]
style = "offset"
offset_param = "skip"
overlap = 5

[sync.mapping]
external_id = "{order.id}"
constants = { n = 1, f = 1.5, b = true, list = [1, "a"], t = { x = 1 } }

[sync.destination]
type = "jsonl"
file = "out/orders.jsonl"
external_id_field = "key"

[sync.budgets]
max_runtime = "1h"
max_pages = 100
dead_letter_ratio = 0.5
dead_letter_window = 50
"#,
    r#"
[[sync]]
name = "people"

[sync.source]
base_url = "https://hr.example.com"
auth = { type = "basic", username = "u", password = "${HR_PASS}" }
time_format = "epoch_seconds"

[sync.source.pagination]
style = "next_url"
link_header = true

[sync.destination]
type = "http"
base_url = "https://crm.example.com"
mode = "put"
path = "/people/{external_id}"
method = "PATCH"
concurrency = 4
timeout = "5s"
headers = { "X-Trace" = "on" }
"#,
    r#"
[[sync]]
name = "a"

[sync.source]
base_url = "https://a.example.com"

[sync.source.pagination]
style = "keyset"
updated_param = "since"
id_param = "after"

[sync.destination]
type = "http"
base_url = "https://b.example.com"
mode = "post"
path = "/upsert"
idempotency_header = "X-Idem"
external_id_field = "external_id"
read_path = "/objects/{external_id}"
read_results_path = "data"
version_header = "X-Version"
late_write_window = "1m"
auth = { type = "api_key", key = "k", query_param = "key" }

[[sync]]
name = "b"

[sync.source]
base_url = "https://a.example.com"
lower_bound_param = "from"
upper_bound_param = "to"

[sync.source.pagination]
style = "page"
page_param = "p"
first_page = 0
overlap = 2

[sync.destination]
type = "jsonl"
file = "b.jsonl"
"#,
];

/// Marks every value the environment hands out, so that a message that shows one
/// is caught.
const SECRET_MARK: &str = "hush-";

fn secret_env(name: &str) -> Option<String> {
    match name {
        "BILLING_TOKEN" | "CRM_SECRET" | "SHOP_KEY" | "HR_PASS" | "X" => {
            Some(format!("{SECRET_MARK}{name}"))
        }
        _ => None,
    }
}

#[test]
fn every_base_config_is_valid() {
    for base in BASES {
        if let Err(e) = parse(base, Path::new("hw.toml"), &secret_env) {
            panic!("{e}\n{base}");
        }
    }
}

/// Words of the code, not of the file, that a message must not use.
const RUST_WORDS: &[&str] = &[
    "struct Raw",
    "spanned",
    "$__",
    "i64",
    "f64",
    "i128",
    "sequence",
    "a map",
    "type: map",
];

/// The start and end of a type error that would say a value is not of the type
/// it is.
const SAME_TYPE: &[(&str, &str)] = &[
    ("invalid type: integer", "expected an integer"),
    ("invalid type: string", "expected a string"),
    ("invalid type: table", "expected a table"),
    ("invalid type: array", "expected an array"),
    ("invalid type: boolean", "expected a boolean"),
    ("invalid type: floating point", "expected a number"),
];

/// What `parse` answered is a config with nothing of serde's inside, or problems
/// that each say something true in the file's words, at a line of the file,
/// and show no secret.
fn check_answer(
    text: &str,
    answer: Result<Config, ConfigError>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prelude::*;
    let config = match answer {
        Ok(config) => config,
        Err(e) => {
            prop_assert!(!e.problems.is_empty(), "an error without problems");
            let lines = text.matches('\n').count() + 1;
            for p in &e.problems {
                prop_assert!(!p.message.trim().is_empty(), "no message: {:?}", p);
                if let Some(line) = p.line {
                    prop_assert!(
                        (1..=lines).contains(&line),
                        "line {} of {}: {:?}",
                        line,
                        lines,
                        p
                    );
                }
                prop_assert!(
                    !p.message.contains(SECRET_MARK) && !p.key.contains(SECRET_MARK),
                    "a secret in {:?}",
                    p
                );
                // The file's words for types, not Rust's or serde's.
                for word in RUST_WORDS {
                    prop_assert!(
                        !p.message.contains(word) && !p.key.contains(word),
                        "{:?} in {}: {}",
                        word,
                        p.key,
                        p.message
                    );
                }
                for (found, expected) in SAME_TYPE {
                    prop_assert!(
                        !(p.message.starts_with(found) && p.message.ends_with(expected)),
                        "contradicts itself: {}",
                        p.message
                    );
                }
            }
            prop_assert!(e.to_string().starts_with("hw.toml:"), "{}", e);
            return Ok(());
        }
    };
    // Nothing downstream re-checks a value: whatever validated goes out as is.
    for sync in &config.syncs {
        for (field, value) in &sync.mapping.constants {
            prop_assert!(
                !value.to_string().contains("$__"),
                "constant {} is sent as {}",
                field,
                value
            );
        }
    }
    Ok(())
}

/// One change to one line of a base config.
#[derive(Debug, Clone)]
enum Edit {
    Drop,
    /// A `key = value` line gets this value instead.
    Value(String),
    /// A `[table]` line becomes this header.
    Header(String),
    /// This line goes in before the line.
    Insert(String),
}

/// Keys of the file and a few it does not have, dotted ones into maps too.
const KEYS: &[&str] = &[
    "name",
    "path",
    "merge_rows",
    "first_run_ids",
    "base_url",
    "params",
    "headers",
    "auth",
    "timeout",
    "rate_limit",
    "rate_limit_probe",
    "error_path",
    "records_path",
    "id_field",
    "updated_at_field",
    "version_field",
    "time_format",
    "page_size",
    "page_size_param",
    "start",
    "lag",
    "lookback",
    "lower_bound_param",
    "upper_bound_param",
    "sorted",
    "pagination",
    "style",
    "token_path",
    "token_param",
    "next_url_path",
    "link_header",
    "updated_param",
    "id_param",
    "offset_param",
    "page_param",
    "first_page",
    "overlap",
    "type",
    "token",
    "username",
    "password",
    "key",
    "header",
    "query_param",
    "token_url",
    "client_id",
    "client_secret",
    "scope",
    "external_id",
    "fields",
    "constants",
    "required",
    "file",
    "mode",
    "concurrency",
    "external_id_field",
    "dest_id_field",
    "method",
    "idempotency_header",
    "lookup_path",
    "lookup_param",
    "lookup_results_path",
    "create_path",
    "update_path",
    "update_method",
    "base",
    "cap",
    "max_attempts",
    "max_runtime",
    "max_pages",
    "dead_letter_ratio",
    "dead_letter_window",
    "source",
    "destination",
    "mapping",
    "retry",
    "budgets",
    "state",
    "sync",
    "constants.deep",
    "fields.\"a.\"",
    "required.x",
    "params.q",
    "headers.\"Bad Header\"",
    "\"\"",
    "page_sise",
    "a.b.c.d.e.f",
];

const HEADERS: &[&str] = &[
    "[state]",
    "[[sync]]",
    "[sync]",
    "[sync.source]",
    "[sync.source.pagination]",
    "[sync.source.auth]",
    "[sync.mapping]",
    "[sync.mapping.constants]",
    "[sync.destination]",
    "[sync.destination.auth]",
    "[sync.retry]",
    "[sync.budgets]",
    "[[sync.source]]",
    "[sync.nope]",
    "[]",
    "[[",
    "[a.b.c.d.e.f.g.h]",
];

/// Values as TOML text: of every type, at the edges of each, and strings
/// that mean something to the validator (`${...}`, templates, durations,
/// URLs, enum names).
fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        // One of each TOML type, so that every key soon meets each one it
        // does not take, and integers past i64 and dates, bare or inside
        // tables and arrays.
        4 => proptest::sample::select(vec![
            "99999999999999999999", "-9223372036854775809", "1979-05-27T07:32:00Z",
            "1979-05-27T07:32:00", "1979-05-27", "07:32:00", "{ d = 1979-05-27 }",
            "[07:32:00]", "{ t = { u = 1979-05-27T07:32:00-08:00 } }", "{ a = 1 }", "[1]",
            "true", "1.5", "\"text\"", "nan", "-inf",
        ])
        .prop_map(str::to_owned),
        4 => proptest::sample::select(vec![
            "\"\"", "0", "-1", "1", "9223372036854775807", "-9223372036854775808",
            "9223372036854775808", "99999999999999999999", "nan", "+nan", "-nan", "inf",
            "-inf", "1e308", "1e309", "5e-324", "-0.0", "0.5", "-1.5", "true", "false",
            "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "[]", "{}", "[1, \"a\"]",
            "{ a = 1 }", "\"${BILLING_TOKEN}\"", "\"${\"", "\"${}\"", "\"$${X}\"",
            "\"${UNSET}\"", "\"${a-b}\"", "\"${BILLING_TOKEN\"", "\"$\"", "\"${${X}}\"",
            "\"x${X}y${CRM_SECRET}\"", "\"2562047788015215h\"", "\"PT2562047788015215H\"",
            "\"-5s\"", "\"0s\"", "\"1 day\"", "\"5000000000h\"", "\"876000h\"",
            "\"rfc3339\"", "\"epoch_seconds\"", "\"epoch_millis\"", "\"cursor\"",
            "\"next_url\"", "\"keyset\"", "\"offset\"", "\"page\"", "\"http\"",
            "\"jsonl\"", "\"put\"", "\"lookup\"", "\"post\"", "\"oauth2\"", "\"api_key\"",
            "\"basic\"", "\"bearer\"", "\"none\"", "\"PATCH\"", "\"string\"",
            "\"integer\"", "\"{id}\"", "\"{}\"", "\"{\"", "\"}\"", "\"inv-{a..b}\"",
            "\"/x/{external_id}\"", "\"/x/{dest_id}\"", "\"https://\"",
            "\"http://[::1]:99999\"", "\"ftp://x\"", "\"https://api.example.com\"",
            "\"http://${X}/\"", "\"\\u0000\"", "\"a\\nb\"", "\"é\"", "\"😀\"",
            "\"\\u202e\"", "'literal'", "\"\"\"multi\nline\"\"\"", "\"2026-01-01T00:00:00Z\"",
            "\"2026-13-45T99:99:99Z\"", "\"-009999-01-02T01:59:59Z\"",
        ])
        .prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
        1 => any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
        1 => (1usize..20_000).prop_map(|n| toml::Value::String("x".repeat(n)).to_string()),
        1 => (1usize..300).prop_map(|d| format!("{}1{}", "[".repeat(d), "]".repeat(d))),
        1 => (1usize..300).prop_map(|d| format!("{}1{}", "{ a = ".repeat(d), " }".repeat(d))),
        1 => "[0-9]{1,20}(h|m|s|ms|us|ns)".prop_map(|d| format!("\"{d}\"")),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => Just(Edit::Drop),
        4 => odd_value().prop_map(Edit::Value),
        1 => proptest::sample::select(HEADERS.to_vec()).prop_map(|h| Edit::Header(h.to_owned())),
        2 => (proptest::sample::select(KEYS.to_vec()), odd_value())
            .prop_map(|(key, value)| Edit::Insert(format!("{key} = {value}"))),
        1 => proptest::sample::select(HEADERS.to_vec()).prop_map(|h| Edit::Insert(h.to_owned())),
    ]
}

/// A base config with a few of its lines dropped, given another value or
/// header, or preceded by a new line. (With more edits nearly every file is
/// broken TOML, and validation is never reached.)
fn mutated_config() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(BASES.to_vec()),
        proptest::collection::vec((any::<prop::sample::Index>(), edit()), 1..4),
    )
        .prop_map(|(base, edits)| {
            let lines: Vec<&str> = base.lines().collect();
            let mut line_edits: Vec<Option<Edit>> = vec![None; lines.len()];
            for (at, edit) in edits {
                line_edits[at.index(lines.len())] = Some(edit);
            }
            let mut out = Vec::new();
            for (line, edit) in lines.into_iter().zip(line_edits) {
                let is_header = line.trim_start().starts_with('[');
                match (edit, line.split_once('=')) {
                    (None, _) => out.push(line.to_owned()),
                    (Some(Edit::Drop), _) => {}
                    (Some(Edit::Value(value)), Some((key, _))) if !is_header => {
                        out.push(format!("{key}= {value}"));
                    }
                    (Some(Edit::Header(header)), _) if is_header => out.push(header),
                    (Some(Edit::Insert(new)), _) => {
                        out.push(new);
                        out.push(line.to_owned());
                    }
                    (Some(_), _) => out.push(line.to_owned()),
                }
            }
            out.join("\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Any bytes read as a config (invalid UTF-8 replaced, as a reader of a
    /// stray binary file would see it).
    #[test]
    fn parse_answers_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        check_answer(&text, parse(&text, Path::new("hw.toml"), &secret_env))?;
    }

    /// Text made of TOML's own pieces gets past the tokenizer far more often
    /// than random bytes do.
    #[test]
    fn parse_answers_any_toml_like_text(
        pieces in proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(vec![
                    "[", "]", "[[", "]]", "{", "}", "=", "\"", "'", "\"\"\"", ",", ".", "\n",
                    " ", "#", "\\", "sync", "source", "destination", "name", "base_url",
                    "pagination", "style", "\"cursor\"", "\"https://a.example\"", "1", "-",
                    "nan", "true", "${X}", "é",
                ])
                .prop_map(str::to_owned),
                proptest::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
            ],
            0..80,
        ),
    ) {
        let text = pieces.concat();
        check_answer(&text, parse(&text, Path::new("hw.toml"), &secret_env))?;
    }

    /// Valid configs with keys dropped, values swapped for values of other
    /// types, odd strings, extreme numbers, NaN, deep nesting, long strings,
    /// `${...}` forms, and keys or tables added.
    #[test]
    fn parse_answers_any_broken_config(text in mutated_config()) {
        check_answer(&text, parse(&text, Path::new("hw.toml"), &secret_env))?;
    }
}

/// Any TOML value, a few levels deep, dates and nan included.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        proptest::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0])
            .prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<String>().prop_map(toml::Value::String),
        proptest::sample::select(vec![
            "1979-05-27T07:32:00Z",
            "1979-05-27T07:32:00.999-07:00",
            "1979-05-27T07:32:00",
            "1979-05-27",
            "07:32:00",
        ])
        .prop_map(|d| {
            toml::Value::Datetime(d.parse().unwrap_or_else(|e| unreachable!("{d}: {e}")))
        }),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|t| toml::Value::Table(t.into_iter().collect())),
        ]
    })
}

/// A value as TOML text, inline.
fn inline(value: &toml::Value) -> String {
    match value {
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(table) => {
            let entries: Vec<String> = table
                .iter()
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

/// The JSON a constant is sent as, or `None` when JSON has no form for it.
fn as_json(value: &toml::Value) -> Option<serde_json::Value> {
    Some(match value {
        toml::Value::String(s) => serde_json::Value::from(s.as_str()),
        toml::Value::Integer(n) => serde_json::Value::from(*n),
        toml::Value::Float(f) => serde_json::Value::Number(serde_json::Number::from_f64(*f)?),
        toml::Value::Boolean(b) => serde_json::Value::from(*b),
        toml::Value::Datetime(_) => return None,
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(as_json).collect::<Option<_>>()?)
        }
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(k, v)| Some((k.clone(), as_json(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A mapping constant is sent exactly as written, or refused with a
    /// reason when JSON cannot hold it (dates, nan, inf): never turned into
    /// something else on the way.
    #[test]
    fn constants_are_sent_as_written_or_refused(
        constants in proptest::collection::btree_map("[a-z_]{1,6}", toml_value(), 1..4),
    ) {
        let table = toml::Value::Table(constants.clone().into_iter().collect());
        let text = VALID.replace(
            "constants = { origin = \"billing\" }",
            &format!("constants = {}", inline(&table)),
        );
        let expected: Vec<(String, Option<serde_json::Value>)> =
            constants.iter().map(|(k, v)| (k.clone(), as_json(v))).collect();
        match parse(&text, Path::new("hw.toml"), &secret_env) {
            Ok(config) => {
                let sent: Vec<(String, Option<serde_json::Value>)> = config.syncs[0]
                    .mapping
                    .constants
                    .iter()
                    .map(|(field, value)| (field.to_string(), Some(value.clone())))
                    .collect();
                prop_assert_eq!(sent, expected);
            }
            Err(e) => {
                let refused: Vec<String> = e
                    .problems
                    .iter()
                    .map(|p| p.key.trim_start_matches("sync \"invoices_to_crm\".mapping.constants.").to_owned())
                    .collect();
                let unsendable: Vec<String> =
                    expected.into_iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
                prop_assert_eq!(refused, unsendable, "{}", e);
            }
        }
    }
}

/// Text rich in what `interpolate` and `parse_template` look for.
fn placeholder_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            proptest::sample::select(vec![
                "$",
                "$$",
                "${",
                "{",
                "}",
                ".",
                "..",
                "X",
                "BILLING_TOKEN",
                "UNSET",
                "_",
                "-",
                "a",
                " ",
                "é",
                "😀",
                "\n",
                "id",
                "customer.id",
            ]),
            0..30,
        )
        .prop_map(|pieces| pieces.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `interpolate` answers any text; text without `$` comes back as it was,
    /// and an error says what is wrong without showing a value.
    #[test]
    fn interpolate_answers_any_text(text in placeholder_text()) {
        match interpolate(&text, &secret_env) {
            Ok(out) => {
                if !text.contains('$') {
                    prop_assert_eq!(out, text);
                }
            }
            Err(message) => {
                prop_assert!(!message.is_empty());
                prop_assert!(!message.contains(SECRET_MARK), "{}", message);
                prop_assert!(message.contains("${") || message.contains("environment variable"), "{}", message);
            }
        }
    }

    /// `$$` is a literal `$`: any text with its dollars doubled reads back as
    /// itself.
    #[test]
    fn doubled_dollars_read_back_as_written(text in placeholder_text()) {
        prop_assert_eq!(interpolate(&text.replace('$', "$$"), &secret_env), Ok(text));
    }

    /// Each `${NAME}` that is set is replaced by its value, and nothing else
    /// changes.
    #[test]
    fn set_variables_are_replaced_by_their_values(
        pieces in proptest::collection::vec(
            prop_oneof![
                "[^$]{0,8}".prop_map(|s| (s.clone(), s)),
                proptest::sample::select(vec!["X", "BILLING_TOKEN", "CRM_SECRET"]).prop_map(|name| {
                    (format!("${{{name}}}"), secret_env(name).unwrap_or_default())
                }),
            ],
            0..8,
        ),
    ) {
        let text: String = pieces.iter().map(|(text, _)| text.as_str()).collect();
        let expected: String = pieces.iter().map(|(_, value)| value.as_str()).collect();
        prop_assert_eq!(interpolate(&text, &secret_env), Ok(expected));
    }

    /// `parse_template` answers any text: a template that writes back to the
    /// same text, or an error that says what is wrong with a `{`.
    #[test]
    fn parse_template_answers_any_text(text in placeholder_text()) {
        match parse_template(&text) {
            Ok(template) => {
                let written: String = template
                    .parts
                    .iter()
                    .map(|part| match part {
                        TemplatePart::Literal(s) => s.clone(),
                        TemplatePart::Field(path) => format!("{{{path}}}"),
                        TemplatePart::LowerField(path) => format!("{{{path}|lower}}"),
                    })
                    .collect();
                prop_assert_eq!(written, text);
            }
            Err(message) => prop_assert!(message.contains('{'), "{}", message),
        }
    }
}
