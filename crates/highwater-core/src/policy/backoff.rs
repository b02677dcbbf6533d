//! Owns the retry schedule: exponential backoff with full jitter, capped, with the
//! server's `Retry-After` as the floor, for a bounded number of attempts and at
//! least an outage's length — and waits the server asked for (a 429), which use
//! up no attempt.
//!
//! Written here rather than taken from a crate: `backoff` is unmaintained and
//! backon's jitter is additive, not "full jitter" with a server-given floor.

use std::time::Duration;

use tokio::time::Instant;

/// How a failing request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Attempts in all, the first included; those answered 429 do not count.
    pub max_attempts: u32,
    /// How long a request goes on being tried, its attempts spent, from its
    /// first: a deploy or a failover of a minute is waited out, where eight
    /// attempts of full jitter from 200 ms last about nine seconds.
    pub outage: Duration,
    /// How long one request goes on being tried while the API answers 429
    /// (a rate limit is the API asking to wait, not failing): from its first 429.
    pub rate_limited_for: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
            max_attempts: 8,
            outage: Duration::from_secs(60),
            rate_limited_for: Duration::from_secs(600),
        }
    }
}

/// The schedule for one request: each call to [`Backoff::next_delay`] answers how
/// long to wait before the next attempt, or `None` once attempts are exhausted.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    /// Attempts made, the first included.
    attempts: u32,
    /// Those of them that count against `max_attempts`.
    counted: u32,
    /// When the first attempt was made, for `outage`.
    started: Instant,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Backoff {
            policy,
            attempts: 1,
            counted: 1,
            started: Instant::now(),
            rng: fastrand::Rng::new(),
        }
    }

    pub fn with_seed(policy: RetryPolicy, seed: u64) -> Self {
        Backoff {
            policy,
            attempts: 1,
            counted: 1,
            started: Instant::now(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Attempts made so far, counting the first.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before the next attempt: uniform in `[0, min(cap, base·2^n)]`, never
    /// less than `floor` (the server's `Retry-After`); `None` once `max_attempts`
    /// are made and `outage` has passed since the first.
    pub fn next_delay(&mut self, floor: Option<Duration>) -> Option<Duration> {
        if self.counted >= self.policy.max_attempts && self.started.elapsed() >= self.policy.outage
        {
            return None;
        }
        self.counted = self.counted.saturating_add(1);
        Some(self.next_wait(floor))
    }

    /// The wait before an attempt that uses up none of `max_attempts` (the
    /// last was answered 429): the same schedule, growing with every attempt.
    pub fn next_wait(&mut self, floor: Option<Duration>) -> Duration {
        let exponent = (self.attempts - 1).min(31);
        self.attempts += 1;
        let ceiling = self
            .policy
            .base
            .saturating_mul(1u32 << exponent)
            .min(self.policy.cap);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let jittered = Duration::from_millis(self.rng.u64(0..=millis));
        jittered.max(floor.unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_between_floor_and_cap(
            seed in any::<u64>(),
            base_ms in 1u64..1000,
            cap_ms in 1u64..60_000,
            max_attempts in 1u32..20,
            floor_ms in proptest::option::of(0u64..120_000),
        ) {
            let policy = RetryPolicy {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(cap_ms),
                max_attempts,
                outage: Duration::ZERO,
                ..RetryPolicy::default()
            };
            let floor = floor_ms.map(Duration::from_millis);
            let mut backoff = Backoff::with_seed(policy, seed);
            let mut delays = 0;
            while let Some(delay) = backoff.next_delay(floor) {
                delays += 1;
                let lower = floor.unwrap_or(Duration::ZERO);
                prop_assert!(delay >= lower);
                prop_assert!(delay <= policy.cap.max(lower));
                prop_assert!(delays < 100);
            }
            // max_attempts counts the first attempt, so there are one fewer waits.
            prop_assert_eq!(delays, max_attempts - 1);
            prop_assert_eq!(backoff.attempts(), max_attempts);
        }
    }

    #[test]
    fn ceilings_grow_exponentially_then_cap() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(450),
            max_attempts: 50,
            ..RetryPolicy::default()
        };
        let mut max_seen = [Duration::ZERO; 5];
        for seed in 0..400 {
            let mut b = Backoff::with_seed(policy, seed);
            for slot in &mut max_seen {
                let d = b.next_delay(None).unwrap_or_default();
                *slot = (*slot).max(d);
            }
        }
        let ms: Vec<u128> = max_seen.iter().map(Duration::as_millis).collect();
        assert!(ms[0] <= 100 && ms[0] > 80, "{ms:?}");
        assert!(ms[1] <= 200 && ms[1] > 160, "{ms:?}");
        assert!(ms[2] <= 400 && ms[2] > 320, "{ms:?}");
        assert!(ms[3] <= 450 && ms[4] <= 450, "{ms:?}");
    }
}
