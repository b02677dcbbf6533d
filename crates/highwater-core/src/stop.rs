//! Owns cooperative stopping: the run's deadline (`--max-runtime`), the shutdown
//! signal, and the lease a worker runs the sync under. Every wait in the engine, sources and sinks goes through [`Stop::sleep`],
//! so a budget or Ctrl-C never waits out a long backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The furthest a wait reaches. A server may send `Retry-After:
/// 18446744073709551615`, and a budget may be longer than the clock can count:
/// adding either to the clock would overflow, so such waits end this far ahead
/// instead (no run lasts that long either way).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// The instant `duration` after `from`, at most [`FAR_FUTURE`] away.
pub fn instant_after(from: Instant, duration: Duration) -> Instant {
    from + duration.min(FAR_FUTURE)
}

/// Why a run stopped before finishing; the run stays open and resumes next time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    MaxRuntime,
    MaxPages,
    Interrupted,
    /// This worker's lease of the sync ran out or was taken over: another
    /// worker goes on with the run.
    LeaseLost,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::MaxRuntime => "max-runtime reached",
            StopReason::MaxPages => "max-pages reached",
            StopReason::Interrupted => "interrupted",
            StopReason::LeaseLost => "this worker's lease of the sync was lost",
        }
    }
}

/// A stop condition shared by everything one run does.
#[derive(Debug, Clone)]
pub struct Stop {
    deadline: Option<Instant>,
    shutdown: CancellationToken,
    lease: Option<Lease>,
}

/// Whether the run's lease is still held, by this process's clock.
#[derive(Clone)]
struct Lease(Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

impl Stop {
    pub fn new(max_runtime: Option<Duration>, shutdown: CancellationToken) -> Self {
        Stop {
            deadline: max_runtime.map(|d| instant_after(Instant::now(), d)),
            shutdown,
            lease: None,
        }
    }

    /// This stop, firing too once `held` says the run's lease is lost: no
    /// request is attempted after that, retries included.
    pub fn leased(self, held: impl Fn() -> bool + Send + Sync + 'static) -> Stop {
        Stop {
            lease: Some(Lease(Arc::new(held))),
            ..self
        }
    }

    /// A stop that never fires (benches, tests of single components).
    pub fn never() -> Self {
        Stop::new(None, CancellationToken::new())
    }

    /// A stop that fires with this one, and also once the returned guard is dropped:
    /// for work that must end when its owner is done with it.
    pub fn child(&self) -> (Stop, tokio_util::sync::DropGuard) {
        let token = self.shutdown.child_token();
        let child = Stop {
            deadline: self.deadline,
            shutdown: token.clone(),
            lease: self.lease.clone(),
        };
        (child, token.drop_guard())
    }

    /// The reason to stop now, if any.
    pub fn reason(&self) -> Option<StopReason> {
        if self.shutdown.is_cancelled() {
            return Some(StopReason::Interrupted);
        }
        if self.lease.as_ref().is_some_and(|held| !(held.0)()) {
            return Some(StopReason::LeaseLost);
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Some(StopReason::MaxRuntime),
            _ => None,
        }
    }

    /// Resolves when the run must stop.
    pub async fn fired(&self) -> StopReason {
        match self.deadline {
            Some(deadline) => tokio::select! {
                _ = self.shutdown.cancelled() => StopReason::Interrupted,
                _ = tokio::time::sleep_until(deadline) => StopReason::MaxRuntime,
            },
            None => {
                self.shutdown.cancelled().await;
                StopReason::Interrupted
            }
        }
    }

    /// Sleeps for `duration`, or returns early with the reason if the run must stop.
    pub async fn sleep(&self, duration: Duration) -> Result<(), StopReason> {
        if let Some(reason) = self.reason() {
            return Err(reason);
        }
        let wake = instant_after(Instant::now(), duration);
        let limit = match self.deadline {
            Some(deadline) if deadline < wake => deadline,
            _ => wake,
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(StopReason::Interrupted),
            _ = tokio::time::sleep_until(limit) => {
                if limit < wake { Err(StopReason::MaxRuntime) } else { Ok(()) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test(start_paused = true)]
    async fn sleep_is_cut_short_by_the_deadline() {
        let stop = Stop::new(Some(Duration::from_secs(5)), CancellationToken::new());
        assert_eq!(stop.sleep(Duration::from_secs(1)).await, Ok(()));
        assert_eq!(
            stop.sleep(Duration::from_secs(60)).await,
            Err(StopReason::MaxRuntime)
        );
        assert_eq!(stop.reason(), Some(StopReason::MaxRuntime));
    }

    /// A server's `Retry-After` can ask for 2^64 seconds, and a budget for more
    /// than the clock holds: both are waits that do not end within the run.
    #[tokio::test(start_paused = true)]
    async fn waits_past_the_end_of_the_clock_do_not_overflow() {
        let stop = Stop::new(Some(Duration::MAX), CancellationToken::new());
        assert_eq!(stop.reason(), None);
        assert!(stop.sleep(Duration::MAX).now_or_never().is_none());
        assert!(
            stop.sleep(Duration::from_secs(u64::MAX))
                .now_or_never()
                .is_none()
        );
        let short = Stop::new(Some(Duration::from_secs(5)), CancellationToken::new());
        assert_eq!(
            short.sleep(Duration::MAX).await,
            Err(StopReason::MaxRuntime)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_sleep() {
        let token = CancellationToken::new();
        let stop = Stop::new(None, token.clone());
        let sleeper = tokio::spawn(async move { stop.sleep(Duration::from_secs(3600)).await });
        token.cancel();
        assert_eq!(sleeper.await.ok(), Some(Err(StopReason::Interrupted)));
    }
}
