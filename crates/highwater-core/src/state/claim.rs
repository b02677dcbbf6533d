//! Owns the compare-and-set that announces writes when runs of several kinds of
//! one sync (the incremental run and a backfill, a replay, a repair) run at once,
//! each in its own process. A run decides a write from the ledger as it was when
//! it looked the page up; another run may since have written, or announced, a
//! newer version of the same record. So the announcement itself checks, in the
//! transaction that makes it durable: a write is announced only if no newer
//! version of its record is in the ledger or announced by another run, and the
//! run is told of another run's write of the record, not newer, that may still
//! land (it is read back after it, and a create waits for it).
//! Invariant: when no other run of the sync is open with writes announced, nor
//! has committed since this invocation started, the check costs one indexed
//! query and nothing else: the run's own lookups, floors and first merge
//! already saw everything. Another open run's announced writes are this check's
//! to weigh, never the floors of a run of another kind.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;

use super::Intent;

/// What the store made of a commit's announced writes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Announced {
    /// Source ids whose write was not announced: another run holds a newer
    /// version of the record, in the ledger or announced. Sending it would set
    /// the record back.
    pub refused: HashSet<String>,
    /// Writes announced while another run's write of the same record, of the
    /// same version or older, may still land: that write, per source id.
    pub behind: HashMap<String, Behind>,
}

/// Another run's write, not newer, that may still land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    /// Its version, the newest that run announced of the record; `settles_at`
    /// when every write of the record that run left without a clear answer
    /// is known to land by then, if ever.
    pub intent: Intent,
    /// The oldest version that run announced of the record: it may land
    /// over a write that repeats the newest.
    pub oldest: (Option<i64>, Timestamp),
    /// Its run is running now, and this invocation of it announced it: the
    /// write goes out when that run gets to it. Otherwise (and without
    /// `settles_at`) the process that announced it is gone, and it lands
    /// within the late-write window from now, if ever.
    pub live: bool,
}

/// Keeps the newest of other runs' writes per record, with the oldest below
/// it; they settle when the last of them has, and are live when any is.
pub(super) fn add_other(others: &mut HashMap<String, Behind>, intent: Intent, live: bool) {
    let Some(kept) = others.get_mut(&intent.source_id) else {
        let oldest = (intent.version, intent.updated_at);
        others.insert(
            intent.source_id.clone(),
            Behind {
                intent,
                oldest,
                live,
            },
        );
        return;
    };
    super::fold(&mut kept.intent, &mut kept.oldest, intent);
    kept.live |= live;
}
