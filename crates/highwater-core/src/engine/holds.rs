//! Owns whether an object read back from a destination holds a payload
//! written: each field by its value, whatever form the destination gives it
//! back in — a number by its value or rounded to the decimals kept, a
//! timestamp by its instant, a typed column's own form of what it took.
//! Reconcile and the read-backs of late writes both ask it.

use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
