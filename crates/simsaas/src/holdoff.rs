//! Watches that clients honour `Retry-After`: every 429 a side sends records
//! the deadline it announced, and every request that arrives before a
//! deadline is counted as a violation — except in the first moments after the
//! 429 left, when requests already on their way could not have known.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::lock;

/// Requests that arrive this soon after a 429 was sent were already in flight.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub(crate) struct Holdoff {
    /// (sent, deadline) of every 429 whose deadline has not passed.
    pending: Mutex<Vec<(Instant, Instant)>>,
}

impl Holdoff {
    /// A 429 leaves now, telling the client to wait `retry_after`.
    pub(crate) fn announced(&self, retry_after: Duration) {
        let now = Instant::now();
        lock(&self.pending).push((now, now + retry_after));
    }

    /// A 429 leaves now, telling the client to wait until the HTTP-date `until`.
    pub(crate) fn announced_until(&self, until: SystemTime) {
        let wait = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        self.announced(wait);
    }

    /// A request arrives now: whether it came before a deadline it had to respect.
    pub(crate) fn arrival_violates(&self) -> bool {
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        pending.retain(|(_, deadline)| *deadline > now);
        pending
            .iter()
            .any(|(sent, deadline)| now > *sent + IN_FLIGHT_GRACE && now < *deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_arrivals_after_the_grace_and_before_the_deadline_count() {
        let holdoff = Holdoff::default();
        holdoff.announced(Duration::from_millis(600));
        assert!(!holdoff.arrival_violates(), "still in flight");
        std::thread::sleep(IN_FLIGHT_GRACE + Duration::from_millis(50));
        assert!(holdoff.arrival_violates());
        std::thread::sleep(Duration::from_millis(400));
        assert!(!holdoff.arrival_violates(), "the deadline has passed");
    }
}
