//! Comparison of the source dataset with what a sync left in the
//! destination: what is missing, duplicated, stale, unexplained, or wrongly
//! dead-lettered (or dead-lettered for the wrong reason).
//!
//! Convention: a destination object carries the source id in `external_id`
//! and the source version as an integer in `body["version"]`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::{DestDump, Rejection, SourceRecord};

/// Result of `verify`. All id lists are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Source records with updated_at <= watermark.
    pub source_records: usize,
    /// Of those, the ones without a rejection.
    pub expected_written: usize,
    /// Objects in the destination.
    pub dest_records: usize,
    /// Valid, <= watermark, and no destination object with that external id.
    pub missing: Vec<String>,
    /// External ids held by more than one destination object.
    pub duplicates: Vec<String>,
    pub duplicate_applications: u64,
    /// Destination `body["version"]` below the source version (records <= watermark).
    pub stale: Vec<String>,
    pub dead_lettered: usize,
    /// Rejected records (<= watermark) the sync did not dead-letter.
    pub rejected_not_dead_lettered: Vec<String>,
    /// Dead-lettered ids whose source record has no rejection.
    pub healthy_dead_lettered: Vec<String>,
    /// Destination objects whose external id is no source record's id.
    pub extras: Vec<String>,
    /// Rejected records dead-lettered with a reason that does not name why.
    pub wrong_reason: Vec<String>,
    /// Records deleted at the source (hard, or soft-deleted at or below the
    /// watermark) that the destination still holds without `deleted: true`.
    pub not_deleted: Vec<String>,
}

impl Verification {
    /// True when the destination mirrors the source exactly.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty()
            && self.duplicates.is_empty()
            && self.stale.is_empty()
            && self.rejected_not_dead_lettered.is_empty()
            && self.healthy_dead_lettered.is_empty()
            && self.duplicate_applications == 0
            && self.extras.is_empty()
            && self.wrong_reason.is_empty()
            && self.not_deleted.is_empty()
    }

    /// Judges the records deleted at the source (`deleted`, from
    /// `SimSaas::deleted_ids`): one the destination still holds is not an
    /// extra but a delete not applied.
    pub fn with_deleted(mut self, deleted: &[String], dest: &DestDump) -> Self {
        let gone: HashSet<&str> = deleted.iter().map(String::as_str).collect();
        let held: HashSet<&str> = dest
            .objects
            .iter()
            .filter(|o| o.body.get("deleted") != Some(&serde_json::Value::Bool(true)))
            .map(|o| o.external_id.as_str())
            .collect();
        self.extras.retain(|ext| !gone.contains(ext.as_str()));
        self.not_deleted.extend(
            deleted
                .iter()
                .filter(|id| held.contains(id.as_str()))
                .cloned(),
        );
        self.not_deleted.sort();
        self.not_deleted.dedup();
        self
    }
}

/// Whether a dead letter's reason names why the record was refused: the
/// mapping's complaint for an invalid record, the status for a rejected one.
fn names_the_cause(rejection: Rejection, reason: &str) -> bool {
    match rejection {
        Rejection::Invalid => reason.contains("required field") || reason.contains("must be"),
        Rejection::Status400 => reason.contains("400"),
        Rejection::Status422 => reason.contains("422"),
    }
}

/// Compares `source` (records after `watermark` are ignored, the sync may not
/// have reached them yet) with the destination dump and the dead-letter map
/// (source id -> reason).
pub fn verify(
    source: &[SourceRecord],
    dest: &DestDump,
    dead_lettered: &HashMap<String, String>,
    watermark: Timestamp,
) -> Verification {
    verify_only(source, dest, dead_lettered, watermark, None)
}

/// As [`verify`], but only the source records whose ids are in `only` must be
/// in the destination (or dead-lettered); duplicates, extras and duplicate
/// applications are still judged over the whole destination.
pub fn verify_ids(
    source: &[SourceRecord],
    dest: &DestDump,
    dead_lettered: &HashMap<String, String>,
    watermark: Timestamp,
    only: &HashSet<String>,
) -> Verification {
    verify_only(source, dest, dead_lettered, watermark, Some(only))
}

fn verify_only(
    source: &[SourceRecord],
    dest: &DestDump,
    dead_lettered: &HashMap<String, String>,
    watermark: Timestamp,
    only: Option<&HashSet<String>>,
) -> Verification {
    // Highest version written per external id; a duplicate holding an old
    // version next to a current one is reported as a duplicate, not stale.
    let mut by_ext: BTreeMap<&str, (usize, Option<i64>)> = BTreeMap::new();
    for o in &dest.objects {
        let e = by_ext.entry(o.external_id.as_str()).or_insert((0, None));
        e.0 += 1;
        let v = o.body.get("version").and_then(serde_json::Value::as_i64);
        e.1 = e.1.max(v);
    }

    let mut out = Verification {
        dest_records: dest.objects.len(),
        duplicate_applications: dest.duplicate_applications,
        dead_lettered: dead_lettered.len(),
        duplicates: by_ext
            .iter()
            .filter(|(_, (n, _))| *n > 1)
            .map(|(ext, _)| (*ext).to_owned())
            .collect(),
        ..Verification::default()
    };

    let checked =
        |r: &&SourceRecord| r.updated_at <= watermark && only.is_none_or(|ids| ids.contains(&r.id));
    for r in source.iter().filter(checked) {
        out.source_records += 1;
        if let Some(rejection) = r.rejection {
            match dead_lettered.get(&r.id) {
                None => out.rejected_not_dead_lettered.push(r.id.clone()),
                Some(reason) if !names_the_cause(rejection, reason) => {
                    out.wrong_reason.push(r.id.clone());
                }
                Some(_) => {}
            }
            continue;
        }
        if r.soft_deleted {
            // Gone from the destination, or there with the marker.
            let marked = dest.objects.iter().any(|o| {
                o.external_id == r.id
                    && o.body.get("deleted") == Some(&serde_json::Value::Bool(true))
            });
            if by_ext.contains_key(r.id.as_str()) && !marked {
                out.not_deleted.push(r.id.clone());
            }
            continue;
        }
        out.expected_written += 1;
        match by_ext.get(r.id.as_str()) {
            None => out.missing.push(r.id.clone()),
            Some((_, v)) if v.is_none_or(|v| v < r.version) => out.stale.push(r.id.clone()),
            Some(_) => {}
        }
    }

    let known: HashSet<&str> = source.iter().map(|r| r.id.as_str()).collect();
    out.extras = by_ext
        .keys()
        .filter(|ext| !known.contains(*ext))
        .map(|ext| (*ext).to_owned())
        .collect();
    let rejection: HashMap<&str, bool> = source
        .iter()
        .map(|r| (r.id.as_str(), r.rejection.is_some()))
        .collect();
    out.healthy_dead_lettered = dead_lettered
        .keys()
        .filter(|id| !rejection.get(id.as_str()).copied().unwrap_or(false))
        .cloned()
        .collect();

    out.missing.sort();
    out.stale.sort();
    out.rejected_not_dead_lettered.sort();
    out.healthy_dead_lettered.sort();
    out.wrong_reason.sort();
    out
}

const EXAMPLES: usize = 5;

fn examples(ids: &[String]) -> String {
    let mut s = ids
        .iter()
        .take(EXAMPLES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > EXAMPLES {
        s.push_str(&format!(", … (+{})", ids.len() - EXAMPLES));
    }
    s
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, label: &str, n: usize, ids: &[String]| {
            if ids.is_empty() {
                writeln!(f, "  {label:<28} {n:>8}")
            } else {
                writeln!(f, "  {label:<28} {n:>8}  e.g. {}", examples(ids))
            }
        };
        writeln!(
            f,
            "verification: {}",
            if self.is_exact() {
                "EXACT"
            } else {
                "NOT EXACT"
            }
        )?;
        row(f, "source (<= watermark)", self.source_records, &[])?;
        row(f, "expected written", self.expected_written, &[])?;
        row(f, "destination", self.dest_records, &[])?;
        row(f, "missing", self.missing.len(), &self.missing)?;
        row(f, "duplicates", self.duplicates.len(), &self.duplicates)?;
        row(
            f,
            "duplicate applications",
            usize::try_from(self.duplicate_applications).unwrap_or(usize::MAX),
            &[],
        )?;
        row(f, "stale", self.stale.len(), &self.stale)?;
        row(f, "dead-lettered", self.dead_lettered, &[])?;
        row(
            f,
            "rejected, not dead-lettered",
            self.rejected_not_dead_lettered.len(),
            &self.rejected_not_dead_lettered,
        )?;
        row(
            f,
            "healthy but dead-lettered",
            self.healthy_dead_lettered.len(),
            &self.healthy_dead_lettered,
        )?;
        row(
            f,
            "dead-lettered, wrong reason",
            self.wrong_reason.len(),
            &self.wrong_reason,
        )?;
        row(
            f,
            "deleted, still there",
            self.not_deleted.len(),
            &self.not_deleted,
        )?;
        row(
            f,
            "unexplained in destination",
            self.extras.len(),
            &self.extras,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DestObject, Rejection};
    use serde_json::json;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn rec(id: &str, at: i64, version: i64, rejection: Option<Rejection>) -> SourceRecord {
        SourceRecord {
            id: id.into(),
            updated_at: ts(at),
            version,
            body: json!({ "id": id, "version": version }),
            rejection,
            soft_deleted: false,
        }
    }

    fn obj(n: u32, ext: &str, version: i64) -> DestObject {
        DestObject {
            id: format!("ct_{n}"),
            external_id: ext.into(),
            body: json!({ "version": version }),
            writes: 1,
        }
    }

    #[test]
    fn exact_when_everything_matches() {
        let source = [
            rec("a", 1, 2, None),
            rec("b", 2, 1, Some(Rejection::Status400)),
        ];
        let dest = DestDump {
            objects: vec![obj(1, "a", 2)],
            duplicate_applications: 0,
            late_regressions: Vec::new(),
        };
        let dl = HashMap::from([("b".to_owned(), "400".to_owned())]);
        let v = verify(&source, &dest, &dl, ts(10));
        assert!(v.is_exact(), "{v}");
        assert_eq!(
            (
                v.source_records,
                v.expected_written,
                v.dest_records,
                v.dead_lettered
            ),
            (2, 1, 1, 1)
        );
    }

    #[test]
    fn reports_each_kind_of_problem() {
        let source = [
            rec("a", 1, 1, None),                       // missing
            rec("b", 2, 3, None),                       // stale (dest has v2)
            rec("c", 3, 1, None),                       // duplicated
            rec("d", 4, 1, Some(Rejection::Invalid)),   // not dead-lettered
            rec("e", 5, 1, None),                       // healthy but dead-lettered
            rec("f", 50, 1, None),                      // after the watermark: ignored
            rec("g", 6, 1, Some(Rejection::Status422)), // correctly dead-lettered
            rec("h", 7, 1, Some(Rejection::Status400)), // dead-lettered for a wrong reason
        ];
        let dest = DestDump {
            objects: vec![
                obj(1, "b", 2),
                obj(2, "c", 1),
                obj(3, "c", 1),
                obj(4, "e", 1),
                obj(5, "zz", 1), // no source record explains it
            ],
            duplicate_applications: 2,
            late_regressions: Vec::new(),
        };
        let dl = HashMap::from([
            ("e".to_owned(), "mapping".to_owned()),
            (
                "g".to_owned(),
                "destination answered HTTP 422: no".to_owned(),
            ),
            (
                "h".to_owned(),
                "required field `email` is missing".to_owned(),
            ),
        ]);
        let v = verify(&source, &dest, &dl, ts(10));
        assert_eq!(v.source_records, 7);
        assert_eq!(v.expected_written, 4);
        assert_eq!(v.dest_records, 5);
        assert_eq!(v.missing, ["a"]);
        assert_eq!(v.stale, ["b"]);
        assert_eq!(v.duplicates, ["c"]);
        assert_eq!(v.duplicate_applications, 2);
        assert_eq!(v.rejected_not_dead_lettered, ["d"]);
        assert_eq!(v.healthy_dead_lettered, ["e"]);
        assert_eq!(v.wrong_reason, ["h"]);
        assert_eq!(v.extras, ["zz"]);
        assert_eq!(v.dead_lettered, 3);
        assert!(!v.is_exact());
        let shown = v.to_string();
        assert!(
            shown.contains("NOT EXACT") && shown.contains("e.g. a"),
            "{shown}"
        );
    }

    #[test]
    fn extras_or_wrong_reasons_alone_break_exactness() {
        let source = [
            rec("a", 1, 1, None),
            rec("b", 2, 1, Some(Rejection::Invalid)),
        ];
        let right = HashMap::from([("b".to_owned(), "field `x` must be a string".to_owned())]);
        let exact = DestDump {
            objects: vec![obj(1, "a", 1)],
            ..DestDump::default()
        };
        assert!(verify(&source, &exact, &right, ts(10)).is_exact());
        let extra = DestDump {
            objects: vec![obj(1, "a", 1), obj(2, "x", 1)],
            ..DestDump::default()
        };
        assert!(!verify(&source, &extra, &right, ts(10)).is_exact());
        let wrong = HashMap::from([("b".to_owned(), "destination answered HTTP 500".to_owned())]);
        assert!(!verify(&source, &exact, &wrong, ts(10)).is_exact());
    }

    #[test]
    fn only_the_listed_records_must_be_there() {
        let source = [rec("a", 1, 2, None), rec("b", 2, 1, None)];
        let dest = DestDump {
            objects: vec![obj(1, "a", 1), obj(2, "b", 1), obj(3, "b", 1)],
            ..DestDump::default()
        };
        let only = HashSet::from(["b".to_owned()]);
        let v = verify_ids(&source, &dest, &HashMap::new(), ts(10), &only);
        assert!(v.stale.is_empty(), "a is not checked: {v}");
        assert_eq!(v.duplicates, ["b"], "duplicates are judged everywhere");
        assert_eq!(v.source_records, 1);
    }

    #[test]
    fn duplicate_applications_alone_break_exactness() {
        let source = [rec("a", 1, 1, None)];
        let dest = DestDump {
            objects: vec![obj(1, "a", 1)],
            duplicate_applications: 1,
            late_regressions: Vec::new(),
        };
        let v = verify(&source, &dest, &HashMap::new(), ts(10));
        assert!(!v.is_exact());
    }
}
