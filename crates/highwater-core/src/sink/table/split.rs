//! Splits a batch of rows into upsert statements and resolves every row
//! exactly once: written (the upsert returned its key), superseded (the
//! destination holds a newer version: not returned), or refused (the database
//! refused it alone). A statement the database refuses for one of its rows
//! (a constraint or a value of the wrong type: the whole statement is rolled
//! back) is halved until the row it cannot take stands alone.
//!
//! Pure: the caller runs each statement and reports what came of it.

use std::collections::HashSet;
use std::ops::Range;

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    Written,
    Superseded,
    Refused(String),
}

/// The statements still to run for one batch, and what came of each row.
#[derive(Debug)]
pub struct Splitter {
    /// Ranges still to run, the next one last.
    todo: Vec<Range<usize>>,
    outcomes: Vec<Option<RowOutcome>>,
}

impl Splitter {
    /// `keys` in batch order; a statement holds at most `max_rows` rows, and
    /// never one key twice (an upsert cannot touch a row twice): a repeated
    /// key starts the next statement, so later copies land after earlier ones.
    pub fn new<K: AsRef<str>>(keys: &[K], max_rows: usize) -> Self {
        let max_rows = max_rows.max(1);
        let mut ranges = Vec::new();
        let mut start = 0;
        let mut seen = HashSet::new();
        for (i, key) in keys.iter().enumerate() {
            if i - start == max_rows || !seen.insert(key.as_ref()) {
                ranges.push(start..i);
                start = i;
                seen.clear();
                seen.insert(key.as_ref());
            }
        }
        if start < keys.len() {
            ranges.push(start..keys.len());
        }
        ranges.reverse();
        Splitter {
            todo: ranges,
            outcomes: vec![None; keys.len()],
        }
    }

    /// The rows of the next statement to run.
    pub fn next_range(&mut self) -> Option<Range<usize>> {
        self.todo.pop()
    }

    /// The statement over `range` committed; `returned(i)` says whether row
    /// `i` came back from it (written) or not (held newer at the destination).
    pub fn applied(&mut self, range: Range<usize>, returned: impl Fn(usize) -> bool) {
        for i in range {
            self.outcomes[i] = Some(if returned(i) {
                RowOutcome::Written
            } else {
                RowOutcome::Superseded
            });
        }
    }

    /// The statement over `range` was refused for one of its rows: nothing of
    /// it was applied. A single row is refused; more are tried again in halves.
    pub fn refused(&mut self, range: Range<usize>, reason: String) {
        if range.len() == 1 {
            self.outcomes[range.start] = Some(RowOutcome::Refused(reason));
            return;
        }
        let middle = range.start + range.len() / 2;
        self.todo.push(middle..range.end);
        self.todo.push(range.start..middle);
    }

    /// Each row's outcome, in batch order; `None` for a row no statement
    /// resolved (the batch stopped before it).
    pub fn finish(self) -> Vec<Option<RowOutcome>> {
        self.outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs a batch against a pretend table: a statement holding a bad row is
    /// refused whole; a row the table holds newer is not returned.
    fn run(
        keys: &[String],
        bad: &HashSet<usize>,
        newer: &HashSet<usize>,
        max: usize,
    ) -> (Vec<Option<RowOutcome>>, Vec<Range<usize>>) {
        let mut splitter = Splitter::new(keys, max);
        let mut statements = Vec::new();
        while let Some(range) = splitter.next_range() {
            statements.push(range.clone());
            if range.clone().any(|i| bad.contains(&i)) {
                splitter.refused(range, "CHECK".into());
            } else {
                splitter.applied(range, |i| !newer.contains(&i));
            }
        }
        (splitter.finish(), statements)
    }

    proptest! {
        #[test]
        fn every_row_is_resolved_once_as_its_own_result_says(
            keys in proptest::collection::vec(0u8..40, 0..200),
            bad in proptest::collection::hash_set(0usize..200, 0..20),
            newer in proptest::collection::hash_set(0usize..200, 0..60),
            max in 1usize..70,
        ) {
            let keys: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
            let (outcomes, statements) = run(&keys, &bad, &newer, max);
            prop_assert_eq!(outcomes.len(), keys.len());
            for (i, outcome) in outcomes.iter().enumerate() {
                let expected = if bad.contains(&i) {
                    RowOutcome::Refused("CHECK".into())
                } else if newer.contains(&i) {
                    RowOutcome::Superseded
                } else {
                    RowOutcome::Written
                };
                prop_assert_eq!(outcome.as_ref(), Some(&expected), "row {}", i);
            }
            // Each statement is small enough, holds no key twice, and every
            // good row is applied by exactly one statement that committed.
            let mut applied = vec![0; keys.len()];
            for range in &statements {
                prop_assert!(range.len() <= max && !range.is_empty());
                let distinct: HashSet<&String> = keys[range.clone()].iter().collect();
                prop_assert_eq!(distinct.len(), range.len());
                if !range.clone().any(|i| bad.contains(&i)) {
                    for i in range.clone() {
                        applied[i] += 1;
                    }
                }
            }
            for (i, count) in applied.iter().enumerate() {
                prop_assert_eq!(*count, usize::from(!bad.contains(&i)), "row {}", i);
            }
            // Copies of one key are applied in batch order.
            let mut order: Vec<usize> = statements
                .iter()
                .filter(|r| !(*r).clone().any(|i| bad.contains(&i)))
                .flat_map(|r| r.clone())
                .collect();
            let sorted = { let mut s = order.clone(); s.sort_unstable(); s };
            order.dedup();
            prop_assert_eq!(order, sorted);
        }
    }

    #[test]
    fn one_bad_row_costs_a_few_statements_not_one_per_row() {
        let keys: Vec<String> = (0..512).map(|i| format!("k{i}")).collect();
        let bad = HashSet::from([300]);
        let (outcomes, statements) = run(&keys, &bad, &HashSet::new(), 512);
        assert_eq!(outcomes[300], Some(RowOutcome::Refused("CHECK".into())));
        // 1 refused, then halving: two per level down to the single row.
        assert_eq!(statements.len(), 1 + 2 * 9);
    }
}
