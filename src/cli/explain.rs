//! `highwater explain <sync> <source-id>`: one record's story — each run and page
//! that read it, with the version and `updated_at` it had, and what was done (written
//! to which destination id and in how many requests, skipped as unchanged or stale,
//! dead-lettered and why, repaired) — then where it stands now. A record no kept
//! event mentions says so, with the windows of the runs that could have read it.
//! Reads the state store and never creates it.

use std::collections::HashMap;
use std::fmt::Write as _;

use highwater_core::state::{
    DeadLetterResolution, RecordAction, RecordEvent, RecordState, RunRecord, RunStatus, StoryEvent,
};
use serde_json::{Value, json};

use super::{CliError, Context, Exit, print, render};

/// Runs listed for a record no kept event mentions.
const RECENT_RUNS: u32 = 5;

pub async fn explain(ctx: &mut Context, sync: &str, source_id: &str) -> Result<Exit, CliError> {
    ctx.sync_name(sync)?;
    let retention = ctx.state_file()?.state.event_retention;
    let store = ctx.store().await?;
    let failed = CliError::failed;
    let story = store.record_story(sync, source_id).await.map_err(failed)?;
    let state = store.record_state(sync, source_id).await.map_err(failed)?;
    let runs = store.runs(sync, RECENT_RUNS).await.map_err(failed)?;
    let mut kinds: HashMap<String, String> = runs
        .iter()
        .map(|r| (r.run.run_id.clone(), r.run.kind.to_string()))
        .collect();
    for event in &story {
        if !kinds.contains_key(&event.run_id)
            && let Some(record) = store.run_record(&event.run_id).await.map_err(failed)?
        {
            kinds.insert(event.run_id.clone(), record.run.kind.to_string());
        }
    }
    if ctx.json {
        print(json!({
            "sync": sync,
            "source_id": source_id,
            "events": story.iter().map(|e| event_json(e, &kinds)).collect::<Vec<_>>(),
            "now": state_json(&state),
            "recent_runs": if story.is_empty() { runs.iter().map(run_json).collect() } else { Vec::new() },
        }))?;
        return Ok(Exit::Complete);
    }
    let mut out = format!("record {source_id:?} of sync {sync:?}\n");
    let days = retention.as_secs() / 86_400;
    let kept = if days > 0 {
        format!("{days} days")
    } else {
        render::duration(retention)
    };
    if story.is_empty() {
        let _ = writeln!(
            out,
            "\nno run read it in the events kept ({kept}; [state] event_retention): a page \
             read but never committed (its run stopped, failed or was killed first) leaves no \
             event, and the next run reads it again."
        );
        recent_runs(&mut out, &runs);
    } else {
        let _ = writeln!(out, "\nwhat happened (events kept {kept}):");
        for event in &story {
            let _ = writeln!(out, "  {}", event_line(event, &kinds));
        }
    }
    let _ = writeln!(out, "\nnow:");
    state_lines(&mut out, &state);
    print(out.trim_end())?;
    Ok(Exit::Complete)
}

fn event_line(e: &StoryEvent, kinds: &HashMap<String, String>) -> String {
    let ev = &e.event;
    let kind = kinds.get(&e.run_id).map_or("", String::as_str);
    let place = match ev.page {
        Some(page) => format!("page {page}"),
        None => "at its end".to_owned(),
    };
    format!(
        "{}  run {} {kind}, {place}: {} — {}",
        render::seconds(e.at),
        render::short_id(&e.run_id),
        copy(ev),
        outcome(ev),
    )
}

/// Which copy was read: its version and `updated_at` (a deletion's time).
fn copy(ev: &RecordEvent) -> String {
    if ev.action == RecordAction::Deleted
        && ev.version.is_none()
        && let Some(at) = ev.updated_at
    {
        return format!("deleted at the source {at}");
    }
    let version = ev
        .version
        .map_or_else(|| "no version".to_owned(), |v| format!("version {v}"));
    match ev.updated_at {
        Some(at) => format!("{version}, updated {at}"),
        None => format!("{version}, no usable updated_at"),
    }
}

fn outcome(ev: &RecordEvent) -> String {
    let dest = ev
        .dest_id
        .as_deref()
        .map_or_else(String::new, |d| format!(" to destination id {d:?}"));
    let requests = match ev.attempts {
        0 | 1 => String::new(),
        n => format!(" ({n} requests: {} retried)", n - 1),
    };
    let detail = ev.detail.as_deref().unwrap_or("");
    match ev.action {
        RecordAction::Written => format!("written{dest}{requests}"),
        RecordAction::Unchanged => "skipped: unchanged since it was last written".to_owned(),
        RecordAction::Stale => "skipped: stale (older than what was written)".to_owned(),
        RecordAction::DeadLettered => format!("dead-lettered: {detail}"),
        // The dead letter may be unresolved or discarded: either way this
        // payload is not tried again; the dead letter below says which.
        RecordAction::StillDeadLettered => {
            "skipped: this payload was dead-lettered before and is not tried again".to_owned()
        }
        RecordAction::Repaired => format!("repaired{dest}{requests}: {detail}"),
        RecordAction::Deleted if ev.detail.is_some() => format!("deleted: {detail}"),
        RecordAction::Deleted => {
            let dest = ev
                .dest_id
                .as_deref()
                .map_or_else(String::new, |d| format!(" (destination id {d:?})"));
            format!("deleted at the destination{dest}{requests}")
        }
    }
}

fn recent_runs(out: &mut String, runs: &[RunRecord]) {
    if runs.is_empty() {
        let _ = writeln!(out, "the sync has no runs yet.");
        return;
    }
    let _ = writeln!(out, "runs that could have read it, newest first:");
    for record in runs {
        let run = &record.run;
        let lower = run
            .lower_bound
            .map_or_else(|| "the start".to_owned(), |t| t.to_string());
        let _ = writeln!(
            out,
            "  run {} {}, {}: updated from {lower} to {}",
            render::short_id(&run.run_id),
            run.kind,
            render::run_status(record),
            run.watermark,
        );
    }
    if let Some(newest) = runs.iter().find(|r| r.run.status == RunStatus::Completed) {
        let _ = writeln!(
            out,
            "a record updated after {} (the last completed run's watermark) is read by the next run.",
            newest.run.watermark
        );
    }
}

fn state_lines(out: &mut String, state: &RecordState) {
    match &state.ledger {
        Some(l) if l.deleted_at.is_some() => {
            let dest = l
                .dest_id
                .as_deref()
                .map_or_else(String::new, |d| format!(", destination id {d:?}"));
            let _ = writeln!(
                out,
                "  ledger: deleted at {} (run {}), as external id {:?}{dest}; a copy not newer than the deletion is never written again",
                l.deleted_at.unwrap_or(l.updated_at),
                render::short_id(&l.run_id),
                l.external_id,
            );
        }
        Some(l) => {
            let version = l
                .version
                .map_or_else(|| "no version".to_owned(), |v| format!("version {v}"));
            let dest = l
                .dest_id
                .as_deref()
                .map_or_else(|| "unknown".to_owned(), |d| format!("{d:?}"));
            let _ = writeln!(
                out,
                "  ledger: {version}, updated {}, as external id {:?}, destination id {dest} (run {})",
                l.updated_at,
                l.external_id,
                render::short_id(&l.run_id),
            );
        }
        None => {
            let _ = writeln!(out, "  ledger: nothing written");
        }
    }
    if let Some(d) = &state.dead_letter {
        let when = match (d.resolved_at, d.resolution) {
            (Some(at), Some(DeadLetterResolution::Discarded)) => {
                format!("discarded {at}; `highwater dlq show` says why")
            }
            (Some(at), _) => format!("resolved {at}"),
            (None, _) => "open".to_owned(),
        };
        let _ = writeln!(
            out,
            "  dead letter ({when}): {}: {} — {} attempt(s), first {}, last {}",
            d.stage, d.error, d.attempts, d.first_failed_at, d.last_failed_at
        );
    }
    if let Some(a) = &state.announced {
        let version = a.version.map_or_else(
            || format!("the copy updated {}", a.updated_at),
            |v| format!("version {v}"),
        );
        let _ = writeln!(
            out,
            "  announced, not confirmed: {version} may be at the destination; nothing older is written over it"
        );
    }
    if state.to_read_back {
        let _ = writeln!(
            out,
            "  to be read back before the run completes: an older write of it may still land"
        );
    }
}

fn event_json(e: &StoryEvent, kinds: &HashMap<String, String>) -> Value {
    let ev = &e.event;
    json!({
        "at": e.at.to_string(),
        "run_id": e.run_id,
        "kind": kinds.get(&e.run_id),
        "page": ev.page,
        "action": ev.action.as_str(),
        "version": ev.version,
        "updated_at": ev.updated_at.map(|t| t.to_string()),
        "dest_id": ev.dest_id,
        "attempts": ev.attempts,
        "detail": ev.detail,
    })
}

fn state_json(state: &RecordState) -> Value {
    json!({
        "ledger": state.ledger.as_ref().map(|l| json!({
            "external_id": l.external_id,
            "dest_id": l.dest_id,
            "version": l.version,
            "updated_at": l.updated_at.to_string(),
            "run_id": l.run_id,
        })),
        "dead_letter": state.dead_letter.as_ref().map(|d| json!({
            "stage": d.stage.as_str(),
            "reason": d.error,
            "attempts": d.attempts,
            "first_failed_at": d.first_failed_at.to_string(),
            "last_failed_at": d.last_failed_at.to_string(),
            "resolved_at": d.resolved_at.map(|t| t.to_string()),
            "resolution": d.resolution.map(|r| r.as_str()),
        })),
        "announced": state.announced.as_ref().map(|a| json!({
            "version": a.version,
            "updated_at": a.updated_at.to_string(),
        })),
        "to_read_back": state.to_read_back,
    })
}

fn run_json(record: &RunRecord) -> Value {
    let run = &record.run;
    json!({
        "run_id": run.run_id,
        "kind": run.kind.as_str(),
        "status": run.status.as_str(),
        "lower_bound": run.lower_bound.map(|t| t.to_string()),
        "watermark": run.watermark.to_string(),
    })
}
