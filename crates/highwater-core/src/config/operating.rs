//! Checks how a sync is operated beside what it syncs: its `schedule` (a
//! period or a cron expression in a time zone, and a jitter) and its
//! `[alerts]` (the webhook, an `HttpSpec` of its own, and the thresholds).

use std::time::Duration;

use serde_spanned::Spanned;

use super::raw::*;
use super::*;

impl Validator<'_> {
    pub(super) fn schedule(
        &mut self,
        raw: &Spanned<RawSchedule>,
        at: &str,
    ) -> Option<ScheduleSpec> {
        use crate::schedule::{Cron, Schedule};
        let at = format!("{at}.schedule");
        let r = raw.get_ref();
        let jitter = match &r.jitter {
            Some(j) => self.period(j, &format!("{at}.jitter")),
            None => Some(Duration::ZERO),
        };
        if let (Some(tz), None) = (&r.timezone, &r.cron) {
            self.problem(
                tz,
                format!("{at}.timezone"),
                "applies only to `cron`: a period runs from each start, whatever the zone",
            );
            return None;
        }
        let (when, shortest) = match (&r.every, &r.cron) {
            (Some(every), None) => {
                let every = self.period(every, &format!("{at}.every"));
                if every.is_some_and(|e| e < Duration::from_secs(1)) {
                    self.problem(
                        r.every.as_ref()?,
                        format!("{at}.every"),
                        "expected at least \"1s\"",
                    );
                    return None;
                }
                (Schedule::Every(every?), every?)
            }
            (None, Some(cron)) => {
                let parsed = match cron.get_ref().parse::<Cron>() {
                    Ok(parsed) => Some(parsed),
                    Err(message) => {
                        self.problem(cron, format!("{at}.cron"), message);
                        None
                    }
                };
                let tz = match &r.timezone {
                    None => Some(jiff::tz::TimeZone::UTC),
                    Some(name) => match jiff::tz::TimeZone::get(name.get_ref()) {
                        Ok(tz) => Some(tz),
                        Err(_) => {
                            self.problem(
                                name,
                                format!("{at}.timezone"),
                                "expected a time zone name like \"Europe/Paris\" or \"UTC\"",
                            );
                            None
                        }
                    },
                };
                // A cron expression runs at most once a minute.
                (
                    Schedule::Cron(Box::new(parsed?), tz?),
                    Duration::from_secs(60),
                )
            }
            _ => {
                self.problem(
                    raw,
                    &at,
                    "expected either `every` (a period) or `cron` (an expression), not both or neither",
                );
                return None;
            }
        };
        let jitter = jitter?;
        if jitter >= shortest {
            self.problem(
                r.jitter.as_ref()?,
                format!("{at}.jitter"),
                "expected less than the time between runs: a run would start past the next one's time",
            );
            return None;
        }
        Some(ScheduleSpec { when, jitter })
    }

    pub(super) fn alerts(&mut self, raw: Spanned<RawAlerts>, at: &str) -> Option<AlertSpec> {
        let at = format!("{at}.alerts");
        let raw = raw.into_inner();
        // The URL is checked under its own key first; `http` names it `base_url`.
        let webhook = match self.url(&raw.webhook, &format!("{at}.webhook")) {
            Some(_) => self.http(
                &raw.webhook,
                &raw.headers,
                None,
                raw.timeout.as_ref(),
                None,
                None,
                None,
                None,
                &at,
            ),
            None => None,
        };
        let dead_letters_above = raw
            .dead_letters_above
            .as_ref()
            .map(|n| self.count(n, &format!("{at}.dead_letters_above"), 0, u32::MAX));
        let lag_above = raw
            .lag_above
            .as_ref()
            .map(|d| self.period(d, &format!("{at}.lag_above")));
        // Every key is checked before any is given up on: every problem is told at once.
        let mut webhook = webhook?;
        // A webhook that does not answer in ten seconds is not going to.
        if raw.timeout.is_none() {
            webhook.timeout = Duration::from_secs(10);
        }
        Some(AlertSpec {
            webhook,
            dead_letters_above: match dead_letters_above {
                Some(n) => Some(u64::from(n?)),
                None => None,
            },
            lag_above: match lag_above {
                Some(d) => Some(d?),
                None => None,
            },
        })
    }

    /// How often something happens: a duration that may be given in days.
    fn period(&mut self, raw: &Spanned<String>, key: &str) -> Option<Duration> {
        let parsed = parse_long_duration(raw.get_ref());
        if parsed.is_none() {
            self.problem(
                raw,
                key,
                "expected a duration like \"30s\", \"15m\", \"6h\" or \"1d\"",
            );
        }
        parsed
    }
}
