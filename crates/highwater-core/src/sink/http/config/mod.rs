//! The HTTP destination's `[sync.destination]` table: its keys as written, and
//! their validation into the spec the sink runs (base URL, auth and pace shared
//! with the source's checks; the write mode and its paths).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderName;
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::{HttpSpec, RawAuth, S, UriTemplate, Validator, path_or};
use crate::record::FieldPath;
use crate::sink::DeleteRequest;

mod batch;

pub use batch::{BatchSpec, Envelope, ErrorList, ErrorNames, JobSpec};

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
    pub failed_count_field: Option<S<String>>,
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
    fn mode_keys(&self) -> [(&'static str, Option<std::ops::Range<usize>>); 29] {
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
            ("failed_count_field", span(&self.failed_count_field)),
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
    Batch(Box<BatchSpec>),
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
            "failed_count_field",
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
            batch::spec(v, r, at, path, method).map(|spec| WriteMode::Batch(Box::new(spec)))
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

/// Whether `path` is a whole URL on another origin (scheme, host, port) than
/// `base`.
fn elsewhere(base: &url::Url, path: &str) -> bool {
    if !(path.starts_with("http://") || path.starts_with("https://")) {
        return false;
    }
    // A template's placeholders are no part of the origin.
    url::Url::parse(path).map_or(true, |url| url.origin() != base.origin())
}
