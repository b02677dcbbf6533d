//! Owns the names of highwater's structured events: every `tracing` event the engine
//! emits carries `event = <one of these>`, so logs can be filtered and counted by a
//! stable name; and the tally of retried requests by class that each API keeps
//! and the run history records. Imports nothing of the crate: every module may use it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub const RUN_STARTED: &str = "run_started";
pub const RUN_RESUMED: &str = "run_resumed";
pub const PAGE_COMMITTED: &str = "page_committed";
pub const RECORD_DEAD_LETTERED: &str = "record_dead_lettered";
pub const REQUEST_RETRIED: &str = "request_retried";
pub const RUN_COMPLETED: &str = "run_completed";
pub const RUN_STOPPED: &str = "run_stopped";
pub const RUN_FAILED: &str = "run_failed";
pub const PAGINATION_RESCAN: &str = "pagination_rescan";
pub const RECORD_REPAIRED: &str = "record_repaired";
pub const RECORDS_UNVERIFIED: &str = "records_unverified";
pub const FLOOR_CONFIRMED: &str = "floor_confirmed";
pub const CONFIG_WARNING: &str = "config_warning";

/// Why a request was sent again. An operator asks "was it rate limits, a sick
/// server or the network?" before "which request?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// 429.
    RateLimited,
    /// 500, 502, 503, 504.
    ServerError,
    /// 408, or no answer within the timeout.
    Timeout,
    /// The connection could not be made, or broke before the answer came.
    Connection,
    /// Anything else retried (425 Too Early).
    Other,
}

/// Retried requests by class, as the run history stores them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryCounts {
    pub rate_limited: u64,
    pub server_error: u64,
    pub timeout: u64,
    pub connection: u64,
    pub other: u64,
}

impl RetryCounts {
    pub fn total(&self) -> u64 {
        self.rate_limited + self.server_error + self.timeout + self.connection + self.other
    }

    /// The sum of both, class by class (a run's invocations added up).
    pub fn plus(&self, other: &RetryCounts) -> RetryCounts {
        RetryCounts {
            rate_limited: self.rate_limited + other.rate_limited,
            server_error: self.server_error + other.server_error,
            timeout: self.timeout + other.timeout,
            connection: self.connection + other.connection,
            other: self.other + other.other,
        }
    }
}

/// Retried requests of one API, counted as they happen, on whichever thread;
/// cheap enough for the request path.
#[derive(Debug, Default)]
pub struct RetryTally {
    rate_limited: AtomicU64,
    server_error: AtomicU64,
    timeout: AtomicU64,
    connection: AtomicU64,
    other: AtomicU64,
}

impl RetryTally {
    pub fn count(&self, class: RetryClass) {
        let counter = match class {
            RetryClass::RateLimited => &self.rate_limited,
            RetryClass::ServerError => &self.server_error,
            RetryClass::Timeout => &self.timeout,
            RetryClass::Connection => &self.connection,
            RetryClass::Other => &self.other,
        };
        // Relaxed: the counters are independent and read once the requests are done.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RetryCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RetryCounts {
            rate_limited: load(&self.rate_limited),
            server_error: load(&self.server_error),
            timeout: load(&self.timeout),
            connection: load(&self.connection),
            other: load(&self.other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_each_class_apart_and_adds_up() {
        let tally = RetryTally::default();
        for class in [
            RetryClass::RateLimited,
            RetryClass::RateLimited,
            RetryClass::ServerError,
            RetryClass::Timeout,
            RetryClass::Connection,
            RetryClass::Connection,
            RetryClass::Connection,
            RetryClass::Other,
        ] {
            tally.count(class);
        }
        let counts = tally.snapshot();
        let expected = RetryCounts {
            rate_limited: 2,
            server_error: 1,
            timeout: 1,
            connection: 3,
            other: 1,
        };
        assert_eq!(counts, expected);
        assert_eq!(counts.total(), 8);
        assert_eq!(counts.plus(&counts).total(), 16);
    }
}
