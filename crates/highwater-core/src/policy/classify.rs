//! Owns failure classification: one function decides whether an outcome is
//! transient (retry), record-level (dead-letter and go on) or fatal (stop at the
//! last checkpoint), and whether the request's effect is known.

use std::time::{Duration, SystemTime};

/// What came back from one attempt that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A status outside 2xx.
    Status(u16),
    /// A status other than 429 (GitHub's 403) whose headers say the API's
    /// rate limit refused the request (`Retry-After`, or none remaining): it
    /// was not processed, and waiting is the remedy.
    Throttled(u16),
    /// The connection could not be made: nothing was sent.
    ConnectFailed,
    /// The TLS handshake refused the server: its certificate is not trusted
    /// (an unknown authority, another name, out of date) or it shares no
    /// protocol with us. Nothing was sent, and waiting changes none of it.
    Untrusted,
    /// The request went out and no answer came in time: it may have been applied.
    TimedOutAfterSend,
    /// The connection broke after the request went out: it may have been applied.
    BrokenAfterSend,
    /// A 2xx answer (its status) whose body reports an error.
    ErrorInBody(u16),
    /// A 4xx whose body names an error the API asks to be tried again after
    /// (`transient_errors`: Notion's 409 `conflict_error`): not applied.
    Busy(u16),
}

impl Outcome {
    /// The API refused the request for its rate limit: a wait, using up no
    /// attempt (`Failed::rate_limited`).
    pub fn rate_limited(self) -> bool {
        matches!(self, Outcome::Status(429) | Outcome::Throttled(_))
    }
}

/// What an outcome means for the record or the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Try again later. When `outcome_known` is false the first attempt may have
    /// taken effect, so only an idempotent path may repeat it.
    Transient { outcome_known: bool },
    /// This record cannot be written as it is: dead-letter it, go on with the rest.
    RecordLevel,
    /// Nothing will work until a person acts (credentials, configuration): stop.
    Fatal,
}

/// The one place that decides what a failure means.
///
/// A 5xx may follow a commit (a proxy's 502 or 504 after the backend applied
/// the request, a 500 from a step after the write), so its effect is unknown;
/// 408, 425 and 429 say the request was not processed.
pub fn classify(outcome: Outcome) -> Class {
    match outcome {
        Outcome::Status(408 | 425 | 429) | Outcome::Throttled(_) | Outcome::Busy(_) => {
            Class::Transient {
                outcome_known: true,
            }
        }
        Outcome::Status(500 | 502 | 503 | 504) => Class::Transient {
            outcome_known: false,
        },
        Outcome::Status(401 | 403) => Class::Fatal,
        Outcome::Status(400..=499) => Class::RecordLevel,
        Outcome::Status(_) => Class::Fatal,
        Outcome::ConnectFailed => Class::Transient {
            outcome_known: true,
        },
        Outcome::Untrusted => Class::Fatal,
        Outcome::TimedOutAfterSend | Outcome::BrokenAfterSend => Class::Transient {
            outcome_known: false,
        },
        Outcome::ErrorInBody(_) => Class::RecordLevel,
    }
}

/// Reads a `Retry-After` value: delay-seconds or an HTTP-date. A date in the past
/// means "now". Fractional seconds (`1.5`), which some APIs send although the
/// standard has whole ones, are honoured rather than ignored: ignoring them would
/// send the next request before the server wants it.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && let Ok(seconds) = value.parse::<f64>()
    {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn design_doc_examples() {
        for s in [408, 425, 429] {
            assert_eq!(
                classify(Outcome::Status(s)),
                Class::Transient {
                    outcome_known: true
                }
            );
        }
        for s in [500, 502, 503, 504] {
            assert_eq!(
                classify(Outcome::Status(s)),
                Class::Transient {
                    outcome_known: false
                },
                "a {s} may follow a commit"
            );
        }
        for s in [400, 409, 413, 422] {
            assert_eq!(classify(Outcome::Status(s)), Class::RecordLevel);
        }
        for s in [401, 403, 501, 301] {
            assert_eq!(classify(Outcome::Status(s)), Class::Fatal);
        }
        assert_eq!(
            classify(Outcome::TimedOutAfterSend),
            Class::Transient {
                outcome_known: false
            }
        );
        assert_eq!(classify(Outcome::ErrorInBody(200)), Class::RecordLevel);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1e9", now), None);
    }

    /// Text around a `Retry-After` value that a server or proxy might send.
    fn noise() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            proptest::sample::select(vec![
                " ", "\t", "s", " seconds", "-", "+", ".", ".5", "e3", ",", "GMT", "0", "\u{a0}",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// A server's `Retry-After` is read without a panic whatever it holds:
        /// garbage, signs, fractions, exponents, numbers past `u64`, dates with
        /// text around them.
        #[test]
        fn retry_after_survives_any_value(
            value in prop_oneof![
                any::<String>(),
                (noise(), "[0-9]{1,40}", noise()).prop_map(|(a, n, b)| format!("{a}{n}{b}")),
                (noise(), 0u64..(400 * 365 * 86_400), noise()).prop_map(|(a, secs, b)| {
                    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                    format!("{a}{}{b}", httpdate::fmt_http_date(at))
                }),
                proptest::sample::select(vec![
                    "1.5", "-1", "-0", "+5", "1e400", "NaN", "inf", "-inf", "0x10", "1_000",
                    "18446744073709551615", "18446744073709551616", "1.8e19", "0.0000001",
                    "99999999999999999999999999.5", "Fri, 31 Dec 9999 23:59:59 GMT",
                    "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                    "Sun Nov  6 08:49:37 1994", "Mon, 32 Nov 1994 08:49:37 GMT", "",
                ])
                .prop_map(str::to_owned),
            ],
            now_secs in 0u64..(300 * 365 * 86_400),
        ) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
            let _ = parse_retry_after(&value, now);
        }

        /// Delay-seconds, with the spaces a header may carry around it, is exactly
        /// that many seconds, up to the largest `u64`.
        #[test]
        fn retry_after_reads_any_whole_number_of_seconds(
            seconds in prop_oneof![any::<u64>(), 0u64..100_000],
            before in "[ \t]{0,3}",
            after in "[ \t]{0,3}",
        ) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            prop_assert_eq!(
                parse_retry_after(&format!("{before}{seconds}{after}"), now),
                Some(Duration::from_secs(seconds))
            );
        }

        /// An HTTP-date is the time from now until then (whole seconds, as the
        /// format has), and a date already past means now.
        #[test]
        fn retry_after_reads_any_http_date(
            now_secs in 0u64..(8000 * 365 * 86_400 / 10),
            offset in -1_000_000_000i64..1_000_000_000,
        ) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
            // HTTP-dates start in 1970.
            let at_secs = now_secs.saturating_add_signed(offset);
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at_secs);
            let expected = at.duration_since(now).unwrap_or(Duration::ZERO);
            prop_assert_eq!(
                parse_retry_after(&httpdate::fmt_http_date(at), now),
                Some(expected)
            );
        }
    }

    proptest! {
        #[test]
        fn every_status_has_exactly_one_meaning(status in 100u16..600) {
            let class = classify(Outcome::Status(status));
            let transient = [408, 425, 429, 500, 502, 503, 504].contains(&status);
            prop_assert_eq!(matches!(class, Class::Transient { .. }), transient);
            if status == 401 || status == 403 {
                prop_assert_eq!(class, Class::Fatal);
            }
            if (400..500).contains(&status) && !transient && status != 401 && status != 403 {
                prop_assert_eq!(class, Class::RecordLevel);
            }
            // Only a server error leaves the request's effect unknown.
            let unknown = matches!(class, Class::Transient { outcome_known: false });
            prop_assert_eq!(unknown, (500..505).contains(&status) && status != 501);
        }
    }
}
