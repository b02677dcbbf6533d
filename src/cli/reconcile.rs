//! `highwater reconcile <sync>`: compares the source over a window ending at the
//! high-water mark with the ledger and, for a sample, with the destination, and
//! reports what is missing, stale, drifted or extra (exit 1 when anything is);
//! `--repair` writes the missing, stale and drifted records again as a `repair`
//! run, and deletes the extras when the sync deletes (`[sync.deletes]`);
//! otherwise extras are reported, not deleted, and the repair says why.

use std::fmt::Write as _;
use std::time::Duration;

use highwater_core::config::DEFAULT_FULL_DELETE_LIMIT;
use highwater_core::engine::{self, Mismatch, Plan, ReconcileReport, Sample};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{CliError, Context, Exit, print, run};

/// `--repair`, and whether it may delete more than `full_delete_limit`.
#[derive(Debug, Clone, Copy)]
pub struct Repair {
    pub allow_mass_delete: bool,
}

pub async fn reconcile(
    ctx: &mut Context,
    sync: &str,
    window: Duration,
    sample: Sample,
    repair: Option<Repair>,
) -> Result<Exit, CliError> {
    let spec = ctx.sync(sync)?;
    let store = ctx.store().await?;
    let failed = |e: engine::FailureCause| CliError::Failed(format!("reconcile {sync:?}: {e}"));
    let window = engine::reconcile_window(&spec, &store, window)
        .await
        .map_err(failed)?;
    let report = engine::reconcile(&spec, &store, window, sample, CancellationToken::new())
        .await
        .map_err(failed)?;
    if ctx.json {
        print(report_json(sync, &report))?;
    } else {
        print(text(sync, &report).trim_end())?;
    }
    let ids = report.to_repair();
    let Some(repair) = repair else {
        let clean = ids.is_empty() && report.extra.is_empty();
        return Ok(if clean { Exit::Complete } else { Exit::Failed });
    };
    // Deleting is the sync's to decide: only one that deletes loses extras.
    let delete = match (&spec.deletes, report.extra.is_empty()) {
        (Some(_), _) | (None, true) => report.extra.clone(),
        (None, false) => {
            eprintln!(
                "{} extra record(s) not deleted: sync {sync:?} has no [sync.deletes]; add one (delete_path) for --repair to delete them",
                report.extra.len()
            );
            Vec::new()
        }
    };
    // Extras by the thousand more likely mean a window the source does not
    // read as the config says than records gone: the guard of `run --full`.
    if !delete.is_empty() && !repair.allow_mass_delete {
        let ledger = store.ledger(sync).await.map_err(CliError::failed)?;
        let live = ledger.iter().filter(|e| e.deleted_at.is_none()).count();
        let limit = spec
            .deletes
            .as_ref()
            .map_or(DEFAULT_FULL_DELETE_LIMIT, |d| d.full_delete_limit);
        if delete.len() as f64 > limit * live as f64 {
            let refused = engine::FailureCause::MassDelete {
                count: delete.len(),
                total: live,
                limit,
            };
            return Err(CliError::Failed(format!(
                "reconcile {sync:?}: {refused}; nothing was repaired either"
            )));
        }
    }
    if ids.is_empty() && delete.is_empty() {
        return Ok(Exit::Complete);
    }
    let plan = Plan::Repair {
        from: window.lower.unwrap_or(jiff::Timestamp::MIN),
        to: window.watermark,
        ids,
        delete,
    };
    run::run(ctx, sync, plan, run::Flags::default()).await
}

fn text(sync: &str, r: &ReconcileReport) -> String {
    let lower = r
        .window
        .lower
        .map_or_else(|| "the start".to_owned(), |t| t.to_string());
    let mut out = format!(
        "reconcile of sync {sync:?} over {lower} → {} (the high-water mark)\n",
        r.window.watermark
    );
    let _ = writeln!(out, "  source records  {}", r.source_records);
    let _ = writeln!(out, "  dead-lettered   {} (accounted for)", r.dead_lettered);
    if r.unreadable_destination {
        let _ = writeln!(
            out,
            "  destination     not read: it cannot be read back (lookup mode, or set read_path)"
        );
    } else {
        let _ = writeln!(out, "  read back       {}", r.checked);
    }
    for (what, list) in [
        ("missing", &r.missing),
        ("stale", &r.stale),
        ("drifted", &r.drifted),
    ] {
        let _ = writeln!(out, "  {what:<15} {}", list.len());
        for m in list.iter().take(10) {
            let _ = writeln!(out, "    {} ({}): {}", m.source_id, m.found_in, m.detail);
        }
    }
    let _ = writeln!(out, "  extra           {}", r.extra.len());
    for id in r.extra.iter().take(10) {
        let _ = writeln!(out, "    {id} (ledger): not live in the source");
    }
    out
}

fn mismatches(list: &[Mismatch]) -> Vec<Value> {
    list.iter()
        .map(|m| json!({"source_id": m.source_id, "found_in": m.found_in, "detail": m.detail}))
        .collect()
}

fn report_json(sync: &str, r: &ReconcileReport) -> Value {
    json!({
        "sync": sync,
        "lower_bound": r.window.lower.map(|t| t.to_string()),
        "watermark": r.window.watermark.to_string(),
        "source_records": r.source_records,
        "dead_lettered": r.dead_lettered,
        "checked": r.checked,
        "destination_read": !r.unreadable_destination,
        "missing": mismatches(&r.missing),
        "stale": mismatches(&r.stale),
        "drifted": mismatches(&r.drifted),
        "extra": r.extra,
    })
}
