//! Owns finding one value in JSON text without parsing the rest: by following
//! its strings and brackets only, for text that is valid JSON or is parsed
//! whole right after (the source's answer, whose next-page token is wanted
//! before its records are read; the JSON Lines destination's own lines,
//! whose ids a compaction reads).
//! Why not serde_json: it builds or checks every value it passes over, which
//! is the cost these callers avoid. Where following strings and brackets is
//! not enough to be sure (an escape in a key, text of another shape), the
//! answer is `None` and the caller parses.
//! Invariant: an answer is the value serde_json would find at the same place
//! in the same valid text (of two keys alike, the last, as its maps keep).

/// The text of the value at `path` (keys of nested objects from the top) in
/// `text`, or `None` where it is not found or the scan is not sure. The
/// objects on the way are read to their end, so that a later key alike wins;
/// `text` must hold nothing after its value but whitespace.
pub fn find<'t, S: AsRef<str>>(text: &'t [u8], path: &[S]) -> Option<&'t [u8]> {
    let start = skip_space(text, 0);
    // The top value is read once: through its members when a key is wanted
    // there (a page's next token lies past its records, which a read to the
    // end and then through the members passed over twice).
    let (mut value, end) = match path.first() {
        Some(key) => member(text, start, key.as_ref())?,
        None => {
            let end = value_end(text, start)?;
            (&text[start..end], end)
        }
    };
    if skip_space(text, end) != text.len() {
        return None;
    }
    for key in path.iter().skip(1) {
        value = member(value, 0, key.as_ref())?.0;
    }
    Some(value)
}

/// The value of `key` in the object starting at `at` in `text` (the last if
/// it has two), and where the object ends: just past it.
fn member<'t>(text: &'t [u8], at: usize, key: &str) -> Option<(&'t [u8], usize)> {
    if text.get(at) != Some(&b'{') {
        return None;
    }
    let mut at = skip_space(text, at + 1);
    let mut found = None;
    if text.get(at) == Some(&b'}') {
        return None;
    }
    loop {
        let key_end = string_end(text, at)?;
        let name = &text[at + 1..key_end];
        at = skip_space(text, key_end + 1);
        if text.get(at) != Some(&b':') || name.contains(&b'\\') {
            return None;
        }
        at = skip_space(text, at + 1);
        let end = value_end(text, at)?;
        if name == key.as_bytes() {
            found = Some(&text[at..end]);
        }
        at = skip_space(text, end);
        match text.get(at)? {
            b',' => at = skip_space(text, at + 1),
            b'}' => return found.map(|found| (found, at + 1)),
            _ => return None,
        }
    }
}

/// The characters of a string value without its quotes, when it holds no
/// escape (then they are the string itself).
pub fn plain_string(value: &[u8]) -> Option<&str> {
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') || inner.contains(&b'"') {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

fn skip_space(text: &[u8], mut at: usize) -> usize {
    while text
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// Where the string starting at `at` (its opening quote) ends: its closing
/// quote.
fn string_end(text: &[u8], at: usize) -> Option<usize> {
    if text.get(at) != Some(&b'"') {
        return None;
    }
    let mut from = at + 1;
    loop {
        let found = from + memchr::memchr2(b'"', b'\\', text.get(from..)?)?;
        if text[found] == b'"' {
            return Some(found);
        }
        from = found + 2;
    }
}

/// Where the value starting at `at` ends: just past it.
fn value_end(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => string_end(text, at).map(|end| end + 1),
        b'{' | b'[' => {
            let (mut depth, mut at) = (0usize, at);
            loop {
                match text.get(at)? {
                    b'"' => at = string_end(text, at)?,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let end = at
                + text[at..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(text.len() - at);
            (end > at).then_some(end)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    #[test]
    fn a_value_is_found_by_its_path_or_left_to_the_parser() {
        let text = br#" { "data" : [1, {"next": "no"}, "]}\"" ] , "meta": {"next": "c2", "n": -1.5e3}, "next": null } "#;
        assert_eq!(find(text, &["meta", "next"]), Some(&br#""c2""#[..]));
        assert_eq!(find(text, &["meta", "n"]), Some(&b"-1.5e3"[..]));
        assert_eq!(find(text, &["next"]), Some(&b"null"[..]));
        assert_eq!(find(text, &["data", "next"]), None);
        assert_eq!(find(text, &["absent"]), None);
        assert_eq!(
            find(br#"{"k":"old","k":"new"}"#, &["k"]),
            Some(&br#""new""#[..])
        );
        for doubtful in [
            &br#"{"k\u0031":"x"}"#[..],
            br#"{"k":"x""#,
            br#"{"k":"x"} {}"#,
            br#"{"k":"x",}"#,
            br#"{"a":"unterminated}"#,
            br#"["k"]"#,
        ] {
            assert_eq!(
                find(doubtful, &["k"]),
                None,
                "{}",
                String::from_utf8_lossy(doubtful)
            );
        }
        assert_eq!(plain_string(br#""c 2""#), Some("c 2"));
        assert_eq!(plain_string(br#""a\"b""#), None);
        assert_eq!(plain_string(b"12"), None);
    }

    /// Any JSON value, its objects' keys drawn from the regex `keys`.
    pub(crate) fn json(keys: &'static str) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[ -~\\PC]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the text holds, a value found is the one the parser finds
        /// at that path; a path of plain keys to a value is always found.
        #[test]
        fn a_value_found_is_the_parsers(
            value in json("[ab\"\\\\]{0,2}"),
            path in prop::collection::vec("[ab\"\\\\]{0,2}", 0..3),
            pretty in any::<bool>(),
        ) {
            let text = if pretty {
                serde_json::to_vec_pretty(&value)
            } else {
                serde_json::to_vec(&value)
            }.expect("a value serializes");
            // Compared with the parse of the same text: a float read back
            // may differ from the one written in its last bit.
            let parsed: Value = serde_json::from_slice(&text).expect("valid JSON");
            let mut wanted = Some(&parsed);
            for key in &path {
                wanted = wanted.and_then(|v| v.as_object()?.get(key));
            }
            match find(&text, &path) {
                Some(found) => {
                    let found: Value = serde_json::from_slice(found).expect("a value");
                    prop_assert_eq!(Some(&found), wanted);
                }
                None => prop_assert!(
                    wanted.is_none() || text.contains(&b'\\'),
                    "{:?} at {:?} not found", wanted, path
                ),
            }
        }
    }
}
