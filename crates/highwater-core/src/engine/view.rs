//! The run's own view of the ledger and the dead letters: what this invocation
//! resolved that the store's lookups may not show yet. A page's lookup reads the
//! merged ledger and the dead letters as they stood when it ran; until every page
//! still to be admitted was looked up after a row reached those tables, the row
//! must be found here.
//!
//! Visibility rules: a ledger row stays until the commit that *merged* it is
//! confirmed and a page looked up after that confirmation is admitted (staging
//! is not enough: lookups read the merged ledger only). A dead letter stays
//! until its own commit is confirmed and such a page is admitted. A newer row
//! for the same id replaces the older one and starts over.

use std::collections::{BTreeSet, HashMap};

use super::IdMap;
use crate::state::LedgerEntry;

/// Something resolved, kept until the tables lookups read hold it.
struct Remembered<T> {
    page: u64,
    /// The count of confirmed commits once the one that put it in those tables
    /// was confirmed.
    committed: Option<u64>,
    value: T,
}

impl<T> Remembered<T> {
    fn new(page: u64, value: T) -> Self {
        Remembered {
            page,
            committed: None,
            value,
        }
    }

    /// Whether a lookup made once `confirmed` commits were confirmed saw it.
    fn seen_by(&self, confirmed: u64) -> bool {
        self.committed.is_some_and(|c| c <= confirmed)
    }
}

#[derive(Default)]
pub(super) struct LedgerView {
    /// Boxed: a map's table holds its values inline, with room for up to
    /// twice the count it held most, and a ledger row is about 200 bytes. At
    /// 1,000,000 records into JSON Lines that table was 22 of the run's 58
    /// MB of heap at its peak; boxed, the peak was 49 MB.
    written: IdMap<String, Remembered<Box<LedgerEntry>>>,
    /// Fingerprints of dead letters, by source id.
    dead: IdMap<String, Remembered<String>>,
    /// Pages whose ledger rows are staged, durably, and not merged yet.
    staged_pages: BTreeSet<u64>,
    /// No row or letter here was put in the tables by a commit confirmed
    /// before this count: a page admitted before it lets nothing go, and
    /// `admitted` need not look through every row, as it would at each page.
    first_committed: Option<u64>,
}

impl LedgerView {
    /// The ledger row this invocation resolved for `id`, if lookups may miss it.
    pub(super) fn written(&self, id: &str) -> Option<&LedgerEntry> {
        self.written.get(id).map(|r| &*r.value)
    }

    /// The fingerprint of a dead letter this invocation wrote for `id`, likewise.
    pub(super) fn dead(&self, id: &str) -> Option<&String> {
        self.dead.get(id).map(|r| &r.value)
    }

    /// A ledger row resolved on `page` (a write, or a newer version with the
    /// same payload).
    pub(super) fn remember_written(&mut self, page: u64, entry: LedgerEntry) {
        self.written.insert(
            entry.source_id.clone(),
            Remembered::new(page, Box::new(entry)),
        );
    }

    pub(super) fn remember_dead(&mut self, page: u64, id: &str, fingerprint: String) {
        self.dead
            .insert(id.to_owned(), Remembered::new(page, fingerprint));
    }

    /// The commit holding `pages` is confirmed, the `confirmed`-th; `merged`
    /// when it also merged every staged ledger row into the ledger.
    pub(super) fn committed(&mut self, pages: &[u64], merged: bool, confirmed: u64) {
        let mut marked = false;
        self.dead
            .values_mut()
            .filter(|r| r.committed.is_none() && pages.contains(&r.page))
            .for_each(|r| {
                r.committed = Some(confirmed);
                marked = true;
            });
        self.staged_pages.extend(pages);
        if merged {
            let merged = std::mem::take(&mut self.staged_pages);
            self.written
                .values_mut()
                .filter(|r| r.committed.is_none() && merged.contains(&r.page))
                .for_each(|r| {
                    r.committed = Some(confirmed);
                    marked = true;
                });
        }
        if marked {
            self.first_committed =
                Some(self.first_committed.map_or(confirmed, |c| c.min(confirmed)));
        }
    }

    /// A page looked up once `confirmed` commits were confirmed is admitted: it,
    /// and every page read after it, see what those commits put in the tables.
    /// Returns the rows let go, as (external id, source id): lookups find which
    /// source record holds each of those external ids from now on.
    pub(super) fn admitted(&mut self, confirmed: u64) -> Vec<(String, String)> {
        if self.first_committed.is_none_or(|c| c > confirmed) {
            return Vec::new();
        }
        let let_go = self
            .written
            .extract_if(|_, r| r.seen_by(confirmed))
            .map(|(_, r)| {
                let LedgerEntry {
                    external_id,
                    source_id,
                    ..
                } = *r.value;
                (external_id, source_id)
            })
            .collect();
        self.dead.retain(|_, r| !r.seen_by(confirmed));
        self.first_committed = self
            .written
            .values()
            .filter_map(|r| r.committed)
            .chain(self.dead.values().filter_map(|r| r.committed))
            .min();
        // A map keeps its largest size: after a merge lets most rows go, the
        // memory goes too.
        shrink(&mut self.written);
        shrink(&mut self.dead);
        let_go
    }
}

/// Gives a map's memory back once it holds less than a quarter of it.
pub(super) fn shrink<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
) {
    if map.capacity() > 4 * map.len().max(1024) {
        map.shrink_to(2 * map.len());
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    fn entry(id: &str, version: i64) -> LedgerEntry {
        LedgerEntry {
            source_id: id.into(),
            external_id: id.into(),
            dest_id: None,
            version: Some(version),
            updated_at: Timestamp::UNIX_EPOCH,
            payload_hash: format!("hash-{version}"),
            run_id: "run".into(),
            deleted_at: None,
        }
    }

    fn version(view: &LedgerView, id: &str) -> Option<i64> {
        view.written(id).and_then(|e| e.version)
    }

    #[test]
    fn a_row_stays_until_a_page_looked_up_after_its_merge_is_admitted() {
        let mut view = LedgerView::default();
        view.remember_written(1, entry("a", 1));
        // Staged, not merged: lookups cannot see it however late they run.
        view.committed(&[1], false, 1);
        view.admitted(5);
        assert_eq!(version(&view, "a"), Some(1));
        // Merged by the third confirmed commit.
        view.committed(&[2], true, 3);
        // A page looked up before that confirmation does not see it.
        view.admitted(2);
        assert_eq!(version(&view, "a"), Some(1));
        view.admitted(3);
        assert_eq!(version(&view, "a"), None);
    }

    #[test]
    fn the_rows_let_go_name_the_external_ids_lookups_now_find() {
        let mut view = LedgerView::default();
        view.remember_written(1, entry("a", 1));
        view.remember_written(2, entry("b", 1));
        view.committed(&[1], true, 1);
        assert_eq!(view.admitted(0), Vec::new());
        assert_eq!(view.admitted(1), vec![("a".to_owned(), "a".to_owned())]);
        assert_eq!(view.admitted(1), Vec::new());
    }

    #[test]
    fn a_merge_takes_only_rows_of_pages_it_holds() {
        let mut view = LedgerView::default();
        view.remember_written(1, entry("a", 1));
        view.remember_written(2, entry("b", 1));
        // Page 2's commit is not confirmed when page 1's merges.
        view.committed(&[1], true, 1);
        view.admitted(1);
        assert_eq!(version(&view, "a"), None);
        assert_eq!(version(&view, "b"), Some(1));
        view.committed(&[2], true, 2);
        view.admitted(2);
        assert_eq!(version(&view, "b"), None);
    }

    #[test]
    fn a_newer_row_starts_over() {
        let mut view = LedgerView::default();
        view.remember_written(1, entry("a", 1));
        view.committed(&[1], true, 1);
        // A later page wrote a newer version before any page saw the merge.
        view.remember_written(4, entry("a", 2));
        view.admitted(1);
        assert_eq!(version(&view, "a"), Some(2));
        view.committed(&[4], true, 2);
        view.admitted(2);
        assert_eq!(version(&view, "a"), None);
    }

    #[test]
    fn a_dead_letter_needs_its_commit_not_a_merge() {
        let mut view = LedgerView::default();
        view.remember_dead(1, "a", "fp".into());
        view.admitted(9);
        assert_eq!(view.dead("a").map(String::as_str), Some("fp"));
        view.committed(&[1], false, 2);
        view.admitted(1);
        assert!(view.dead("a").is_some());
        view.admitted(2);
        assert_eq!(view.dead("a"), None);
    }

    #[test]
    fn what_each_commit_put_in_the_tables_goes_when_a_page_saw_that_commit() {
        let mut view = LedgerView::default();
        view.remember_written(1, entry("a", 1));
        view.remember_dead(1, "x", "fp-x".into());
        view.remember_written(2, entry("b", 1));
        view.remember_dead(3, "y", "fp-y".into());
        // The dead letter of page 1 is in the tables with commit 2, the rows of
        // pages 1 and 2 with the merge of commit 4, page 3's letter with commit 6.
        view.committed(&[1], false, 2);
        view.committed(&[2], true, 4);
        view.committed(&[3], false, 6);
        assert_eq!(view.admitted(1), Vec::new());
        assert!(view.dead("x").is_some());
        assert_eq!(view.admitted(3), Vec::new());
        assert_eq!(view.dead("x"), None);
        assert!(view.dead("y").is_some());
        let mut let_go = view.admitted(5);
        let_go.sort();
        assert_eq!(
            let_go,
            vec![("a".into(), "a".into()), ("b".into(), "b".into())]
        );
        assert!(view.dead("y").is_some());
        assert_eq!(view.admitted(6), Vec::new());
        assert_eq!(view.dead("y"), None);
        // A row remembered after all that starts over, and goes with its own merge.
        view.remember_written(7, entry("c", 1));
        assert_eq!(view.admitted(9), Vec::new());
        view.committed(&[7], true, 8);
        assert_eq!(view.admitted(8), vec![("c".into(), "c".into())]);
    }
}
