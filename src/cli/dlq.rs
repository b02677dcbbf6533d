//! `highwater dlq list|show|discard|replay`: a sync's dead letters. `list`
//! shows the unresolved ones, oldest first (a table, or one JSON line each);
//! `show` one in full, payload included, and how it was resolved; `discard`
//! marks dead letters resolved without writing them, with a reason kept in the
//! audit log, while holding the sync's lock; `replay` writes them again as a
//! run of its own. Reads the state store and never creates it.

use clap::{ArgGroup, Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use std::collections::HashSet;

use highwater_core::engine::Plan;
use highwater_core::state::{
    AuditAction, AuditEntry, AuditRecord, AuditScope, DeadLetterDetail, DeadLetterResolution,
    DeadLetterSummary, DiscardScope, Discarded,
};
use serde_json::{Value, json};

use super::{CliError, Context, Exit, print, render, run};

/// Characters of a reason the `list` table shows; `show` and `--json` give it whole.
const REASON_WIDTH: usize = 80;

/// Ids a discard names in its text output before it counts the rest.
const SHOWN_IDS: usize = 10;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the sync's unresolved dead letters, oldest first.
    List {
        /// The sync's name.
        sync: String,
    },
    /// Show one dead letter in full: stage, reason, attempts, the record as it
    /// was read, and when and why it was resolved or discarded.
    Show {
        /// The sync's name.
        sync: String,
        /// The record's id in the source.
        source_id: String,
    },
    /// Discard dead letters: mark them resolved without writing them, keeping
    /// them and the reason in the audit log. The same payload is not tried again;
    /// a record that changes at the source is.
    Discard(DiscardArgs),
    /// Try dead letters again: each record as it was read, mapped with the
    /// current config and written through the same idempotent path, as a run of
    /// its own (kind replay: resumable, in the run history). Skipped when the
    /// ledger already holds it or a newer version; success resolves the letter,
    /// a new failure keeps it with the new reason.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
pub struct ReplayArgs {
    /// The sync's name.
    sync: String,
    /// A source id whose dead letter to replay; repeat for more.
    #[arg(long, value_name = "ID")]
    id: Vec<String>,
    /// Every unresolved dead letter of the sync.
    #[arg(long, conflicts_with = "id")]
    all: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
pub struct DiscardArgs {
    /// The sync's name.
    sync: String,
    /// A source id whose dead letter to discard; repeat for more.
    #[arg(long, value_name = "ID")]
    id: Vec<String>,
    /// Every unresolved dead letter of the sync.
    #[arg(long, conflicts_with = "id")]
    all: bool,
    /// Why they are discarded, kept in the audit log.
    #[arg(long, required = true, value_parser = non_blank)]
    reason: String,
}

pub async fn dlq(ctx: &mut Context, command: DlqCommand) -> Result<Exit, CliError> {
    match command {
        DlqCommand::List { sync } => list(ctx, &sync).await,
        DlqCommand::Show { sync, source_id } => show(ctx, &sync, &source_id).await,
        DlqCommand::Discard(args) => discard(ctx, args).await,
        DlqCommand::Replay(args) => replay(ctx, args).await,
    }
}

async fn replay(ctx: &mut Context, args: ReplayArgs) -> Result<Exit, CliError> {
    let sync = args.sync.as_str();
    ctx.sync(sync)?;
    let store = ctx.store().await?;
    let unresolved: HashSet<String> = store
        .unresolved_dead_letters(sync)
        .await
        .map_err(CliError::failed)?
        .into_iter()
        .map(|d| d.source_id)
        .collect();
    let unknown: Vec<String> = args
        .id
        .iter()
        .filter(|id| !unresolved.contains(*id))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(CliError::Usage(format!(
            "sync {sync:?} has no unresolved dead letter for source id{} {}; nothing was replayed (`highwater dlq list {sync}` lists them)",
            if unknown.len() == 1 { "" } else { "s" },
            quoted(&unknown),
        )));
    }
    let ids = (!args.all).then(|| args.id.clone());
    let exit = run::run(
        ctx,
        sync,
        Plan::Replay { ids: ids.clone() },
        run::Flags::default(),
    )
    .await?;
    let entry = AuditEntry {
        sync: sync.to_owned(),
        action: AuditAction::DeadLetterReplay,
        scope: match ids {
            Some(ids) => AuditScope::Records { ids },
            None => AuditScope::Sync,
        },
        reason: None,
        details: json!({ "exit_code": exit.code() }),
    };
    ctx.open_store()
        .await?
        .audit(&entry)
        .await
        .map_err(CliError::failed)?;
    Ok(exit)
}

async fn list(ctx: &mut Context, sync: &str) -> Result<Exit, CliError> {
    ctx.sync_name(sync)?;
    let store = ctx.store().await?;
    let letters = store
        .unresolved_dead_letters(sync)
        .await
        .map_err(CliError::failed)?;
    if ctx.json {
        for letter in &letters {
            print(summary_json(letter))?;
        }
        return Ok(Exit::Complete);
    }
    if letters.is_empty() {
        print(format_args!("sync {sync:?} has no unresolved dead letters"))?;
        return Ok(Exit::Complete);
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "source id",
        "stage",
        "attempts",
        "first failed",
        "last failed",
        "reason",
    ]);
    for letter in &letters {
        table.add_row(vec![
            letter.source_id.clone(),
            letter.stage.to_string(),
            letter.attempts.to_string(),
            render::seconds(letter.first_failed_at),
            render::seconds(letter.last_failed_at),
            shortened(&letter.reason),
        ]);
    }
    print(table)?;
    print(format_args!(
        "{} unresolved; `highwater dlq show {sync} <source-id>` shows one in full",
        letters.len()
    ))?;
    Ok(Exit::Complete)
}

async fn show(ctx: &mut Context, sync: &str, source_id: &str) -> Result<Exit, CliError> {
    ctx.sync_name(sync)?;
    let store = ctx.store().await?;
    let Some(letter) = store
        .dead_letter(sync, source_id)
        .await
        .map_err(CliError::failed)?
    else {
        return Err(CliError::Usage(format!(
            "sync {sync:?} has no dead letter for source id {source_id:?} (`highwater dlq list {sync}` lists them)"
        )));
    };
    if ctx.json {
        print(detail_json(sync, &letter))?;
    } else {
        print(detail_text(sync, &letter).trim_end())?;
    }
    Ok(Exit::Complete)
}

async fn discard(ctx: &mut Context, args: DiscardArgs) -> Result<Exit, CliError> {
    let sync = args.sync.as_str();
    ctx.sync_name(sync)?;
    let store = ctx.store().await?;
    // A run of the sync dead-letters and resolves records as it goes: a discard
    // between its lookup and its commit would be undone, or undo the run's word.
    let lock = store.lock_all(sync).await.map_err(|e| match e.held_by() {
        Some((kind, holder)) => CliError::Failed(format!(
            "sync {sync:?} is running its {kind} run ({holder}): dead letters are discarded only while it is not; nothing was discarded, try again once the run has ended"
        )),
        None => CliError::failed(e),
    })?;
    let store = store.fenced(&lock);
    let scope = if args.all {
        DiscardScope::All
    } else {
        DiscardScope::Ids(&args.id)
    };
    let outcome = store
        .discard_dead_letters(sync, scope, &args.reason)
        .await
        .map_err(CliError::failed);
    ctx.close_releasing(lock).await;
    match outcome? {
        Discarded::NotUnresolved(ids) => Err(CliError::Usage(format!(
            "sync {sync:?} has no unresolved dead letter for source id{} {}; nothing was discarded (`highwater dlq list {sync}` lists them)",
            if ids.len() == 1 { "" } else { "s" },
            quoted(&ids),
        ))),
        Discarded::Done { ids, audit } => {
            if ctx.json {
                print(json!({
                    "sync": sync,
                    "discarded": ids.len(),
                    "source_ids": ids,
                    "audit_id": audit.as_ref().map(|a| a.id),
                }))?;
            } else if ids.is_empty() {
                print(format_args!(
                    "sync {sync:?} has no unresolved dead letters: nothing to discard"
                ))?;
            } else {
                let more = ids.len().saturating_sub(SHOWN_IDS);
                print(format_args!(
                    "discarded {} dead letter{} of sync {sync:?}: {}{}{}",
                    ids.len(),
                    if ids.len() == 1 { "" } else { "s" },
                    quoted(&ids[..ids.len().min(SHOWN_IDS)]),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    },
                    audit.map_or_else(String::new, |a| format!(" (audit log entry {})", a.id)),
                ))?;
            }
            Ok(Exit::Complete)
        }
    }
}

/// A reason is what the audit log keeps: an empty one is no reason.
fn non_blank(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("give a reason: it is kept in the audit log".into());
    }
    Ok(text.to_owned())
}

fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reason as the table shows it: where it quotes an API's JSON answer,
/// the answer's own message in place of the answer (whose ids and request
/// ids otherwise fill the width), then cut to [`REASON_WIDTH`].
fn shortened(reason: &str) -> String {
    let told = match reason.find('{').map(|at| reason.split_at(at)) {
        Some((before, answer)) => serde_json::from_str::<Value>(answer)
            .ok()
            .and_then(|answer| message_in(&answer))
            .map_or_else(|| reason.to_owned(), |message| format!("{before}{message}")),
        None => reason.to_owned(),
    };
    match told.char_indices().nth(REASON_WIDTH) {
        Some((end, _)) => format!("{}…", &told[..end]),
        None => told,
    }
}

/// The first message an API's error answer holds, looked for by the names
/// APIs give it, nearest the top first (`errors[0].message` is Intercom's and
/// HubSpot's, `error.message` Stripe's).
fn message_in(answer: &Value) -> Option<String> {
    const NAMES: [&str; 6] = [
        "message",
        "error_description",
        "detail",
        "title",
        "error",
        "errors",
    ];
    let mut level = vec![answer];
    for _ in 0..4 {
        for value in &level {
            for name in NAMES {
                if let Some(Value::String(text)) = value.get(name)
                    && !text.trim().is_empty()
                {
                    return Some(text.clone());
                }
            }
        }
        level = level
            .iter()
            .flat_map(|value| match value {
                Value::Object(fields) => fields.values().collect::<Vec<_>>(),
                Value::Array(items) => items.iter().collect(),
                _ => Vec::new(),
            })
            .collect();
    }
    None
}

fn summary_json(letter: &DeadLetterSummary) -> Value {
    json!({
        "source_id": letter.source_id,
        "stage": letter.stage.as_str(),
        "reason": letter.reason,
        "attempts": letter.attempts,
        "first_failed_at": letter.first_failed_at.to_string(),
        "last_failed_at": letter.last_failed_at.to_string(),
        "run_id": letter.run_id,
    })
}

fn detail_json(sync: &str, letter: &DeadLetterDetail) -> Value {
    let mut out = summary_json(&letter.summary);
    out["sync"] = json!(sync);
    out["payload"] = letter.payload.clone();
    out["resolution"] = match &letter.resolution {
        None => Value::Null,
        Some(r) => json!({
            "how": r.how.as_str(),
            "at": r.at.to_string(),
            "reason": r.audit.as_ref().and_then(|a| a.entry.reason.clone()),
            "audit": r.audit.as_ref().map(audit_json),
        }),
    };
    out
}

fn audit_json(record: &AuditRecord) -> Value {
    json!({
        "id": record.id,
        "at": record.at.to_string(),
        "action": record.entry.action.as_str(),
        "scope": record.entry.scope,
        "reason": record.entry.reason,
        "details": record.entry.details,
    })
}

fn detail_text(sync: &str, letter: &DeadLetterDetail) -> String {
    let s = &letter.summary;
    let state = match &letter.resolution {
        None => "unresolved: a run tries it again only once the record, or the sync's mapping or destination, has changed".to_owned(),
        Some(r) => match r.how {
            DeadLetterResolution::Written => format!("resolved {}: a later copy was written", r.at),
            DeadLetterResolution::Discarded => {
                let reason = r
                    .audit
                    .as_ref()
                    .and_then(|a| a.entry.reason.as_deref())
                    .unwrap_or("no reason kept");
                let entry = r
                    .audit
                    .as_ref()
                    .map_or_else(String::new, |a| format!(" (audit log entry {})", a.id));
                format!(
                    "discarded {}{entry}: {reason}\n                 a run tries it again only once the record, or the sync's mapping or destination, has changed",
                    r.at
                )
            }
        },
    };
    let payload = serde_json::to_string_pretty(&letter.payload)
        .unwrap_or_else(|_| letter.payload.to_string());
    format!(
        "dead letter {:?} of sync {sync:?}\n  \
         state          {state}\n  \
         stage          {}\n  \
         reason         {}\n  \
         attempts       {}\n  \
         first failed   {}\n  \
         last failed    {} (run {})\n\
         payload, as the source served it:\n{payload}\n",
        s.source_id,
        s.stage,
        s.reason,
        s.attempts,
        s.first_failed_at,
        s.last_failed_at,
        render::short_id(&s.run_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_quoting_an_answer_shows_the_answer_s_message() {
        let intercom = r#"destination answered HTTP 409: {"type":"error.list","request_id":"000f2a1c-8bfe-4f0a-a8b8-2f3c3e7d5d2b","errors":[{"code":"conflict","message":"A contact matching those details already exists with id=6572"}]}"#;
        assert_eq!(
            shortened(intercom),
            "destination answered HTTP 409: A contact matching those details already exists w…"
        );
        let stripe = r#"destination answered HTTP 400: {"error":{"type":"invalid_request_error","message":"No such customer"}}"#;
        assert_eq!(
            shortened(stripe),
            "destination answered HTTP 400: No such customer"
        );
        let plain = "required field `email` (from `customer.email`) is missing";
        assert_eq!(shortened(plain), plain);
        let broken = "destination answered HTTP 500: {not json";
        assert_eq!(shortened(broken), broken);
    }
}
