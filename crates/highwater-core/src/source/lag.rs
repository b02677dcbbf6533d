//! Owns telling a lagging replica's copy of a record from the source's answer.
//! An API served by replicas may answer a request with a record's previous
//! version at the place its current version holds in the listing, and the
//! previous version is often already in the ledger: taken as it comes, it is
//! resolved as unchanged while the watermark passes the version it hides. Such
//! a copy gives itself away when it is stamped before the bound the request
//! carried, or, in a listing sorted by `updated_at`, before the record ahead of
//! it; the request is then read again and the newer copy taken.
//! Invariant: a copy is only ever replaced by a later copy of the same record.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

use super::Extracted;

/// How far below the request's floor a copy may be stamped and still be taken as
/// the API's answer: an API may compare its bound at a coarser precision than
/// it was sent (whole seconds).
pub const SLACK: SignedDuration = SignedDuration::from_secs(1);

/// The positions of the copies in `records` that a consistent source could not
/// have served: stamped more than [`SLACK`] before `floor`, or, when the answer
/// is sorted, before a record ahead of them.
pub fn suspects(records: &[Extracted], floor: Option<Timestamp>, sorted: bool) -> Vec<usize> {
    let floor = floor.and_then(|f| f.checked_sub(SLACK).ok());
    let mut ahead: Option<Timestamp> = None;
    let mut out = Vec::new();
    for (at, record) in records.iter().enumerate() {
        let Extracted::Record(record) = record else {
            continue;
        };
        let stamp = record.updated_at();
        let below_floor = floor.is_some_and(|f| stamp < f);
        let out_of_order = sorted && ahead.is_some_and(|a| stamp < a);
        if below_floor || out_of_order {
            out.push(at);
        } else if sorted {
            ahead = Some(stamp);
        }
    }
    out
}

/// Folds a second reading of the same request into `records`: each copy at
/// `open` takes the re-read's copy of the same record when that one is later.
/// Returns the positions still open: those whose newest copy so far is itself
/// suspect in its own answer. A record the re-read no longer holds has moved on
/// to a later place in the listing, where it is read at its current version, so
/// it is no longer open.
pub fn merge(
    records: &mut [Extracted],
    open: &[usize],
    again: Vec<Extracted>,
    floor: Option<Timestamp>,
    sorted: bool,
) -> Vec<usize> {
    let suspect_again = suspects(&again, floor, sorted);
    let mut by_id: HashMap<String, (Extracted, bool)> = again
        .into_iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Extracted::Record(_)))
        .map(|(at, r)| {
            let suspect = suspect_again.binary_search(&at).is_ok();
            (r.id().to_owned(), (r, suspect))
        })
        .collect();
    let mut still = Vec::new();
    for &at in open {
        let Some((copy, suspect)) = by_id.remove(records[at].id()) else {
            continue;
        };
        if later(&copy, &records[at]) {
            records[at] = copy;
            if suspect {
                still.push(at);
            }
        } else {
            still.push(at);
        }
    }
    still
}

/// Whether `copy` is a later version of the record than `held`.
fn later(copy: &Extracted, held: &Extracted) -> bool {
    match (copy, held) {
        (Extracted::Record(copy), Extracted::Record(held)) => match (copy.version, held.version) {
            (Some(a), Some(b)) if a != b => a > b,
            _ => copy.updated_at() > held.updated_at(),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::record::{RecordKey, SourceRecord};

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn copy(id: &str, second: i64, version: i64) -> Extracted {
        Extracted::Record(SourceRecord {
            key: RecordKey {
                updated_at: at(second),
                id: id.to_owned(),
                id_is_number: false,
            },
            updated_at_raw: json!(at(second).to_string()),
            version: Some(version),
            body: json!({ "id": id, "version": version }),
        })
    }

    fn version(record: &Extracted) -> Option<i64> {
        match record {
            Extracted::Record(r) => r.version,
            Extracted::Invalid { .. } => None,
        }
    }

    #[test]
    fn a_copy_stamped_before_the_floor_is_suspect_within_the_slack_it_is_not() {
        let records = [copy("a", 100, 2), copy("b", -3600, 1), copy("c", 99, 1)];
        assert_eq!(suspects(&records, Some(at(100)), false), [1]);
        // An API comparing whole seconds returns a record from the second before.
        assert_eq!(suspects(&records, Some(at(100)), true), [1, 2]);
        assert!(suspects(&records[2..], Some(at(100)), false).is_empty());
        assert!(suspects(&records, None, false).is_empty());
    }

    #[test]
    fn in_a_sorted_answer_a_copy_stamped_before_the_one_ahead_is_suspect() {
        let records = [
            copy("a", 10, 1),
            copy("b", 20, 2),
            copy("c", 15, 1),
            copy("d", 20, 1),
        ];
        assert_eq!(suspects(&records, None, true), [2]);
        assert!(suspects(&records, None, false).is_empty());
    }

    #[test]
    fn a_re_read_replaces_a_lagging_copy_with_the_current_one_only() {
        let mut records = vec![copy("a", 10, 1), copy("b", -3600, 1), copy("c", 30, 1)];
        // The re-read has b current, but a now lagging behind an older copy: only
        // the open position takes the re-read's copy.
        let again = vec![copy("a", 5, 0), copy("b", 20, 2), copy("c", 30, 1)];
        let open = merge(&mut records, &[1], again, Some(at(0)), true);
        assert!(open.is_empty());
        assert_eq!(
            records.iter().map(version).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(1)]
        );
    }

    #[test]
    fn a_copy_read_again_just_as_old_stays_open_and_an_older_one_is_not_taken() {
        let mut records = vec![copy("b", -3600, 2)];
        let open = merge(
            &mut records,
            &[0],
            vec![copy("b", -3600, 2)],
            Some(at(0)),
            false,
        );
        assert_eq!(open, [0]);
        let open = merge(
            &mut records,
            &[0],
            vec![copy("b", -7200, 1)],
            Some(at(0)),
            false,
        );
        assert_eq!(open, [0]);
        assert_eq!(version(&records[0]), Some(2));
        // Gone from the re-read: it moved to a later place in the listing.
        assert!(merge(&mut records, &[0], Vec::new(), Some(at(0)), false).is_empty());
    }

    proptest! {
        /// Whatever the re-reads serve, each record ends at the latest version any
        /// read showed at its place, and a record is open exactly while that copy
        /// is still before the floor.
        #[test]
        fn re_reads_keep_the_latest_copy(
            reads in prop::collection::vec(prop::collection::vec(any::<bool>(), 6), 1..6),
        ) {
            // Record i has version 2 stamped at 10 + i, version 1 an hour earlier;
            // a `true` serves version 1 in that read.
            let read = |lagging: &[bool]| -> Vec<Extracted> {
                lagging
                    .iter()
                    .enumerate()
                    .map(|(i, &old)| {
                        let id = format!("r{i}");
                        if old { copy(&id, i as i64 - 3600, 1) } else { copy(&id, 10 + i as i64, 2) }
                    })
                    .collect()
            };
            let mut records = read(&reads[0]);
            let mut open = suspects(&records, Some(at(0)), true);
            for lagging in &reads[1..] {
                open = merge(&mut records, &open, read(lagging), Some(at(0)), true);
            }
            for (i, record) in records.iter().enumerate() {
                let ever_current = reads.iter().any(|r| !r[i]);
                prop_assert_eq!(version(record), Some(if ever_current { 2 } else { 1 }));
                prop_assert_eq!(open.contains(&i), !ever_current);
            }
        }
    }
}
