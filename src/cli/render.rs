//! Text people read: run reports, durations, timestamps. JSON twins for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use highwater_core::engine::{RunFailure, RunOutcome, RunReport};
use highwater_core::state::Counters;
use serde_json::{Value, json};

/// `1h 02m`, `3m 20s`, `12.4s`, `850ms`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else if secs >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub fn rate(records: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.0} rec/s", records as f64 / secs)
}

fn counter_lines(out: &mut String, c: &Counters, retries: Option<u64>) {
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<14}{value}");
    };
    line("pages", c.pages.to_string());
    line(
        "read",
        if c.beyond_watermark > 0 {
            format!(
                "{} (+{} past the watermark, left for the next run)",
                c.read, c.beyond_watermark
            )
        } else {
            c.read.to_string()
        },
    );
    line("written", c.written.to_string());
    line("unchanged", c.unchanged.to_string());
    line(
        "stale",
        format!("{} (older than what was written; skipped)", c.stale),
    );
    line("dead-lettered", c.dead_lettered.to_string());
    if let Some(retries) = retries {
        line("retries", retries.to_string());
    }
}

pub fn report(r: &RunReport) -> String {
    let mut out = String::new();
    let state = match r.outcome {
        RunOutcome::Completed => "completed".to_owned(),
        RunOutcome::Stopped(reason) => format!("stopped at a checkpoint ({})", reason.as_str()),
    };
    let _ = writeln!(
        out,
        "sync {:?}: run {} {state} in {}{}",
        r.sync,
        r.run_id,
        duration(r.elapsed),
        if r.resumed { " (resumed)" } else { "" }
    );
    let lower = r
        .window
        .lower
        .map_or("the beginning".to_owned(), |t| t.to_string());
    let _ = writeln!(
        out,
        "  {:<14}{lower} → {} (watermark)",
        "window", r.window.watermark
    );
    counter_lines(&mut out, &r.counters, Some(r.retries));
    let _ = writeln!(
        out,
        "  {:<14}{} pages, {} read, {} written ({} read)",
        "this session",
        r.session.pages,
        r.session.read,
        r.session.written,
        rate(r.session.read, r.elapsed)
    );
    if !r.repaired.is_empty() {
        let _ = writeln!(
            out,
            "  {:<14}{} (a late write had set them back; written again): {}",
            "repaired",
            r.repaired.len(),
            examples(&r.repaired)
        );
    }
    if !r.unverified.is_empty() {
        let _ = writeln!(
            out,
            "  {:<14}{} written again while an older write could still land; set read_path to check them: {}",
            "unverified",
            r.unverified.len(),
            examples(&r.unverified)
        );
    }
    if let RunOutcome::Stopped(_) = r.outcome {
        let _ = writeln!(out, "resume with: highwater run {}", r.sync);
    }
    out
}

/// The first few ids of a list, and how many more.
fn examples(ids: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = ids
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        let _ = write!(text, ", … (+{})", ids.len() - SHOWN);
    }
    text
}

pub fn report_json(r: &RunReport) -> Value {
    json!({
        "sync": r.sync,
        "run_id": r.run_id,
        "resumed": r.resumed,
        "outcome": match r.outcome { RunOutcome::Completed => "completed", RunOutcome::Stopped(_) => "stopped" },
        "stop_reason": match r.outcome { RunOutcome::Stopped(s) => Some(s.as_str()), RunOutcome::Completed => None },
        "lower_bound": r.window.lower.map(|t| t.to_string()),
        "watermark": r.window.watermark.to_string(),
        "counters": r.counters,
        "session": r.session,
        "retries": r.retries,
        "repaired": r.repaired,
        "unverified": r.unverified,
        "elapsed_ms": r.elapsed.as_millis() as u64,
        "peak_rss_kb": peak_rss_kb(),
    })
}

/// This process's peak resident memory, where the OS tells (Linux).
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn failure(sync: &str, f: &RunFailure) -> String {
    let mut out = format!("error: sync {sync:?}: {}\n", f.cause);
    match &f.run_id {
        Some(run_id) if f.resumable => {
            let _ = writeln!(
                out,
                "run {run_id} stopped at its last checkpoint ({} pages, {} written); fix the cause, then `highwater run {sync}` resumes it",
                f.counters.pages, f.counters.written
            );
        }
        Some(run_id) => {
            let _ = writeln!(
                out,
                "nothing to resume: run {run_id} made no progress, so the next `highwater run {sync}` starts afresh (`highwater runs {sync}` lists it, failed)"
            );
        }
        None => {
            let _ = writeln!(out, "nothing was recorded: the state store is as it was");
        }
    }
    out
}

pub fn failure_json(sync: &str, f: &RunFailure) -> Value {
    json!({
        "sync": sync,
        "outcome": "failed",
        "error": f.cause.to_string(),
        "run_id": f.run_id,
        "resumable": f.resumable,
        "counters": f.counters,
    })
}
