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
    // A deleted record comes back only as a copy newer than its deletion: a
    // re-creation, written afresh. Anything else is a copy from before.
    if let Some(written) = written
        && let Some(deleted_at) = written.deleted_at
    {
        if !outlives(version, updated_at, written.version, deleted_at) {
            return Decision::Stale;
        }
        if pending.is_some_and(|p| older(p.version, p.updated_at)) {
            return Decision::BelowFloor;
        }
        return Decision::Write;
    }
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

/// What to do with a deletion of a record (at `deleted_at`, with the version
/// the deletion carries, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteDecision {
    /// Delete it at the destination, which holds (or may hold) a copy from
    /// before the deletion.
    Delete,
    /// The ledger holds no copy of it (never written, or re-created and
    /// deleted again unwritten): a tombstone — and, where the record can be
    /// named, a DELETE in case a write the ledger never saw landed.
    Tombstone,
    /// The ledger already holds this deletion, or a later one.
    AlreadyDeleted,
    /// Written (or announced) newer than the deletion: it was re-created
    /// since, and stays.
    Stale,
}

/// Compares a deletion with what the ledger says was written last, and with a
/// write announced but never settled. A deletion never goes before a copy
/// written after it; it always goes after one written before it (by version
/// when both have one, else by `updated_at` against `deleted_at`).
pub fn decide_delete(
    version: Option<i64>,
    deleted_at: Timestamp,
    written: Option<&LedgerEntry>,
    pending: Option<&Intent>,
) -> DeleteDecision {
    let newer_than_deletion = |v: Option<i64>, at: Timestamp| outlives(v, at, version, deleted_at);
    if let Some(written) = written {
        if let Some(gone) = written.deleted_at {
            return if deleted_at <= gone {
                DeleteDecision::AlreadyDeleted
            } else {
                // Deleted, re-created (never written here) and deleted again.
                DeleteDecision::Tombstone
            };
        }
        if newer_than_deletion(written.version, written.updated_at) {
            return DeleteDecision::Stale;
        }
        return DeleteDecision::Delete;
    }
    match pending {
        Some(p) if newer_than_deletion(p.version, p.updated_at) => DeleteDecision::Stale,
        // An announced write may have landed: it is deleted too.
        Some(_) => DeleteDecision::Delete,
        None => DeleteDecision::Tombstone,
    }
}

/// Whether a copy `(version, updated_at)` is newer than a deletion: by version
/// when both have one and by time, so that a copy from before the deletion
/// that a lagging replica serves late never brings the record back.
fn outlives(
    version: Option<i64>,
    updated_at: Timestamp,
    deletion_version: Option<i64>,
    deleted_at: Timestamp,
) -> bool {
    let by_version = match (version, deletion_version) {
        (Some(v), Some(d)) => v > d,
        _ => true,
    };
    by_version && updated_at > deleted_at
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

    /// At the end of an invocation that never filled the window: the dead
    /// share of all it resolved, when at least [`SHORT_RUN`] records and
    /// across the line. A run shorter than the window otherwise succeeded
    /// however many of its records the mapping or the destination refused.
    pub fn short_run(&self) -> Option<(usize, usize)> {
        let seen = self.recent.len();
        (seen >= SHORT_RUN && seen < self.window && self.dead as f64 > self.ratio * seen as f64)
            .then_some((self.dead, seen))
    }
}

/// The fewest records a run that never filled the dead-letter window is
/// judged by: fewer say little of the mapping (two bad records of three are
/// the data's).
pub const SHORT_RUN: usize = 20;

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
            deleted_at: None,
        }
    }

    fn tombstone(version: Option<i64>, updated: i64, deleted: i64) -> LedgerEntry {
        LedgerEntry {
            deleted_at: Some(at(deleted)),
            ..written(version, updated, "")
        }
    }

    #[test]
    fn a_deleted_record_comes_back_only_newer_than_its_deletion() {
        let gone = tombstone(Some(3), 10, 10);
        // The copy that was deleted, or an older one, served late: stale.
        assert_eq!(
            decide(Some(3), at(5), "h", Some(&gone), None),
            Decision::Stale
        );
        assert_eq!(
            decide(Some(2), at(4), "h", Some(&gone), None),
            Decision::Stale
        );
        // A version never written, stamped before the deletion: still stale.
        assert_eq!(
            decide(Some(4), at(9), "h", Some(&gone), None),
            Decision::Stale
        );
        // Stamped at the deletion itself: not newer.
        assert_eq!(
            decide(None, at(10), "h", Some(&tombstone(None, 10, 10)), None),
            Decision::Stale
        );
        // Re-created: newer by version and by time, written afresh, whatever the hash.
        assert_eq!(
            decide(Some(4), at(11), "", Some(&gone), None),
            Decision::Write
        );
        assert_eq!(
            decide(None, at(11), "", Some(&tombstone(None, 10, 10)), None),
            Decision::Write
        );
    }

    #[test]
    fn deletions_follow_writes_before_them_and_never_precede_later_ones() {
        let w = written(Some(3), 10, "h");
        assert_eq!(
            decide_delete(None, at(20), Some(&w), None),
            DeleteDecision::Delete
        );
        // Re-created after this deletion and written since: it stays.
        assert_eq!(
            decide_delete(None, at(5), Some(&w), None),
            DeleteDecision::Stale
        );
        // A soft delete carries its version: an older one than written stays unapplied.
        assert_eq!(
            decide_delete(Some(2), at(20), Some(&w), None),
            DeleteDecision::Delete
        );
        assert_eq!(
            decide_delete(Some(4), at(20), Some(&written(Some(5), 30, "h")), None),
            DeleteDecision::Stale
        );
        // Never written: a tombstone only, unless a write may have landed.
        assert_eq!(
            decide_delete(None, at(20), None, None),
            DeleteDecision::Tombstone
        );
        let pending = Intent {
            source_id: "a".into(),
            version: Some(4),
            updated_at: at(15),
            settles_at: None,
        };
        assert_eq!(
            decide_delete(None, at(20), None, Some(&pending)),
            DeleteDecision::Delete
        );
        assert_eq!(
            decide_delete(None, at(12), None, Some(&pending)),
            DeleteDecision::Stale
        );
        // The same deletion again (a resumed run), or an older one: done.
        let gone = tombstone(Some(3), 20, 20);
        assert_eq!(
            decide_delete(None, at(20), Some(&gone), None),
            DeleteDecision::AlreadyDeleted
        );
        assert_eq!(
            decide_delete(None, at(18), Some(&gone), None),
            DeleteDecision::AlreadyDeleted
        );
        assert_eq!(
            decide_delete(None, at(25), Some(&gone), None),
            DeleteDecision::Tombstone
        );
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

        /// Copies and one deletion in any order: once the deletion is
        /// applied, no copy from before it is written again, and the newest
        /// copy after it (a re-creation) is.
        #[test]
        fn a_deletion_is_never_undone_by_an_older_copy(
            versions in proptest::collection::vec(1i64..20, 1..30),
            deleted_after in 1i64..20,
            place in 0usize..30,
        ) {
            let mut ledger: Option<LedgerEntry> = None;
            let deleted_at = at(deleted_after * 10 + 5);
            let place = place.min(versions.len());
            let mut events: Vec<Option<i64>> = versions.iter().copied().map(Some).collect();
            events.insert(place, None);
            for event in events {
                match event {
                    Some(v) => {
                        let hash = format!("h{v}");
                        if decide(Some(v), at(v * 10), &hash, ledger.as_ref(), None) == Decision::Write {
                            let was_deleted = ledger.as_ref().and_then(|l| l.deleted_at);
                            prop_assert!(was_deleted.is_none_or(|d| at(v * 10) > d));
                            ledger = Some(written(Some(v), v * 10, &hash));
                        }
                    }
                    None => match decide_delete(None, deleted_at, ledger.as_ref(), None) {
                        DeleteDecision::Delete | DeleteDecision::Tombstone => {
                            let mut entry = ledger.clone().unwrap_or_else(|| written(None, 0, ""));
                            entry.deleted_at = Some(deleted_at);
                            entry.payload_hash.clear();
                            ledger = Some(entry);
                        }
                        DeleteDecision::AlreadyDeleted | DeleteDecision::Stale => {}
                    },
                }
            }
            let newest_after = versions.iter().copied().filter(|v| at(v * 10) > deleted_at).max();
            let ledger = ledger.expect("something happened");
            match newest_after {
                // Re-created: the newest copy after the deletion is what stands.
                Some(v) => prop_assert!(ledger.deleted_at.is_none() && ledger.version == Some(v)),
                None => prop_assert!(ledger.deleted_at.is_some()),
            }
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
    fn a_run_shorter_than_the_window_is_judged_by_all_it_resolved() {
        let mut guard = SurgeGuard::new(0.5, 200);
        for _ in 0..SHORT_RUN - 1 {
            assert_eq!(guard.observe(true), None);
        }
        assert_eq!(guard.short_run(), None, "too few to say");
        guard.observe(true);
        assert_eq!(guard.short_run(), Some((SHORT_RUN, SHORT_RUN)));
        for _ in 0..SHORT_RUN {
            guard.observe(false);
        }
        assert_eq!(guard.short_run(), None, "exactly half is not a surge");
        let mut full = SurgeGuard::new(0.5, 20);
        for _ in 0..30 {
            full.observe(true);
        }
        assert_eq!(
            full.short_run(),
            None,
            "a full window was judged as it went"
        );
    }

    #[test]
    fn exactly_the_ratio_is_not_a_surge() {
        let mut guard = SurgeGuard::new(0.5, 4);
        let halted = (0..100).any(|i| guard.observe(i % 2 == 0).is_some());
        assert!(!halted, "half of the window is not more than half");
    }
}
