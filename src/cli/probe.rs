//! `highwater probe <sync>`: reads the first page or two of the source and shows
//! what the config finds there, and which key to change for what looks wrong.
//! Writes nothing, and needs no state store: with one, it keeps there the
//! refresh tokens the source's OAuth2 endpoint rotates, as a run would. Exit 0
//! when nothing looks wrong, 1 when something does.

use std::fmt::Write as _;

use highwater_core::auth::TokenKeeper;
use highwater_core::engine::decide::plan_window;
use highwater_core::source::probe::{ProbeReport, probe as read};
use highwater_core::stop::Stop;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{CliError, Context, Exit, print};

/// Characters of a record shown before it is cut.
const SHOWN: usize = 1_200;

pub async fn probe(ctx: &mut Context, sync: &str, pages: u32) -> Result<Exit, CliError> {
    let spec = ctx.sync(sync)?;
    let source = &spec.source;
    let window = plan_window(
        jiff::Timestamp::now(),
        source.lag,
        source.lookback,
        source.start,
        None,
    );
    let stop = Stop::new(spec.budgets.max_runtime, CancellationToken::new());
    let keeper = ctx
        .existing_store()
        .await?
        .map(|store| std::sync::Arc::new(store) as std::sync::Arc<dyn TokenKeeper>);
    let report = read(&spec, window, pages.max(1), keeper, &stop)
        .await
        .map_err(|e| CliError::Failed(format!("cannot build an HTTP client: {e}")))?;
    if ctx.json {
        print(report_json(sync, &report))?;
    } else {
        print(text(sync, &report).trim_end())?;
    }
    Ok(if report.findings.is_empty() && report.error.is_none() {
        Exit::Complete
    } else {
        Exit::Failed
    })
}

fn text(sync: &str, r: &ProbeReport) -> String {
    let mut out = format!("probe of sync {sync:?} (nothing is written)\n");
    let lower = r
        .window
        .lower
        .map_or_else(|| "the start".to_owned(), |t| t.to_string());
    let _ = writeln!(
        out,
        "window of a first run: {lower} → {}",
        r.window.watermark
    );
    for (n, page) in r.pages.iter().enumerate() {
        let _ = writeln!(out, "\npage {}:", n + 1);
        for request in &page.requests {
            let query: Vec<String> = request
                .query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                out,
                "  {} {}  {}",
                request.method,
                request.url,
                query.join("&")
            );
            if let Some(sent) = &request.sent {
                let _ = writeln!(out, "    body: {}", cut(&sent.to_string()));
            }
        }
        let _ = writeln!(
            out,
            "  records: {} ({} past the watermark, {} unusable)",
            page.records,
            page.beyond_watermark,
            page.invalid.len()
        );
        if let Some(fields) = &page.extracted {
            let version = fields
                .version
                .map_or_else(|| "none".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "  extracted: id {:?}, updated_at {}, version {version}",
                fields.id, fields.updated_at
            );
        }
        if n == 0
            && let Some(first) = &page.first
        {
            let shown = cut(&serde_json::to_string_pretty(first).unwrap_or_default());
            let _ = writeln!(
                out,
                "  first record:\n    {}",
                shown.replace('\n', "\n    ")
            );
        }
        let _ = writeln!(out, "  next page: {}", page.next);
    }
    if let Some(error) = &r.error {
        let _ = writeln!(out, "\nstopped: {error}");
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\nrecords a run would dead-letter:");
        for note in &r.notes {
            let _ = writeln!(out, "  {}: {}", note.key, note.message);
        }
    }
    if r.findings.is_empty() {
        let _ = writeln!(out, "\nnothing looks wrong.");
    } else {
        let _ = writeln!(out, "\nwhat to change:");
        for f in &r.findings {
            let _ = writeln!(out, "  {}: {}", f.key, f.message);
        }
    }
    out
}

/// `text` cut after `SHOWN` bytes, at a character's start.
fn cut(text: &str) -> String {
    if text.len() <= SHOWN {
        return text.to_owned();
    }
    let end = (0..=SHOWN)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}\n  …", &text[..end])
}

fn report_json(sync: &str, r: &ProbeReport) -> Value {
    json!({
        "sync": sync,
        "lower_bound": r.window.lower.map(|t| t.to_string()),
        "watermark": r.window.watermark.to_string(),
        "pages": r.pages.iter().map(|p| json!({
            "requests": p.requests.iter().map(|f| json!({
                "method": f.method.as_str(),
                "url": f.url,
                "query": f.query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                "body": f.sent,
            })).collect::<Vec<_>>(),
            "records": p.records,
            "beyond_watermark": p.beyond_watermark,
            "first_record": p.first,
            "extracted": p.extracted.as_ref().map(|e| json!({
                "id": e.id,
                "updated_at": e.updated_at.to_string(),
                "version": e.version,
            })),
            "invalid": p.invalid.iter().map(|(id, reason)| json!({"id": id, "reason": reason})).collect::<Vec<_>>(),
            "next": p.next,
        })).collect::<Vec<_>>(),
        "error": r.error,
        "findings": r.findings.iter().map(|f| json!({"key": f.key, "message": f.message})).collect::<Vec<_>>(),
        "notes": r.notes.iter().map(|f| json!({"key": f.key, "message": f.message})).collect::<Vec<_>>(),
    })
}
