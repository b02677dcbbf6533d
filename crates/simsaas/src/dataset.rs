//! The source dataset: seeded generation of invoice records, their version
//! history, the (updated_at, id) ordering every listing reads, rendering of
//! the served JSON, and the seeded mutations applied while a sync runs.

use std::cmp::Ordering;
use std::ops::Range;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::faults::Rng;
use crate::{Mutations, SimConfig};

/// What a correct sync must do with a record instead of writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rejection {
    /// Fails mapping validation (missing `customer.email` or string `amount_cents`).
    Invalid,
    /// The destination answers 400.
    Status400,
    /// The destination answers 422.
    Status422,
}

/// One source record as currently stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub id: String,
    pub updated_at: Timestamp,
    pub version: i64,
    /// Exactly what the API serves for this record (RFC 3339 timestamps).
    pub body: serde_json::Value,
    pub rejection: Option<Rejection>,
    /// The current version carries the soft-delete marker (`deleted: true`).
    #[serde(default)]
    pub soft_deleted: bool,
}

const STREAM_DATA: u64 = 0xDA7A;
const STREAM_MUTATIONS: u64 = 0x0307_A7E5;
const MS_PER_MIN: i64 = 60_000;
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const STATUSES: [&str; 3] = ["open", "paid", "void"];

#[derive(Debug, Clone)]
struct Version {
    version: i64,
    /// Whole milliseconds, so the RFC 3339 and epoch-ms renderings denote
    /// the same instant.
    ts_ms: i64,
    amount_cents: i64,
    currency: &'static str,
    status: &'static str,
    /// The soft-delete marker: served as `deleted: true`.
    deleted: bool,
}

#[derive(Debug, Clone)]
struct Record {
    id: String,
    num: u64,
    email: Option<String>,
    name: String,
    rejection: Option<Rejection>,
    /// Invalid records of the "amount is a string" flavour keep that flaw in
    /// every version: mutations never change a rejection class.
    amount_as_text: bool,
    /// Oldest first; the last one is current.
    versions: Vec<Version>,
    /// Whether the current version has been served at least once; a lagging
    /// replica can only lag behind something it already showed.
    current_served: bool,
    /// Deleted at the source (hard): gone from every listing since then.
    deleted_ms: Option<i64>,
}

impl Record {
    fn current(&self) -> &Version {
        // `versions` is never empty: every constructor pushes version 1.
        &self.versions[self.versions.len() - 1]
    }
}

/// How a timestamp is rendered in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TsFormat {
    Rfc3339,
    EpochMs,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    id: &'a str,
    updated_at: TsOut,
    version: i64,
    customer: CustomerOut<'a>,
    amount_cents: AmountOut,
    currency: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    deleted: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One entry of the deletes feed: a record deleted at the source, and when.
#[derive(Serialize)]
struct DeletionOut<'a> {
    id: &'a str,
    deleted_at: TsOut,
}

#[derive(Serialize)]
struct CustomerOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    name: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TsOut {
    Rfc(String),
    Ms(i64),
}

#[derive(Serialize)]
#[serde(untagged)]
enum AmountOut {
    Cents(i64),
    Text(String),
}

pub(crate) fn ts_from_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// RFC 3339 UTC with exactly six fractional digits.
pub(crate) fn fmt_ts(ms: i64) -> String {
    format!("{:.6}", ts_from_ms(ms))
}

fn record_out<'a>(r: &'a Record, v: &Version, fmt: TsFormat) -> RecordOut<'a> {
    RecordOut {
        id: &r.id,
        updated_at: match fmt {
            TsFormat::Rfc3339 => TsOut::Rfc(fmt_ts(v.ts_ms)),
            TsFormat::EpochMs => TsOut::Ms(v.ts_ms),
        },
        version: v.version,
        customer: CustomerOut {
            email: r.email.as_deref(),
            name: &r.name,
        },
        amount_cents: if r.amount_as_text {
            AmountOut::Text(format!(
                "{}.{:02}",
                v.amount_cents / 100,
                v.amount_cents % 100
            ))
        } else {
            AmountOut::Cents(v.amount_cents)
        },
        currency: v.currency,
        status: v.status,
        deleted: v.deleted,
    }
}

/// The kinds of mutation, in the order of `Mutations::weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MutationKind {
    Update,
    LateUpdate,
    Insert,
    BackdatedInsert,
    /// The record disappears from every listing and enters the deletes feed.
    HardDelete,
    /// A new version carrying the soft-delete marker.
    SoftDelete,
    /// A hard-deleted record comes back, as a newer version.
    Recreate,
}

/// A change of a record's existence at the source, made on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Gone from the listings, into the deletes feed.
    Hard,
    /// A new version with the soft-delete marker.
    Soft,
    /// A hard-deleted record back, as a newer version.
    Recreate,
}

#[derive(Debug)]
pub(crate) struct Dataset {
    /// Index == record number − 1.
    records: Vec<Record>,
    /// (updated_at in µs, record index), sorted by (updated_at, id): the
    /// order of every listing, maintained incrementally on mutation.
    order: Vec<(i64, u32)>,
    /// The deletes feed: (deleted_at in µs, record index), sorted by
    /// (deleted_at, id). A record deleted, re-created and deleted again is
    /// in it twice.
    deletions: Vec<(i64, u32)>,
    span_start_ms: i64,
    span_end_ms: i64,
    rng: Rng,
}

fn format_id(num: u64) -> String {
    format!("inv_{num:06}")
}

fn round_count(ratio: f64, n: usize) -> usize {
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    ((ratio * n as f64).round() as usize).min(n)
}

impl Dataset {
    pub(crate) fn generate(cfg: &SimConfig, now_ms: i64) -> Dataset {
        let mut rng = Rng::new(cfg.seed, STREAM_DATA);
        let n = cfg.records;
        let span_start_ms = now_ms - 120 * MS_PER_MIN;
        let span_end_ms = now_ms - 10 * MS_PER_MIN;
        let span = (span_end_ms - span_start_ms) as u64;
        let shared_ts = span_start_ms + (span / 2) as i64;

        let mut shared = vec![false; n];
        let mut perm: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut perm);
        for &i in &perm[..round_count(cfg.shared_timestamp_ratio, n)] {
            shared[i] = true;
        }

        let mut rejection: Vec<Option<Rejection>> = vec![None; n];
        rng.shuffle(&mut perm);
        let n_invalid = round_count(cfg.invalid_ratio, n);
        let n_poison = round_count(cfg.poisoned_ratio, n).min(n - n_invalid);
        for &i in &perm[..n_invalid] {
            rejection[i] = Some(Rejection::Invalid);
        }
        for &i in &perm[n_invalid..n_invalid + n_poison] {
            rejection[i] = Some(if rng.below(2) == 0 {
                Rejection::Status400
            } else {
                Rejection::Status422
            });
        }

        let mut ds = Dataset {
            records: Vec::with_capacity(n),
            order: Vec::with_capacity(n),
            deletions: Vec::new(),
            span_start_ms,
            span_end_ms,
            rng: Rng::new(cfg.seed, STREAM_MUTATIONS),
        };
        for i in 0..n {
            let ts_ms = if shared[i] {
                shared_ts
            } else {
                let step = i64::from(cfg.timestamp_step_ms.max(1));
                (span_start_ms + rng.below(span + 1) as i64) / step * step
            };
            let rec = new_record(&mut rng, i as u64 + 1, ts_ms, rejection[i]);
            ds.records.push(rec);
        }
        ds.order = ds
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.current().ts_ms * 1000, i as u32))
            .collect();
        let records = &ds.records;
        ds.order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| records[a.1 as usize].id.cmp(&records[b.1 as usize].id))
        });
        ds
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    fn cmp_entry(&self, e: (i64, u32), ts_us: i64, id: &str) -> Ordering {
        e.0.cmp(&ts_us)
            .then_with(|| self.records[e.1 as usize].id.as_str().cmp(id))
    }

    /// First position with updated_at >= ts.
    pub(crate) fn pos_ge(&self, ts_us: i64) -> usize {
        self.order.partition_point(|e| e.0 < ts_us)
    }

    /// First position with updated_at > ts.
    pub(crate) fn pos_gt(&self, ts_us: i64) -> usize {
        self.order.partition_point(|e| e.0 <= ts_us)
    }

    /// First position strictly after the key (ts, id).
    pub(crate) fn pos_after_key(&self, ts_us: i64, id: &str) -> usize {
        self.order
            .partition_point(|&e| self.cmp_entry(e, ts_us, id) != Ordering::Greater)
    }

    /// The [lo, hi) positions inside inclusive time bounds.
    pub(crate) fn bounds(&self, after_us: Option<i64>, before_us: Option<i64>) -> Range<usize> {
        let lo = after_us.map_or(0, |t| self.pos_ge(t));
        let hi = before_us.map_or(self.order.len(), |t| self.pos_gt(t));
        lo..hi.max(lo)
    }

    /// The (updated_at µs, id) key at a position, as cursors carry it.
    pub(crate) fn key_at(&self, pos: usize) -> Option<(i64, String)> {
        self.order
            .get(pos)
            .map(|&(ts, idx)| (ts, self.records[idx as usize].id.clone()))
    }

    /// The position whose record is served at `pos` when the records sharing
    /// an `updated_at` are turned round by an amount `salt` picks for each
    /// group: another order at every request, every record still served once.
    fn tie_position(&self, pos: usize, salt: u64) -> usize {
        let Some(&(ts, _)) = self.order.get(pos) else {
            return pos;
        };
        let first = self.pos_ge(ts);
        let len = self.pos_gt(ts) - first;
        if len < 2 {
            return pos;
        }
        let turn = (crate::faults::mix(&[salt, first as u64]) % len as u64) as usize;
        first + (pos - first + turn) % len
    }

    /// Writes the records at `positions` as a JSON array. `stale(num)` is
    /// asked, only for records eligible for stale serving, whether to serve
    /// the previous version instead; with `ties`, the records sharing an
    /// `updated_at` come in an order that salt picks. Returns how many stale
    /// versions were served.
    pub(crate) fn write_page(
        &mut self,
        positions: Range<usize>,
        fmt: TsFormat,
        ties: Option<u64>,
        mut stale: impl FnMut(u64) -> bool,
        out: &mut Vec<u8>,
    ) -> u64 {
        let mut stale_count = 0;
        out.push(b'[');
        for (n, pos) in positions.enumerate() {
            let pos = ties.map_or(pos, |salt| self.tie_position(pos, salt));
            let Some(&(_, idx)) = self.order.get(pos) else {
                break;
            };
            if n > 0 {
                out.push(b',');
            }
            let rec = &mut self.records[idx as usize];
            let len = rec.versions.len();
            let vi = if len > 1 && rec.current_served && stale(rec.num) {
                stale_count += 1;
                len - 2
            } else {
                rec.current_served = true;
                len - 1
            };
            let rec = &self.records[idx as usize];
            // Serializing plain structs of strings and integers cannot fail.
            let _ = serde_json::to_writer(&mut *out, &record_out(rec, &rec.versions[vi], fmt));
        }
        out.push(b']');
        stale_count
    }

    pub(crate) fn snapshot(&self) -> Vec<SourceRecord> {
        self.order
            .iter()
            .map(|&(_, idx)| {
                let r = &self.records[idx as usize];
                let v = r.current();
                SourceRecord {
                    id: r.id.clone(),
                    updated_at: ts_from_ms(v.ts_ms),
                    version: v.version,
                    body: serde_json::to_value(record_out(r, v, TsFormat::Rfc3339))
                        .unwrap_or(serde_json::Value::Null),
                    rejection: r.rejection,
                    soft_deleted: v.deleted,
                }
            })
            .collect()
    }

    /// Ids deleted at the source and not re-created since.
    pub(crate) fn deleted_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .records
            .iter()
            .filter(|r| r.deleted_ms.is_some())
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The deletes feed within inclusive bounds (µs), after the key `(t, id)`
    /// when given, at most `limit` entries; with the key of the last entry
    /// when more follow.
    pub(crate) fn deletions_page(
        &self,
        after_us: Option<i64>,
        before_us: Option<i64>,
        after_key: Option<(i64, &str)>,
        limit: usize,
        fmt: TsFormat,
        out: &mut Vec<u8>,
    ) -> Option<(i64, String)> {
        let id_of = |e: &(i64, u32)| self.records[e.1 as usize].id.as_str();
        let in_bounds = |e: &&(i64, u32)| {
            after_us.is_none_or(|a| e.0 >= a) && before_us.is_none_or(|b| e.0 <= b)
        };
        let after = |e: &&(i64, u32)| after_key.is_none_or(|(t, i)| (e.0, id_of(e)) > (t, i));
        let mut entries = self.deletions.iter().filter(in_bounds).filter(after);
        let page: Vec<&(i64, u32)> = entries.by_ref().take(limit).collect();
        out.push(b'[');
        for (n, e) in page.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let ms = e.0 / 1000;
            let entry = DeletionOut {
                id: id_of(e),
                deleted_at: match fmt {
                    TsFormat::Rfc3339 => TsOut::Rfc(fmt_ts(ms)),
                    TsFormat::EpochMs => TsOut::Ms(ms),
                },
            };
            let _ = serde_json::to_writer(&mut *out, &entry);
        }
        out.push(b']');
        let more = entries.next().is_some();
        let last = page.last()?;
        more.then(|| (last.0, id_of(last).to_owned()))
    }

    fn pick_kind(&mut self, weights: [u32; 4], deletes: [u32; 3]) -> MutationKind {
        const KINDS: [MutationKind; 7] = [
            MutationKind::Update,
            MutationKind::LateUpdate,
            MutationKind::Insert,
            MutationKind::BackdatedInsert,
            MutationKind::HardDelete,
            MutationKind::SoftDelete,
            MutationKind::Recreate,
        ];
        let weights: Vec<u32> = weights.iter().chain(deletes.iter()).copied().collect();
        // With no delete weights the draw is the one it always was.
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return MutationKind::Update;
        }
        let mut r = self.rng.below(total);
        for (k, &w) in KINDS.iter().zip(weights.iter()) {
            if r < u64::from(w) {
                return *k;
            }
            r -= u64::from(w);
        }
        MutationKind::Update
    }

    /// Applies one seeded mutation at wall-clock `now_ms`.
    pub(crate) fn mutate(&mut self, m: &Mutations, now_ms: i64) -> MutationKind {
        let mut kind = self.pick_kind(m.weights, m.delete_weights);
        if self.records.is_empty()
            && matches!(kind, MutationKind::Update | MutationKind::LateUpdate)
        {
            kind = MutationKind::Insert;
        }
        match kind {
            MutationKind::Update | MutationKind::LateUpdate => {
                let idx = self.rng.below(self.records.len() as u64) as usize;
                // A deleted record is not updated; it may be re-created.
                if self.records[idx].deleted_ms.is_some() {
                    return kind;
                }
                let prev_ms = self.records[idx].current().ts_ms;
                let target = if kind == MutationKind::Update {
                    now_ms
                } else {
                    now_ms - i64::try_from(m.late_by.as_millis()).unwrap_or(i64::MAX / 2)
                };
                // Never move a record backwards: a late update is late relative
                // to "now", not older than what it replaces.
                self.update(idx, target.max(prev_ms + 1));
            }
            MutationKind::Insert => self.insert(now_ms),
            MutationKind::BackdatedInsert => {
                let span = (self.span_end_ms - self.span_start_ms) as u64;
                let ts = self.span_start_ms + self.rng.below(span + 1) as i64;
                self.insert(ts);
            }
            MutationKind::HardDelete | MutationKind::SoftDelete => {
                let idx = self.rng.below(self.records.len() as u64) as usize;
                // Rejected records stay: their dead letters are checked by reason.
                if self.records[idx].rejection.is_none() {
                    if kind == MutationKind::HardDelete {
                        self.hard_delete(idx, now_ms);
                    } else {
                        self.soft_delete(idx, now_ms);
                    }
                }
            }
            MutationKind::Recreate => {
                let deleted: Vec<usize> = (0..self.records.len())
                    .filter(|&i| self.records[i].deleted_ms.is_some())
                    .collect();
                if !deleted.is_empty() {
                    let pick = deleted[self.rng.below(deleted.len() as u64) as usize];
                    self.recreate(pick, now_ms);
                }
            }
        }
        kind
    }

    /// Deletes a record: gone from the listings, in the deletes feed stamped
    /// `now_ms` (or just after its last version). No-op when already deleted.
    fn hard_delete(&mut self, idx: usize, now_ms: i64) {
        if self.records[idx].deleted_ms.is_some() {
            return;
        }
        if let Some(pos) = self.position_of(idx) {
            self.order.remove(pos);
        }
        let ms = now_ms.max(self.records[idx].current().ts_ms + 1);
        self.records[idx].deleted_ms = Some(ms);
        let key = (ms * 1000, self.records[idx].id.as_str());
        let records = &self.records;
        let pos = self
            .deletions
            .partition_point(|e| (e.0, records[e.1 as usize].id.as_str()) < key);
        self.deletions.insert(pos, (ms * 1000, idx as u32));
    }

    /// A new version carrying the soft-delete marker; no-op when the record is
    /// deleted either way already.
    fn soft_delete(&mut self, idx: usize, now_ms: i64) {
        let rec = &self.records[idx];
        if rec.deleted_ms.is_some() || rec.current().deleted {
            return;
        }
        let ms = now_ms.max(rec.current().ts_ms + 1);
        self.update(idx, ms);
        let rec = &mut self.records[idx];
        let last = rec.versions.len() - 1;
        rec.versions[last].deleted = true;
    }

    /// A deleted record back at the source: a newer version, stamped after its
    /// deletion, without the soft-delete marker.
    fn recreate(&mut self, idx: usize, now_ms: i64) {
        let Some(deleted_ms) = self.records[idx].deleted_ms.take() else {
            return;
        };
        let ms = now_ms.max(deleted_ms + 1);
        self.update(idx, ms);
        let rec = &mut self.records[idx];
        let last = rec.versions.len() - 1;
        rec.versions[last].deleted = false;
    }

    /// Deletes, soft-deletes or re-creates one record by id, stamped `now_ms`
    /// (or just after its last stamp). Returns whether the record was there to
    /// change: live for a delete, deleted for a re-creation.
    pub(crate) fn delete_by_id(&mut self, id: &str, how: Deletion, now_ms: i64) -> bool {
        let Some(idx) = self.records.iter().position(|r| r.id == id) else {
            return false;
        };
        let was_deleted = self.records[idx].deleted_ms.is_some();
        let marked = self.records[idx].current().deleted;
        match how {
            Deletion::Hard if !was_deleted => self.hard_delete(idx, now_ms),
            Deletion::Soft if !was_deleted && !marked => self.soft_delete(idx, now_ms),
            Deletion::Recreate if was_deleted => self.recreate(idx, now_ms),
            _ => return false,
        }
        true
    }

    fn position_of(&self, idx: usize) -> Option<usize> {
        let r = &self.records[idx];
        let ts_us = r.current().ts_ms * 1000;
        let pos = self
            .order
            .partition_point(|&e| self.cmp_entry(e, ts_us, &r.id) == Ordering::Less);
        (self.order.get(pos).map(|e| e.1 as usize) == Some(idx)).then_some(pos)
    }

    fn place(&mut self, idx: usize) {
        let r = &self.records[idx];
        let ts_us = r.current().ts_ms * 1000;
        let pos = self
            .order
            .partition_point(|&e| self.cmp_entry(e, ts_us, &r.id) == Ordering::Less);
        self.order.insert(pos, (ts_us, idx as u32));
    }

    fn update(&mut self, idx: usize, ts_ms: i64) {
        if let Some(pos) = self.position_of(idx) {
            self.order.remove(pos);
        }
        let amount = 100 + self.rng.below(100_000) as i64;
        let status = STATUSES[self.rng.below(STATUSES.len() as u64) as usize];
        let rec = &mut self.records[idx];
        let cur = rec.current().clone();
        rec.versions.push(Version {
            version: cur.version + 1,
            ts_ms,
            amount_cents: amount,
            currency: cur.currency,
            status,
            deleted: cur.deleted,
        });
        rec.current_served = false;
        self.place(idx);
    }

    /// Updates one record by id, stamped `now_ms` (or just after its current
    /// stamp); returns its new version.
    pub(crate) fn update_by_id(&mut self, id: &str, now_ms: i64) -> Option<i64> {
        let idx = self.records.iter().position(|r| r.id == id)?;
        if self.records[idx].deleted_ms.is_some() {
            return None;
        }
        let prev_ms = self.records[idx].current().ts_ms;
        self.update(idx, now_ms.max(prev_ms + 1));
        Some(self.records[idx].current().version)
    }

    fn insert(&mut self, ts_ms: i64) {
        let num = self.records.len() as u64 + 1;
        let rec = new_record(&mut self.rng, num, ts_ms, None);
        self.records.push(rec);
        self.place(self.records.len() - 1);
    }
}

fn new_record(rng: &mut Rng, num: u64, ts_ms: i64, rejection: Option<Rejection>) -> Record {
    let mut email = Some(format!("c{num}@example.com"));
    let mut amount_as_text = false;
    match rejection {
        Some(Rejection::Invalid) => {
            if rng.below(2) == 0 {
                email = None;
            } else {
                amount_as_text = true;
            }
        }
        Some(Rejection::Status400) => email = Some(format!("poison-400+{num}@example.com")),
        Some(Rejection::Status422) => email = Some(format!("poison-422+{num}@example.com")),
        None => {}
    }
    Record {
        id: format_id(num),
        num,
        email,
        name: format!("Customer {num}"),
        rejection,
        amount_as_text,
        versions: vec![Version {
            version: 1,
            ts_ms,
            amount_cents: 100 + rng.below(100_000) as i64,
            currency: CURRENCIES[rng.below(CURRENCIES.len() as u64) as usize],
            status: STATUSES[rng.below(STATUSES.len() as u64) as usize],
            deleted: false,
        }],
        current_served: false,
        deleted_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(records: usize) -> SimConfig {
        SimConfig::new(11, records)
    }

    #[test]
    fn generation_is_seeded_and_sorted() {
        let now = 1_800_000_000_000;
        let a = Dataset::generate(&cfg(500), now).snapshot();
        let b = Dataset::generate(&cfg(500), now).snapshot();
        assert_eq!(a, b);
        assert!(
            a.windows(2)
                .all(|w| (w[0].updated_at, &w[0].id) < (w[1].updated_at, &w[1].id))
        );
        let mid = a
            .iter()
            .filter(|r| r.updated_at == a[250].updated_at)
            .count();
        assert!(mid >= 50, "10% share one timestamp, got {mid}");
        let rejected = a.iter().filter(|r| r.rejection.is_some()).count();
        assert_eq!(rejected, 10);
        let body = &a[0].body;
        assert!(
            body["updated_at"].as_str().is_some_and(|s| s.len() == 27),
            "{body}"
        );
    }

    #[test]
    fn mutations_keep_order_and_class() {
        let now = 1_800_000_000_000;
        let mut c = cfg(200);
        c.invalid_ratio = 0.2;
        let mut ds = Dataset::generate(&c, now);
        let before = ds.snapshot();
        let m = Mutations {
            max: 100,
            weights: [1, 1, 1, 1],
            ..Mutations::default()
        };
        for i in 0..100 {
            ds.mutate(&m, now + i);
        }
        let after = ds.snapshot();
        assert!(after.len() > before.len());
        assert!(
            after
                .windows(2)
                .all(|w| (w[0].updated_at, &w[0].id) < (w[1].updated_at, &w[1].id))
        );
        for r in &before {
            let now_r = after.iter().find(|a| a.id == r.id);
            assert_eq!(now_r.map(|a| a.rejection), Some(r.rejection));
        }
        assert!(
            after
                .iter()
                .filter(|a| !before.iter().any(|b| b.id == a.id))
                .all(|a| a.rejection.is_none())
        );
    }
}
