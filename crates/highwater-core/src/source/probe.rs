//! `highwater probe`: reads the first page or two of a sync's source through the
//! real reader, writing nothing, and says what the config finds there — the
//! request with the bounds it sent, the records at `records_path`, one record and
//! the id, `updated_at` and version extracted from it, where the next page is —
//! and, for each thing that looks wrong, which key to change.

use jiff::Timestamp;
use serde_json::Value;

use super::{Cursor, Extracted, Fetched, Reader, SourceError, Window};
use crate::config::SyncSpec;
use crate::http::{Api, HttpError};
use crate::stop::Stop;

/// Keys of the config a finding can name, as `validate` spells them.
const KEYS: [&str; 4] = [
    "records_path",
    "id_field",
    "updated_at_field",
    "version_field",
];

#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The window a first run would read.
    pub window: Window,
    pub pages: Vec<ProbedPage>,
    /// What stopped the probe, when something did.
    pub error: Option<String>,
    /// What looks wrong, each with the key to change.
    pub findings: Vec<Finding>,
    /// What a run would dead-letter, though the config reads the rest: a
    /// few records that cannot be used, by the key their reason names.
    pub notes: Vec<Finding>,
}

#[derive(Debug, Clone)]
pub struct ProbedPage {
    /// The requests the page took (a page number or offset step may take two).
    pub requests: Vec<Fetched>,
    pub records: usize,
    /// The first record as the API sent it.
    pub first: Option<Value>,
    /// What the config extracts from the first usable record.
    pub extracted: Option<ExtractedFields>,
    /// Records the config cannot use, with why.
    pub invalid: Vec<(String, String)>,
    pub beyond_watermark: u64,
    /// Where the next page is, as the reader found it.
    pub next: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExtractedFields {
    pub id: String,
    pub updated_at: Timestamp,
    pub version: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The config key to look at.
    pub key: String,
    pub message: String,
}

/// Reads up to `max_pages` pages of the source of `spec`; the refresh tokens
/// its OAuth2 endpoint rotates are kept with `keeper`, the state store, when
/// there is one.
pub async fn probe(
    spec: &SyncSpec,
    window: Window,
    max_pages: u32,
    keeper: Option<std::sync::Arc<dyn crate::auth::TokenKeeper>>,
    stop: &Stop,
) -> Result<ProbeReport, reqwest::Error> {
    let api = Api::new(
        &spec.name,
        "source",
        spec.source.http.clone(),
        spec.retry,
        1,
    )?;
    if let Some(keeper) = keeper {
        api.keep_tokens_with(keeper);
    }
    let mut reader = Reader::new(&api, &spec.source, window, Cursor::Start).traced();
    let mut report = ProbeReport {
        window,
        pages: Vec::new(),
        error: None,
        findings: Vec::new(),
        notes: Vec::new(),
    };
    while (report.pages.len() as u32) < max_pages {
        match reader.next_page(stop).await {
            Ok(Some(page)) => {
                let requests = reader.take_trace();
                let first = requests
                    .last()
                    .and_then(|f| first_record(&f.body, &spec.source.records_path));
                let extracted = page.records.iter().find_map(|r| match r {
                    Extracted::Record(r) => Some(ExtractedFields {
                        id: r.id().to_owned(),
                        updated_at: r.updated_at(),
                        version: r.version,
                    }),
                    Extracted::Invalid { .. } => None,
                });
                let invalid = page
                    .records
                    .iter()
                    .filter_map(|r| match r {
                        Extracted::Invalid { id, reason, .. } => Some((id.clone(), reason.clone())),
                        Extracted::Record(_) => None,
                    })
                    .collect();
                let end = page.cursor_after == Cursor::End;
                report.pages.push(ProbedPage {
                    requests,
                    records: page.records.len() + page.beyond_watermark as usize,
                    first,
                    extracted,
                    invalid,
                    beyond_watermark: page.beyond_watermark,
                    next: describe_cursor(&page.cursor_after),
                });
                if end {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let fetched = reader.take_trace();
                report.findings.extend(error_finding(spec, &e, &fetched));
                report.error = Some(e.to_string());
                break;
            }
        }
    }
    let (findings, notes) = page_findings(spec, &report.pages);
    report.findings.extend(findings);
    report.notes = notes;
    Ok(report)
}

fn first_record(body: &Value, path: &crate::record::FieldPath) -> Option<Value> {
    let records = if path.is_root() {
        Some(body)
    } else {
        path.get(body)
    };
    records?.as_array()?.first().cloned()
}

fn describe_cursor(cursor: &Cursor) -> String {
    match cursor {
        Cursor::End => "none: the source has no more pages in the window".into(),
        Cursor::Token { token } => format!("token {token:?}"),
        Cursor::NextUrl { url } => format!("next URL {url}"),
        Cursor::Keyset { updated_at, id, .. } => format!("after ({updated_at}, {id:?})"),
        Cursor::Offset { next, .. } => format!("offset {next}"),
        Cursor::Page { next, .. } => format!("page {next}"),
        Cursor::LinkedPage { param, next, .. } => {
            format!("page {next} ({param}={next}, from next URLs that number pages)")
        }
        Cursor::LinkedOffset { param, next, .. } => {
            format!("offset {next} ({param}={next}, from next URLs that count an offset)")
        }
        Cursor::Start => "the first page".into(),
    }
}

/// Arrays of objects at the top of a body: where the records may be.
fn arrays_of_objects(body: &Value) -> Vec<String> {
    match body {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| v.as_array().is_some_and(|a| a.iter().any(Value::is_object)))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    }
}

fn error_finding(spec: &SyncSpec, error: &SourceError, fetched: &[Fetched]) -> Vec<Finding> {
    let text = error.to_string();
    let key = |key: &str, message: String| Finding {
        key: key.to_owned(),
        message,
    };
    match error {
        SourceError::Loop { what, .. } => vec![key(
            "pagination",
            format!(
                "the next page's {what} never changes, so the source would be read forever: check {}",
                match &spec.source.pagination {
                    crate::config::Pagination::Cursor { .. } =>
                        "token_path (where the answer holds the next token) and token_param (the parameter the API reads it from)",
                    crate::config::Pagination::NextUrl { .. } =>
                        "next_url_path or link_header: where the answer holds the next page's URL",
                    _ => "the pagination settings",
                }
            ),
        )],
        SourceError::RefusedPastFirst { .. } => vec![key("end_of_list_errors", text)],
        SourceError::Http(HttpError::Unauthorized { .. } | HttpError::Auth(..)) => vec![key(
            "auth",
            format!("the source refused the credentials: {text}"),
        )],
        SourceError::BadResponse { detail, .. } if detail.contains("(records_path)") => {
            let found = fetched
                .last()
                .map(|f| arrays_of_objects(&f.body))
                .unwrap_or_default();
            let hint = if found.is_empty() {
                "the answer holds no array of records at its top".to_owned()
            } else {
                format!("arrays of records in the answer: {}", found.join(", "))
            };
            vec![key("records_path", format!("{detail}; {hint}"))]
        }
        _ => vec![key("source", text)],
    }
}

/// What looks wrong, and what a run would dead-letter (`ProbeReport::notes`).
fn page_findings(spec: &SyncSpec, pages: &[ProbedPage]) -> (Vec<Finding>, Vec<Finding>) {
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    // Invalid records, grouped by the key their reason names: most of them
    // is the key set wrong; a few, records of the source's own.
    for key in KEYS {
        let mut invalid = pages
            .iter()
            .flat_map(|p| &p.invalid)
            .filter(|(_, reason)| reason.contains(&format!("({key})")));
        if let Some((id, reason)) = invalid.next() {
            let count = invalid.count() + 1;
            let records = pages.iter().map(|p| p.records).sum::<usize>();
            let message =
                format!("{count} of {records} records cannot be used, e.g. {id}: {reason}");
            match 2 * count > records {
                true => findings.push(Finding {
                    key: key.to_owned(),
                    message,
                }),
                false => notes.push(Finding {
                    key: key.to_owned(),
                    message: format!("{message}; a run dead-letters them and reads on"),
                }),
            }
        }
    }
    if let Some(first) = pages.first() {
        if first.records == 0 {
            let elsewhere = first
                .requests
                .last()
                .map(|f| arrays_of_objects(&f.body))
                .unwrap_or_default();
            let (key, message) = if elsewhere.is_empty() {
                (
                    "start",
                    "the first page holds no records: is the window right (start, lower_bound_param) or the source empty?".to_owned(),
                )
            } else {
                (
                    "records_path",
                    format!(
                        "`{}` is empty, but the answer has arrays of records at {}",
                        spec.source.records_path,
                        elsewhere.join(", ")
                    ),
                )
            };
            findings.push(Finding {
                key: key.to_owned(),
                message,
            });
        } else if first.records >= spec.source.page_size as usize
            && first.next.starts_with("none")
            && pages.len() == 1
        {
            findings.push(Finding {
                key: "pagination".into(),
                message: format!(
                    "the first page was full ({} records) but the answer says of no next page: check where the next page is read from",
                    first.records
                ),
            });
        }
    }
    (findings, notes)
}
