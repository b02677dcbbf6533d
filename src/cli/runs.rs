//! `highwater runs <sync>`: the sync's runs, newest first (a table, or one JSON line
//! per run); `highwater runs show <run-id>`: one run's audit record. Both read the
//! state store and never create it.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use highwater_core::state::{RunRecord, Store};

use super::{CliError, Context, Exit, print, render};

/// Run ids a prefix may match before it is called ambiguous, to name them.
const SHOWN_MATCHES: u32 = 5;

pub async fn list(ctx: &mut Context, sync: &str, limit: u32) -> Result<Exit, CliError> {
    ctx.sync_name(sync)?;
    let store = ctx.store().await?;
    let records = store.runs(sync, limit).await.map_err(CliError::failed)?;
    if ctx.json {
        for record in &records {
            print(render::run_record_json(record))?;
        }
        return Ok(Exit::Complete);
    }
    if records.is_empty() {
        print(format_args!("sync {sync:?} has no runs yet"))?;
        return Ok(Exit::Complete);
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "run",
        "kind",
        "status",
        "started",
        "took",
        "read",
        "written",
        "unchanged",
        "stale",
        "dead-lettered",
        "retries",
        "last word",
    ]);
    for record in &records {
        let c = record.counters();
        table.add_row(vec![
            render::short_id(&record.run.run_id).to_owned(),
            record.run.kind.to_string(),
            render::run_status(record),
            render::seconds(record.run.started_at),
            render::run_duration(record),
            c.read.to_string(),
            c.written.to_string(),
            c.unchanged.to_string(),
            c.stale.to_string(),
            c.dead_lettered.to_string(),
            record.retries().total().to_string(),
            render::last_word(record),
        ]);
    }
    print(table)?;
    Ok(Exit::Complete)
}

pub async fn show(ctx: &mut Context, run_id: &str) -> Result<Exit, CliError> {
    let store = ctx.store().await?;
    let record = find(&store, run_id, ctx).await?;
    if ctx.json {
        print(render::run_record_json(&record))?;
    } else {
        print(render::run_record(&record).trim_end())?;
    }
    Ok(Exit::Complete)
}

/// The run with this id, or the one run whose id starts with it.
async fn find(store: &Store, run_id: &str, ctx: &mut Context) -> Result<RunRecord, CliError> {
    if let Some(record) = store.run_record(run_id).await.map_err(CliError::failed)? {
        return Ok(record);
    }
    let state = ctx.state_file()?.state.store.to_string();
    if run_id.is_empty() {
        return Err(CliError::Usage(
            "runs show: give a run id (`highwater runs <sync>` lists them)".into(),
        ));
    }
    let ids = store
        .run_ids_starting_with(run_id, SHOWN_MATCHES + 1)
        .await
        .map_err(CliError::failed)?;
    match ids.as_slice() {
        [] => Err(CliError::Usage(format!(
            "{state}: no run with id {run_id:?} (`highwater runs <sync>` lists them)"
        ))),
        [only] => store
            .run_record(only)
            .await
            .map_err(CliError::failed)?
            .ok_or_else(|| CliError::Failed(format!("run {only} vanished while being read"))),
        many => Err(CliError::Usage(format!(
            "{state}: {run_id:?} starts the ids of {} runs ({}{}); give more of the id",
            if many.len() > SHOWN_MATCHES as usize {
                format!("more than {SHOWN_MATCHES}")
            } else {
                many.len().to_string()
            },
            many.iter()
                .take(SHOWN_MATCHES as usize)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            if many.len() > SHOWN_MATCHES as usize {
                ", …"
            } else {
                ""
            }
        ))),
    }
}
