//! Owns reading what an answer's headers say about the API's rate limit: the
//! IETF `RateLimit` / `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers,
//! structured fields such as `"default";r=50;t=30`), their older
//! `RateLimit-Limit` / `-Remaining` / `-Reset` form, `X-RateLimit-*` and
//! `X-Rate-Limit-*`, whose reset is seconds from now or an epoch timestamp
//! (GitHub's and Okta's, Twitter's), and HubSpot's `X-HubSpot-RateLimit-*`, a
//! quota per interval.
//! Invariant: any header value yields a quota or nothing, never a panic; a value
//! that cannot be read is ignored, as if the server had not sent it.

use std::time::{Duration, SystemTime};

/// What one answer said about the API's limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Requests the server still accepts before `reset`.
    pub remaining: Option<u64>,
    /// How long from now until `remaining` is renewed.
    pub reset: Option<Duration>,
    /// Requests the server accepts per window, and the window when it names one.
    pub limit: Option<u64>,
    pub window: Option<Duration>,
    /// `remaining` counts the requests of a window that rolls (HubSpot's
    /// names no reset): each leaves it as it ages, so within `reset` the
    /// server takes what remains and as many as leave the window meanwhile.
    pub rolling: bool,
}

impl Quota {
    /// The sustained requests per second the server's policy allows, when it
    /// names both its quota and its window.
    pub fn policy_rate(&self) -> Option<f64> {
        let limit = self.limit? as f64;
        let window = self.window?.as_secs_f64();
        (window > 0.0).then_some(limit / window)
    }

    /// Remaining requests and the time to their renewal, when both were said.
    pub fn budget(&self) -> Option<(u64, Duration)> {
        Some((self.remaining?, self.reset?))
    }
}

/// Above this a reset is an epoch timestamp, not seconds from now: 10^9 seconds
/// are 31 years, and 10^9 as a date is 2001.
const EPOCH_SECONDS_FROM: f64 = 1e9;
/// Above this an epoch timestamp is in milliseconds (10^12 s is year 33658).
const EPOCH_MILLIS_FROM: f64 = 1e12;
/// The longest duration read from a header; longer ones are clamped to it.
const LONGEST: Duration = Duration::from_secs(30 * 365 * 86_400);

/// Reads the rate-limit headers of an answer; `header` looks one up by name
/// (case-insensitively, as `HeaderMap` does). The IETF fields win over the
/// older forms when an answer carries several.
pub fn read_quota<'a>(header: impl Fn(&str) -> Option<&'a str>, now: SystemTime) -> Option<Quota> {
    let quota = ietf(header("ratelimit"), header("ratelimit-policy"));
    let quota = quota.or_else(|| {
        numbered(
            header("ratelimit-limit"),
            header("ratelimit-remaining"),
            header("ratelimit-reset"),
            now,
        )
    });
    let quota = quota.or_else(|| {
        numbered(
            header("x-ratelimit-limit"),
            header("x-ratelimit-remaining"),
            header("x-ratelimit-reset"),
            now,
        )
    });
    // Linear's: `X-RateLimit-Requests-*`, its reset in epoch milliseconds.
    let quota = quota.or_else(|| {
        numbered(
            header("x-ratelimit-requests-limit"),
            header("x-ratelimit-requests-remaining"),
            header("x-ratelimit-requests-reset"),
            now,
        )
    });
    let quota = quota.or_else(|| {
        numbered(
            header("x-rate-limit-limit"),
            header("x-rate-limit-remaining"),
            header("x-rate-limit-reset"),
            now,
        )
    });
    let quota = quota.or_else(|| {
        interval(
            header("x-hubspot-ratelimit-max"),
            header("x-hubspot-ratelimit-remaining"),
            header("x-hubspot-ratelimit-interval-milliseconds"),
        )
    });
    quota.filter(|q| q.budget().is_some() || q.policy_rate().is_some())
}

/// HubSpot's form: `Max` requests per `Interval-Milliseconds`, `Remaining`
/// of them left. It names no reset: the window may roll, or end at any time
/// within one interval, so that is the budget's reset — never more requests
/// than remain until a whole interval has passed — and the budget is
/// `rolling`: spread over the interval, it counts the requests that leave
/// the window too.
fn interval(max: Option<&str>, remaining: Option<&str>, interval: Option<&str>) -> Option<Quota> {
    let window = interval
        .and_then(first_number)
        .and_then(|ms| seconds(ms / 1000.0))
        .filter(|w| !w.is_zero())?;
    let limit = max.and_then(first_number).and_then(count);
    let remaining = remaining.and_then(first_number).and_then(count);
    if limit.is_none() && remaining.is_none() {
        return None;
    }
    Some(Quota {
        remaining,
        reset: remaining.map(|_| window),
        limit,
        window: Some(window),
        rolling: true,
    })
}

/// `Limit`, `Remaining`, `Reset` as plain numbers (the older draft and
/// `X-RateLimit-*`). A reset may be seconds from now or an epoch timestamp.
fn numbered(
    limit: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
    now: SystemTime,
) -> Option<Quota> {
    let limit = limit.and_then(first_number).and_then(count);
    let remaining = remaining.and_then(first_number).and_then(count);
    let reset = reset
        .and_then(first_number)
        .and_then(|v| reset_from(v, now));
    if limit.is_none() && remaining.is_none() {
        return None;
    }
    Some(Quota {
        remaining,
        reset,
        limit,
        window: None,
        rolling: false,
    })
}

/// How long until a reset given as seconds from now or as an epoch timestamp
/// (seconds or milliseconds). A timestamp already past means now.
fn reset_from(value: f64, now: SystemTime) -> Option<Duration> {
    if value < EPOCH_SECONDS_FROM {
        return seconds(value);
    }
    let epoch_seconds = if value >= EPOCH_MILLIS_FROM {
        value / 1000.0
    } else {
        value
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    seconds((epoch_seconds - now).max(0.0))
}

/// `RateLimit` (a list of `"name";r=…;t=…`, or the older dictionary
/// `limit=…, remaining=…, reset=…`) with `RateLimit-Policy` (`"name";q=…;w=…`,
/// or the older `100;w=60`). Of several limits the tightest counts: the one
/// with the fewest requests remaining, and the policy allowing the lowest rate.
fn ietf(limit: Option<&str>, policy: Option<&str>) -> Option<Quota> {
    let mut quota = Quota {
        remaining: None,
        reset: None,
        limit: None,
        window: None,
        rolling: false,
    };
    let mut name = None;
    if let Some(value) = limit {
        let members = members(value);
        let dictionary = members
            .iter()
            .any(|m| matches!(m.item_key.as_deref(), Some("limit" | "remaining" | "reset")));
        if dictionary {
            for member in &members {
                let value = member.item_value.as_deref().and_then(number);
                match member.item_key.as_deref() {
                    Some("limit") => quota.limit = value.and_then(count),
                    Some("remaining") => quota.remaining = value.and_then(count),
                    Some("reset") => quota.reset = value.and_then(seconds),
                    _ => {}
                }
            }
        } else {
            let tightest = members
                .iter()
                .filter_map(|m| Some((m, m.param("r").and_then(count)?)))
                .min_by_key(|(_, remaining)| *remaining);
            if let Some((member, remaining)) = tightest {
                quota.remaining = Some(remaining);
                quota.reset = member.param("t").and_then(seconds);
                name = member.item_value.clone();
            }
        }
    }
    if let Some(value) = policy {
        let policies: Vec<(Option<String>, u64, Option<Duration>)> = members(value)
            .iter()
            .filter_map(|m| {
                let q = m
                    .param("q")
                    .or_else(|| m.item_value.as_deref().and_then(number))
                    .and_then(count)?;
                Some((m.item_value.clone(), q, m.param("w").and_then(seconds)))
            })
            .collect();
        // The policy of the limit reported, else the one allowing the lowest rate.
        let named = policies
            .iter()
            .find(|(n, _, _)| name.is_some() && *n == name);
        let lowest = policies
            .iter()
            .filter_map(|p| {
                let window = p.2?.as_secs_f64();
                (window > 0.0).then(|| (p, p.1 as f64 / window))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(p, _)| p);
        if let Some((_, q, w)) = named.or(lowest).or(policies.first()) {
            quota.limit = quota.limit.or(Some(*q));
            quota.window = *w;
        }
    }
    (quota.remaining.is_some() || quota.limit.is_some()).then_some(quota)
}

/// One member of a structured-field list or dictionary, read leniently.
#[derive(Debug, Default)]
struct Member {
    /// `key` of a dictionary member `key=value`.
    item_key: Option<String>,
    /// The bare item: a string (unquoted), token or number as written.
    item_value: Option<String>,
    params: Vec<(String, String)>,
}

impl Member {
    fn param(&self, key: &str) -> Option<f64> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| number(v))
    }
}

/// Splits a structured-field list on commas and each member on semicolons,
/// outside quoted strings.
fn members(value: &str) -> Vec<Member> {
    split_outside_quotes(value, ',')
        .into_iter()
        .filter(|m| !m.trim().is_empty())
        .take(64)
        .map(|member| {
            let mut parts = split_outside_quotes(member, ';').into_iter();
            let item = parts.next().unwrap_or_default().trim();
            let (item_key, item_value) = match item.split_once('=') {
                Some((k, v)) if !item.starts_with('"') => {
                    (Some(k.trim().to_ascii_lowercase()), Some(unquote(v)))
                }
                _ => (None, (!item.is_empty()).then(|| unquote(item))),
            };
            let params = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_ascii_lowercase(), unquote(v)))
                })
                .collect();
            Member {
                item_key,
                item_value,
                params,
            }
        })
        .collect()
}

fn split_outside_quotes(value: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (at, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&value[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
        .to_owned()
}

/// A non-negative finite number.
fn number(value: &str) -> Option<f64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    value.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The first number of a value: some APIs send `100, 100;w=60` in `X-RateLimit-Limit`.
fn first_number(value: &str) -> Option<f64> {
    let first = value.split([',', ';']).next()?;
    number(first)
}

fn count(value: f64) -> Option<u64> {
    (value >= 0.0).then(|| value.min(u64::MAX as f64).floor() as u64)
}

fn seconds(value: f64) -> Option<Duration> {
    (value >= 0.0).then(|| Duration::try_from_secs_f64(value).map_or(LONGEST, |d| d.min(LONGEST)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(headers: &[(&str, &str)], now: SystemTime) -> Option<Quota> {
        read_quota(
            |name| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v)
            },
            now,
        )
    }

    fn at(epoch: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(epoch)
    }

    #[test]
    fn x_ratelimit_reset_is_seconds_from_now_or_an_epoch_timestamp() {
        let now = at(1_700_000_000);
        let quota = |reset: &str| {
            read(
                &[
                    ("X-RateLimit-Limit", "5000"),
                    ("X-RateLimit-Remaining", "4990"),
                    ("X-RateLimit-Reset", reset),
                ],
                now,
            )
        };
        let expected = |reset| Quota {
            remaining: Some(4990),
            reset: Some(reset),
            limit: Some(5000),
            window: None,
            rolling: false,
        };
        assert_eq!(quota("30"), Some(expected(Duration::from_secs(30))));
        // GitHub: the epoch second the window ends.
        assert_eq!(quota("1700000042"), Some(expected(Duration::from_secs(42))));
        // In milliseconds.
        assert_eq!(
            quota("1700000001500"),
            Some(expected(Duration::from_millis(1500)))
        );
        // A timestamp already past: renewed now.
        assert_eq!(quota("1699999000"), Some(expected(Duration::ZERO)));
        assert_eq!(quota("0.25"), Some(expected(Duration::from_millis(250))));
    }

    /// Okta and Twitter spell it `X-Rate-Limit-*`, the reset an epoch second.
    #[test]
    fn x_rate_limit_is_read_as_x_ratelimit() {
        let now = at(1_700_000_000);
        let quota = read(
            &[
                ("x-rate-limit-limit", "600"),
                ("x-rate-limit-remaining", "598"),
                ("x-rate-limit-reset", "1700000060"),
            ],
            now,
        );
        assert_eq!(
            quota,
            Some(Quota {
                remaining: Some(598),
                reset: Some(Duration::from_secs(60)),
                limit: Some(600),
                window: None,
                rolling: false,
            })
        );
    }

    #[test]
    fn hubspot_s_headers_name_a_quota_per_interval() {
        let now = at(1_700_000_000);
        let quota = read(
            &[
                ("X-HubSpot-RateLimit-Daily", "250000"),
                ("X-HubSpot-RateLimit-Daily-Remaining", "249990"),
                ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
                ("X-HubSpot-RateLimit-Max", "100"),
                ("X-HubSpot-RateLimit-Remaining", "97"),
            ],
            now,
        );
        let ten = Duration::from_secs(10);
        assert_eq!(
            quota,
            Some(Quota {
                remaining: Some(97),
                reset: Some(ten),
                limit: Some(100),
                window: Some(ten),
                rolling: true,
            })
        );
        assert_eq!(quota.and_then(|q| q.policy_rate()), Some(10.0));
        // Without the interval, nothing says over what the quota runs.
        let without = read(&[("X-HubSpot-RateLimit-Remaining", "97")], now);
        assert_eq!(without, None);
    }

    #[test]
    fn ietf_fields_name_remaining_reset_quota_and_window() {
        let now = at(1_700_000_000);
        let quota = read(
            &[
                ("RateLimit", "\"default\";r=50;t=30"),
                (
                    "RateLimit-Policy",
                    "\"burst\";q=10;w=1, \"default\";q=100;w=60",
                ),
            ],
            now,
        );
        assert_eq!(
            quota,
            Some(Quota {
                remaining: Some(50),
                reset: Some(Duration::from_secs(30)),
                limit: Some(100),
                window: Some(Duration::from_secs(60)),
                rolling: false,
            })
        );
        // Of several limits, the one with the fewest requests left.
        let quota = read(
            &[
                ("RateLimit", "\"day\";r=900;t=3600, \"minute\";r=3;t=12"),
                (
                    "RateLimit-Policy",
                    "\"day\";q=1000;w=86400, \"minute\";q=60;w=60",
                ),
            ],
            now,
        );
        assert_eq!(
            quota.and_then(|q| q.budget()),
            Some((3, Duration::from_secs(12)))
        );
        assert_eq!(quota.and_then(|q| q.policy_rate()), Some(1.0));
        // The older drafts: a dictionary, and the policy as a bare number.
        let quota = read(
            &[
                ("RateLimit", "limit=100, remaining=7, reset=2"),
                ("RateLimit-Policy", "100;w=10"),
            ],
            now,
        );
        assert_eq!(
            quota.and_then(|q| q.budget()),
            Some((7, Duration::from_secs(2)))
        );
        assert_eq!(quota.and_then(|q| q.policy_rate()), Some(10.0));
        let quota = read(
            &[
                ("RateLimit-Limit", "100"),
                ("RateLimit-Remaining", "0"),
                ("RateLimit-Reset", "5"),
            ],
            now,
        );
        assert_eq!(
            quota.and_then(|q| q.budget()),
            Some((0, Duration::from_secs(5)))
        );
    }

    #[test]
    fn headers_that_say_nothing_usable_are_no_quota() {
        let now = at(1_700_000_000);
        assert_eq!(read(&[], now), None);
        assert_eq!(read(&[("X-RateLimit-Limit", "100")], now), None);
        assert_eq!(
            read(
                &[("X-RateLimit-Remaining", "-3"), ("X-RateLimit-Reset", "1")],
                now
            ),
            None
        );
        assert_eq!(read(&[("RateLimit", "\"x\";t=3")], now), None);
        assert_eq!(read(&[("RateLimit", "garbage;;,,\"")], now), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the server sends, reading it never panics, and what is read
        /// stays in range.
        #[test]
        fn any_header_values_are_read_without_panic(
            values in proptest::collection::vec(
                prop_oneof![
                    any::<String>(),
                    "[0-9.;=, \"a-z]{0,40}",
                    "(\"[a-z]{1,5}\";)?[rtqw]=[0-9]{1,25}(\\.[0-9]{0,5})?(;[rtqw]=[0-9]{1,25})*",
                    "[0-9]{1,30}(\\.[0-9]{1,30})?",
                ],
                7,
            ),
            now in any::<u64>(),
        ) {
            let names = [
                "RateLimit", "RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining",
                "RateLimit-Reset", "X-RateLimit-Limit", "X-RateLimit-Remaining",
            ];
            let headers: Vec<(&str, &str)> = names
                .iter()
                .zip(values.iter())
                .map(|(n, v)| (*n, v.as_str()))
                .chain([("X-RateLimit-Reset", values[0].as_str())])
                .collect();
            let now = SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(now % (1 << 40)))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if let Some(quota) = read(&headers, now) {
                prop_assert!(quota.reset.is_none_or(|r| r <= LONGEST));
                prop_assert!(quota.window.is_none_or(|w| w <= LONGEST));
                prop_assert!(quota.policy_rate().is_none_or(|r| r.is_finite() && r >= 0.0));
            }
        }
    }
}
