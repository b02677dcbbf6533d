//! Owns when a scheduled sync runs: a period (`every`), or a cron expression in
//! a time zone, and the next time either is due after a given instant.
//!
//! The cron expression is the classic five fields (minute, hour, day of month,
//! month, day of week) with `*`, lists, ranges, steps and English names, or one
//! of `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. It is parsed
//! here rather than by a crate: the cron crates built on jiff depend on an
//! older jiff than this one, and those built on chrono would bring a second
//! time library and its own time-zone database; five fields over jiff's
//! civil times and zones are short enough to own.

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// When `highwater serve` runs a sync.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<Cron>, TimeZone),
}

impl Schedule {
    /// The first time it is due strictly after `from`; `None` when there is
    /// none a year and more ahead (a cron expression that names an impossible
    /// date, like the 31st of February).
    pub fn next_after(&self, from: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(every) => from
                .checked_add(jiff::SignedDuration::try_from(*every).ok()?)
                .ok(),
            Schedule::Cron(cron, tz) => cron.next_after(from, tz),
        }
    }
}

/// A five-field cron expression: the values each field admits, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// As written, for people.
    text: String,
    minutes: u64,
    hours: u32,
    /// Bit `d` for day `d` of the month, 1 to 31.
    days: u32,
    /// Bit `m` for month `m`, 1 to 12.
    months: u16,
    /// Bit 0 for Sunday to bit 6 for Saturday.
    weekdays: u8,
    /// Whether the day of month, or the day of the week, was `*`: when both
    /// are restricted, a day matching either is due (as cron has it).
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(written: &str) -> Result<Cron, String> {
        let text = match written.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "expected five fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        };
        // Sunday is 0 or 7.
        let weekdays = field(weekday, "day of week", 0, 7, &WEEKDAYS, 0)?;
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Cron {
            text: written.trim().to_owned(),
            minutes: field(minute, "minute", 0, 59, &[], 0)?,
            hours: u32::try_from(field(hour, "hour", 0, 23, &[], 0)?).map_err(|e| e.to_string())?,
            days: u32::try_from(field(day, "day of month", 1, 31, &[], 0)?)
                .map_err(|e| e.to_string())?,
            months: u16::try_from(field(month, "month", 1, 12, &MONTHS, 1)?)
                .map_err(|e| e.to_string())?,
            weekdays: u8::try_from(weekdays).map_err(|e| e.to_string())?,
            any_day: day == "*",
            any_weekday: weekday == "*",
        })
    }
}

/// The values one field admits, as bits; `names[i]` stands for `i + first_name`.
fn field(
    text: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
    first_name: u32,
) -> Result<u64, String> {
    let value = |part: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(part)) {
            return Ok(u32::try_from(i).unwrap_or(0) + first_name);
        }
        match part.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(format!("{what}: {part:?} is not from {min} to {max}")),
        }
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<u32>() {
                Ok(step) if step > 0 => (range, step),
                _ => {
                    return Err(format!(
                        "{what}: step {step:?} is not a whole number above 0"
                    ));
                }
            },
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15`: from 5 to the end, every 15.
                None if item.contains('/') => (value(range)?, max),
                None => {
                    let v = value(range)?;
                    (v, v)
                }
            },
        };
        if from > to {
            return Err(format!("{what}: the range {range:?} runs backwards"));
        }
        for v in (from..=to).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => day,
            (true, false) => weekday,
            (false, false) => day || weekday,
        }
    }

    /// The first minute the expression names, in `tz`, strictly after `from`.
    /// A time a clock change skips runs as much later as the clock jumped
    /// (02:30 becomes 03:30); a time it repeats runs once, the first time.
    pub fn next_after(&self, from: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = from.to_zoned_datetime(tz.clone()).datetime();
        let mut date = start.date();
        // Five years cover every day-and-month a valid expression can name
        // (the 29th of February included).
        for _ in 0..(5 * 366) {
            if self.months & (1 << date.month()) != 0 && self.day_matches(date) {
                for hour in 0..24i8 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    for minute in 0..60i8 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let at = DateTime::from(date)
                            .with()
                            .hour(hour)
                            .minute(minute)
                            .build()
                            .ok()?;
                        if at < start.with().second(0).subsec_nanosecond(0).build().ok()? {
                            continue;
                        }
                        let due = tz.to_ambiguous_timestamp(at).compatible().ok()?;
                        if due > from {
                            return Some(due);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn next(cron: &str, tz: &str, from: &str) -> String {
        let cron: Cron = cron.parse().unwrap_or_else(|e| panic!("{cron}: {e}"));
        let tz = TimeZone::get(tz).unwrap_or_else(|e| panic!("{tz}: {e}"));
        cron.next_after(at(from), &tz)
            .map_or("none".into(), |t| t.to_string())
    }

    #[test]
    fn the_next_time_is_the_first_named_minute_after() {
        // 02:00 in Paris is 01:00 UTC in winter.
        assert_eq!(
            next("0 2 * * *", "Europe/Paris", "2026-12-02T12:00:00Z"),
            "2026-12-03T01:00:00Z"
        );
        assert_eq!(
            next("0 2 * * *", "Europe/Paris", "2026-12-02T00:59:59Z"),
            "2026-12-02T01:00:00Z"
        );
        // Strictly after: at the due minute itself, the next one.
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-12-02T12:15:00Z"),
            "2026-12-02T12:30:00Z"
        );
        assert_eq!(
            next("5/20 9-17 * * mon-fri", "UTC", "2026-12-04T17:50:00Z"),
            "2026-12-07T09:05:00Z",
            "Friday evening to Monday morning"
        );
        assert_eq!(
            next("0 0 29 feb *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            next("@monthly", "UTC", "2026-12-02T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        // Day of month and day of week both restricted: either one.
        assert_eq!(
            next("0 0 13 * 5", "UTC", "2026-12-02T00:00:00Z"),
            "2026-12-04T00:00:00Z"
        );
        assert_eq!(next("0 0 31 2 *", "UTC", "2026-12-02T00:00:00Z"), "none");
    }

    #[test]
    fn clock_changes_neither_skip_nor_double_a_run() {
        // Paris skips 02:00–03:00 on 2027-03-28: 02:30 runs at 03:30 local.
        assert_eq!(
            next("30 2 * * *", "Europe/Paris", "2027-03-27T12:00:00Z"),
            "2027-03-28T01:30:00Z"
        );
        // And repeats 02:00–03:00 on 2027-10-31: one run, the first time.
        let first = next("30 2 * * *", "Europe/Paris", "2027-10-30T12:00:00Z");
        assert_eq!(first, "2027-10-31T00:30:00Z");
        assert_eq!(
            next("30 2 * * *", "Europe/Paris", &first),
            "2027-11-01T01:30:00Z"
        );
    }

    #[test]
    fn a_bad_expression_says_what_is_wrong() {
        let error = |text: &str| text.parse::<Cron>().err().unwrap_or_default();
        assert_eq!(
            error("0 2 * *"),
            "expected five fields (minute hour day-of-month month day-of-week), found 4"
        );
        assert_eq!(error("60 * * * *"), "minute: \"60\" is not from 0 to 59");
        assert_eq!(
            error("0 2 * smarch *"),
            "month: \"smarch\" is not from 1 to 12"
        );
        assert_eq!(
            error("*/0 * * * *"),
            "minute: step \"0\" is not a whole number above 0"
        );
        assert_eq!(
            error("0 5-1 * * *"),
            "hour: the range \"5-1\" runs backwards"
        );
        assert_eq!(
            "0 0 * * 7".parse::<Cron>().map(|c| c.weekdays),
            Ok(1),
            "Sunday as 7"
        );
    }

    #[test]
    fn every_is_a_period_from_the_last_start() {
        let schedule = Schedule::Every(Duration::from_secs(900));
        assert_eq!(
            schedule.next_after(at("2026-12-02T12:00:00Z")),
            Some(at("2026-12-02T12:15:00Z"))
        );
    }
}
