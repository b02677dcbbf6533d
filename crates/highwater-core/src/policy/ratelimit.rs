//! Owns pacing: a client-side requests-per-second limit (governor) behind an
//! adaptive gate that closes for everyone when the server answers 429 with a
//! `Retry-After`. Runs that share a process share the gate of each API they call
//! ([`RateGate::shared`]): two runs of one sync pace their requests through one
//! limit and wait out one pause.
//!
//! governor's own async waits ignore tokio's clock, so the limiter runs on
//! [`TokioClock`], only `check()` is called, and waits go through [`Stop::sleep`]:
//! pacing then follows tokio's (pausable) time like everything else.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::stop::{Stop, StopReason, instant_after};

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// The gates in use in the process, by API and limit.
type Gates = HashMap<(String, Option<u64>), Weak<RateGate>>;

/// Shared by every request to one API within a process.
#[derive(Debug)]
pub struct RateGate {
    limiter: Option<Limiter>,
    paused_until: Mutex<Option<Instant>>,
}

/// governor's clock, read from tokio's time.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, rhs: Nanos) -> TokioInstant {
        TokioInstant(self.0 + Duration::from(rhs))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

impl RateGate {
    /// `requests_per_second`: `None` for no client-side limit.
    pub fn new(requests_per_second: Option<f64>) -> Self {
        let limiter = requests_per_second.and_then(|rps| {
            let period = Duration::from_secs_f64(1.0 / rps.max(0.001));
            let burst = NonZeroU32::new(rps.ceil().clamp(1.0, 1_000_000.0) as u32)?;
            Quota::with_period(period)
                .map(|q| RateLimiter::direct_with_clock(q.allow_burst(burst), TokioClock))
        });
        RateGate {
            limiter,
            paused_until: Mutex::new(None),
        }
    }

    /// The gate of the API `key` (a sync and which of its APIs) with this
    /// limit, shared with every other holder in the process while any holds it.
    /// A different limit under the same key (a config read again) gets a gate
    /// of its own.
    pub fn shared(key: &str, requests_per_second: Option<f64>) -> Arc<RateGate> {
        static GATES: LazyLock<Mutex<Gates>> = LazyLock::new(Mutex::default);
        let key = (key.to_owned(), requests_per_second.map(f64::to_bits));
        let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
            return gate;
        }
        gates.retain(|_, gate| gate.strong_count() > 0);
        let gate = Arc::new(RateGate::new(requests_per_second));
        gates.insert(key, Arc::downgrade(&gate));
        gate
    }

    /// Waits until a request may go out.
    pub async fn ready(&self, stop: &Stop) -> Result<(), StopReason> {
        loop {
            self.unpaused(stop).await?;
            let Some(limiter) = &self.limiter else {
                return Ok(());
            };
            match limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    stop.sleep(wait).await?;
                }
            }
        }
    }

    /// Waits until no pause holds requests back; takes no slot of the pace.
    pub async fn unpaused(&self, stop: &Stop) -> Result<(), StopReason> {
        loop {
            let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match paused {
                Some(until) if until > Instant::now() => {
                    stop.sleep(until - Instant::now()).await?;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Closes the gate for everyone for `duration` (the server said so).
    pub fn pause_for(&self, duration: Duration) {
        let until = instant_after(Instant::now(), duration);
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller_back() {
        let gate = RateGate::new(None);
        let stop = Stop::never();
        let start = Instant::now();
        gate.pause_for(Duration::from_secs(2));
        gate.pause_for(Duration::from_secs(1));
        gate.ready(&stop).await.ok();
        assert!(Instant::now() - start >= Duration::from_secs(2));
    }

    /// `Retry-After: 18446744073709551615` is a valid header: the gate closes for
    /// that long (in effect for good) instead of overflowing the clock.
    #[tokio::test(start_paused = true)]
    async fn a_pause_past_the_end_of_the_clock_closes_the_gate() {
        let gate = RateGate::new(None);
        let stop = Stop::never();
        gate.pause_for(Duration::from_secs(u64::MAX));
        gate.pause_for(Duration::MAX);
        assert!(gate.ready(&stop).now_or_never().is_none());
        // A shorter pause does not reopen it.
        gate.pause_for(Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(gate.ready(&stop).now_or_never().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_out_a_pause_takes_no_slot_of_the_pace() {
        let gate = RateGate::new(Some(1.0));
        let stop = Stop::never();
        let start = Instant::now();
        gate.pause_for(Duration::from_millis(300));
        gate.unpaused(&stop).await.ok();
        assert!(Instant::now() - start >= Duration::from_millis(300));
        // The one request a second is still there for the request itself.
        gate.ready(&stop).await.ok();
        assert!(Instant::now() - start < Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn runs_in_one_process_share_an_apis_pace_and_pauses() {
        let first = RateGate::shared("shared-pace/destination", Some(50.0));
        let second = RateGate::shared("shared-pace/destination", Some(50.0));
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!Arc::ptr_eq(
            &first,
            &RateGate::shared("shared-pace/source", Some(50.0))
        ));
        let stop = Stop::never();
        let start = Instant::now();
        // 100 requests split between two holders take as long as 100 through one.
        for _ in 0..50 {
            first.ready(&stop).await.ok();
            second.ready(&stop).await.ok();
        }
        let elapsed = Instant::now() - start;
        assert!(elapsed >= Duration::from_millis(980), "{elapsed:?}");
        // A 429 one of them met holds the other back too.
        first.pause_for(Duration::from_secs(2));
        let paused = Instant::now();
        second.unpaused(&stop).await.ok();
        assert!(Instant::now() - paused >= Duration::from_secs(2));
        // Once nobody holds it, the next holder starts afresh.
        let weak = Arc::downgrade(&first);
        drop((first, second));
        assert!(weak.upgrade().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_requests() {
        let gate = RateGate::new(Some(50.0));
        let stop = Stop::never();
        let start = Instant::now();
        for _ in 0..100 {
            gate.ready(&stop).await.ok();
        }
        // 50 in the initial burst, then 50 more at 50/s: one second.
        let elapsed = Instant::now() - start;
        assert!(elapsed >= Duration::from_millis(980), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1100), "{elapsed:?}");
    }
}
