//! Owns how a run's window is written into requests: the lower bound rounded down
//! and the watermark rounded up to what the source's time format can say, each
//! moved one step further out where the API's bound is strict, so that no record
//! stamped on or near a bound falls outside what the API returns. What is read
//! beyond the window is dropped past the watermark; what is read before the lower
//! bound is either a lagging replica's copy, read again (see `lag`), or the
//! answer of an API that compares the bound coarsely, deduplicated by the ledger.

use jiff::{RoundMode, SignedDuration, Timestamp, TimestampRound, Unit};

use super::Window;
use crate::config::{LOWER_IN_PARAMS, SourceSpec, TimeFormat, UPPER_IN_PARAMS};

/// The window's bounds as query parameters, for the parameters the source names.
pub fn window_query(spec: &SourceSpec, window: Window) -> Vec<(String, String)> {
    let mut query = Vec::new();
    if let (Some(param), Some(at)) = (&spec.lower_bound_param, window.lower) {
        query.push((param.clone(), lower(at, spec)));
    }
    if let Some(param) = &spec.upper_bound_param {
        query.push((param.clone(), upper(window.watermark, spec)));
    }
    query
}

/// A configured parameter's value with the window written where it says
/// `{lower}` and `{upper}`. The text around a bound is a filter the API must
/// still be able to read without one: a window without a lower bound (a
/// first run without `start`, a full run) writes the Unix epoch there, and
/// a full run, which sends no upper bound, the year 9000 (the last instant
/// there is cannot be written in every zone and format).
pub fn fill_params(value: &str, spec: &SourceSpec, window: Window) -> String {
    if !value.contains('{') {
        return value.to_owned();
    }
    let lower_at = window.lower.unwrap_or(Timestamp::UNIX_EPOCH);
    let far = Timestamp::from_second(221_845_392_000).unwrap_or(Timestamp::MAX);
    value
        .replace(LOWER_IN_PARAMS, &lower(lower_at, spec))
        .replace(UPPER_IN_PARAMS, &upper(window.watermark.min(far), spec))
}

/// The lower bound as sent: rounded down, and one step earlier when the API reads
/// it as `updated_at > bound`.
pub fn lower(at: Timestamp, spec: &SourceSpec) -> String {
    format_time(lower_sent(at, spec), &spec.time_format)
}

/// The time [`lower`] writes: the earliest record the API's answer may hold.
pub fn lower_sent(at: Timestamp, spec: &SourceSpec) -> Timestamp {
    if let TimeFormat::Pattern(pattern) = &spec.time_format {
        return pattern
            .bound(at, true, spec.lower_bound_exclusive)
            .unwrap_or(Timestamp::MIN);
    }
    let (unit, step) = precision(&spec.time_format);
    let sent = round(at, unit, RoundMode::Floor).unwrap_or(Timestamp::MIN);
    if spec.lower_bound_exclusive {
        sent.checked_sub(step).unwrap_or(Timestamp::MIN)
    } else {
        sent
    }
}

/// The watermark as sent: rounded up, and one step later when the API reads it as
/// `updated_at < bound`.
pub fn upper(at: Timestamp, spec: &SourceSpec) -> String {
    if let TimeFormat::Pattern(pattern) = &spec.time_format {
        let sent = pattern
            .bound(at, false, spec.upper_bound_exclusive)
            .unwrap_or(Timestamp::MAX);
        return format_time(sent, &spec.time_format);
    }
    let (unit, step) = precision(&spec.time_format);
    let mut sent = round(at, unit, RoundMode::Ceil).unwrap_or(Timestamp::MAX);
    if spec.upper_bound_exclusive {
        sent = sent.checked_add(step).unwrap_or(Timestamp::MAX);
    }
    format_time(sent, &spec.time_format)
}

/// The unit a bound in this format is rounded to, and how much further out a
/// strict bound is moved (a pattern's are its own: [`TimePattern`]).
///
/// [`TimePattern`]: crate::timepattern::TimePattern
fn precision(format: &TimeFormat) -> (Unit, SignedDuration) {
    match format {
        TimeFormat::EpochSeconds => (Unit::Second, SignedDuration::from_secs(1)),
        TimeFormat::EpochMillis => (Unit::Millisecond, SignedDuration::from_millis(1)),
        // RFC 3339 carries a bound as exactly as the state store keeps it (to the
        // microsecond), so nothing past the watermark is asked for: a record read
        // past it is dropped, and a source whose replicas lag may then answer the
        // next run with an older copy of it. A strict bound moves a whole second,
        // not a microsecond, because the API may compare at a coarser precision
        // than it is sent (keep whole seconds, or drop or round a parameter's
        // fraction); a second holds whichever it does, at the price of a second of
        // records read again.
        TimeFormat::Rfc3339 | TimeFormat::Pattern(_) => {
            (Unit::Microsecond, SignedDuration::from_secs(1))
        }
    }
}

fn round(at: Timestamp, unit: Unit, mode: RoundMode) -> Option<Timestamp> {
    at.round(TimestampRound::new().smallest(unit).mode(mode))
        .ok()
}

/// Writes a time the way the API reads it in query parameters; the caller has
/// already rounded it to the format's unit.
pub(crate) fn format_time(at: Timestamp, format: &TimeFormat) -> String {
    match format {
        TimeFormat::Rfc3339 => at.to_string(),
        // The pattern wrote and read back times of this range when the config
        // was validated; only a time it cannot hold at all (past year 9999)
        // fails, and that bound is then sent as RFC 3339.
        TimeFormat::Pattern(pattern) => pattern.write(at).unwrap_or_else(|_| at.to_string()),
        TimeFormat::EpochSeconds => at.as_second().to_string(),
        TimeFormat::EpochMillis => at.as_millisecond().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A source spec as the config file would give it, with `extra` keys added.
    fn spec(extra: &str) -> SourceSpec {
        let text = format!(
            r#"
[[sync]]
name = "s"
[sync.source]
base_url = "http://127.0.0.1:1"
lower_bound_param = "updated_after"
upper_bound_param = "updated_before"
pagination = {{ style = "cursor" }}
{extra}
[sync.destination]
type = "jsonl"
file = "out.jsonl"
"#
        );
        let config = crate::config::parse(&text, Path::new("hw.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        config.syncs[0].source.clone()
    }

    fn window() -> Window {
        let at = |text: &str| text.parse::<Timestamp>().unwrap_or(Timestamp::UNIX_EPOCH);
        Window {
            // Both bounds fall between two whole milliseconds.
            lower: Some(at("2026-01-01T00:00:10.250400Z")),
            watermark: at("2026-01-01T00:00:20.750400Z"),
        }
    }

    fn query(extra: &str) -> String {
        window_query(&spec(extra), window())
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    #[test]
    fn inclusive_bounds_round_outward_never_truncate() {
        assert_eq!(
            query(""),
            "updated_after=2026-01-01T00:00:10.2504Z&updated_before=2026-01-01T00:00:20.7504Z"
        );
        assert_eq!(
            query(r#"time_format = "epoch_seconds""#),
            "updated_after=1767225610&updated_before=1767225621"
        );
        assert_eq!(
            query(r#"time_format = "epoch_millis""#),
            "updated_after=1767225610250&updated_before=1767225620751"
        );
    }

    #[test]
    fn a_window_inside_a_parameter_is_written_in_the_api_s_pattern_and_zone() {
        let spec = spec("time_format = \"%Y/%m/%d %H:%M\"\ntimezone = \"Europe/Paris\"");
        let jql = r#"updated >= "{lower}" AND updated <= "{upper}" ORDER BY updated"#;
        // Rounded outward to the minute, in Paris's time.
        assert_eq!(
            fill_params(jql, &spec, window()),
            r#"updated >= "2026/01/01 01:00" AND updated <= "2026/01/01 01:01" ORDER BY updated"#
        );
        assert_eq!(
            bound_floor_text(&spec),
            "2026-01-01T00:00:00Z",
            "the floor an answer is checked against is the time written"
        );
        let mut unbounded = window();
        unbounded.lower = None;
        assert_eq!(
            fill_params(jql, &spec, unbounded),
            r#"updated >= "1970/01/01 01:00" AND updated <= "2026/01/01 01:01" ORDER BY updated"#
        );
        let json = r#"{"status": "open", "lower": 1}"#;
        assert_eq!(fill_params(json, &spec, window()), json);
    }

    fn bound_floor_text(spec: &SourceSpec) -> String {
        window()
            .lower
            .map(|at| lower_sent(at, spec).to_string())
            .unwrap_or_default()
    }

    #[test]
    fn exclusive_bounds_move_out_by_one_more_step() {
        let both = "lower_bound_exclusive = true\nupper_bound_exclusive = true";
        assert_eq!(
            query(both),
            "updated_after=2026-01-01T00:00:09.2504Z&updated_before=2026-01-01T00:00:21.7504Z"
        );
        assert_eq!(
            query(&format!("{both}\ntime_format = \"epoch_seconds\"")),
            "updated_after=1767225609&updated_before=1767225622"
        );
        assert_eq!(
            query(&format!("{both}\ntime_format = \"epoch_millis\"")),
            "updated_after=1767225610249&updated_before=1767225620752"
        );
        assert_eq!(
            query("lower_bound_exclusive = true\ntime_format = \"epoch_seconds\""),
            "updated_after=1767225609&updated_before=1767225621"
        );
        assert_eq!(
            query("upper_bound_exclusive = true\ntime_format = \"epoch_seconds\""),
            "updated_after=1767225610&updated_before=1767225622"
        );
    }

    #[test]
    fn a_bound_already_on_the_precision_is_sent_as_is_unless_strict() {
        let mut window = window();
        window.lower = "2026-01-01T00:00:00Z".parse().ok();
        window.watermark = Timestamp::from_second(1_767_225_620).unwrap_or(window.watermark);
        let sent = |extra: &str| window_query(&spec(extra), window);
        let pair = |lower: &str, upper: &str| {
            vec![
                ("updated_after".to_owned(), lower.to_owned()),
                ("updated_before".to_owned(), upper.to_owned()),
            ]
        };
        assert_eq!(
            sent(r#"time_format = "epoch_seconds""#),
            pair("1767225600", "1767225620")
        );
        assert_eq!(
            sent(
                "time_format = \"epoch_seconds\"\nlower_bound_exclusive = true\nupper_bound_exclusive = true"
            ),
            pair("1767225599", "1767225621")
        );
        assert_eq!(
            sent(""),
            pair("2026-01-01T00:00:00Z", "2026-01-01T00:00:20Z")
        );
    }

    #[test]
    fn the_first_run_without_a_lower_bound_sends_only_the_watermark() {
        let mut window = window();
        window.lower = None;
        assert_eq!(
            window_query(&spec("lower_bound_exclusive = true"), window),
            vec![(
                "updated_before".to_owned(),
                "2026-01-01T00:00:20.7504Z".to_owned()
            )]
        );
    }
}
