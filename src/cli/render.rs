//! Text people read: run reports, run records, durations, timestamps. JSON twins
//! for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use highwater_core::engine::{FailureCause, RunFailure, RunOutcome, RunReport};
use highwater_core::obs::RetryCounts;
use highwater_core::state::{Counters, Invocation, InvocationOutcome, RunRecord, RunStatus};
use jiff::Timestamp;
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

/// Labels are padded to `width`, to line up with the lines around them.
fn counter_lines(out: &mut String, c: &Counters, retries: Option<u64>, width: usize) {
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<width$}{value}");
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
    if c.deleted > 0 {
        line("deleted", format!("{} (deleted at the source)", c.deleted));
    }
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
    counter_lines(&mut out, &r.counters, Some(r.retries), 14);
    let _ = writeln!(
        out,
        "  {:<14}{} pages, {} read, {} written ({} read)",
        "this session",
        r.session.pages,
        r.session.read,
        r.session.written,
        rate(r.session.read, r.elapsed)
    );
    for (label, ids, what) in [
        (
            "repaired",
            &r.repaired,
            "(a late write had set them back; written again)",
        ),
        (
            "resent",
            &r.resent,
            "(written again while an older write could still land, and sent again once it could not; set read_path to check them instead)",
        ),
        (
            "unverified",
            &r.unverified,
            "written again while an older write could still land; set read_path to check them",
        ),
    ] {
        if !ids.is_empty() {
            let _ = writeln!(out, "  {label:<14}{} {what}: {}", ids.len(), examples(ids));
        }
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
        "resent": r.resent,
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

/// `kept`: the sync's unresolved dead letters after a halt, where known.
pub fn failure(sync: &str, f: &RunFailure, kept: Option<usize>) -> String {
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
    // A resumed run goes on from its checkpoint: what was dead-lettered
    // before it stays so until the record changes or is replayed. Letters
    // are kept with their page's checkpoint: a halt before the first one
    // kept none.
    if matches!(f.cause, FailureCause::Surge { .. }) && f.counters.dead_lettered > 0 {
        let _ = match kept {
            Some(0) => writeln!(
                out,
                "no dead letter was kept: the run halted before committing a page that held one, and reads those records again when it runs next"
            ),
            Some(n) => writeln!(
                out,
                "the {n} records dead-lettered before the halt stay dead letters when the run resumes: once the cause is fixed, `highwater dlq replay {sync} --all` writes them (`highwater dlq list {sync}` lists them)"
            ),
            None => writeln!(
                out,
                "the records dead-lettered before the halt stay dead letters when the run resumes: once the cause is fixed, `highwater dlq replay {sync} --all` writes them (`highwater dlq list {sync}` lists them)"
            ),
        };
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

/// The start of a run id, enough to tell runs apart in a list (and what `runs
/// show` accepts).
pub fn short_id(run_id: &str) -> &str {
    run_id.get(..13).unwrap_or(run_id)
}

/// A time to the second, as lists show it.
pub fn seconds(at: Timestamp) -> String {
    at.round(jiff::Unit::Second).unwrap_or(at).to_string()
}

/// Where a run stands, with what its last invocation did when it is still open.
pub fn run_status(record: &RunRecord) -> String {
    match record.run.status {
        RunStatus::Open => match record.last_invocation().and_then(|i| i.outcome) {
            Some(InvocationOutcome::Stopped) => "open: stopped".into(),
            Some(InvocationOutcome::Failed) => "open: failed".into(),
            Some(outcome) => format!("open: {outcome}"),
            None => "open: running, or killed".into(),
        },
        status => status.to_string(),
    }
}

/// How long an ended run took from its start; `-` while it is open.
pub fn run_duration(record: &RunRecord) -> String {
    match record.ended_at() {
        Some(ended) => elapsed(record.run.started_at, ended),
        None => "-".into(),
    }
}

/// The last stop reason or error of a run, short enough for a table.
pub fn last_word(record: &RunRecord) -> String {
    const WIDTH: usize = 60;
    let Some(last) = record.last_invocation() else {
        return String::new();
    };
    let text = match (&last.stop_reason, &last.error) {
        (Some(reason), _) => reason.clone(),
        (None, Some(error)) => error.clone(),
        (None, None) => String::new(),
    };
    if text.chars().count() <= WIDTH {
        return text;
    }
    let cut: String = text.chars().take(WIDTH - 1).collect();
    format!("{cut}…")
}

fn elapsed(from: Timestamp, to: Timestamp) -> String {
    let micros = (to.as_microsecond() - from.as_microsecond()).max(0);
    duration(Duration::from_micros(micros as u64))
}

fn retry_classes(r: &RetryCounts) -> String {
    format!(
        "429: {}, 5xx: {}, timeout: {}, connection: {}, other: {}",
        r.rate_limited, r.server_error, r.timeout, r.connection, r.other
    )
}

/// How one invocation ended, in a few words.
fn invocation_outcome(i: &Invocation) -> String {
    match (i.outcome, &i.stop_reason, &i.error_class) {
        (Some(InvocationOutcome::Stopped), Some(reason), _) => format!("stopped: {reason}"),
        (Some(InvocationOutcome::Failed), _, Some(class)) => format!("failed: {class}"),
        (Some(InvocationOutcome::Crashed), ..) => "crashed (ended without a word)".into(),
        (Some(outcome), ..) => outcome.to_string(),
        (None, ..) => "no end recorded (running, or killed)".into(),
    }
}

/// A run's audit record for people: `highwater runs show`.
pub fn run_record(record: &RunRecord) -> String {
    let run = &record.run;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {} of sync {:?}: {} run, {}",
        run.run_id,
        run.sync,
        run.kind,
        run_status(record)
    );
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<21}{value}");
    };
    line("started", run.started_at.to_string());
    line(
        "ended",
        match record.ended_at() {
            Some(ended) => format!("{ended} (took {})", elapsed(run.started_at, ended)),
            None => "- (open: the next `highwater run` resumes it)".into(),
        },
    );
    line(
        "window",
        format!(
            "{} → {} (watermark)",
            run.lower_bound
                .map_or("the beginning".to_owned(), |t| t.to_string()),
            run.watermark
        ),
    );
    line(
        "cursor",
        format!(
            "{} → {}",
            record
                .cursor_start()
                .map_or("(not recorded)".to_owned(), |c| c.to_string()),
            record.checkpoint.cursor
        ),
    );
    counter_lines(&mut out, &record.counters(), None, 21);
    let retries = record.retries();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<21}{value}");
    };
    line(
        "retries",
        format!("{} ({})", retries.total(), retry_classes(&retries)),
    );
    let failures = record.failures();
    if !failures.is_empty() {
        line(
            "failures",
            failures
                .iter()
                .map(|(class, n)| format!("{class} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if !record.samples.written.is_empty() {
        line("written, e.g.", record.samples.written.join(", "));
    }
    if !record.samples.dead_lettered.is_empty() {
        line(
            "dead-lettered, e.g.",
            record.samples.dead_lettered.join(", "),
        );
    }
    if record.invocations.is_empty() {
        let _ = writeln!(
            out,
            "  (no invocations recorded: the run predates the run history)"
        );
        return out;
    }
    let _ = writeln!(out, "invocations:");
    for i in &record.invocations {
        let mut summary = format!(
            "  #{} {}  {}",
            i.number,
            seconds(i.started_at),
            invocation_outcome(i)
        );
        if let Some(ended) = i.ended_at {
            let _ = write!(summary, " after {}", elapsed(i.started_at, ended));
        }
        if let Some(c) = i.counters() {
            let _ = write!(
                summary,
                " · {} pages, {} read, {} written, {} dead-lettered",
                c.pages, c.read, c.written, c.dead_lettered
            );
        }
        if let Some(r) = i.retries {
            let _ = write!(summary, ", {} retries", r.total());
        }
        let _ = writeln!(out, "{summary}");
        if let Some(error) = &i.error {
            let _ = writeln!(out, "      error: {error}");
        }
    }
    out
}

/// A run's audit record for scripts: one JSON object (a line of `runs --json`).
pub fn run_record_json(record: &RunRecord) -> Value {
    let run = &record.run;
    let retries = record.retries();
    let last = record.last_invocation();
    let failures: serde_json::Map<String, Value> = record
        .failures()
        .into_iter()
        .map(|(class, n)| (class.to_owned(), json!(n)))
        .collect();
    let last_error = record
        .invocations
        .iter()
        .rev()
        .find(|i| i.error.is_some())
        .map(|i| json!({ "class": i.error_class, "message": i.error, "invocation": i.number }));
    let invocations: Vec<Value> = record
        .invocations
        .iter()
        .map(|i| {
            json!({
                "number": i.number,
                "started_at": i.started_at.to_string(),
                "ended_at": i.ended_at.map(|t| t.to_string()),
                "outcome": i.outcome.map(|o| o.as_str()),
                "stop_reason": i.stop_reason,
                "error_class": i.error_class,
                "error": i.error,
                "cursor_start": i.cursor_start,
                "cursor_end": i.cursor_end,
                "counters": i.counters(),
                "counters_at_end": i.counters_end,
                "retries": i.retries.map(|r| r.total()),
                "retries_by_class": i.retries,
            })
        })
        .collect();
    json!({
        "run_id": run.run_id,
        "sync": run.sync,
        "kind": run.kind.as_str(),
        "status": run.status.as_str(),
        "last_outcome": last.and_then(|i| i.outcome).map(|o| o.as_str()),
        "stop_reason": last.and_then(|i| i.stop_reason.clone()),
        "started_at": run.started_at.to_string(),
        "ended_at": record.ended_at().map(|t| t.to_string()),
        "lower_bound": run.lower_bound.map(|t| t.to_string()),
        "watermark": run.watermark.to_string(),
        "cursor_start": record.cursor_start(),
        "cursor_end": record.checkpoint.cursor,
        "counters": record.counters(),
        "retries": retries.total(),
        "errors": {
            "retries_by_class": retries,
            "failures_by_class": failures,
            "last_error": last_error,
        },
        "samples": {
            "written": record.samples.written,
            "dead_lettered": record.samples.dead_lettered,
        },
        "invocations": invocations,
    })
}

#[cfg(test)]
mod tests {
    use highwater_core::state::{Checkpoint, RunKind, RunRow, Samples};
    use serde_json::json;

    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_780_000_000 + second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// An open run: stopped by a budget, then failed on resume.
    fn record() -> RunRecord {
        let counters = |pages, read, written| Counters {
            pages,
            read,
            written,
            dead_lettered: 1,
            ..Counters::default()
        };
        RunRecord {
            run: RunRow {
                run_id: "01a231eb-ad83-778d-b8af-0a906dffd2a8".into(),
                sync: "invoices".into(),
                kind: RunKind::Incremental,
                status: RunStatus::Open,
                lower_bound: None,
                watermark: at(0),
                started_at: at(0),
                updated_at: at(75),
                completed_at: None,
            },
            checkpoint: Checkpoint {
                cursor: json!({"kind": "token", "token": "t3"}),
                counters: counters(3, 300, 290),
                updated_at: at(70),
            },
            samples: Samples {
                written: vec!["inv_1".into(), "inv_2".into()],
                dead_lettered: vec!["inv_9".into()],
            },
            invocations: vec![
                Invocation {
                    number: 1,
                    started_at: at(0),
                    ended_at: Some(at(12)),
                    outcome: Some(InvocationOutcome::Stopped),
                    stop_reason: Some("max-pages reached".into()),
                    error_class: None,
                    error: None,
                    cursor_start: json!({"kind": "start"}),
                    cursor_end: Some(json!({"kind": "token", "token": "t2"})),
                    counters_start: Counters::default(),
                    counters_end: Some(counters(2, 200, 195)),
                    retries: Some(RetryCounts {
                        rate_limited: 2,
                        ..RetryCounts::default()
                    }),
                },
                Invocation {
                    number: 2,
                    started_at: at(60),
                    ended_at: Some(at(75)),
                    outcome: Some(InvocationOutcome::Failed),
                    stop_reason: None,
                    error_class: Some("destination:retries_exhausted".into()),
                    error: Some("destination: destination kept failing".into()),
                    cursor_start: json!({"kind": "token", "token": "t2"}),
                    cursor_end: Some(json!({"kind": "token", "token": "t3"})),
                    counters_start: counters(2, 200, 195),
                    counters_end: Some(counters(3, 310, 290)),
                    retries: Some(RetryCounts {
                        connection: 3,
                        ..RetryCounts::default()
                    }),
                },
            ],
        }
    }

    #[test]
    fn a_run_record_reads_as_its_history() {
        let record = record();
        assert_eq!(run_status(&record), "open: failed");
        assert_eq!(last_word(&record), "destination: destination kept failing");
        assert_eq!(run_duration(&record), "-");
        expect_test::expect![[r#"
            run 01a231eb-ad83-778d-b8af-0a906dffd2a8 of sync "invoices": incremental run, open: failed
              started              2026-05-28T20:26:40Z
              ended                - (open: the next `highwater run` resumes it)
              window               the beginning → 2026-05-28T20:26:40Z (watermark)
              cursor               {"kind":"start"} → {"kind":"token","token":"t3"}
              pages                3
              read                 310
              written              290
              unchanged            0
              stale                0 (older than what was written; skipped)
              dead-lettered        1
              retries              5 (429: 2, 5xx: 0, timeout: 0, connection: 3, other: 0)
              failures             destination:retries_exhausted ×1
              written, e.g.        inv_1, inv_2
              dead-lettered, e.g.  inv_9
            invocations:
              #1 2026-05-28T20:26:40Z  stopped: max-pages reached after 12.0s · 2 pages, 200 read, 195 written, 1 dead-lettered, 2 retries
              #2 2026-05-28T20:27:40Z  failed: destination:retries_exhausted after 15.0s · 1 pages, 110 read, 95 written, 0 dead-lettered, 3 retries
                  error: destination: destination kept failing
        "#]]
        .assert_eq(&run_record(&record));
        let json = run_record_json(&record);
        assert_eq!(json["status"], "open");
        assert_eq!(json["last_outcome"], "failed");
        assert_eq!(json["retries"], 5);
        assert_eq!(
            json["counters"]["read"], 310,
            "the last report's, not the checkpoint's"
        );
        assert_eq!(json["invocations"][1]["counters"]["read"], 110);
        assert_eq!(
            json["errors"]["last_error"],
            json!({"class": "destination:retries_exhausted", "message": "destination: destination kept failing", "invocation": 2})
        );
    }
}
