//! Owns the one retry loop: make an attempt, and when it fails as the caller's
//! classification says, wait out the backoff and make another — for HTTP
//! requests, token fetches and SQL statements alike. The attempt reports what
//! its failure means ([`Class`], and the server's wait if it named one); this
//! loop decides whether and when to try again, and what to give back when it
//! will not.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{Backoff, Class, RetryPolicy};
use crate::stop::{Stop, StopReason};

/// One attempt that did not succeed, as its caller classified it.
#[derive(Debug)]
pub struct Failed<E> {
    pub error: E,
    pub class: Class,
    /// The server's own wait (`Retry-After`), a floor for the next delay.
    pub retry_after: Option<Duration>,
    /// The server refused it for its rate limit (a 429): the wait before the
    /// next attempt uses up no attempt, only `rate_limited_for`.
    pub rate_limited: bool,
}

impl<E> Failed<E> {
    pub fn new(error: E, class: Class) -> Self {
        Failed {
            error,
            class,
            retry_after: None,
            rate_limited: false,
        }
    }
}

/// Why the loop gave back an error instead of trying again.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// Record-level or fatal: no retry changes it.
    Final {
        error: E,
        class: Class,
    },
    /// Its effect is unknown, and the caller said repeating it is not safe.
    Unknown {
        error: E,
        attempts: u32,
    },
    /// Transient failures outlasted the policy: its attempts, or, when
    /// `rate_limited` says for how long the server had been answering 429,
    /// its `rate_limited_for`.
    Exhausted {
        last: E,
        attempts: u32,
        rate_limited: Option<Duration>,
    },
    Stopped(StopReason),
}

/// How a successful call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Attempts made, the successful one included.
    pub made: u32,
    /// Whether an attempt before the last got no clear answer: it may have
    /// taken effect too.
    pub unclear: bool,
}

/// Calls `attempt` (with the attempt's number, from 1) until it succeeds, a
/// failure is not transient, or the policy's attempts run out — or, for a
/// request the server keeps answering 429, its `rate_limited_for` (the waits
/// it asks for use up no attempt: an API that refuses everything for a while
/// once its limit is passed, Airtable's 30 s, outlasts any few attempts). An attempt whose
/// effect is unknown is repeated only when `repeatable` (an idempotent request,
/// an upsert by key). `on_retry` hears of each failure about to be retried, with
/// the delay before the next attempt.
pub async fn retry<T, E, Fut>(
    policy: RetryPolicy,
    stop: &Stop,
    repeatable: bool,
    mut attempt: impl FnMut(u32) -> Fut,
    mut on_retry: impl FnMut(&Failed<E>, Duration),
) -> Result<(T, Attempts), GaveUp<E>>
where
    Fut: Future<Output = Result<T, Failed<E>>>,
{
    let mut backoff = Backoff::new(policy);
    let mut unclear = false;
    let mut limited_since: Option<Instant> = None;
    loop {
        if let Some(reason) = stop.reason() {
            return Err(GaveUp::Stopped(reason));
        }
        let failed = match attempt(backoff.attempts()).await {
            Ok(value) => {
                let attempts = Attempts {
                    made: backoff.attempts(),
                    unclear,
                };
                return Ok((value, attempts));
            }
            Err(failed) => failed,
        };
        let outcome_known = match failed.class {
            Class::Transient { outcome_known } => outcome_known,
            class => {
                return Err(GaveUp::Final {
                    error: failed.error,
                    class,
                });
            }
        };
        if !outcome_known && !repeatable {
            return Err(GaveUp::Unknown {
                error: failed.error,
                attempts: backoff.attempts(),
            });
        }
        unclear |= !outcome_known;
        let delay = if failed.rate_limited {
            let since = *limited_since.get_or_insert_with(Instant::now);
            let delay = backoff.next_wait(failed.retry_after);
            let limited = since.elapsed();
            if limited + delay > policy.rate_limited_for {
                return Err(GaveUp::Exhausted {
                    last: failed.error,
                    attempts: backoff.attempts() - 1,
                    rate_limited: Some(limited),
                });
            }
            delay
        } else {
            match backoff.next_delay(failed.retry_after) {
                Some(delay) => delay,
                None => {
                    return Err(GaveUp::Exhausted {
                        last: failed.error,
                        attempts: backoff.attempts(),
                        rate_limited: None,
                    });
                }
            }
        };
        on_retry(&failed, delay);
        stop.sleep(delay).await.map_err(GaveUp::Stopped)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
        max_attempts: 4,
        outage: Duration::ZERO,
        rate_limited_for: Duration::from_secs(60),
    };

    fn transient(outcome_known: bool) -> Class {
        Class::Transient { outcome_known }
    }

    /// Runs the loop over a script of failures, then success.
    async fn run(
        script: &[Class],
        repeatable: bool,
    ) -> (Result<(u32, Attempts), GaveUp<u32>>, u32) {
        let calls = Cell::new(0);
        let retried = Cell::new(0);
        let result = retry(
            POLICY,
            &Stop::never(),
            repeatable,
            |n| {
                calls.set(calls.get() + 1);
                let step = script.get(n as usize - 1).copied();
                async move {
                    match step {
                        Some(class) => Err(Failed::new(n, class)),
                        None => Ok(n),
                    }
                }
            },
            |_, _| retried.set(retried.get() + 1),
        )
        .await;
        assert_eq!(calls.get(), retried.get() + 1);
        (result, calls.get())
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let (result, calls) = run(&[transient(true), transient(true)], false).await;
        let (value, attempts) = result.expect("succeeds on the third attempt");
        assert_eq!(
            (value, calls, attempts.made, attempts.unclear),
            (3, 3, 3, false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_outcome_is_repeated_only_when_repeatable() {
        let (result, calls) = run(&[transient(false)], false).await;
        assert!(matches!(
            result,
            Err(GaveUp::Unknown {
                error: 1,
                attempts: 1
            })
        ));
        assert_eq!(calls, 1);
        let (result, _) = run(&[transient(false)], true).await;
        let (_, attempts) = result.expect("repeated");
        assert!(attempts.unclear);
    }

    #[tokio::test(start_paused = true)]
    async fn record_level_and_fatal_failures_are_not_retried() {
        for class in [Class::RecordLevel, Class::Fatal] {
            let (result, calls) = run(&[class], true).await;
            assert!(matches!(result, Err(GaveUp::Final { error: 1, class: c }) if c == class));
            assert_eq!(calls, 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_by_the_policy() {
        let (result, calls) = run(&[transient(true); 10], true).await;
        assert!(matches!(
            result,
            Err(GaveUp::Exhausted {
                last: 4,
                attempts: 4,
                rate_limited: None
            })
        ));
        assert_eq!(calls, POLICY.max_attempts);
    }

    /// Runs the loop over an API failing for `down` on the paused clock, then
    /// answering; returns the result and how long it took.
    async fn outage(
        policy: RetryPolicy,
        down: Duration,
    ) -> (Result<(u32, Attempts), GaveUp<u32>>, Duration) {
        let started = Instant::now();
        let result = retry(
            policy,
            &Stop::never(),
            false,
            |n| async move {
                if started.elapsed() < down {
                    Err(Failed::new(n, transient(true)))
                } else {
                    Ok(n)
                }
            },
            |_, _| {},
        )
        .await;
        (result, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_shorter_than_the_policy_s_is_waited_out() {
        let policy = RetryPolicy {
            outage: Duration::from_secs(60),
            ..POLICY
        };
        let (result, elapsed) = outage(policy, Duration::from_secs(40)).await;
        let (_, attempts) = result.expect("waited out");
        assert!(attempts.made > POLICY.max_attempts, "{attempts:?}");
        assert!(elapsed >= Duration::from_secs(40), "{elapsed:?}");

        let (result, elapsed) = outage(policy, Duration::MAX).await;
        assert!(
            matches!(
                result,
                Err(GaveUp::Exhausted {
                    rate_limited: None,
                    ..
                })
            ),
            "{result:?}"
        );
        assert!(elapsed >= policy.outage, "{elapsed:?}");
        assert!(elapsed <= policy.outage + POLICY.cap, "{elapsed:?}");

        // Without it, the attempts alone bound the loop.
        let (result, elapsed) = outage(POLICY, Duration::from_secs(40)).await;
        assert!(
            matches!(result, Err(GaveUp::Exhausted { attempts: 4, .. })),
            "{result:?}"
        );
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    }

    /// Runs the loop over `refusals` answers of 429, then success; returns the
    /// result and how long it took on the paused clock.
    async fn rate_limited(refusals: u32) -> (Result<(u32, Attempts), GaveUp<u32>>, Duration) {
        let started = Instant::now();
        let result = retry(
            POLICY,
            &Stop::never(),
            false,
            |n| async move {
                if n <= refusals {
                    Err(Failed {
                        rate_limited: true,
                        ..Failed::new(n, transient(true))
                    })
                } else {
                    Ok(n)
                }
            },
            |_, _| {},
        )
        .await;
        (result, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn answers_of_429_use_up_no_attempt() {
        let (result, _) = rate_limited(20).await;
        let (value, attempts) = result.expect("tried until the API let it through");
        assert_eq!((value, attempts.made), (21, 21));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_of_429_are_bounded_by_rate_limited_for() {
        let (result, elapsed) = rate_limited(u32::MAX).await;
        let Err(GaveUp::Exhausted {
            last,
            attempts,
            rate_limited: Some(limited),
        }) = result
        else {
            panic!("gave up for the rate limit: {result:?}");
        };
        assert_eq!(last, attempts);
        assert!(attempts > POLICY.max_attempts, "{attempts}");
        // It does not sleep past the bound only to give up after.
        assert!(limited <= POLICY.rate_limited_for, "{limited:?}");
        assert!(elapsed <= POLICY.rate_limited_for, "{elapsed:?}");
        assert!(
            elapsed >= POLICY.rate_limited_for - POLICY.cap,
            "{elapsed:?}"
        );
    }
}
