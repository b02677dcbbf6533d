//! The HTTP destination's `[sync.destination]` table: its keys as written, and
//! their validation into the spec the sink runs (base URL, auth and pace shared
//! with the source's checks; the write mode and its paths).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::HeaderName;
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::{HttpSpec, RawAuth, S, UriTemplate, Validator, path_or};
use crate::record::FieldPath;
use crate::sink::DeleteRequest;

/// `[sync.destination]` with `type = "http"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpDestination {
    /// Read by the first pass, which chose this table's struct.
    #[serde(rename = "type")]
    _type: serde::de::IgnoredAny,
    pub base_url: Option<S<String>>,
    pub mode: Option<S<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, S<String>>,
    pub auth: Option<S<RawAuth>>,
    pub timeout: Option<S<String>>,
    pub rate_limit: Option<S<f64>>,
    pub rate_limit_probe: Option<S<String>>,
    pub error_path: Option<S<String>>,
    pub transient_errors: Option<S<Vec<S<String>>>>,
    pub concurrency: Option<S<i64>>,
    pub external_id_field: Option<S<String>>,
    pub read_id_field: Option<S<String>>,
    pub dest_id_field: Option<S<String>>,
    pub version_header: Option<S<String>>,
    pub late_write_window: Option<S<String>>,
    // put and post
    pub read_path: Option<S<String>>,
    pub read_results_path: Option<S<String>>,
    pub path: Option<S<String>>,
    pub method: Option<S<String>>,
    pub idempotency_header: Option<S<String>>,
    // lookup
    pub lookup_path: Option<S<String>>,
    pub lookup_param: Option<S<String>>,
    pub lookup_results_path: Option<S<String>>,
    pub lookup_body: Option<S<BTreeMap<String, S<toml::Value>>>>,
    pub create_path: Option<S<String>>,
    pub update_path: Option<S<String>>,
    pub update_method: Option<S<String>>,
    // batch
    pub batch_size: Option<S<i64>>,
    pub batch_field: Option<S<String>>,
    pub batch_body: Option<S<BTreeMap<String, S<toml::Value>>>>,
    pub results_path: Option<S<String>>,
    pub result_id_field: Option<S<String>>,
    pub result_status_field: Option<S<String>>,
    pub result_error_field: Option<S<String>>,
    pub result_transient_errors: Option<S<Vec<S<String>>>>,
    pub result_retry_after_field: Option<S<String>>,
    pub errors_path: Option<S<String>>,
    pub error_id_field: Option<S<String>>,
    pub error_index_field: Option<S<String>>,
    pub error_message_field: Option<S<String>>,
    pub item_results: Option<S<bool>>,
    pub upsert: Option<S<bool>>,
    pub job: Option<S<RawJob>>,
}

/// `job = { ... }` of a batch destination, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJob {
    pub url_field: Option<S<String>>,
    pub status_field: Option<S<String>>,
    pub done: Option<S<Vec<S<String>>>>,
    pub failed: Option<S<Vec<S<String>>>>,
    pub poll: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

impl RawHttpDestination {
    /// The keys only some write modes read, with where each was set.
    fn mode_keys(&self) -> [(&'static str, Option<std::ops::Range<usize>>); 28] {
        fn span<T>(v: &Option<S<T>>) -> Option<std::ops::Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            ("path", span(&self.path)),
            ("method", span(&self.method)),
            ("idempotency_header", span(&self.idempotency_header)),
            ("read_path", span(&self.read_path)),
            ("read_results_path", span(&self.read_results_path)),
            ("lookup_path", span(&self.lookup_path)),
            ("lookup_param", span(&self.lookup_param)),
            ("lookup_results_path", span(&self.lookup_results_path)),
            ("create_path", span(&self.create_path)),
            ("update_path", span(&self.update_path)),
            ("update_method", span(&self.update_method)),
            ("lookup_body", span(&self.lookup_body)),
            ("batch_size", span(&self.batch_size)),
            ("batch_field", span(&self.batch_field)),
            ("batch_body", span(&self.batch_body)),
            ("results_path", span(&self.results_path)),
            ("result_id_field", span(&self.result_id_field)),
            ("result_status_field", span(&self.result_status_field)),
            ("result_error_field", span(&self.result_error_field)),
            (
                "result_transient_errors",
                span(&self.result_transient_errors),
            ),
            (
                "result_retry_after_field",
                span(&self.result_retry_after_field),
            ),
            ("errors_path", span(&self.errors_path)),
            ("error_id_field", span(&self.error_id_field)),
            ("error_index_field", span(&self.error_index_field)),
            ("error_message_field", span(&self.error_message_field)),
            ("item_results", span(&self.item_results)),
            ("upsert", span(&self.upsert)),
            ("job", span(&self.job)),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct HttpDestinationSpec {
    pub http: HttpSpec,
    pub mode: WriteMode,
    /// When set, the external id is written into the body at this path (a
    /// dotted path nests, as the mapping's fields do), and found there in
    /// the destination's objects.
    pub external_id_field: Option<FieldPath>,
    /// Where an object read back (a lookup, `read_path`) names its external
    /// id, when not at `external_id_field` (HubSpot's contact carries the
    /// email it was written by, as `id`, in `properties.email`).
    pub read_id_field: Option<FieldPath>,
    /// Where a write or lookup answer carries the destination's own id. Lookup
    /// mode needs it; put and post read it only when configured.
    pub dest_id_field: Option<FieldPath>,
    pub concurrency: usize,
    /// A header carrying the record's version, which the destination compares:
    /// it refuses (412) a write older than what it holds.
    pub version_header: Option<HeaderName>,
    /// How long a write that got no clear answer may still be applied by the
    /// destination. A record written again within it is read back before the
    /// run completes, and a create is looked up again only once it has passed.
    pub late_write_window: Duration,
    /// How to read one record back in put and post modes (lookup mode reads
    /// through its lookup).
    pub read: Option<ReadSpec>,
}

/// A GET of one destination object by external id.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    /// With `{external_id}` (or a query string holding it).
    pub path: UriTemplate,
    /// Where the object is in the answer (the whole body when absent); an array
    /// there is searched for the item whose external id field matches.
    pub results_path: Option<FieldPath>,
}

#[derive(Debug, Clone)]
pub enum WriteMode {
    Put {
        path: UriTemplate,
        method: Method,
    },
    Lookup {
        lookup_path: UriTemplate,
        lookup_param: Option<String>,
        /// A search sent as a POST with this JSON body, `{external_id}` in
        /// its strings replaced (HubSpot's and Intercom's search endpoints).
        lookup_body: Option<serde_json::Value>,
        results_path: FieldPath,
        create_path: UriTemplate,
        update_path: UriTemplate,
        update_method: Method,
    },
    Post {
        path: UriTemplate,
        idempotency_header: HeaderName,
    },
    /// Many records per request, answered item by item.
    Batch(BatchSpec),
}

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

impl WriteMode {
    pub fn name(&self) -> &'static str {
        match self {
            WriteMode::Put { .. } => "put",
            WriteMode::Lookup { .. } => "lookup",
            WriteMode::Post { .. } => "post",
            WriteMode::Batch(_) => "batch",
        }
    }
}

impl HttpDestinationSpec {
    /// A destination written by lookup, then create, cannot tell whether
    /// another process is creating the same record at that moment: the runs of
    /// its sync take turns.
    /// So does a batch endpoint that is not an upsert by external id.
    pub fn takes_concurrent_runs(&self) -> bool {
        match &self.mode {
            WriteMode::Lookup { .. } => false,
            WriteMode::Batch(batch) => batch.upsert,
            WriteMode::Put { .. } | WriteMode::Post { .. } => true,
        }
    }

    pub fn delete_request(&self) -> DeleteRequest {
        DeleteRequest::Path {
            knows_dest_id: self.dest_id_field.is_some()
                || matches!(self.mode, WriteMode::Lookup { .. }),
        }
    }
}

pub(crate) fn validate(
    v: &mut Validator<'_>,
    raw: Spanned<RawHttpDestination>,
    mapping: Option<&crate::config::MappingSpec>,
    at: &str,
) -> Option<HttpDestinationSpec> {
    let at = &format!("{at}.destination");
    let raw = &raw;
    let r = raw.get_ref();
    let keys = r.mode_keys();
    let Some(base_url) = r.base_url.as_ref() else {
        v.problem(raw, at, "type = \"http\" needs `base_url`");
        return None;
    };
    let Some(mode) = r.mode.as_ref() else {
        v.problem(
            raw,
            at,
            "type = \"http\" needs `mode` (\"put\", \"lookup\", \"post\" or \"batch\")",
        );
        return None;
    };
    let mode_name = mode.get_ref().as_str();
    let mode_keys: &[&str] = match mode_name {
        "put" => &["path", "method", "read_path", "read_results_path"],
        "post" => &[
            "path",
            "idempotency_header",
            "read_path",
            "read_results_path",
        ],
        "lookup" => &[
            "lookup_path",
            "lookup_param",
            "lookup_results_path",
            "lookup_body",
            "create_path",
            "update_path",
            "update_method",
        ],
        "batch" => &[
            "path",
            "method",
            "read_path",
            "read_results_path",
            "batch_size",
            "batch_field",
            "batch_body",
            "results_path",
            "result_id_field",
            "result_status_field",
            "result_error_field",
            "result_transient_errors",
            "result_retry_after_field",
            "errors_path",
            "error_id_field",
            "error_index_field",
            "error_message_field",
            "item_results",
            "upsert",
            "job",
        ],
        _ => {
            v.problem(
                mode,
                format!("{at}.mode"),
                "expected \"put\", \"lookup\", \"post\" or \"batch\"",
            );
            return None;
        }
    };
    let mut ok = true;
    for (key, span) in keys {
        if let Some(span) = span
            && !mode_keys.contains(&key)
        {
            v.problem(
                &Spanned::new(span, ()),
                format!("{at}.{key}"),
                format!(
                    "does not apply to mode = {mode_name:?} (it takes: {})",
                    mode_keys.join(", ")
                ),
            );
            ok = false;
        }
    }
    let http = v.http(
        base_url,
        &r.headers,
        r.auth.as_ref(),
        r.timeout.as_ref(),
        r.rate_limit.as_ref(),
        r.rate_limit_probe.as_ref(),
        r.error_path.as_ref(),
        r.transient_errors.as_ref(),
        at,
    );
    let concurrency = match r.concurrency.as_ref() {
        None => Some(8),
        Some(n) => v
            .count(n, &format!("{at}.concurrency"), 1, 256)
            .map(|n| n as usize),
    };
    let mode = write_mode(v, raw, mode_name, at);
    // A create whose outcome is unknown is resolved by looking the record up
    // again, and a POST's answer is matched by it: both need the field.
    if r.external_id_field.is_none() && matches!(mode_name, "lookup" | "post" | "batch") {
        v.problem(
                raw,
                at,
                format!(
                    "mode = {mode_name:?} needs `external_id_field` (the field of a destination object that holds the external id)"
                ),
            );
        ok = false;
    }
    // The external id is written at `external_id_field` over whatever the
    // mapping put there: a field mapped to it would be lost without a word,
    // and drift at every reconciliation.
    if let (Some(field), Some(mapping)) = (&r.external_id_field, mapping) {
        let at_field = FieldPath::parse(field.get_ref());
        let mapped = mapping
            .fields
            .iter()
            .map(|(to, _)| to)
            .chain(mapping.constants.iter().map(|(to, _)| to))
            .find(|to| **to == at_field);
        if let Some(to) = mapped {
            v.problem(
                field,
                format!("{at}.external_id_field"),
                format!(
                    "the mapping also writes `{to}`, which the external id would replace: map that value under another name, or leave it to the external id"
                ),
            );
            ok = false;
        }
    }
    for (key, field) in [
        ("external_id_field", &r.external_id_field),
        ("read_id_field", &r.read_id_field),
    ] {
        if let Some(field) = field
            && field.get_ref().split('.').any(str::is_empty)
        {
            v.problem(
                field,
                format!("{at}.{key}"),
                "expected a field name, or a dotted path like `fields.external_id`",
            );
            ok = false;
        }
    }
    let version_header = r.version_header.as_ref().and_then(|h| {
        let parsed = HeaderName::from_str(h.get_ref()).ok();
        if parsed.is_none() {
            v.problem(
                h,
                format!("{at}.version_header"),
                "not a valid HTTP header name",
            );
        }
        parsed
    });
    let late_write_window = r
        .late_write_window
        .as_ref()
        .map(|d| v.duration(d, &format!("{at}.late_write_window")));
    if let Some(path) = &r.read_path
        && !path.get_ref().contains("{external_id}")
    {
        v.problem(
            path,
            format!("{at}.read_path"),
            "expected a path containing {external_id}",
        );
        ok = false;
    }
    // A path may be a whole URL; on another origin it would be sent the
    // destination's credentials, which go to `base_url`'s origin alone.
    if let Some(http) = &http {
        for (key, path) in [
            ("path", &r.path),
            ("read_path", &r.read_path),
            ("lookup_path", &r.lookup_path),
            ("create_path", &r.create_path),
            ("update_path", &r.update_path),
        ] {
            if let Some(path) = path
                && elsewhere(&http.base_url, path.get_ref())
            {
                v.problem(
                    path,
                    format!("{at}.{key}"),
                    "is a URL on another origin than base_url: the destination's credentials go to base_url's origin alone",
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let http = http?;
    let late_write_window = match late_write_window {
        Some(window) => window?,
        None => http.timeout.saturating_mul(3),
    };
    let read = r.read_path.as_ref().map(|p| ReadSpec {
        path: UriTemplate(p.get_ref().clone()),
        results_path: r
            .read_results_path
            .as_ref()
            .map(|p| FieldPath::parse(p.get_ref())),
    });
    if read.is_none()
        && let Some(results) = &r.read_results_path
    {
        v.problem(
            results,
            format!("{at}.read_results_path"),
            "needs `read_path`",
        );
        return None;
    }
    Some(HttpDestinationSpec {
        http,
        mode: mode?,
        version_header,
        late_write_window,
        read,
        external_id_field: r
            .external_id_field
            .as_ref()
            .map(|f| FieldPath::parse(f.get_ref())),
        read_id_field: r
            .read_id_field
            .as_ref()
            .map(|f| FieldPath::parse(f.get_ref())),
        dest_id_field: match (&r.dest_id_field, mode_name) {
            (Some(field), _) => Some(FieldPath::parse(field.get_ref())),
            (None, "lookup") => Some(FieldPath::parse("id")),
            (None, _) => None,
        },
        concurrency: concurrency?,
    })
}

fn write_mode(
    v: &mut Validator<'_>,
    raw: &Spanned<RawHttpDestination>,
    mode: &str,
    at: &str,
) -> Option<WriteMode> {
    let r = raw.get_ref();
    let need = |v: &mut Validator<'_>,
                field: &Option<Spanned<String>>,
                key: &str,
                placeholder: Option<&str>| {
        let Some(value) = field else {
            v.problem(raw, at, format!("mode = {mode:?} needs `{key}`"));
            return None;
        };
        if let Some(placeholder) = placeholder
            && !value.get_ref().contains(placeholder)
        {
            v.problem(
                value,
                format!("{at}.{key}"),
                format!("expected a path containing {placeholder}"),
            );
            return None;
        }
        Some(UriTemplate(value.get_ref().clone()))
    };
    match mode {
        "put" => {
            let path = need(v, &r.path, "path", Some("{external_id}"));
            let method = v.method(r.method.as_ref(), Method::PUT, &format!("{at}.method"));
            Some(WriteMode::Put {
                path: path?,
                method: method?,
            })
        }
        "batch" => {
            let path = need(v, &r.path, "path", None);
            let method = v.method(r.method.as_ref(), Method::POST, &format!("{at}.method"));
            let size = match r.batch_size.as_ref() {
                None => Some(100),
                Some(n) => v.count(n, &format!("{at}.batch_size"), 1, 10_000),
            };
            let field = |f: &Option<S<String>>| f.as_ref().map(|f| FieldPath::parse(f.get_ref()));
            Some(WriteMode::Batch(BatchSpec {
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
                upsert: r.upsert.as_ref().is_some_and(|u| *u.get_ref()),
                job: match &r.job {
                    Some(job) => Some(Box::new(job_spec(v, job, at)?)),
                    None => None,
                },
            }))
        }
        "post" => {
            let path = need(v, &r.path, "path", None);
            let header = r.idempotency_header.as_ref().map_or(
                Some(HeaderName::from_static("idempotency-key")),
                |h| {
                    let parsed = HeaderName::from_str(h.get_ref()).ok();
                    if parsed.is_none() {
                        v.problem(
                            h,
                            format!("{at}.idempotency_header"),
                            "not a valid HTTP header name",
                        );
                    }
                    parsed
                },
            );
            Some(WriteMode::Post {
                path: path?,
                idempotency_header: header?,
            })
        }
        _ => {
            let lookup_path = need(v, &r.lookup_path, "lookup_path", None);
            let create_path = need(v, &r.create_path, "create_path", None);
            let update_path = need(v, &r.update_path, "update_path", Some("{dest_id}"));
            let update_method = v.method(
                r.update_method.as_ref(),
                Method::PATCH,
                &format!("{at}.update_method"),
            );
            let lookup_param = r.lookup_param.as_ref().map(|p| p.get_ref().clone());
            let lookup_body = match &r.lookup_body {
                Some(table) => {
                    let key = format!("{at}.lookup_body");
                    let fields: Option<serde_json::Map<String, serde_json::Value>> = table
                        .get_ref()
                        .iter()
                        .map(|(name, value)| {
                            Some((name.clone(), v.json(value, format!("{key}.{name}"))?))
                        })
                        .collect();
                    Some(serde_json::Value::Object(fields?))
                }
                None => None,
            };
            let in_body = lookup_body
                .as_ref()
                .is_some_and(|body| body.to_string().contains("{external_id}"));
            if let Some(path) = &lookup_path
                && lookup_param.is_none()
                && !in_body
                && !path.0.contains("{external_id}")
            {
                v.problem(
                    raw,
                    at,
                    "mode = \"lookup\" needs `lookup_param`, {external_id} in `lookup_path`, or {external_id} in `lookup_body`",
                );
                return None;
            }
            Some(WriteMode::Lookup {
                lookup_path: lookup_path?,
                lookup_param,
                lookup_body,
                results_path: path_or(r.lookup_results_path.as_ref(), "data"),
                create_path: create_path?,
                update_path: update_path?,
                update_method: update_method?,
            })
        }
    }
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

/// Whether `path` is a whole URL on another origin (scheme, host, port) than
/// `base`.
fn elsewhere(base: &url::Url, path: &str) -> bool {
    if !(path.starts_with("http://") || path.starts_with("https://")) {
        return false;
    }
    // A template's placeholders are no part of the origin.
    url::Url::parse(path).map_or(true, |url| url.origin() != base.origin())
}
