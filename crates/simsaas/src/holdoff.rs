//! Watches that clients honour `Retry-After`: every 429 a side sends records
//! the deadline it announced, and every request that arrives before a
//! deadline is counted as a violation — except in the first moments after the
//! 429 left, when requests already on their way could not have known.
//! The same grace groups 429s into incidents: those sent within it of an
//! incident's first one answered requests already on their way, so a client
//! could not have avoided them.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::lock;

/// Requests that arrive this soon after a 429 was sent were already in flight.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub(crate) struct Holdoff {
    /// (sent, deadline) of every 429 whose deadline has not passed.
    pending: Mutex<Vec<(Instant, Instant)>>,
    incidents: Mutex<Incidents>,
}

#[derive(Debug, Default)]
struct Incidents {
    /// When the current incident's first 429 was sent.
    opened: Option<Instant>,
    count: u64,
}

impl Holdoff {
    /// A 429 leaves now, telling the client to wait `retry_after`.
    pub(crate) fn announced(&self, retry_after: Duration) {
        let now = Instant::now();
        lock(&self.pending).push((now, now + retry_after));
        let mut incidents = lock(&self.incidents);
        if incidents
            .opened
            .is_none_or(|opened| now > opened + IN_FLIGHT_GRACE)
        {
            incidents.opened = Some(now);
            incidents.count += 1;
        }
    }

    /// The incidents of 429s so far.
    pub(crate) fn incidents(&self) -> u64 {
        lock(&self.incidents).count
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

    #[test]
    fn answers_within_the_grace_of_an_incident_belong_to_it() {
        let holdoff = Holdoff::default();
        holdoff.announced(Duration::from_secs(1));
        holdoff.announced(Duration::from_secs(1));
        assert_eq!(holdoff.incidents(), 1);
        std::thread::sleep(IN_FLIGHT_GRACE + Duration::from_millis(50));
        holdoff.announced(Duration::from_secs(1));
        assert_eq!(holdoff.incidents(), 2);
    }
}
