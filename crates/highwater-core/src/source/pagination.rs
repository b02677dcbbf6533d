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
//!
//! An API sorting by `updated_at` alone may serve the records sharing one in
//! another order at every request: one not yet read can then take the place
//! of one read at a page's end. So a tail holds the whole group sharing the
//! page's last `updated_at` (up to half the page, or a walk would crawl), and
//! what a window holds at that time or later, before the tail, is taken too
//! (a record read twice is skipped by the ledger). Tail records found in
//! another order show the API does this; [`Ties`] says so once, and an
//! offset walk that then meets a longer group stops rather than skip
//! (`WalkError::UnstableTies`). A page walk takes such records as well, but
//! its two requests a page are two orders, and a group across two pages can
//! lose a record between them: it stops there
//! (`WalkError::UnstableTiesAcrossPages`). A walk that took pages past such
//! a group before it saw the order change reads its range again from the
//! start first, so that no record skipped stays behind a checkpoint.
//! Invariant: no IO; what is tested here is exactly what the reader runs.

use std::collections::HashSet;

/// How many times a walk may start over before giving up.
pub const MAX_RESCANS: u32 = 3;
/// How many times an offset walk doubles its step back before starting over.
const MAX_STEP_BACKS: u32 = 8;
/// How many times in a row an offset walk may find its tail without reading
/// past where it stood before it stops: records sharing an `updated_at`,
/// more than a tail holds, served in another order at each request, would
/// otherwise keep it stepping back and forth for ever.
const MAX_STALLS: u32 = 4;
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
    #[error(
        "the source serves records that share an `updated_at` in another order from one request to the next, and {0} or more share one at a page's end: more than half a page, which a walk by offsets cannot read whole; sort the listing by a unique field too (an id after `updated_at`), or by the id alone, if the API allows it, or ask for pages of {pages} records or more (page_size); where the API serves no pages that large, no walk by offsets can be sure to read such a group whole: use cursor or keyset pagination if the API offers either",
        pages = .0 * 2
    )]
    UnstableTies(usize),
    #[error(
        "the source serves records that share an `updated_at` in another order from one request to the next, and some share one across two pages, which a walk by page numbers reads in two requests and so cannot read whole; sort the listing by a unique field too (an id after `updated_at`), or by the id alone, if the API allows it"
    )]
    UnstableTiesAcrossPages,
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

/// The `updated_at` (µs) in an anchor key (`id@µs#version`); none for a
/// record that did not map.
fn anchor_time(key: &str) -> Option<i64> {
    let (rest, _version) = key.rsplit_once('#')?;
    rest.rsplit_once('@')?.1.parse().ok()
}

/// Where taking starts when the tail was first found at `from`: earlier, at
/// the first key sharing the tail's last `updated_at` or later, since a
/// record of that group not yet read may stand anywhere in it.
fn from_ties(tail: &[String], window: &[&str], from: usize) -> usize {
    let Some(last) = tail.last().and_then(|k| anchor_time(k)) else {
        return from;
    };
    window[..from]
        .iter()
        .position(|k| anchor_time(k).is_some_and(|t| t >= last))
        .unwrap_or(from)
}

/// Whether a record of `window` shares the `updated_at` of the tail's last.
fn shares_tail_time(tail: &[String], window: &[&str]) -> bool {
    let last = tail.last().and_then(|k| anchor_time(k));
    last.is_some() && window.iter().any(|k| anchor_time(k) == last)
}

/// Whether every record of `window` shares one `updated_at`.
fn one_time(window: &[&str]) -> bool {
    let first = window.first().and_then(|k| anchor_time(k));
    first.is_some() && window.iter().all(|k| anchor_time(k) == first)
}

/// Whether tail keys found in `window` stand in another order than in the
/// tail: records sharing an `updated_at` were served in another order.
fn reordered(tail: &[String], window: &[&str]) -> bool {
    let mut found = tail
        .iter()
        .filter_map(|t| window.iter().position(|k| *k == t.as_str()));
    let Some(mut last) = found.next() else {
        return false;
    };
    found.any(|at| {
        let back = at < last;
        last = at;
        back
    })
}

/// The last `overlap` keys of a window, to find again next time, and
/// before them the rest of the group sharing the last `updated_at`, up to
/// half a page of `page` records; with the length of that group when it
/// held more.
fn new_tail(window: &[&str], overlap: usize, page: usize) -> (Vec<String>, Option<usize>) {
    let last = window.last().and_then(|k| anchor_time(k));
    let group = last.map_or(0, |last| {
        window
            .iter()
            .rev()
            .take_while(|k| anchor_time(k) == Some(last))
            .count()
    });
    let most = overlap.max(page / 2);
    let tail = last_keys(window, overlap.max(group.min(most)));
    (tail, (group > most).then_some(group))
}

/// The last `n` keys of a window.
fn last_keys(window: &[&str], n: usize) -> Vec<String> {
    let start = window.len().saturating_sub(n);
    window[start..].iter().map(|s| (*s).to_owned()).collect()
}

/// What a walk has seen of the order of records sharing an `updated_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ties {
    unstable: bool,
    said: bool,
    /// The tail came from a checkpoint, in the order of another process's
    /// request: the listing's sort may have been fixed since.
    kept_tail: bool,
}

impl Ties {
    /// A walk's, after `tail`.
    fn after(tail: &[String]) -> Self {
        Ties {
            kept_tail: !tail.is_empty(),
            ..Ties::default()
        }
    }

    /// Whether `window` is the first to show the order changing.
    fn saw(&mut self, tail: &[String], window: &[&str]) -> bool {
        if std::mem::take(&mut self.kept_tail) {
            return false;
        }
        let before = self.unstable;
        self.unstable |= reordered(tail, window);
        self.unstable && !before
    }

    /// Once, when the order was first seen to change: to say so.
    pub fn news(&mut self) -> bool {
        let news = self.unstable && !self.said;
        self.said |= news;
        news
    }
}

/// An offset walk: `next` is where unread records begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetWalk {
    pub next: u64,
    pub tail: Vec<String>,
    pub ties: Ties,
    overlap: u64,
    /// The furthest a window has reached, and how many found the tail since
    /// one last reached further.
    furthest: u64,
    stalls: u32,
    /// The tail holds only the last records of a group of at least this
    /// many sharing an `updated_at`; and whether one ever did.
    cut: Option<usize>,
    cut_seen: bool,
    /// The longest window yet: the API's page size, which a shorter one,
    /// the list's end, does not cut a group at.
    widest: usize,
    step_backs: u32,
    rescans: u32,
    last_window: Option<(u64, Vec<String>)>,
    repeats: u32,
    /// Why the walk gave up, once it has gone back to the range's start.
    given_up: Option<WalkError>,
}

impl OffsetWalk {
    /// A walk from `next`, after `tail`, reading `overlap` records again;
    /// `page_size` where the request sets it (otherwise the longest window
    /// stands for it).
    pub fn new(next: u64, tail: Vec<String>, overlap: u32, page_size: Option<u32>) -> Self {
        OffsetWalk {
            next,
            ties: Ties::after(&tail),
            tail,
            overlap: u64::from(overlap),
            furthest: next,
            stalls: 0,
            cut: None,
            cut_seen: false,
            widest: page_size.map_or(0, |n| n as usize),
            step_backs: 0,
            rescans: 0,
            last_window: None,
            repeats: 0,
            given_up: None,
        }
    }

    /// Where the next request should start.
    pub fn request_offset(&self) -> u64 {
        if self.tail.is_empty() {
            return self.next;
        }
        let back = self
            .reread()
            .saturating_mul(1u64 << self.step_backs.min(40));
        self.next.saturating_sub(back)
    }

    /// How many records before `next` a request reads again: the tail.
    fn reread(&self) -> u64 {
        self.overlap.max(self.tail.len() as u64)
    }

    /// Stands after `window`, which ends at `end`.
    fn move_to(&mut self, end: u64, window: &[&str]) {
        self.next = end;
        if !window.is_empty() {
            let (tail, cut) = new_tail(window, self.overlap as usize, self.widest);
            self.tail = tail;
            // A shorter window is the list's end, not a page's.
            self.cut = cut.filter(|_| window.len() >= self.widest);
            self.cut_seen |= self.cut.is_some();
        }
        self.step_backs = 0;
    }

    /// Judges the window read at `start`; the walk's position moves on `Take`.
    pub fn accept(&mut self, start: u64, window: &[&str]) -> Result<Step, WalkError> {
        if let Some(why) = &self.given_up {
            return Err(why.clone());
        }
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
                    // One group sharing an `updated_at`, served in another
                    // order at each request, shows the same records at two
                    // offsets by chance: the walk may already have lost some
                    // of an earlier such group it cut.
                    if one_time(window) {
                        self.ties.unstable = true;
                        return match self.cut_seen {
                            true => self.start_over(),
                            false => Err(WalkError::UnstableTies(window.len())),
                        };
                    }
                    return Err(WalkError::Loop(format!("offsets {last_start} and {start}")));
                }
            } else {
                self.repeats = 0;
            }
            self.last_window = Some((start, window.iter().map(|s| (*s).to_owned()).collect()));
        }
        let end = start + window.len() as u64;
        self.widest = self.widest.max(window.len());
        match continuity(&self.tail, window) {
            Some(found) => {
                // Pages taken after a longer group may already have skipped
                // one of its records: the range is read again from the start,
                // where such a group now stops the walk before it is taken.
                if self.ties.saw(&self.tail, window) && (self.cut_seen || self.cut.is_some()) {
                    return self.start_over();
                }
                let from = from_ties(&self.tail, window, found);
                // Records of the tail's group taken again are not new.
                let fresh = window[found..]
                    .iter()
                    .filter(|id| !self.tail.iter().any(|t| t == *id))
                    .count();
                // A window no longer than the tail holds the list's end; one
                // that ends where others reached before holds nothing more
                // to wait for either, whatever moved into it.
                let done = window.len() as u64 <= self.reread().max(1)
                    && (fresh == 0 || end <= self.furthest);
                self.stalls = if end > self.furthest {
                    0
                } else {
                    self.stalls + 1
                };
                self.furthest = self.furthest.max(end);
                let was_cut = self.cut;
                self.move_to(end, window);
                // A group longer than its tail holds, in another order at
                // each request, can lose a record between two windows:
                // better stopped than skipped.
                match was_cut.or(self.cut) {
                    Some(group) if self.ties.unstable => Err(WalkError::UnstableTies(group)),
                    _ => Ok(Step::Take { from, done }),
                }
            }
            // Stepping back and forth, finding the tail but never reading
            // past it: only records of its group served in another order do
            // that.
            None if self.stalls >= MAX_STALLS && shares_tail_time(&self.tail, window) => {
                self.ties.unstable = true;
                let group = self.cut.unwrap_or(self.tail.len());
                match self.cut_seen {
                    true => self.start_over(),
                    false => Err(WalkError::UnstableTies(group)),
                }
            }
            None if start > 0 && self.step_backs < MAX_STEP_BACKS => {
                self.step_backs += 1;
                Ok(Step::Refetch)
            }
            None => self.start_over(),
        }
    }

    /// The walk from the range's start again, or why it cannot go on.
    fn start_over(&mut self) -> Result<Step, WalkError> {
        self.rescans += 1;
        if self.rescans > MAX_RESCANS {
            let why = match self.cut {
                Some(group) if self.ties.unstable => WalkError::UnstableTies(group),
                _ => WalkError::ContinuityLost,
            };
            // What made the walk start over may have made it skip records
            // before its position (a group longer than its tail holds,
            // served in another order): it goes back to the range's start,
            // for the checkpoint to follow, before it stops.
            self.given_up = Some(why);
        }
        self.next = 0;
        self.tail.clear();
        self.cut = None;
        self.cut_seen = false;
        self.step_backs = 0;
        self.last_window = None;
        Ok(Step::Rescan)
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
    pub ties: Ties,
    first_page: u64,
    overlap: usize,
    /// Whether a page was taken since the walk (re)started.
    taken: bool,
    rescans: u32,
    rereads: u32,
    /// Why the walk gave up, once it has gone back to the first page.
    given_up: Option<WalkError>,
}

impl PageWalk {
    pub fn new(next: u64, tail: Vec<String>, first_page: u64, overlap: u32) -> Self {
        PageWalk {
            next,
            ties: Ties::after(&tail),
            tail,
            first_page,
            overlap: overlap as usize,
            taken: false,
            rescans: 0,
            rereads: 0,
            given_up: None,
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
        if let Some(why) = &self.given_up {
            return Err(why.clone());
        }
        // Once can be an honest shift of exactly one page between the two requests.
        if !current.is_empty() && previous == current {
            if self.rereads < MAX_REREADS {
                self.rereads += 1;
                return Ok(Step::Refetch);
            }
            // One group sharing an `updated_at`, served in another order at
            // each request, shows the same records on two pages by chance.
            if one_time(current) {
                self.ties.unstable = true;
                return self.start_over();
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
                // Pages taken before may have skipped a record between two
                // of them: the range is read again from the start, where a
                // group across two pages now stops the walk before it is
                // taken.
                if self.ties.saw(&self.tail, &window) && self.taken {
                    return self.start_over();
                }
                let across = previous
                    .last()
                    .and_then(|k| anchor_time(k))
                    .is_some_and(|t| current.first().and_then(|k| anchor_time(k)) == Some(t));
                if self.ties.unstable && across {
                    return Err(WalkError::UnstableTiesAcrossPages);
                }
                self.taken = true;
                let from = from_ties(&self.tail, &window, from);
                if !window.is_empty() {
                    self.tail = last_keys(&window, self.overlap);
                }
                self.next += 1;
                Ok(Step::Take {
                    from,
                    done: current.is_empty(),
                })
            }
            None => self.start_over(),
        }
    }

    /// The walk from the first page again, or why it cannot go on.
    fn start_over(&mut self) -> Result<Step, WalkError> {
        self.rescans += 1;
        if self.rescans > MAX_RESCANS {
            // What made the walk start over may have made it skip records
            // before its position (records sharing an `updated_at` across
            // two pages, served in another order): it goes back to the
            // first page, for the checkpoint to follow, before it stops.
            self.given_up = Some(match self.ties.unstable {
                true => WalkError::UnstableTiesAcrossPages,
                false => WalkError::ContinuityLost,
            });
        }
        self.next = self.first_page;
        self.tail.clear();
        self.taken = false;
        Ok(Step::Rescan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_tail_holds_the_group_at_the_window_s_end_up_to_half_of_it() {
        let window = ["a@1#1", "b@2#1", "c@3#1", "d@3#1", "e@3#1", "f@3#1"];
        assert_eq!(new_tail(&window, 2, 6), (last_keys(&window, 3), Some(4)));
        assert_eq!(
            new_tail(&window[..5], 2, 5),
            (last_keys(&window[..5], 2), Some(3))
        );
        // The list's end, a shorter window: half a page is still held.
        assert_eq!(
            new_tail(&window[..5], 2, 6),
            (last_keys(&window[..5], 3), None)
        );
        let window = ["a@1#1", "b@2#1", "c@2#1", "d@3#1"];
        assert_eq!(new_tail(&window, 2, 4), (last_keys(&window, 2), None));
        // Records that did not map carry no time.
        assert_eq!(
            new_tail(&["x!0a1b", "y!2c3d"], 1, 2),
            (vec!["y!2c3d".to_owned()], None)
        );
        assert_eq!(anchor_time("id@with@ats@-5#"), Some(-5));
    }

    #[test]
    fn records_sharing_the_tail_s_last_time_are_taken_before_it() {
        let tail = vec!["c@3#1".to_owned(), "d@3#1".to_owned()];
        // "e" took the place "c" had: it is taken with what follows "d".
        let window = ["b@2#1", "e@3#1", "d@3#1", "c@3#1", "f@4#1"];
        let from = continuity(&tail, &window).expect("found");
        assert_eq!(from, 2);
        assert_eq!(from_ties(&tail, &window, from), 1);
        assert!(reordered(&tail, &window));
        assert!(!reordered(&tail, &["c@3#1", "x@3#1", "d@3#1"]));
    }

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

    /// Record `r{n}` in group `g`, at time `g`, as anchor keys are.
    fn tied_rows(groups: &[usize]) -> Vec<(usize, String)> {
        groups
            .iter()
            .enumerate()
            .flat_map(|(g, &len)| (0..len).map(move |_| g))
            .enumerate()
            .map(|(n, g)| (g, format!("r{n}@{g}#1")))
            .collect()
    }

    /// The list as served at `request`: each group turned round by an
    /// amount of its own at each request.
    fn served<'a>(
        groups: &[usize],
        rows: &'a [(usize, String)],
        turns: &[u64],
        request: usize,
    ) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::with_capacity(rows.len());
        let mut at = 0;
        for (g, &len) in groups.iter().enumerate() {
            let turn = turns[request % turns.len()].wrapping_add(g as u64) as usize % len;
            out.extend((0..len).map(|i| rows[at + (i + turn) % len].1.as_str()));
            at += len;
        }
        out
    }

    /// The records of groups a run resumed at `resumes_at` will not read
    /// again that were not taken.
    fn lost_behind<'a>(
        groups: &[usize],
        rows: &'a [(usize, String)],
        taken: &HashSet<&str>,
        resumes_at: usize,
    ) -> Vec<&'a str> {
        let mut group_end = 0;
        let mut lost = Vec::new();
        for (g, &len) in groups.iter().enumerate() {
            group_end += len;
            if group_end > resumes_at {
                break;
            }
            lost.extend(
                rows.iter()
                    .filter(|(at, k)| *at == g && !taken.contains(k.as_str()))
                    .map(|(_, k)| k.as_str()),
            );
        }
        lost
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
            let mut walk = OffsetWalk::new(0, Vec::new(), overlap, None);
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

        /// Records sharing an `updated_at`, served in another order at every
        /// request: an offset walk takes every record of each group that fits
        /// in half a page, and when every group does, it never stops; when it
        /// stops, it has taken every record a resumed run would not read.
        #[test]
        fn offset_walk_reads_groups_served_in_any_order(
            groups in proptest::collection::vec(1usize..16, 0..40),
            page_size in 2usize..24,
            overlap in 1u32..6,
            turns in proptest::collection::vec(any::<u64>(), 1..8),
        ) {
            let overlap = overlap.min(page_size as u32 - 1);
            let rows = tied_rows(&groups);
            let mut walk = OffsetWalk::new(0, Vec::new(), overlap, Some(page_size as u32));
            let mut taken: HashSet<&str> = HashSet::new();
            let mut finished = false;
            let all_short = groups.iter().all(|&len| len <= page_size / 2);
            // Where a run resumed from the last page taken reads again.
            let mut resumes_at = 0;
            for request in 0..2000 {
                let start = walk.request_offset();
                let list = served(&groups, &rows, &turns, request);
                let end = (start as usize + page_size).min(list.len());
                let window = &list[(start as usize).min(end)..end];
                let tail_before = walk.tail.clone();
                match walk.accept(start, window) {
                    Ok(Step::Take { from, done }) => {
                        taken.extend(window[from..].iter().filter(|k| !tail_before.iter().any(|t| t == *k)));
                        resumes_at = (walk.next as usize).saturating_sub(walk.tail.len());
                        if done { finished = true; break; }
                    }
                    // The reader keeps the walk's start as its checkpoint.
                    Ok(Step::Rescan) => resumes_at = 0,
                    Ok(Step::Refetch) => {}
                    // Stopping loses nothing: every group the resumed run
                    // will not read again was taken whole.
                    Err(e) => {
                        prop_assert!(!all_short, "{e}");
                        let lost = lost_behind(&groups, &rows, &taken, resumes_at);
                        prop_assert!(lost.is_empty(), "{lost:?} behind the checkpoint ({e})");
                        return Ok(());
                    }
                }
            }
            prop_assert!(finished, "the walk did not finish");
            let skipped: Vec<&str> = rows
                .iter()
                .filter(|(g, k)| groups[*g] <= page_size / 2 && !taken.contains(k.as_str()))
                .map(|(_, k)| k.as_str())
                .collect();
            prop_assert!(skipped.is_empty(), "skipped {skipped:?}");
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

        /// Records sharing an `updated_at`, served in another order at every
        /// request, read by page numbers: when the walk stops, it has taken
        /// every record a resumed run would not read.
        #[test]
        fn page_walk_stops_behind_groups_served_in_any_order(
            groups in proptest::collection::vec(1usize..16, 0..40),
            page_size in 2usize..24,
            overlap in 1u32..6,
            turns in proptest::collection::vec(any::<u64>(), 1..8),
        ) {
            let rows = tied_rows(&groups);
            let mut walk = PageWalk::new(1, Vec::new(), 1, overlap);
            let mut taken: HashSet<&str> = HashSet::new();
            let mut resumes_at = 0;
            let mut request = 0;
            for _ in 0..2000 {
                let mut page = |n: u64| -> Vec<&str> {
                    let list = served(&groups, &rows, &turns, request);
                    request += 1;
                    list.into_iter().skip((n as usize - 1) * page_size).take(page_size).collect()
                };
                let current = page(walk.next);
                let previous = walk.overlap_page().map(&mut page).unwrap_or_default();
                let window: Vec<&str> = previous.iter().chain(&current).copied().collect();
                let tail_before = walk.tail.clone();
                match walk.accept(&previous, &current) {
                    Ok(Step::Take { from, done }) => {
                        taken.extend(window[from..].iter().filter(|k| !tail_before.iter().any(|t| t == *k)));
                        resumes_at = ((walk.next - 1) as usize * page_size).saturating_sub(walk.tail.len());
                        if done { return Ok(()); }
                    }
                    Ok(Step::Rescan) => resumes_at = 0,
                    Ok(Step::Refetch) => {}
                    Err(e) => {
                        let lost = lost_behind(&groups, &rows, &taken, resumes_at);
                        prop_assert!(lost.is_empty(), "{lost:?} behind the checkpoint ({e})");
                        return Ok(());
                    }
                }
            }
            prop_assert!(false, "the walk did not finish");
        }
    }
}
