//! Owns the pure parts of pagination: where the next request starts and whether the
//! answer joins up with what was read before. Offset and page-number APIs shift when
//! rows are inserted or removed before the reader's position, so their walks re-read
//! an overlap, find the last records read (the tail) in it, and take only what
//! follows; when the tail cannot be found they step back, and as a last resort read
//! the run's range again from the start (the ledger makes re-reads harmless).
//!
//! Positions are matched by anchor keys (id, `updated_at` and version), not ids
//! alone: a record that changed may have moved, and anchoring on its new place
//! would skip what it jumped over.
//! Invariant: no IO; what is tested here is exactly what the reader runs.

use std::collections::HashSet;

/// How many times a walk may start over before giving up.
pub const MAX_RESCANS: u32 = 3;
/// How many times an offset walk doubles its step back before starting over.
const MAX_STEP_BACKS: u32 = 8;
/// How many times a page walk reads a pair of pages again when they may not join.
const MAX_REREADS: u32 = 4;
/// How many times in a row an offset walk may see the same window at a new offset
/// before it calls the API broken. Once can be an honest shift of exactly one stride.
const MAX_REPEATS: u32 = 2;

/// What to do with a window of ids that was just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take `window[from..]`, except ids already in the previous tail.
    Take { from: usize, done: bool },
    /// The tail was not found: read again from [`OffsetWalk::request_offset`].
    Refetch,
    /// Continuity is lost: the walk starts over from the beginning.
    Rescan,
}

/// Why a walk cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error(
        "the source returned the same records for two different positions ({0}); it seems to ignore the pagination parameter"
    )]
    Loop(String),
    #[error(
        "lost track of the position {MAX_RESCANS} times: the data shifts faster than it can be read with offset/page pagination; use cursor or keyset pagination if the API offers it"
    )]
    ContinuityLost,
}

/// Where the first tail id appears in a window: new records start there (tail ids
/// themselves are skipped). `None` when no tail id is in the window.
pub fn continuity(tail: &[String], window: &[&str]) -> Option<usize> {
    if tail.is_empty() {
        return Some(0);
    }
    let tail: HashSet<&str> = tail.iter().map(String::as_str).collect();
    window.iter().position(|id| tail.contains(id))
}

/// The last `overlap` ids of a window, to find again next time.
fn new_tail(window: &[&str], overlap: usize) -> Vec<String> {
    let start = window.len().saturating_sub(overlap);
    window[start..].iter().map(|s| (*s).to_owned()).collect()
}

/// An offset walk: `next` is where unread records begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetWalk {
    pub next: u64,
    pub tail: Vec<String>,
    overlap: u64,
    step_backs: u32,
    rescans: u32,
    last_window: Option<(u64, Vec<String>)>,
    repeats: u32,
}

impl OffsetWalk {
    pub fn new(next: u64, tail: Vec<String>, overlap: u32) -> Self {
        OffsetWalk {
            next,
            tail,
            overlap: u64::from(overlap),
            step_backs: 0,
            rescans: 0,
            last_window: None,
            repeats: 0,
        }
    }

    /// Where the next request should start.
    pub fn request_offset(&self) -> u64 {
        if self.tail.is_empty() {
            return self.next;
        }
        let back = self.overlap.saturating_mul(1u64 << self.step_backs.min(40));
        self.next.saturating_sub(back)
    }

    /// Judges the window read at `start`; the walk's position moves on `Take`.
    pub fn accept(&mut self, start: u64, window: &[&str]) -> Result<Step, WalkError> {
        if !window.is_empty() {
            if let Some((last_start, last_ids)) = &self.last_window
                && *last_start != start
                && last_ids
                    .iter()
                    .map(String::as_str)
                    .eq(window.iter().copied())
            {
                self.repeats += 1;
                if self.repeats >= MAX_REPEATS {
                    return Err(WalkError::Loop(format!("offsets {last_start} and {start}")));
                }
            } else {
                self.repeats = 0;
            }
            self.last_window = Some((start, window.iter().map(|s| (*s).to_owned()).collect()));
        }
        match continuity(&self.tail, window) {
            Some(from) => {
                let fresh = window[from..]
                    .iter()
                    .filter(|id| !self.tail.iter().any(|t| t == *id))
                    .count();
                let done = fresh == 0 && window.len() as u64 <= self.overlap.max(1);
                self.next = start + window.len() as u64;
                if !window.is_empty() {
                    self.tail = new_tail(window, self.overlap as usize);
                }
                self.step_backs = 0;
                Ok(Step::Take { from, done })
            }
            None if start > 0 && self.step_backs < MAX_STEP_BACKS => {
                self.step_backs += 1;
                Ok(Step::Refetch)
            }
            None => {
                self.rescans += 1;
                if self.rescans > MAX_RESCANS {
                    return Err(WalkError::ContinuityLost);
                }
                self.next = 0;
                self.tail.clear();
                self.step_backs = 0;
                self.last_window = None;
                Ok(Step::Rescan)
            }
        }
    }
}

/// A page-number walk. Page APIs cannot start a page at an arbitrary record, so the
/// overlap is the previous page, read again right after the new one.
///
/// Two requests are two snapshots. Rows inserted before the position between them
/// are covered by the tail, and rows removed before it land in the re-read page, so
/// either kind alone never causes a skip. Removals followed by inserts can, and they
/// show as a tail that is no longer at the end of the previous page while the two
/// pages share no record: such a pair is read again. Only a removal and an insert
/// that cancel exactly between the two requests go unseen; offset, keyset and
/// cursor pagination read each page as one snapshot and do not have this limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageWalk {
    pub next: u64,
    pub tail: Vec<String>,
    first_page: u64,
    overlap: usize,
    rescans: u32,
    rereads: u32,
}

impl PageWalk {
    pub fn new(next: u64, tail: Vec<String>, first_page: u64, overlap: u32) -> Self {
        PageWalk {
            next,
            tail,
            first_page,
            overlap: overlap as usize,
            rescans: 0,
            rereads: 0,
        }
    }

    /// The previous page to read again after the next one, if continuity needs it.
    pub fn overlap_page(&self) -> Option<u64> {
        (!self.tail.is_empty() && self.next > self.first_page).then(|| self.next - 1)
    }

    /// Whether the two pages provably join up: they share a record, or the tail is
    /// still exactly at the end of the previous page (nothing moved before it).
    fn joined(&self, previous: &[&str], current: &[&str]) -> bool {
        let shared = previous.iter().any(|id| current.contains(id));
        let n = self.tail.len().min(previous.len());
        let in_place = self.tail[self.tail.len() - n..]
            .iter()
            .map(String::as_str)
            .eq(previous[previous.len() - n..].iter().copied());
        shared || in_place
    }

    /// Judges the previous page (read again, possibly empty) and the new page.
    pub fn accept(&mut self, previous: &[&str], current: &[&str]) -> Result<Step, WalkError> {
        // Once can be an honest shift of exactly one page between the two requests.
        if !current.is_empty() && previous == current {
            if self.rereads < MAX_REREADS {
                self.rereads += 1;
                return Ok(Step::Refetch);
            }
            return Err(WalkError::Loop(format!(
                "pages {} and {}",
                self.next - 1,
                self.next
            )));
        }
        let window: Vec<&str> = previous.iter().chain(current).copied().collect();
        match continuity(&self.tail, &window) {
            Some(_) if !self.joined(previous, current) && self.rereads < MAX_REREADS => {
                self.rereads += 1;
                Ok(Step::Refetch)
            }
            Some(from) => {
                self.rereads = 0;
                if !window.is_empty() {
                    self.tail = new_tail(&window, self.overlap);
                }
                self.next += 1;
                Ok(Step::Take {
                    from,
                    done: current.is_empty(),
                })
            }
            None => {
                self.rescans += 1;
                if self.rescans > MAX_RESCANS {
                    return Err(WalkError::ContinuityLost);
                }
                self.next = self.first_page;
                self.tail.clear();
                Ok(Step::Rescan)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn continuity_starts_at_the_first_tail_id() {
        let tail = vec!["b".to_owned(), "c".to_owned()];
        assert_eq!(continuity(&tail, &["a", "b", "c", "d"]), Some(1));
        // "b" moved further on: everything after the first tail id is taken.
        assert_eq!(continuity(&tail, &["c", "x", "b", "d"]), Some(0));
        assert_eq!(continuity(&tail, &["x", "y"]), None);
    }

    /// A list that changes between requests, as a live API does.
    #[derive(Debug, Clone)]
    enum Change {
        Insert(usize),
        Remove(usize),
        MoveToEnd(usize),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (0usize..1000).prop_map(Change::Insert),
            (0usize..1000).prop_map(Change::Remove),
            (0usize..1000).prop_map(Change::MoveToEnd),
        ]
    }

    struct Live {
        rows: Vec<String>,
        touched: HashSet<String>,
        minted: usize,
    }

    impl Live {
        fn new(n: usize) -> Self {
            Live {
                rows: (0..n).map(|i| format!("r{i}")).collect(),
                touched: HashSet::new(),
                minted: n,
            }
        }

        fn apply(&mut self, change: &Change) {
            let len = self.rows.len();
            match *change {
                Change::Insert(at) => {
                    self.minted += 1;
                    self.rows
                        .insert(at % (len + 1), format!("r{}", self.minted));
                }
                Change::Remove(at) if len > 0 => {
                    let gone = self.rows.remove(at % len);
                    self.touched.insert(gone);
                }
                Change::MoveToEnd(at) if len > 0 => {
                    // An update: the row moves and its anchor key changes.
                    let moved = self.rows.remove(at % len);
                    self.touched.insert(moved.clone());
                    self.rows.push(format!("{moved}'"));
                }
                _ => {}
            }
        }

        fn page(&self, start: usize, size: usize) -> Vec<&str> {
            self.rows
                .iter()
                .skip(start)
                .take(size)
                .map(String::as_str)
                .collect()
        }
    }

    fn untouched(initial: usize, live: &Live) -> Vec<String> {
        (0..initial)
            .map(|i| format!("r{i}"))
            .filter(|id| !live.touched.contains(id))
            .collect()
    }

    proptest! {
        /// Whatever is inserted, removed or moved between requests, an offset walk
        /// yields every row that stayed put the whole time.
        #[test]
        fn offset_walk_never_skips_a_stable_row(
            initial in 0usize..120,
            page_size in 2usize..12,
            overlap in 1u32..6,
            changes in proptest::collection::vec(proptest::collection::vec(change(), 0..4), 0..80),
        ) {
            let overlap = overlap.min(page_size as u32 - 1);
            let mut live = Live::new(initial);
            let mut walk = OffsetWalk::new(0, Vec::new(), overlap);
            let mut taken: HashSet<String> = HashSet::new();
            let mut finished = false;
            for step in 0..2000 {
                if let Some(batch) = changes.get(step) {
                    for c in batch { live.apply(c); }
                }
                let start = walk.request_offset();
                let window = live.page(start as usize, page_size);
                let tail_before = walk.tail.clone();
                match walk.accept(start, &window) {
                    Ok(Step::Take { from, done }) => {
                        for id in &window[from..] {
                            if !tail_before.iter().any(|t| t == id) {
                                taken.insert((*id).to_owned());
                            }
                        }
                        if done { finished = true; break; }
                    }
                    Ok(Step::Refetch) | Ok(Step::Rescan) => {}
                    // Giving up stops the run at its checkpoint: nothing is lost, but
                    // nothing is proven either, so such cases do not count.
                    Err(e) => prop_assume!(false, "{}", e),
                }
            }
            prop_assert!(finished, "the walk did not finish");
            for id in untouched(initial, &live) {
                prop_assert!(taken.contains(&id), "skipped {id}");
            }
        }

        /// The same for page-number walks, whose two requests per page are two
        /// snapshots: any change between pages, and between the two requests of a
        /// page either only inserts or only removals and moves (see [`PageWalk`]).
        #[test]
        fn page_walk_never_skips_a_stable_row(
            initial in 0usize..120,
            page_size in 2usize..12,
            between_requests in 0u8..3,
            changes in proptest::collection::vec(proptest::collection::vec(change(), 0..3), 0..160),
        ) {
            let kind = |c: &Change| match (between_requests, c) {
                (1, Change::Remove(at) | Change::MoveToEnd(at)) => Change::Insert(*at),
                (2, Change::Insert(at)) => Change::Remove(*at),
                _ => c.clone(),
            };
            let mut live = Live::new(initial);
            let mut walk = PageWalk::new(1, Vec::new(), 1, 3);
            let mut taken: HashSet<String> = HashSet::new();
            let mut finished = false;
            for step in 0..2000 {
                if let Some(batch) = changes.get(2 * step) {
                    for c in batch { live.apply(&kind(c)); }
                }
                let page = |live: &Live, n: u64| -> Vec<String> {
                    live.page((n as usize - 1) * page_size, page_size)
                        .into_iter()
                        .map(str::to_owned)
                        .collect()
                };
                let current = page(&live, walk.next);
                if between_requests > 0
                    && let Some(batch) = changes.get(2 * step + 1)
                {
                    for c in batch { live.apply(&kind(c)); }
                }
                let previous = walk.overlap_page().map(|n| page(&live, n)).unwrap_or_default();
                let current: Vec<&str> = current.iter().map(String::as_str).collect();
                let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
                let tail_before = walk.tail.clone();
                let window: Vec<&str> = previous.iter().chain(&current).copied().collect();
                match walk.accept(&previous, &current) {
                    Ok(Step::Take { from, done }) => {
                        for id in &window[from..] {
                            if !tail_before.iter().any(|t| t == id) {
                                taken.insert((*id).to_owned());
                            }
                        }
                        if done { finished = true; break; }
                    }
                    Ok(_) => {}
                    // As for offsets: giving up loses nothing and proves nothing.
                    Err(e) => prop_assume!(false, "{}", e),
                }
            }
            prop_assert!(finished, "the walk did not finish");
            for id in untouched(initial, &live) {
                prop_assert!(taken.contains(&id), "skipped {id}");
            }
        }
    }
}
