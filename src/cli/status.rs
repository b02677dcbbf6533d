//! `highwater status`: per sync, the open run, the last completed run, the
//! high-water mark, the lag behind now, and the dead-letter count.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use std::collections::HashMap;

use highwater_core::state::{RunKind, SyncStatus};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{CliError, Context, Exit, print, render};

/// The holder of each open run's lock, by sync and kind.
type Holders = HashMap<(String, RunKind), Option<String>>;

fn holding<'a>(holders: &'a Holders, sync: &str, kind: RunKind) -> Option<&'a str> {
    holders
        .get(&(sync.to_owned(), kind))
        .and_then(|h| h.as_deref())
}

pub async fn status(ctx: &mut Context) -> Result<Exit, CliError> {
    let state_file = ctx.state_file()?;
    // Status never creates a state store that does not exist yet.
    let store = ctx.existing_store().await?;
    let mut rows = Vec::new();
    for sync in &state_file.syncs {
        let status = match &store {
            Some(store) => Some(store.status(sync).await.map_err(CliError::failed)?),
            None => None,
        };
        rows.push((sync.clone(), status));
    }
    // Who runs each open run now: the process holding its lock, or the worker
    // holding its lease.
    let mut holders: Holders = HashMap::new();
    if let Some(store) = &store {
        for (name, status) in &rows {
            for (run, _) in status
                .iter()
                .flat_map(|s| s.open_run.iter().chain(&s.other_open))
            {
                let holder = store.lock_holder(name, run.kind).await;
                holders.insert((name.clone(), run.kind), holder);
            }
        }
    }
    let now = Timestamp::now();
    if ctx.json {
        let syncs: Vec<Value> = rows
            .iter()
            .map(|(name, s)| status_json(name, s.as_ref(), now, &holders))
            .collect();
        print(json!({ "state": state_file.state.store.to_string(), "syncs": syncs }))?;
        return Ok(Exit::Complete);
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "sync",
        "open run",
        "last completed run",
        "high-water mark",
        "lag",
        "dead letters",
    ]);
    for (name, status) in &rows {
        let Some(s) = status else {
            table.add_row(vec![name.as_str(), "-", "never run", "-", "-", "0"]);
            continue;
        };
        let mut open: Vec<String> = s
            .open_run
            .iter()
            .chain(&s.other_open)
            .map(|(run, c)| {
                format!(
                    "{}{} (since {}; {} pages, {} written; {})",
                    match run.kind {
                        RunKind::Incremental => String::new(),
                        kind => format!("{kind} "),
                    },
                    render::short_id(&run.run_id),
                    ago(run.started_at, now),
                    c.counters.pages,
                    c.counters.written,
                    match holding(&holders, name, run.kind) {
                        Some(process) => format!("running in process {process}"),
                        None => "not running; the next run resumes it".to_owned(),
                    }
                )
            })
            .collect();
        if open.is_empty() {
            open.push("-".to_owned());
        }
        let open = open.join("\n");
        let last = s
            .last_completed
            .as_ref()
            .map_or("never".to_owned(), |(run, c)| {
                format!(
                    "{} ({} ago; {} written, {} dead-lettered)",
                    render::short_id(&run.run_id),
                    run.completed_at.map_or("?".into(), |t| ago(t, now)),
                    c.counters.written,
                    c.counters.dead_lettered
                )
            });
        let hwm = s
            .high_water_mark()
            .map_or("-".to_owned(), |t| t.to_string());
        let lag = s.high_water_mark().map_or("-".to_owned(), |t| ago(t, now));
        table.add_row(vec![
            if s.paused {
                format!("{name} (paused)")
            } else {
                name.clone()
            },
            open,
            last,
            hwm,
            lag,
            s.dead_letters.to_string(),
        ]);
    }
    print(table)?;
    Ok(Exit::Complete)
}

fn status_json(
    name: &str,
    status: Option<&SyncStatus>,
    now: Timestamp,
    holders: &Holders,
) -> Value {
    let Some(s) = status else {
        return json!({ "sync": name, "open_run": null, "last_completed_run": null, "high_water_mark": null, "lag_seconds": null, "dead_letters": 0, "ledger_records": 0, "paused": false });
    };
    let run = |r: &Option<(
        highwater_core::state::RunRow,
        highwater_core::state::Checkpoint,
    )>| {
        r.as_ref().map(|(run, c)| {
            json!({
                "run_id": run.run_id,
                "started_at": run.started_at.to_string(),
                "completed_at": run.completed_at.map(|t| t.to_string()),
                "lower_bound": run.lower_bound.map(|t| t.to_string()),
                "watermark": run.watermark.to_string(),
                "cursor": c.cursor,
                "counters": c.counters,
                // The process running it now; null when none is.
                "process": holding(holders, name, run.kind),
            })
        })
    };
    json!({
        "sync": name,
        "open_run": run(&s.open_run),
        "other_open_runs": s
            .other_open
            .iter()
            .map(|r| {
                let mut value = run(&Some(r.clone())).unwrap_or(Value::Null);
                value["kind"] = json!(r.0.kind.as_str());
                value
            })
            .collect::<Vec<_>>(),
        "last_completed_run": run(&s.last_completed),
        "high_water_mark": s.high_water_mark().map(|t| t.to_string()),
        "lag_seconds": s.high_water_mark().map(|t| (now.as_second() - t.as_second()).max(0)),
        "dead_letters": s.dead_letters,
        "ledger_records": s.ledger_records,
        "paused": s.paused,
    })
}

fn ago(then: Timestamp, now: Timestamp) -> String {
    let secs = (now.as_second() - then.as_second()).max(0) as u64;
    render::duration(std::time::Duration::from_secs(secs))
}
