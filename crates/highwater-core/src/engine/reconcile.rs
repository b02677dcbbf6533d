//! Reconciliation: reads the source's ids and versions over a window that ends at
//! the high-water mark (what the sync is responsible for), compares them with the
//! ledger and, for a sample of records, with the destination itself (read back
//! through the lookup or `read_path`), and reports what is missing, stale, drifted
//! or extra. It writes nothing; `--repair` then runs the records it names through
//! the normal write path as a `repair` run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::FailureCause;
use super::decide::is_older;
use super::settle::Compare;
use crate::config::SyncSpec;
use crate::http::Api;
use crate::mapping::{comparable, map_record};
use crate::sink::Held;
use crate::source::{Cursor, Extracted, Reader, Window};
use crate::state::Store;
use crate::stop::Stop;

/// How many records to check against the destination itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    Records(usize),
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileReport {
    pub window: Window,
    /// Records live in the source over the window (newest copy per id).
    pub source_records: u64,
    /// Of those, dead-lettered: accounted for, not compared.
    pub dead_lettered: u64,
    /// Records read back from the destination.
    pub checked: u64,
    /// The destination cannot be read back: only the ledger was compared.
    pub unreadable_destination: bool,
    pub missing: Vec<Mismatch>,
    pub stale: Vec<Mismatch>,
    pub drifted: Vec<Mismatch>,
    /// In the ledger over the window, and not live in the source.
    pub extra: Vec<String>,
}

impl ReconcileReport {
    /// The source ids a repair writes again: missing, stale and drifted.
    pub fn to_repair(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .missing
            .iter()
            .chain(&self.stale)
            .chain(&self.drifted)
            .map(|m| m.source_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub source_id: String,
    /// Where it was found: `ledger` or `destination`.
    pub found_in: &'static str,
    pub detail: String,
}

/// The window a reconciliation (and its repair) reads: `window` long, ending at
/// the high-water mark (or now less the lag before any run completed).
pub async fn reconcile_window(
    spec: &SyncSpec,
    store: &Store,
    window: std::time::Duration,
) -> Result<Window, FailureCause> {
    let now = Timestamp::now();
    let settled = now
        .checked_sub(SignedDuration::try_from(spec.source.lag).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN);
    let watermark = store
        .high_water_mark(&spec.name)
        .await?
        .at()
        .unwrap_or(settled);
    let lower = watermark
        .checked_sub(SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN);
    let lower = spec.source.start.map_or(lower, |start| lower.max(start));
    Ok(Window {
        lower: Some(lower),
        watermark,
    })
}

pub async fn reconcile(
    spec: &SyncSpec,
    store: &Store,
    window: Window,
    sample: Sample,
    shutdown: CancellationToken,
) -> Result<ReconcileReport, FailureCause> {
    let stop = Stop::new(spec.budgets.max_runtime, shutdown);
    let api = Api::new(
        &spec.name,
        "source",
        spec.source.http.clone(),
        spec.retry,
        1,
    )?;
    let sink = spec
        .destination
        .open(&spec.name, spec.retry, None, None)
        .map_err(FailureCause::Destination)?;
    let keeper: Arc<dyn crate::auth::TokenKeeper> = Arc::new(store.clone());
    api.keep_tokens_with(Arc::clone(&keeper));
    sink.keep_tokens_with(keeper);
    let compare = Compare::for_sync(spec);
    // The newest copy of each record in the window.
    let mut live: BTreeMap<String, crate::record::SourceRecord> = BTreeMap::new();
    let mut reader = Reader::new(&api, &spec.source, window, Cursor::Start);
    while let Some(page) = reader
        .next_page(&stop)
        .await
        .map_err(FailureCause::Source)?
    {
        for record in page.records {
            let Extracted::Record(record) = record else {
                continue;
            };
            let newer = live.get(record.id()).is_none_or(|held| {
                !is_older(
                    record.version,
                    record.updated_at(),
                    held.version,
                    held.updated_at(),
                )
            });
            if newer {
                live.insert(record.id().to_owned(), record);
            }
        }
    }
    // A record the source marks deleted is not live: its deletion leaves a
    // tombstone in the ledger, and a ledger row still live for it is extra.
    if let Some(deletes) = &spec.deletes {
        live.retain(|_, record| !deletes.feed.marks(&record.body));
    }
    let mut report = ReconcileReport {
        window,
        source_records: live.len() as u64,
        dead_lettered: 0,
        checked: 0,
        unreadable_destination: !sink.can_read_back(),
        missing: Vec::new(),
        stale: Vec::new(),
        drifted: Vec::new(),
        extra: Vec::new(),
    };
    let ids: Vec<&str> = live.keys().map(String::as_str).collect();
    let mut known = crate::state::Known::default();
    for chunk in ids.chunks(500) {
        let found = store.known(&spec.name, chunk, &[]).await?;
        known.ledger.extend(found.ledger);
        known.dead.extend(found.dead);
    }
    // Rows a run staged are in the ledger too.
    let ledger: BTreeMap<String, crate::state::LedgerEntry> = store
        .ledger(&spec.name)
        .await?
        .into_iter()
        .map(|e| (e.source_id.clone(), e))
        .collect();
    let limit = match sample {
        Sample::All => usize::MAX,
        Sample::Records(n) => n,
    };
    let mut to_check = Vec::new();
    for (id, record) in &live {
        if known.dead.contains_key(id) {
            report.dead_lettered += 1;
            continue;
        }
        let Ok(mapped) = map_record(&spec.mapping, record) else {
            // A record the mapping refuses is dead-lettered by the next run.
            continue;
        };
        let Some(entry) = ledger.get(id) else {
            report.missing.push(Mismatch {
                source_id: id.clone(),
                found_in: "ledger",
                detail: "never written".into(),
            });
            continue;
        };
        if is_older(
            entry.version,
            entry.updated_at,
            record.version,
            record.updated_at(),
        ) {
            report.stale.push(Mismatch {
                source_id: id.clone(),
                found_in: "ledger",
                detail: format!(
                    "the ledger holds {}, the source {}",
                    version_text(entry.version, entry.updated_at),
                    version_text(record.version, record.updated_at())
                ),
            });
            continue;
        }
        if report.unreadable_destination || report.checked as usize >= limit {
            continue;
        }
        report.checked += 1;
        to_check.push((id, record, mapped, entry));
    }
    // Read back as many at a time as the destination takes writes: one at a
    // time, a sample of 100,000 against an API answering in 50 ms took
    // more than an hour and a half.
    let (sink, stop) = (&sink, &stop);
    let mut read_backs = futures_util::stream::iter(to_check.into_iter().map(
        |(id, record, mapped, entry)| async move {
            let held = sink.read_back(&mapped.external_id, stop).await;
            (id, record, mapped, entry, held)
        },
    ))
    .buffered(sink.concurrency().max(1));
    while let Some((id, record, mapped, entry, held)) = read_backs.next().await {
        let held = held.map_err(FailureCause::Destination)?;
        let (object, held_version) = match held {
            Held::Nothing => {
                report.missing.push(Mismatch {
                    source_id: id.clone(),
                    found_in: "destination",
                    detail: format!("no object has external id {:?}", mapped.external_id),
                });
                continue;
            }
            Held::Object {
                object, version, ..
            } => (object, version),
        };
        let written = entry.payload_hash == mapped.hash;
        let payload = comparable(&spec.mapping, &mapped.payload);
        let by_version = compare.holds_at_least(
            &object,
            held_version,
            record.version,
            record.updated_at(),
            None,
        );
        let stale = match by_version {
            Some(holds) => (!holds).then(|| {
                format!(
                    "the destination holds a copy older than the source's ({})",
                    version_text(record.version, record.updated_at())
                )
            }),
            // A copy that says nothing of its version is judged by its
            // fields: when the ledger wrote this payload, one that differs
            // changed behind highwater (drift, below); else it is not the
            // source's current copy.
            None if written => None,
            None => (!super::holds::contains(&object, &payload)).then(|| {
                format!(
                    "the destination does not hold the source's copy ({}): it differs in {}",
                    version_text(record.version, record.updated_at()),
                    differing_fields(&payload, &object).join(", ")
                )
            }),
        };
        if let Some(detail) = stale {
            report.stale.push(Mismatch {
                source_id: id.clone(),
                found_in: "destination",
                detail,
            });
            continue;
        }
        // What the ledger says was written is the current payload: the
        // destination's copy should hold every field of it.
        if written {
            let differ = differing_fields(&payload, &object);
            if !differ.is_empty() {
                report.drifted.push(Mismatch {
                    source_id: id.clone(),
                    found_in: "destination",
                    detail: format!("changed behind highwater: {}", differ.join(", ")),
                });
            }
        }
    }
    for list in [&mut report.missing, &mut report.stale] {
        list.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    }
    let lower = window.lower.unwrap_or(Timestamp::MIN);
    let live_ids: HashSet<&str> = live.keys().map(String::as_str).collect();
    report.extra = ledger
        .values()
        .filter(|e| e.updated_at >= lower && e.updated_at <= window.watermark)
        // A tombstone is a record deleted on purpose.
        .filter(|e| e.deleted_at.is_none())
        .filter(|e| !live_ids.contains(e.source_id.as_str()))
        .map(|e| e.source_id.clone())
        .collect();
    if !report.extra.is_empty() {
        let since = updated_since(&api, spec, window.watermark, stop).await?;
        report.extra.retain(|id| !since.contains(id));
    }
    Ok(report)
}

/// The ids the source holds as updated after `mark`. A record written
/// before the mark and updated since is not in the window's read, and is
/// not extra: the next run takes its newer copy.
async fn updated_since(
    api: &Api,
    spec: &SyncSpec,
    mark: Timestamp,
    stop: &Stop,
) -> Result<HashSet<String>, FailureCause> {
    let window = Window {
        lower: Some(mark),
        watermark: Timestamp::MAX,
    };
    // As a full run reads: no upper bound sent.
    let source = crate::config::SourceSpec {
        upper_bound_param: None,
        ..spec.source.clone()
    };
    let mut reader = Reader::new(api, &source, window, Cursor::Start);
    let mut ids = HashSet::new();
    while let Some(page) = reader.next_page(stop).await.map_err(FailureCause::Source)? {
        ids.extend(page.records.iter().filter_map(|record| match record {
            Extracted::Record(record) => Some(record.id().to_owned()),
            Extracted::Invalid { .. } => None,
        }));
    }
    Ok(ids)
}

fn version_text(version: Option<i64>, updated_at: Timestamp) -> String {
    match version {
        Some(v) => format!("version {v}"),
        None => format!("the copy updated {updated_at}"),
    }
}

/// The payload's fields whose values the object does not hold.
fn differing_fields(payload: &Value, object: &Value) -> Vec<String> {
    match payload {
        Value::Object(fields) => fields
            .iter()
            .filter(|(field, value)| {
                !object
                    .get(field.as_str())
                    .is_some_and(|held| super::holds::contains(held, value))
            })
            .map(|(field, _)| field.clone())
            .collect(),
        _ => Vec::new(),
    }
}
