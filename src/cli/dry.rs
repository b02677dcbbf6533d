//! `highwater run <sync> --dry-run` (and `backfill … --dry-run`): what the next
//! run would do — create, update (with the fields that would change, where the
//! destination can be read back), skip as unchanged or stale, dead-letter — with
//! examples of each; nothing is written anywhere, and a missing state store is
//! not created.

use std::fmt::Write as _;

use highwater_core::engine::{self, DryRunReport, Plan};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{CliError, Context, Exit, print};

pub async fn dry_run(
    ctx: &mut Context,
    sync: &str,
    plan: Plan,
    max_pages: Option<u64>,
) -> Result<Exit, CliError> {
    let spec = ctx.sync(sync)?;
    let store = ctx.existing_store().await?;
    let report = engine::dry_run(
        &spec,
        store.as_ref(),
        plan,
        max_pages,
        CancellationToken::new(),
    )
    .await
    .map_err(|e| CliError::Failed(format!("dry run of sync {sync:?}: {e}")))?;
    if ctx.json {
        print(report_json(sync, &report))?;
    } else {
        print(text(sync, &report).trim_end())?;
    }
    Ok(Exit::Complete)
}

fn text(sync: &str, r: &DryRunReport) -> String {
    let mut out =
        format!("dry run of sync {sync:?}: nothing was written, not even the state store\n");
    let lower = r
        .window
        .lower
        .map_or_else(|| "the start".to_owned(), |t| t.to_string());
    let _ = writeln!(out, "  window        {lower} → {}", r.window.watermark);
    if let Some(run) = &r.resumes {
        let _ = writeln!(out, "  resumes       run {run} from its checkpoint");
    }
    let _ = writeln!(out, "  pages         {}", r.pages);
    let _ = writeln!(out, "  read          {}", r.read);
    let examples = |ids: &[String]| {
        if ids.is_empty() {
            String::new()
        } else {
            format!("  e.g. {}", ids.join(", "))
        }
    };
    let _ = writeln!(
        out,
        "  create        {}{}",
        r.create,
        examples(&r.samples.create)
    );
    let updates: Vec<String> = r
        .samples
        .update
        .iter()
        .map(|u| match &u.changed_fields {
            Some(fields) if fields.is_empty() => format!("{} (no field differs)", u.source_id),
            Some(fields) => format!("{} ({})", u.source_id, fields.join(", ")),
            None => u.source_id.clone(),
        })
        .collect();
    let _ = writeln!(out, "  update        {}{}", r.update, examples(&updates));
    let _ = writeln!(
        out,
        "  unchanged     {}{}",
        r.unchanged,
        examples(&r.samples.unchanged)
    );
    let _ = writeln!(
        out,
        "  stale         {}{}",
        r.stale,
        examples(&r.samples.stale)
    );
    if r.held_back > 0 {
        let _ = writeln!(
            out,
            "  held back     {} (below a write an earlier attempt may have made; the run reads the destination)",
            r.held_back
        );
    }
    if r.delete > 0 {
        let _ = writeln!(
            out,
            "  delete        {}{} (soft-deleted at the source)",
            r.delete,
            examples(&r.samples.delete)
        );
    }
    let _ = writeln!(out, "  dead-letter   {}", r.dead_letter);
    for (id, reason) in &r.samples.dead_letter {
        let _ = writeln!(out, "    {id}: {reason}");
    }
    if r.samples.update.iter().any(|u| u.changed_fields.is_none()) {
        let _ = writeln!(
            out,
            "(the fields an update changes are shown where the destination can be read back: lookup mode, or read_path)"
        );
    }
    out
}

fn report_json(sync: &str, r: &DryRunReport) -> Value {
    json!({
        "sync": sync,
        "dry_run": true,
        "lower_bound": r.window.lower.map(|t| t.to_string()),
        "watermark": r.window.watermark.to_string(),
        "resumes": r.resumes,
        "pages": r.pages,
        "read": r.read,
        "beyond_watermark": r.beyond_watermark,
        "create": r.create,
        "update": r.update,
        "unchanged": r.unchanged,
        "stale": r.stale,
        "held_back": r.held_back,
        "dead_letter": r.dead_letter,
        "delete": r.delete,
        "samples": {
            "create": r.samples.create,
            "update": r.samples.update.iter().map(|u| json!({
                "source_id": u.source_id,
                "changed_fields": u.changed_fields,
            })).collect::<Vec<_>>(),
            "unchanged": r.samples.unchanged,
            "stale": r.samples.stale,
            "delete": r.samples.delete,
            "dead_letter": r.samples.dead_letter.iter().map(|(id, reason)| json!({
                "source_id": id,
                "reason": reason,
            })).collect::<Vec<_>>(),
        },
    })
}
