//! Batch mode's part of `[sync.destination]`: where a batch's records go, the
//! body around them, and where each item's answer, the errors listed apart
//! and a job's state are read.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;

use super::{RawHttpDestination, RawJob};
use crate::config::{S, UriTemplate, Validator};
use crate::record::FieldPath;

/// A batch endpoint: where the records go and where each one's answer is.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub path: UriTemplate,
    pub method: Method,
    /// Records per request, at most.
    pub size: usize,
    /// The body around the records' array; the body is the array itself
    /// when absent.
    pub envelope: Option<Envelope>,
    /// Where the answer's array of item results is; the answer is the array
    /// itself when absent.
    pub results_path: Option<FieldPath>,
    /// An item result's external id, to match it to its record; items are
    /// matched by position when absent.
    pub id_field: Option<FieldPath>,
    /// An item result's status: 2xx (or `true`) written, 408/425/429/5xx
    /// failed for now (sent again), any other (or `false`) refused
    /// (dead-lettered alone).
    pub status_field: Option<FieldPath>,
    /// An item result holding this field (not null, not empty) was refused,
    /// with this reason.
    pub error_field: Option<FieldPath>,
    /// An item refused whose reason holds one of these failed for now, and
    /// is sent again (Salesforce's `UNABLE_TO_LOCK_ROW`, which names a
    /// lock another writer held, under a status that means refused).
    pub transient_errors: Vec<String>,
    /// Where an item answered 429 (or 503) says how long to wait, as
    /// `Retry-After` would (Microsoft Graph's batch: `headers.Retry-After`).
    pub retry_after_field: Option<FieldPath>,
    /// Failed items the answer lists apart from its results.
    pub errors: Option<ErrorList>,
    /// The answer says something of each item; without, a 2xx answer wrote
    /// the whole batch (Segment's and Mixpanel's import endpoints answer so).
    pub item_results: bool,
    /// Where the answer (a job's, once done) counts the items it did not
    /// write (Klaviyo's bulk import job's `failed_count`): those it counts
    /// but does not name are found by halving the batch.
    pub failed_count_field: Option<FieldPath>,
    /// The endpoint upserts by external id: a batch without a clear answer may
    /// be sent again. Otherwise the run stops, naming the batch.
    pub upsert: bool,
    /// The endpoint answers with a job to poll, whose answer, once done,
    /// holds the item results (Zendesk's `job_status`).
    pub job: Option<Box<JobSpec>>,
}

/// A batch endpoint that takes the records and answers with a job, run
/// later; the job's own URL answers its state, and once done its results.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Where the batch's answer gives the job's URL (absolute, or resolved
    /// against the batch's URL); it must be on the destination's origin.
    pub url_field: FieldPath,
    /// Where the job's answer gives its state.
    pub status_field: FieldPath,
    /// States of a job done: its answer holds the item results.
    pub done: Vec<String>,
    /// States of a job that ended without results: what it applied is
    /// unknown.
    pub failed: Vec<String>,
    /// The first wait before asking the job's state; each wait after is
    /// twice the last, up to 30 s.
    pub poll: Duration,
    /// How long a job may stay unfinished before its outcome is taken as
    /// unknown.
    pub timeout: Duration,
}

/// Where a batch answer lists its failed items apart from the written ones
/// (HubSpot's batch endpoints answer `{"results": [...], "errors": [...]}`,
/// each error naming the ids it is about; Braze's list only the failed
/// items, each by its place in the batch).
#[derive(Debug, Clone)]
pub struct ErrorList {
    /// The answer's array of errors.
    pub path: FieldPath,
    /// How an error names the items it is about.
    pub names: ErrorNames,
    /// An error's reason; the whole error when absent. Its status, if any,
    /// is at `result_status_field`, read as a result's.
    pub message_field: Option<FieldPath>,
}

/// Where an error listed apart names its items.
#[derive(Debug, Clone)]
pub enum ErrorNames {
    /// An external id, or an array of them (`error_id_field`).
    Ids(FieldPath),
    /// The item's place in the batch as sent, from 0 (`error_index_field`).
    Index(FieldPath),
}

/// The batch endpoint at `path`, sent with `method`.
pub(super) fn spec(
    v: &mut Validator<'_>,
    r: &RawHttpDestination,
    at: &str,
    path: Option<UriTemplate>,
    method: Option<Method>,
) -> Option<BatchSpec> {
    let size = match r.batch_size.as_ref() {
        None => Some(100),
        Some(n) => v.count(n, &format!("{at}.batch_size"), 1, 10_000),
    };
    let field = |f: &Option<S<String>>| f.as_ref().map(|f| FieldPath::parse(f.get_ref()));
    Some(BatchSpec {
        path: path?,
        method: method?,
        size: size? as usize,
        envelope: envelope(v, r, at),
        results_path: field(&r.results_path),
        id_field: field(&r.result_id_field),
        status_field: field(&r.result_status_field),
        error_field: field(&r.result_error_field),
        transient_errors: transient_errors(v, r, at),
        retry_after_field: field(&r.result_retry_after_field),
        errors: error_list(v, r, at),
        item_results: item_results(v, r, at),
        failed_count_field: failed_count_field(v, r, at),
        upsert: r.upsert.as_ref().is_some_and(|u| *u.get_ref()),
        job: match &r.job {
            Some(job) => Some(Box::new(job_spec(v, job, at)?)),
            None => None,
        },
    })
}

/// `job`: where the batch's answer names its job and the job's answer its
/// state, the states that end it, and how often and how long to ask.
fn job_spec(v: &mut Validator<'_>, raw: &S<RawJob>, at: &str) -> Option<JobSpec> {
    let at = format!("{at}.job");
    let r = raw.get_ref();
    let mut required = |field: &Option<S<String>>, key: &str, example: &str| match field {
        Some(f) if !f.get_ref().trim().is_empty() => Some(FieldPath::parse(f.get_ref())),
        Some(f) => {
            v.problem(f, format!("{at}.{key}"), "must not be empty");
            None
        }
        None => {
            v.problem(raw, at.clone(), format!("needs `{key}` ({example})"));
            None
        }
    };
    let url_field = required(
        &r.url_field,
        "url_field",
        "where the batch's answer gives the job's URL, say \"job_status.url\"",
    );
    let status_field = required(
        &r.status_field,
        "status_field",
        "where the job's answer gives its state, say \"job_status.status\"",
    );
    let mut states = |list: &Option<S<Vec<S<String>>>>, key: &str, default: &[&str]| {
        let Some(list) = list else {
            return Some(default.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        };
        let key = format!("{at}.{key}");
        if list.get_ref().is_empty() {
            v.problem(list, key, "must name at least one state");
            return None;
        }
        let mut kept = Vec::new();
        for state in list.get_ref() {
            if state.get_ref().trim().is_empty() {
                v.problem(state, key.clone(), "an empty state");
                return None;
            }
            kept.push(state.get_ref().clone());
        }
        Some(kept)
    };
    let done = states(&r.done, "done", &["completed"]);
    let failed = states(&r.failed, "failed", &["failed", "killed"]);
    if let (Some(done), Some(failed)) = (&done, &failed)
        && let Some(both) = done
            .iter()
            .find(|d| failed.iter().any(|f| f.eq_ignore_ascii_case(d)))
    {
        v.problem(
            raw,
            at.clone(),
            format!("{both:?} is both in `done` and in `failed`"),
        );
        return None;
    }
    let poll = v.duration_or(
        r.poll.as_ref(),
        &format!("{at}.poll"),
        Duration::from_secs(1),
    );
    let timeout = v.duration_or(
        r.timeout.as_ref(),
        &format!("{at}.timeout"),
        Duration::from_secs(600),
    );
    if let (Some(poll), Some(timeout)) = (poll, timeout)
        && (poll.is_zero() || timeout <= poll)
    {
        v.problem(
            raw,
            at,
            "`poll` must be longer than nothing and shorter than `timeout`",
        );
        return None;
    }
    Some(JobSpec {
        url_field: url_field?,
        status_field: status_field?,
        done: done?,
        failed: failed?,
        poll: poll?,
        timeout: timeout?,
    })
}

/// The words that make an item's refusal a failure for now.
fn transient_errors(v: &mut Validator<'_>, r: &RawHttpDestination, at: &str) -> Vec<String> {
    r.result_transient_errors
        .as_ref()
        .map(|w| v.words(w, &format!("{at}.result_transient_errors")))
        .unwrap_or_default()
}

/// A batch's body around its records' array: the JSON text before it and
/// after it, the same in every request.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub before: Bytes,
    pub after: Bytes,
}

/// The body `batch_field` and `batch_body` make: an object holding the
/// records' array at `batch_field` (a dotted path: Klaviyo's
/// `data.attributes.profiles.data`) and `batch_body`'s fields beside it
/// (Airtable's `performUpsert`, Salesforce's `allOrNone`).
fn envelope(v: &mut Validator<'_>, r: &RawHttpDestination, at: &str) -> Option<Envelope> {
    let key = format!("{at}.batch_body");
    let Some(field) = &r.batch_field else {
        if let Some(table) = &r.batch_body {
            v.problem(
                table,
                key,
                "needs `batch_field`: only a body that is an object has other fields",
            );
        }
        return None;
    };
    let mut body = serde_json::Value::Object(Default::default());
    for (name, value) in r.batch_body.iter().flat_map(|t| t.get_ref()) {
        if let Some(json) = v.json(value, format!("{key}.{name}")) {
            body[name] = json;
        }
    }
    let path = FieldPath::parse(field.get_ref());
    if let (Some(table), Some(_)) = (&r.batch_body, path.get(&body)) {
        v.problem(
            table,
            key,
            format!(
                "holds {:?}, the records' own field (`batch_field`)",
                field.get_ref()
            ),
        );
        return None;
    }
    // The array's place, marked by a string no JSON text of ours holds.
    const MARK: &str = "\u{0}records\u{0}";
    if path.is_root() || !path.set(&mut body, serde_json::Value::from(MARK)) {
        v.problem(
            field,
            format!("{at}.batch_field"),
            "names no place for the records' array: a field, or a dotted path through `batch_body`'s objects",
        );
        return None;
    }
    let text = body.to_string();
    let mark = serde_json::Value::from(MARK).to_string();
    let (before, after) = text.split_once(&mark)?;
    Some(Envelope {
        before: Bytes::copy_from_slice(before.as_bytes()),
        after: Bytes::copy_from_slice(after.as_bytes()),
    })
}

/// Whether a batch's answer speaks of each item; when it does not, the keys
/// saying where are refused rather than ignored — but for a list of the
/// items that failed (`errors_path`): the others were written.
fn item_results(v: &mut Validator<'_>, r: &RawHttpDestination, at: &str) -> bool {
    let Some(flag) = r.item_results.as_ref().filter(|f| !*f.get_ref()) else {
        return true;
    };
    for (key, set) in [
        ("results_path", r.results_path.is_some()),
        ("result_id_field", r.result_id_field.is_some()),
        ("result_status_field", r.result_status_field.is_some()),
        ("result_error_field", r.result_error_field.is_some()),
    ] {
        if set {
            v.problem(
                flag,
                format!("{at}.item_results"),
                format!("is false, so `{key}` has no item results to read"),
            );
        }
    }
    false
}

/// Where the answer counts the items it did not write: finding those it
/// does not name sends the rest of their batch again, which only an upsert
/// takes without harm.
fn failed_count_field(
    v: &mut Validator<'_>,
    r: &RawHttpDestination,
    at: &str,
) -> Option<FieldPath> {
    let field = r.failed_count_field.as_ref()?;
    if !r.upsert.as_ref().is_some_and(|u| *u.get_ref()) {
        v.problem(
            field,
            format!("{at}.failed_count_field"),
            "needs `upsert = true`: the records a count of failures does not name are found by \
             sending halves of their batch again, which writes the others twice",
        );
    }
    Some(FieldPath::parse(field.get_ref()))
}

/// A batch answer's list of errors (`errors_path`), which is of no use without
/// the field naming each error's records.
fn error_list(v: &mut Validator<'_>, r: &RawHttpDestination, at: &str) -> Option<ErrorList> {
    let field = |f: &S<String>| FieldPath::parse(f.get_ref());
    let Some(path) = &r.errors_path else {
        for (key, value) in [
            ("error_id_field", &r.error_id_field),
            ("error_index_field", &r.error_index_field),
            ("error_message_field", &r.error_message_field),
        ] {
            if let Some(value) = value {
                v.problem(
                    value,
                    format!("{at}.{key}"),
                    "is read only with `errors_path` (where the answer lists its errors)",
                );
            }
        }
        return None;
    };
    let names = match (&r.error_id_field, &r.error_index_field) {
        (Some(ids), None) => ErrorNames::Ids(field(ids)),
        (None, Some(index)) => ErrorNames::Index(field(index)),
        (Some(_), Some(index)) => {
            v.problem(
                index,
                format!("{at}.error_index_field"),
                "an error names its items by external id (`error_id_field`) or by place in the batch, not both",
            );
            return None;
        }
        (None, None) => {
            v.problem(
                path,
                format!("{at}.errors_path"),
                "needs `error_id_field` (where each error names the external ids it is about) or `error_index_field` (its item's place in the batch, from 0)",
            );
            return None;
        }
    };
    Some(ErrorList {
        path: field(path),
        names,
        message_field: r.error_message_field.as_ref().map(field),
    })
}
