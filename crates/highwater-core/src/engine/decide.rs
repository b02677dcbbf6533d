//! Owns the engine's pure decisions: the run's window (watermark and lower bound),
//! what to do with a mapped record given its ledger entry, and when dead letters
//! come in a surge that means the mapping, not the data, is wrong.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

pub use crate::record::is_older;
use crate::source::Window;
use crate::state::{Intent, LedgerEntry};

/// The window of a new run: the watermark is `now - lag`; the lower bound is the
/// high-water mark minus `lookback` (or `start` on the first run), never below `start`.
pub fn plan_window(
    now: Timestamp,
    lag: Duration,
    lookback: Duration,
    start: Option<Timestamp>,
    high_water_mark: Option<Timestamp>,
) -> Window {
    let minus = |t: Timestamp, d: Duration| {
        SignedDuration::try_from(d)
            .ok()
            .and_then(|d| t.checked_sub(d).ok())
            .unwrap_or(Timestamp::MIN)
    };
    let lower = match (high_water_mark, start) {
        (Some(hwm), Some(start)) => Some(minus(hwm, lookback).max(start)),
        (Some(hwm), None) => Some(minus(hwm, lookback)),
        (None, start) => start,
    };
    Window {
        lower,
        watermark: minus(now, lag),
    }
}

/// What to do with one mapped record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Write,
    /// Same payload as last written: nothing to send.
    Unchanged,
    /// Older than what was written: never write it over the newer one.
    Stale,
    /// Older than a write announced by an earlier attempt that the ledger does
    /// not confirm: the destination may hold that newer version, or not. Not
    /// written, and not resolved until the destination says which.
    BelowFloor,
}

/// Compares a record with what the ledger says was written last, and with a
/// write announced but never settled (it may have arrived). Versions decide when
/// both sides have one; otherwise `updated_at` does.
pub fn decide(
    version: Option<i64>,
    updated_at: Timestamp,
    hash: &str,
    written: Option<&LedgerEntry>,
    pending: Option<&Intent>,
) -> Decision {
    let older = |other_version: Option<i64>, other_updated_at: Timestamp| {
        is_older(version, updated_at, other_version, other_updated_at)
    };
    if written.is_some_and(|w| older(w.version, w.updated_at)) {
        return Decision::Stale;
    }
    if pending.is_some_and(|p| older(p.version, p.updated_at)) {
        return Decision::BelowFloor;
    }
    let Some(written) = written else {
        return Decision::Write;
    };
    if hash == written.payload_hash {
        return Decision::Unchanged;
    }
    Decision::Write
}

/// Watches the share of dead letters among the last `window` resolved records.
#[derive(Debug)]
pub struct SurgeGuard {
    ratio: f64,
    window: usize,
    recent: VecDeque<bool>,
    dead: usize,
}

impl SurgeGuard {
    pub fn new(ratio: f64, window: usize) -> Self {
        SurgeGuard {
            ratio,
            window: window.max(1),
            recent: VecDeque::with_capacity(window),
            dead: 0,
        }
    }

    /// Records one resolved record; returns the dead share when it crossed the line.
    pub fn observe(&mut self, dead_lettered: bool) -> Option<(usize, usize)> {
        self.recent.push_back(dead_lettered);
        self.dead += usize::from(dead_lettered);
        if self.recent.len() > self.window && self.recent.pop_front() == Some(true) {
            self.dead -= 1;
        }
        let full = self.recent.len() == self.window;
        (full && self.dead as f64 > self.ratio * self.window as f64)
            .then_some((self.dead, self.window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn written(version: Option<i64>, updated: i64, hash: &str) -> LedgerEntry {
        LedgerEntry {
            source_id: "a".into(),
            external_id: "a".into(),
            dest_id: None,
            version,
            updated_at: at(updated),
            payload_hash: hash.into(),
            run_id: "r".into(),
        }
    }

    #[test]
    fn windows_follow_the_design() {
        let now = at(10_000);
        let first = plan_window(
            now,
            Duration::from_secs(60),
            Duration::from_secs(600),
            Some(at(100)),
            None,
        );
        assert_eq!(
            first,
            Window {
                lower: Some(at(100)),
                watermark: at(9_940)
            }
        );
        let next = plan_window(
            now,
            Duration::ZERO,
            Duration::from_secs(600),
            Some(at(100)),
            Some(at(9_000)),
        );
        assert_eq!(
            next,
            Window {
                lower: Some(at(8_400)),
                watermark: now
            }
        );
        let clamped = plan_window(
            now,
            Duration::ZERO,
            Duration::from_secs(600),
            Some(at(8_800)),
            Some(at(9_000)),
        );
        assert_eq!(clamped.lower, Some(at(8_800)));
        assert_eq!(
            plan_window(now, Duration::ZERO, Duration::ZERO, None, None).lower,
            None
        );
    }

    #[test]
    fn ledger_decisions() {
        let w = |v: Option<i64>, t: i64| written(v, t, "h");
        assert_eq!(decide(Some(1), at(5), "h", None, None), Decision::Write);
        assert_eq!(
            decide(Some(1), at(9), "x", Some(&w(Some(2), 1)), None),
            Decision::Stale
        );
        assert_eq!(
            decide(Some(2), at(1), "h", Some(&w(Some(2), 1)), None),
            Decision::Unchanged
        );
        assert_eq!(
            decide(Some(3), at(1), "x", Some(&w(Some(2), 1)), None),
            Decision::Write
        );
        assert_eq!(
            decide(None, at(0), "x", Some(&w(None, 1)), None),
            Decision::Stale
        );
        assert_eq!(
            decide(None, at(2), "x", Some(&w(None, 1)), None),
            Decision::Write
        );
    }

    #[test]
    fn an_unsettled_write_is_a_floor() {
        let pending = Intent {
            source_id: "a".into(),
            version: Some(5),
            updated_at: at(5),
            settles_at: None,
        };
        let older = written(Some(3), 3, "h");
        // Version 5 may have arrived before the crash: 4 must not follow it, and
        // nothing says yet whether it did.
        assert_eq!(
            decide(Some(4), at(4), "x", None, Some(&pending)),
            Decision::BelowFloor
        );
        assert_eq!(
            decide(Some(4), at(4), "x", Some(&older), Some(&pending)),
            Decision::BelowFloor
        );
        // The ledger saying 6 was written settles it: 4 is simply stale.
        assert_eq!(
            decide(
                Some(4),
                at(4),
                "x",
                Some(&written(Some(6), 6, "h")),
                Some(&pending)
            ),
            Decision::Stale
        );
        // 5 itself is sent again (the same write, idempotently), and so is 6.
        assert_eq!(
            decide(Some(5), at(5), "x", Some(&older), Some(&pending)),
            Decision::Write
        );
        assert_eq!(
            decide(Some(6), at(6), "x", None, Some(&pending)),
            Decision::Write
        );
    }

    proptest! {
        /// Whatever order versions arrive in, applying the decisions leaves the
        /// newest version written, and never writes an older one after a newer one.
        #[test]
        fn out_of_order_versions_never_regress(versions in proptest::collection::vec(1i64..20, 1..30)) {
            let mut ledger: Option<LedgerEntry> = None;
            let mut writes = Vec::new();
            for v in &versions {
                let hash = format!("h{v}");
                if decide(Some(*v), at(*v), &hash, ledger.as_ref(), None) == Decision::Write {
                    writes.push(*v);
                    ledger = Some(written(Some(*v), *v, &hash));
                }
            }
            prop_assert!(writes.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(writes.last().copied(), versions.iter().max().copied());
        }
    }

    #[test]
    fn a_surge_is_a_share_of_a_full_window() {
        let mut guard = SurgeGuard::new(0.5, 4);
        assert_eq!(guard.observe(true), None);
        assert_eq!(guard.observe(true), None);
        assert_eq!(guard.observe(false), None);
        assert_eq!(guard.observe(true), Some((3, 4)));
        let mut calm = SurgeGuard::new(0.5, 4);
        let halted = (0..100).any(|i| calm.observe(i % 3 == 0).is_some());
        assert!(!halted);
    }

    #[test]
    fn exactly_the_ratio_is_not_a_surge() {
        let mut guard = SurgeGuard::new(0.5, 4);
        let halted = (0..100).any(|i| guard.observe(i % 2 == 0).is_some());
        assert!(!halted, "half of the window is not more than half");
    }
}
