//! A dry run: reads and maps what the next run of a plan would (the open run's
//! window and cursor when there is one, as `run` would resume it) and decides each
//! record as that run would — create, update, skip as unchanged or stale,
//! dead-letter — against the ledger, writing nothing anywhere, not even the state
//! store. For a few updates it reads the destination's copy (where the sink can
//! read back) to name the fields that would change.
//! What it cannot foresee: what the destination will refuse, and what changes at
//! the source before the real run.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::FailureCause;
use super::ahead::{lookup_keys, map_page};
use super::decide::{Decision, DeleteDecision, decide, decide_delete};
use super::plan::Plan;
use super::route::fingerprint;
use crate::config::{MappingSpec, SyncSpec};
use crate::http::Api;
use crate::mapping::{MappedRecord, MappingError, comparable, map_record};
use crate::sink::{Held, Sink};
use crate::source::{Cursor, Extracted, Reader, Window};
use crate::state::{HighWaterMark, Intent, Known, LedgerEntry, Store};
use crate::stop::Stop;

/// Examples kept per outcome.
const SAMPLES: usize = 5;

/// What the next run would do.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRunReport {
    pub window: Window,
    /// The open run whose window and cursor were used, as `run` would resume it.
    pub resumes: Option<String>,
    pub pages: u64,
    pub read: u64,
    pub beyond_watermark: u64,
    /// New to the ledger: written for the first time.
    pub create: u64,
    /// In the ledger with another payload: written again.
    pub update: u64,
    pub unchanged: u64,
    pub stale: u64,
    /// Below a write an earlier attempt announced and never confirmed: the real
    /// run reads the destination to decide.
    pub held_back: u64,
    pub dead_letter: u64,
    /// Carrying the sync's soft-delete marker: deleted (or tombstoned).
    pub delete: u64,
    pub samples: DrySamples,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrySamples {
    pub create: Vec<String>,
    pub update: Vec<UpdateSample>,
    pub unchanged: Vec<String>,
    pub stale: Vec<String>,
    /// Source id and why.
    pub dead_letter: Vec<(String, String)>,
    pub delete: Vec<String>,
}

/// An update, with the payload fields whose values differ from the
/// destination's copy, when it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateSample {
    pub source_id: String,
    pub changed_fields: Option<Vec<String>>,
}

/// What the dry run has decided so far, in place of the ledger rows and
/// dead letters the real run would write.
#[derive(Default)]
struct DryView {
    written: HashMap<String, LedgerEntry>,
    holders: HashMap<String, String>,
    dead: HashMap<String, String>,
}

/// Decides the next run of `plan` without writing. `store` is `None` when no
/// state store exists yet: everything is new. The plan is one that reads the
/// source (incremental or backfill); a replay or a repair is refused.
pub async fn dry_run(
    spec: &SyncSpec,
    store: Option<&Store>,
    plan: Plan,
    max_pages: Option<u64>,
    shutdown: CancellationToken,
) -> Result<DryRunReport, FailureCause> {
    if matches!(
        plan,
        Plan::Replay { .. } | Plan::Repair { .. } | Plan::Deletes | Plan::Full { .. }
    ) {
        return Err(FailureCause::NotForDryRun(plan.kind()));
    }
    if let Some(store) = store {
        super::invocation::ledger_describes(spec, store).await?;
    }
    let stop = Stop::new(spec.budgets.max_runtime, shutdown);
    let (window, cursor, resumes) = window(spec, store, plan).await?;
    let floors: HashMap<String, Intent> = match store {
        Some(store) => store.floors(&spec.name, None).await?.newest,
        None => HashMap::new(),
    };
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
    if let Some(store) = store {
        let keeper: Arc<dyn crate::auth::TokenKeeper> = Arc::new(store.clone());
        api.keep_tokens_with(Arc::clone(&keeper));
        sink.keep_tokens_with(keeper);
    }
    let mut reader = Reader::new(&api, &spec.source, window, cursor);
    let mut report = DryRunReport {
        window,
        resumes,
        pages: 0,
        read: 0,
        beyond_watermark: 0,
        create: 0,
        update: 0,
        unchanged: 0,
        stale: 0,
        held_back: 0,
        dead_letter: 0,
        delete: 0,
        samples: DrySamples::default(),
    };
    let mut view = DryView::default();
    let mut updates: Vec<(String, MappedRecord)> = Vec::new();
    while max_pages.is_none_or(|max| report.pages < max) {
        let Some(page) = reader
            .next_page(&stop)
            .await
            .map_err(FailureCause::Source)?
        else {
            break;
        };
        report.pages += 1;
        report.read += page.records.len() as u64;
        report.beyond_watermark += page.beyond_watermark;
        let (superseded, mapped) = map_page(&spec.mapping, &page.records);
        let (ids, external_ids) = lookup_keys(&page.records, &mapped);
        let known = match store {
            Some(store) => store.known(&spec.name, &ids, &external_ids).await?,
            None => Known::default(),
        };
        for ((record, superseded), mapped) in page.records.iter().zip(superseded).zip(mapped) {
            if superseded {
                report.stale += 1;
                sample(&mut report.samples.stale, record.id().to_owned());
                continue;
            }
            let outcome = judge(spec, &known, &floors, &mut view, record, mapped);
            match outcome {
                Judged::Create => {
                    report.create += 1;
                    sample(&mut report.samples.create, record.id().to_owned());
                }
                Judged::Update(mapped) => {
                    report.update += 1;
                    if updates.len() < SAMPLES {
                        updates.push((record.id().to_owned(), mapped));
                    }
                }
                Judged::Unchanged => {
                    report.unchanged += 1;
                    sample(&mut report.samples.unchanged, record.id().to_owned());
                }
                Judged::Stale => {
                    report.stale += 1;
                    sample(&mut report.samples.stale, record.id().to_owned());
                }
                Judged::HeldBack => report.held_back += 1,
                Judged::Delete => {
                    report.delete += 1;
                    sample(&mut report.samples.delete, record.id().to_owned());
                }
                Judged::DeadLetter(reason) => {
                    report.dead_letter += 1;
                    if report.samples.dead_letter.len() < SAMPLES {
                        report
                            .samples
                            .dead_letter
                            .push((record.id().to_owned(), reason));
                    }
                }
            }
        }
    }
    for (source_id, mapped) in updates {
        let changed_fields = changed_fields(sink.as_ref(), &stop, &mapped, &spec.mapping).await;
        report.samples.update.push(UpdateSample {
            source_id,
            changed_fields,
        });
    }
    Ok(report)
}

/// The open run's window and cursor, or a new run's window from the start.
async fn window(
    spec: &SyncSpec,
    store: Option<&Store>,
    plan: Plan,
) -> Result<(Window, Cursor, Option<String>), FailureCause> {
    let Some(store) = store else {
        return Ok((
            plan.window(spec, now(), HighWaterMark::None),
            Cursor::Start,
            None,
        ));
    };
    if let Some((run, checkpoint)) = store.open_run(&spec.name, plan.kind()).await?
        && plan.matches(&run)
    {
        let cursor: Cursor = serde_json::from_value(checkpoint.cursor).map_err(|e| {
            crate::state::StateError::Corrupt(format!("run {}: cursor: {e}", run.run_id))
        })?;
        let window = Window {
            lower: run.lower_bound,
            watermark: run.watermark,
        };
        return Ok((window, cursor, Some(run.run_id)));
    }
    let high_water_mark = store.high_water_mark(&spec.name).await?;
    Ok((
        plan.window(spec, now(), high_water_mark),
        Cursor::Start,
        None,
    ))
}

fn now() -> Timestamp {
    Timestamp::now()
        .round(jiff::Unit::Microsecond)
        .unwrap_or_else(|_| Timestamp::now())
}

enum Judged {
    Create,
    Update(MappedRecord),
    Unchanged,
    Stale,
    HeldBack,
    DeadLetter(String),
    Delete,
}

/// One record, decided as the run loop's routing decides it.
fn judge(
    spec: &SyncSpec,
    known: &Known,
    floors: &HashMap<String, Intent>,
    view: &mut DryView,
    record: &Extracted,
    mapped: Option<Result<MappedRecord, MappingError>>,
) -> Judged {
    let (id, body) = match record {
        Extracted::Record(r) => (r.id(), &r.body),
        Extracted::Invalid { id, body, .. } => (id.as_str(), body),
    };
    let dead = view.dead.get(id).or_else(|| known.dead.get(id));
    if dead.is_some_and(|fp| *fp == fingerprint(&spec.fingerprint, body)) {
        return Judged::DeadLetter("still dead-lettered: the same payload failed before".into());
    }
    let record = match record {
        Extracted::Invalid { reason, .. } => {
            return dead_letter(view, spec, id, body, format!("source: {reason}"));
        }
        Extracted::Record(record) => record,
    };
    // As the run loop: a record carrying the marker is a deletion.
    if spec
        .deletes
        .as_ref()
        .is_some_and(|d| d.feed.marks(&record.body))
    {
        let written = view.written.get(id).or_else(|| known.ledger.get(id));
        return match decide_delete(record.version, record.updated_at(), written, floors.get(id)) {
            DeleteDecision::Delete | DeleteDecision::Tombstone => Judged::Delete,
            DeleteDecision::AlreadyDeleted => Judged::Unchanged,
            DeleteDecision::Stale => Judged::Stale,
        };
    }
    let mapped = match mapped.unwrap_or_else(|| map_record(&spec.mapping, record)) {
        Ok(mapped) => mapped,
        Err(e) => return dead_letter(view, spec, id, body, format!("mapping: {}", e.0)),
    };
    // As the run loop: a holder the ledger names no longer holds the external
    // id once this run has given it another.
    let holder = view.holders.get(&mapped.external_id).or_else(|| {
        known.holders.get(&mapped.external_id).filter(|holder| {
            view.written
                .get(holder.as_str())
                .is_none_or(|w| w.external_id == mapped.external_id)
        })
    });
    if let Some(holder) = holder
        && holder != id
    {
        let reason = format!(
            "mapping: external id {:?} is already held by source record {holder:?}",
            mapped.external_id
        );
        return dead_letter(view, spec, id, body, reason);
    }
    let written = view.written.get(id).or_else(|| known.ledger.get(id));
    let decision = decide(
        record.version,
        record.updated_at(),
        &mapped.hash,
        written,
        floors.get(id),
    );
    let is_new = written.is_none();
    match decision {
        Decision::Stale => Judged::Stale,
        Decision::BelowFloor => Judged::HeldBack,
        Decision::Unchanged => Judged::Unchanged,
        Decision::Write => {
            let entry = LedgerEntry {
                source_id: id.to_owned(),
                external_id: mapped.external_id.clone(),
                dest_id: written.and_then(|w| w.dest_id.clone()),
                version: record.version,
                updated_at: record.updated_at(),
                payload_hash: mapped.hash.clone(),
                run_id: String::new(),
                deleted_at: None,
            };
            view.holders
                .insert(mapped.external_id.clone(), id.to_owned());
            view.written.insert(id.to_owned(), entry);
            if is_new {
                Judged::Create
            } else {
                Judged::Update(mapped)
            }
        }
    }
}

fn dead_letter(
    view: &mut DryView,
    spec: &SyncSpec,
    id: &str,
    body: &Value,
    reason: String,
) -> Judged {
    view.dead
        .insert(id.to_owned(), fingerprint(&spec.fingerprint, body));
    Judged::DeadLetter(reason)
}

fn sample(samples: &mut Vec<String>, id: String) {
    if samples.len() < SAMPLES {
        samples.push(id);
    }
}

/// The payload's fields whose values differ from the destination's copy;
/// `None` when the copy cannot be read.
async fn changed_fields(
    sink: &dyn Sink,
    stop: &Stop,
    mapped: &MappedRecord,
    mapping: &MappingSpec,
) -> Option<Vec<String>> {
    if !sink.can_read_back() {
        return None;
    }
    let held = sink.read_back(&mapped.external_id, stop).await.ok()?;
    let Value::Object(payload) = comparable(mapping, &mapped.payload).into_owned() else {
        return None;
    };
    Some(match held {
        Held::Nothing => payload.keys().cloned().collect(),
        Held::Object { object, .. } => payload
            .iter()
            .filter(|(field, value)| object.get(field.as_str()) != Some(value))
            .map(|(field, _)| field.clone())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_plans_that_read_the_source_have_a_dry_run() {
        let text = r#"
[[sync]]
name = "s"

[sync.source]
base_url = "http://127.0.0.1:1"
path = "/items"
pagination = { style = "cursor", token_path = "next", token_param = "cursor" }

[sync.mapping]
external_id = "{id}"

[sync.destination]
type = "http"
base_url = "http://127.0.0.1:2"
mode = "put"
path = "/items/{external_id}"
"#;
        let config = crate::config::parse(text, std::path::Path::new("hw.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        for plan in [
            Plan::Replay { ids: None },
            Plan::Repair {
                from: Timestamp::UNIX_EPOCH,
                to: Timestamp::UNIX_EPOCH,
                ids: vec!["a".into()],
                delete: Vec::new(),
            },
        ] {
            let kind = plan.kind();
            let refused =
                dry_run(&config.syncs[0], None, plan, None, CancellationToken::new()).await;
            assert!(
                matches!(refused, Err(FailureCause::NotForDryRun(k)) if k == kind),
                "{refused:?}"
            );
        }
    }
}
