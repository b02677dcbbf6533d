//! Owns times written by a strftime pattern in a time zone: the form an API
//! whose bounds go inside a query language takes them (Jira's JQL reads
//! `"2026/01/31 14:05"` in the user's time zone, to the minute). A pattern
//! says how finely it writes a time only by what it leaves out, so the unit a
//! bound is rounded to is found by writing times and reading them back: the
//! finest unit at which a time comes back as it went out.

use jiff::fmt::strtime;
use jiff::tz::TimeZone;
use jiff::{RoundMode, SignedDuration, Timestamp, Unit, ZonedDateTime, ZonedDateTimeRound};

/// A strftime pattern, the zone its times are written in, and the finest
/// unit it writes faithfully.
#[derive(Debug, Clone)]
pub struct TimePattern {
    pattern: String,
    zone: TimeZone,
    zone_name: String,
    unit: Unit,
}

impl PartialEq for TimePattern {
    fn eq(&self, other: &Self) -> bool {
        (&self.pattern, &self.zone_name) == (&other.pattern, &other.zone_name)
    }
}

impl Eq for TimePattern {}

/// From the finest: the first at which a pattern writes times back unchanged
/// is its unit.
const UNITS: [Unit; 6] = [
    Unit::Microsecond,
    Unit::Millisecond,
    Unit::Second,
    Unit::Minute,
    Unit::Hour,
    Unit::Day,
];

impl TimePattern {
    /// The pattern in `zone` (`zone_name` as the config says it), or why it
    /// cannot carry a bound: it must write a date, and every time rounded to
    /// its unit must read back as itself.
    pub fn new(pattern: &str, zone: TimeZone, zone_name: &str) -> Result<Self, String> {
        // Fields each unlike the others, an afternoon hour (a 12-hour clock
        // without its AM/PM fails) and a morning one, in two seasons.
        let samples: Vec<Timestamp> =
            ["2026-11-27T15:49:26.535897Z", "2031-02-03T04:05:07.089012Z"]
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
        for unit in UNITS {
            let candidate = TimePattern {
                pattern: pattern.to_owned(),
                zone: zone.clone(),
                zone_name: zone_name.to_owned(),
                unit,
            };
            let faithful = samples.iter().all(|&at| {
                let Some(sent) = candidate.rounded(at, RoundMode::Floor) else {
                    return false;
                };
                candidate
                    .write(sent)
                    .ok()
                    .and_then(|text| candidate.read(&text))
                    == Some(sent)
            });
            if faithful {
                return Ok(candidate);
            }
        }
        let example = samples
            .first()
            .and_then(|&at| strtime::format(pattern, &at.to_zoned_datetime(zone)).ok());
        Err(match example {
            Some(text) => format!(
                "the pattern writes {text:?}, which does not read back as the time it was written from: it needs the year, month and day, and the time down to what the API compares (\"%Y/%m/%d %H:%M\" writes to the minute)"
            ),
            None => {
                "is not a strftime pattern that writes a time, like \"%Y/%m/%d %H:%M\"".to_owned()
            }
        })
    }

    /// The unit the API is taken to compare times at: the finest this
    /// pattern writes.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// The zone times are written in, and its name as the config gave it.
    pub fn zone(&self) -> (TimeZone, String) {
        (self.zone.clone(), self.zone_name.clone())
    }

    /// The time to write for a bound at `at`: rounded outward to the unit
    /// (`lower`: down), one unit further out where the API compares strictly,
    /// and, where the zone's clock repeats or skips an hour, moved out again
    /// until however the API reads the wall time written (either side of the
    /// change) it is still on the outer side: reading an hour more is a
    /// re-read, an hour less is records lost.
    pub fn bound(&self, at: Timestamp, lower: bool, exclusive: bool) -> Option<Timestamp> {
        let (mode, out) = if lower {
            (RoundMode::Floor, -1)
        } else {
            (RoundMode::Ceil, 1)
        };
        let mut sent = self.rounded(at, mode)?;
        if exclusive {
            sent = self.step(sent, out)?;
        }
        let want = sent;
        let outside = |text: &str| {
            self.readings(text)
                .is_some_and(|(earliest, latest)| match lower {
                    true => latest <= want,
                    false => earliest >= want,
                })
        };
        // A clock change moves a wall time by an hour at most in all but a
        // few zones; three hours cover those.
        for _ in 0..3 {
            if outside(&self.write(sent).ok()?) {
                return Some(sent);
            }
            let hour = SignedDuration::from_hours(out);
            sent = self.rounded(sent.checked_add(hour).ok()?, mode)?;
        }
        Some(sent)
    }

    /// `at` rounded to the pattern's unit in its zone (a day starts at the
    /// zone's midnight).
    pub fn rounded(&self, at: Timestamp, mode: RoundMode) -> Option<Timestamp> {
        let zoned = at.to_zoned_datetime(self.zone.clone());
        zoned
            .round(ZonedDateTimeRound::new().smallest(self.unit).mode(mode))
            .ok()
            .map(|z| z.timestamp())
    }

    /// `at` moved by one unit, `steps` of them (negative: earlier).
    pub fn step(&self, at: Timestamp, steps: i64) -> Option<Timestamp> {
        let zoned: ZonedDateTime = at.to_zoned_datetime(self.zone.clone());
        let moved = if self.unit == Unit::Day {
            zoned.checked_add(jiff::Span::new().try_days(steps).ok()?)
        } else {
            let one = match self.unit {
                Unit::Microsecond => SignedDuration::from_micros(1),
                Unit::Millisecond => SignedDuration::from_millis(1),
                Unit::Second => SignedDuration::from_secs(1),
                Unit::Minute => SignedDuration::from_mins(1),
                _ => SignedDuration::from_hours(1),
            };
            zoned.checked_add(one.checked_mul(i32::try_from(steps).ok()?)?)
        };
        moved.ok().map(|z| z.timestamp())
    }

    /// `at` as the pattern writes it in its zone.
    pub fn write(&self, at: Timestamp) -> Result<String, String> {
        strtime::format(&self.pattern, &at.to_zoned_datetime(self.zone.clone()))
            .map_err(|e| e.to_string())
    }

    /// A time the pattern wrote: at the offset it names, else in its zone
    /// (a wall time the clock shows twice, the first).
    pub fn read(&self, text: &str) -> Option<Timestamp> {
        self.readings(text).map(|(earliest, _)| earliest)
    }

    /// The earliest and latest instants a text the pattern wrote may stand
    /// for: one, unless it is a wall time the zone's clock shows twice or
    /// skips.
    fn readings(&self, text: &str) -> Option<(Timestamp, Timestamp)> {
        let parts = strtime::parse(&self.pattern, text).ok()?;
        if let Ok(at) = parts.to_timestamp() {
            return Some((at, at));
        }
        let civil = parts.to_datetime().ok()?;
        let ambiguous = self.zone.to_ambiguous_timestamp(civil);
        let (earlier, later) = (ambiguous.earlier().ok()?, ambiguous.later().ok()?);
        Some((earlier.min(later), earlier.max(later)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris(pattern: &str) -> Result<TimePattern, String> {
        let zone = TimeZone::get("Europe/Paris").map_err(|e| e.to_string())?;
        TimePattern::new(pattern, zone, "Europe/Paris")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_pattern_s_unit_is_the_finest_it_writes_back() {
        let unit = |p: &str| paris(p).map(|p| p.unit());
        assert_eq!(unit("%Y/%m/%d %H:%M"), Ok(Unit::Minute));
        assert_eq!(unit("%Y-%m-%dT%H:%M:%S%z"), Ok(Unit::Second));
        assert_eq!(unit("%Y-%m-%d %H:%M:%S.%3f"), Ok(Unit::Millisecond));
        assert_eq!(unit("%Y-%m-%d %H:%M:%S%.f"), Ok(Unit::Microsecond));
        assert_eq!(unit("%Y-%m-%d"), Ok(Unit::Day));
        assert_eq!(unit("%s"), Ok(Unit::Second));
    }

    #[test]
    fn a_pattern_that_loses_the_date_or_the_hour_is_refused() {
        for pattern in ["%m/%d %H:%M", "%Y-%m-%d %I:%M", "%H:%M", "updated", "%Q"] {
            let refused = paris(pattern).err().unwrap_or_default();
            assert!(
                refused.contains("read back") || refused.contains("strftime"),
                "{pattern}: {refused:?}"
            );
        }
    }

    #[test]
    fn times_are_written_and_rounded_in_the_zone() {
        let Ok(minutes) = paris("%Y/%m/%d %H:%M") else {
            panic!("a pattern to the minute");
        };
        let stamp = at("2026-01-31T13:05:30Z");
        let floor = minutes.rounded(stamp, RoundMode::Floor);
        let ceil = minutes.rounded(stamp, RoundMode::Ceil);
        assert_eq!(floor, Some(at("2026-01-31T13:05:00Z")));
        assert_eq!(ceil, Some(at("2026-01-31T13:06:00Z")));
        assert_eq!(
            ceil.and_then(|c| minutes.write(c).ok()).as_deref(),
            Some("2026/01/31 14:06")
        );
        assert_eq!(minutes.read("2026/01/31 14:06"), ceil);
        assert_eq!(minutes.step(stamp, -1), Some(at("2026-01-31T13:04:30Z")));
        // The last Sunday of October, Paris's clock shows 02:00 to 03:00
        // twice: an upper bound in the second pass is written past them, and
        // a lower bound in the first before them.
        let second_pass = at("2026-10-25T01:30:00Z");
        let upper = minutes.bound(second_pass, false, false);
        assert_eq!(
            upper.and_then(|u| minutes.write(u).ok()).as_deref(),
            Some("2026/10/25 03:30")
        );
        let first_pass = at("2026-10-25T00:30:00Z");
        let lower = minutes.bound(first_pass, true, false);
        assert_eq!(
            lower.and_then(|l| minutes.write(l).ok()).as_deref(),
            Some("2026/10/25 01:30")
        );
        assert_eq!(
            minutes
                .bound(stamp, true, true)
                .and_then(|l| minutes.write(l).ok())
                .as_deref(),
            Some("2026/01/31 14:04")
        );
        let Ok(days) = paris("%Y-%m-%d") else {
            panic!("a pattern to the day");
        };
        // Paris's midnight, not UTC's.
        assert_eq!(
            days.rounded(stamp, RoundMode::Floor),
            Some(at("2026-01-30T23:00:00Z"))
        );
    }
}
