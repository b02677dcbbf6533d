//! Owns the checkpoint frontier: pages enter in source order, their records resolve
//! in any order, and the checkpoint may only move to the cursor after the last page
//! of the unbroken run of fully resolved pages at the front. With one page in flight
//! this is simple bookkeeping; with many in flight (concurrent writes across pages)
//! it is what keeps a crash from skipping an unresolved record.
//! Invariant: pure; never returns a cursor past an unresolved record.

use std::collections::BTreeMap;

/// Pages in flight and what is left to resolve in each.
#[derive(Debug)]
pub struct Frontier<C> {
    next_to_open: u64,
    pending: BTreeMap<u64, Pending<C>>,
}

#[derive(Debug)]
struct Pending<C> {
    unresolved: usize,
    cursor_after: C,
}

impl<C> Default for Frontier<C> {
    fn default() -> Self {
        Frontier {
            next_to_open: 0,
            pending: BTreeMap::new(),
        }
    }
}

impl<C> Frontier<C> {
    /// Registers the next page in source order; returns its sequence number.
    pub fn open_page(&mut self, records: usize, cursor_after: C) -> u64 {
        let seq = self.next_to_open;
        self.next_to_open += 1;
        self.pending.insert(
            seq,
            Pending {
                unresolved: records,
                cursor_after,
            },
        );
        seq
    }

    /// One record of page `seq` is resolved (written, skipped or dead-lettered).
    pub fn resolve(&mut self, seq: u64) {
        if let Some(page) = self.pending.get_mut(&seq) {
            page.unresolved = page.unresolved.saturating_sub(1);
        }
    }

    /// Whether every record of page `seq` is resolved (or the page was popped).
    pub fn is_complete(&self, seq: u64) -> bool {
        self.pending
            .get(&seq)
            .is_none_or(|page| page.unresolved == 0)
    }

    /// Pops every fully resolved page at the front; returns how many, and the cursor
    /// after the last of them — the new checkpoint.
    pub fn advance(&mut self) -> Option<(usize, C)> {
        let mut popped = 0;
        let mut cursor = None;
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().unresolved > 0 {
                break;
            }
            cursor = Some(entry.remove().cursor_after);
            popped += 1;
        }
        cursor.map(|c| (popped, c))
    }

    /// Pages opened but not yet popped.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Records not yet resolved, over every page in flight.
    pub fn unresolved(&self) -> usize {
        self.pending.values().map(|page| page.unresolved).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order records resolve in, the checkpoint is always the cursor of
        /// the last page whose records, and all records before it, are resolved.
        #[test]
        fn never_passes_an_unresolved_record(
            sizes in proptest::collection::vec(0usize..6, 1..12),
            order_seed in any::<u64>(),
        ) {
            let mut frontier = Frontier::default();
            for (page, size) in sizes.iter().enumerate() {
                frontier.open_page(*size, page);
            }
            let mut todo: Vec<u64> = sizes
                .iter()
                .enumerate()
                .flat_map(|(page, size)| std::iter::repeat_n(page as u64, *size))
                .collect();
            fastrand::Rng::with_seed(order_seed).shuffle(&mut todo);
            let mut left = sizes.clone();
            let mut checkpoint: Option<usize> = None;
            let check = |frontier: &mut Frontier<usize>, left: &[usize], checkpoint: &mut Option<usize>| {
                if let Some((_, cursor)) = frontier.advance() {
                    *checkpoint = Some(cursor);
                }
                let complete_prefix = left.iter().take_while(|l| **l == 0).count();
                let expected = complete_prefix.checked_sub(1);
                prop_assert_eq!(*checkpoint, expected);
                Ok(())
            };
            check(&mut frontier, &left, &mut checkpoint)?;
            for page in todo {
                frontier.resolve(page);
                left[page as usize] -= 1;
                check(&mut frontier, &left, &mut checkpoint)?;
            }
            prop_assert_eq!(checkpoint, Some(sizes.len() - 1));
            prop_assert_eq!(frontier.in_flight(), 0);
            prop_assert_eq!(frontier.unresolved(), 0);
        }
    }
}
