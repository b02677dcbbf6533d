//! Checks a sync's `[source]`: the API it reads, its window bounds, pagination,
//! HTTP settings and auth.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::header::{HeaderName, HeaderValue};
use serde_spanned::Spanned;
use url::Url;

use super::raw::*;
use super::*;
use crate::record::FieldPath;
use crate::secret::Secret;
use crate::timepattern::TimePattern;

impl Validator<'_> {
    pub(super) fn source(&mut self, raw: Spanned<RawSource>, at: &str) -> Option<SourceSpec> {
        let at = format!("{at}.source");
        let table = Spanned::new(raw.span(), ());
        let raw = raw.into_inner();
        let http = self.http(
            &raw.base_url,
            &raw.headers,
            raw.auth.as_ref(),
            raw.timeout.as_ref(),
            raw.rate_limit.as_ref(),
            raw.rate_limit_probe.as_ref(),
            raw.error_path.as_ref(),
            raw.transient_errors.as_ref(),
            &at,
        );
        let (params, params_from_env) = self.params(&raw.params, &at);
        let zone = self.time_zone(raw.timezone.as_ref(), raw.time_format.as_ref(), &at);
        let time_format = match raw.time_format.as_ref() {
            None => Some(TimeFormat::Rfc3339),
            Some(s) => zone
                .clone()
                .and_then(|zone| self.time_format(s, zone, &format!("{at}.time_format"))),
        };
        let page_size = match raw.page_size.as_ref() {
            None => Some(100),
            Some(n) => self.count(n, &format!("{at}.page_size"), 1, 100_000),
        };
        let start = raw.start.as_ref().and_then(|s| {
            let parsed = s.get_ref().parse::<Timestamp>();
            if parsed.is_err() {
                self.problem(
                    s,
                    format!("{at}.start"),
                    "expected an RFC 3339 timestamp in quotes, like \"2026-01-01T00:00:00Z\"",
                );
            }
            parsed.ok()
        });
        let lag = self.duration_or(raw.lag.as_ref(), &format!("{at}.lag"), Duration::ZERO);
        let lookback = self.duration_or(
            raw.lookback.as_ref(),
            &format!("{at}.lookback"),
            DEFAULT_LOOKBACK,
        );
        if let (Some(raw_lookback), Some(Duration::ZERO)) = (&raw.lookback, lookback) {
            self.warning(
                raw_lookback,
                format!("{at}.lookback"),
                "runs do not overlap, so a record stamped before the last run's watermark but visible only after it (a slow transaction, a lagging replica) is never read; the default is 5m",
            );
        }
        let pagination_at = raw.pagination.span();
        let named_offset_param = raw.pagination.get_ref().offset_param.clone();
        let pagination = self.pagination(raw.pagination, &at);
        self.offset_in_params(&raw.params, pagination.as_ref(), named_offset_param, &at);
        if let (
            Some(Pagination::Offset { overlap, .. } | Pagination::Page { overlap, .. }),
            Some(size),
        ) = (&pagination, page_size)
            && *overlap >= size
        {
            self.problem(
                &Spanned::new(pagination_at, ()),
                format!("{at}.pagination.overlap"),
                format!(
                    "must be smaller than page_size ({size}): each page re-reads `overlap` records"
                ),
            );
        }
        if let (
            Some(Pagination::Page {
                by_offset: true, ..
            }),
            Some(unsent),
        ) = (
            &pagination,
            raw.page_size_param
                .as_ref()
                .filter(|p| p.get_ref().is_empty()),
        ) {
            self.problem(
                unsent,
                format!("{at}.page_size_param"),
                "pages asked for by offset count page_size records a page, so the API must be sent page_size: name its parameter",
            );
        }
        // A keyset's parameters beside the window's would be sent twice, with
        // two values: the API takes one of them, and not the keyset's.
        if let Some(Pagination::Keyset {
            updated_param,
            id_param,
        }) = &pagination
        {
            let bounds = [&raw.lower_bound_param, &raw.upper_bound_param];
            for (name, param) in [("updated_param", updated_param), ("id_param", id_param)] {
                if let Some(bound) = bounds
                    .iter()
                    .copied()
                    .flatten()
                    .find(|b| b.get_ref() == param)
                {
                    self.problem(
                        bound,
                        format!("{at}.pagination.{name}"),
                        format!(
                            "{param:?} is also a bound's parameter: keyset pagination sends the last record's value in it, so it cannot carry the window too (keyset takes `updated_param` as the lower bound; an API that lists newest first, or pages after the last record's id alone, is `cursor` pagination with `token_field`)"
                        ),
                    );
                }
            }
        }
        let end_of_list_errors =
            self.end_of_list_errors(raw.end_of_list_errors.as_ref(), pagination.as_ref(), &at);
        let keyset = matches!(pagination, Some(Pagination::Keyset { .. }));
        let sorted = keyset || raw.sorted.as_ref().is_some_and(|s| *s.get_ref());
        let body = self.source_body(
            raw.body.as_ref(),
            raw.body_params_path.as_ref(),
            raw.page_params_in.as_ref(),
            pagination.as_ref(),
            &at,
        );
        // GraphQL answers its errors with a 200: without `error_path` an
        // error reads as a page without records, and the list ends there.
        if let (Some(Some(body)), Some(raw_body), None) = (&body, &raw.body, &raw.error_path)
            && body.template["query"]
                .as_str()
                .is_some_and(|q| q.contains('{'))
        {
            self.warning(
                raw_body,
                format!("{at}.body"),
                "looks like a GraphQL query, whose errors come with a 200 in `errors`: set error_path = \"errors\"",
            );
        }
        let in_params = |bound: &str| {
            raw.params.values().any(|v| v.get_ref().contains(bound))
                || raw.headers.values().any(|v| v.get_ref().contains(bound))
                || body
                    .as_ref()
                    .and_then(Option::as_ref)
                    .is_some_and(|b| b.template.to_string().contains(bound))
        };
        let sends_lower = raw.lower_bound_param.is_some() || in_params(LOWER_IN_PARAMS);
        let sends_upper = raw.upper_bound_param.is_some() || in_params(UPPER_IN_PARAMS);
        if !sends_lower && !keyset {
            self.warning(
                &table,
                &at,
                "no `lower_bound_param` (nor `{lower}` in a parameter, header or body) and pagination is not keyset: every run reads everything the source has, not only what changed since the last run",
            );
        }
        let lower_bound_exclusive = self.bound_exclusive(
            raw.lower_bound_exclusive.as_ref(),
            sends_lower || keyset,
            &format!("{at}.lower_bound_exclusive"),
            "`lower_bound_param`, `{lower}` in a parameter, header or body, or keyset pagination",
        );
        let upper_bound_exclusive = self.bound_exclusive(
            raw.upper_bound_exclusive.as_ref(),
            sends_upper,
            &format!("{at}.upper_bound_exclusive"),
            "`upper_bound_param` or `{upper}` in a parameter, header or body",
        );
        let mut http = http?;
        let (window_headers, headers) =
            std::mem::take(&mut http.headers)
                .into_iter()
                .partition(|(_, value)| {
                    let value = value.expose();
                    value.contains(LOWER_IN_PARAMS) || value.contains(UPPER_IN_PARAMS)
                });
        http.headers = headers;
        Some(SourceSpec {
            http,
            window_headers,
            path: raw.path.map(Spanned::into_inner).unwrap_or_default(),
            params,
            params_from_env,
            body: body?,
            records_path: path_or(raw.records_path.as_ref(), "data"),
            id_field: path_or(raw.id_field.as_ref(), "id"),
            updated_at_field: path_or(raw.updated_at_field.as_ref(), "updated_at"),
            version_field: raw
                .version_field
                .as_ref()
                .map(|p| FieldPath::parse(p.get_ref())),
            time_format: time_format?,
            page_size: page_size?,
            page_size_param: Some(
                raw.page_size_param
                    .map(Spanned::into_inner)
                    .unwrap_or_else(|| "limit".to_owned()),
            )
            .filter(|p| !p.is_empty()),
            start,
            lag: lag?,
            lookback: lookback?,
            lower_bound_param: raw.lower_bound_param.map(Spanned::into_inner),
            upper_bound_param: raw.upper_bound_param.map(Spanned::into_inner),
            lower_bound_exclusive: lower_bound_exclusive?,
            upper_bound_exclusive: upper_bound_exclusive?,
            sorted,
            end_of_list_errors: end_of_list_errors?,
            pagination: pagination?,
        })
    }

    /// `end_of_list_errors`, read by the walks that ask for a position past
    /// the last themselves.
    fn end_of_list_errors(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        pagination: Option<&Pagination>,
        at: &str,
    ) -> Option<Vec<String>> {
        let Some(words) = raw else {
            return Some(Vec::new());
        };
        let key = format!("{at}.end_of_list_errors");
        match pagination {
            Some(Pagination::Offset { .. } | Pagination::Page { .. }) => {
                Some(self.words(words, &key))
            }
            Some(other) => {
                self.problem(
                    words,
                    key,
                    format!(
                        "is read only with offset or page pagination, which ask for a position past the last themselves; style = {:?} follows what the API gives",
                        other.style()
                    ),
                );
                None
            }
            None => None,
        }
    }

    /// A listing's `params`, each value's `${VAR}`s from the environment;
    /// with the names of those that took one.
    pub(super) fn params(
        &mut self,
        raw: &BTreeMap<String, Spanned<String>>,
        at: &str,
    ) -> (Vec<(String, Secret)>, Vec<String>) {
        let mut params = Vec::new();
        let mut from_env = Vec::new();
        for (name, value) in raw {
            if let Some(v) = self.string(value, &format!("{at}.params.{name}")) {
                if v != *value.get_ref() {
                    from_env.push(name.clone());
                }
                params.push((name.clone(), Secret::new(v)));
            }
        }
        (params, from_env)
    }

    /// `body` (a table, sent as JSON with a POST) and where each page's
    /// parameters go: in it (`body_params_path`, the top level unless said),
    /// or in the URL's query (`page_params_in = "query"`).
    pub(super) fn source_body(
        &mut self,
        body: Option<&Spanned<toml::Value>>,
        params_path: Option<&Spanned<String>>,
        params_in: Option<&Spanned<String>>,
        pagination: Option<&Pagination>,
        at: &str,
    ) -> Option<Option<SourceBody>> {
        let Some(value) = body else {
            let stray = [
                (params_path, "body_params_path"),
                (params_in, "page_params_in"),
            ];
            let mut alone = true;
            for (span, name) in stray.into_iter().filter_map(|(s, n)| Some((s?, n))) {
                self.problem(
                    span,
                    format!("{at}.{name}"),
                    "is read only with `body` (pages asked for with a POST)",
                );
                alone = false;
            }
            return alone.then_some(None);
        };
        let in_query = match params_in.map(|p| (p, p.get_ref().as_str())) {
            None | Some((_, "body")) => false,
            Some((_, "query")) => true,
            Some((span, other)) => {
                self.problem(
                    span,
                    format!("{at}.page_params_in"),
                    format!(
                        "{other:?} is not a place for each page's parameters: \"body\" (the default, at `body_params_path`) or \"query\" (the URL's, as NetSuite's SuiteQL takes `limit` and `offset`)"
                    ),
                );
                return None;
            }
        };
        if let (true, Some(path)) = (in_query, params_path) {
            self.problem(
                path,
                format!("{at}.body_params_path"),
                "says where in the body each page's parameters go, but `page_params_in = \"query\"` sends them in the URL: keep one",
            );
            return None;
        }
        let key = format!("{at}.body");
        let template = self.json(value, key.clone())?;
        if !template.is_object() {
            self.problem(
                value,
                key,
                "expected a table, sent as the JSON body of a POST, like { filter = { status = \"open\" } }",
            );
            return None;
        }
        if let Some(Pagination::NextUrl { .. }) = pagination {
            self.problem(
                value,
                key,
                "a next URL is asked for as the API wrote it, with a GET: `body` needs cursor, offset, page or keyset pagination",
            );
            return None;
        }
        let params_at =
            params_path.map_or_else(|| FieldPath::parse(""), |p| FieldPath::parse(p.get_ref()));
        if let (Some(path), Some(found)) = (params_path, params_at.get(&template))
            && !found.is_object()
        {
            self.problem(
                path,
                format!("{at}.body_params_path"),
                "names a value of `body` that is not a table: each page's parameters go into it",
            );
            return None;
        }
        Some(Some(SourceBody {
            template,
            params_at: (!in_query).then_some(params_at),
        }))
    }

    /// A `time_format` and the zone its pattern writes in (`timezone`, UTC
    /// unless said).
    pub(super) fn time_format(
        &mut self,
        raw: &Spanned<String>,
        (zone, zone_name): (TimeZone, String),
        key: &str,
    ) -> Option<TimeFormat> {
        match raw.get_ref().as_str() {
            "rfc3339" => Some(TimeFormat::Rfc3339),
            "epoch_seconds" => Some(TimeFormat::EpochSeconds),
            "epoch_millis" => Some(TimeFormat::EpochMillis),
            pattern if pattern.contains('%') => match TimePattern::new(pattern, zone, &zone_name) {
                Ok(pattern) => Some(TimeFormat::Pattern(Box::new(pattern))),
                Err(message) => {
                    self.problem(raw, key, message);
                    None
                }
            },
            _ => {
                self.problem(
                    raw,
                    key,
                    "expected \"rfc3339\", \"epoch_seconds\", \"epoch_millis\" or a strftime pattern like \"%Y/%m/%d %H:%M\"",
                );
                None
            }
        }
    }

    /// The zone a `time_format` pattern writes times in; the key means
    /// nothing to the other formats, which carry their offset or none.
    fn time_zone(
        &mut self,
        raw: Option<&Spanned<String>>,
        format: Option<&Spanned<String>>,
        at: &str,
    ) -> Option<(TimeZone, String)> {
        let Some(name) = raw else {
            return Some((TimeZone::UTC, "UTC".to_owned()));
        };
        if !format.is_some_and(|f| f.get_ref().contains('%')) {
            self.problem(
                name,
                format!("{at}.timezone"),
                "only a `time_format` pattern (like \"%Y/%m/%d %H:%M\") is written in a time zone; RFC 3339 and epoch times say their own",
            );
            return None;
        }
        match TimeZone::get(name.get_ref()) {
            Ok(zone) => Some((zone, name.get_ref().clone())),
            Err(_) => {
                self.problem(
                    name,
                    format!("{at}.timezone"),
                    "expected a time zone name like \"Europe/Paris\" or \"UTC\"",
                );
                None
            }
        }
    }

    /// Whether a bound is strict; the key means nothing when that bound is not sent.
    fn bound_exclusive(
        &mut self,
        raw: Option<&Spanned<bool>>,
        bound_sent: bool,
        key: &str,
        needs: &str,
    ) -> Option<bool> {
        let Some(raw) = raw else {
            return Some(false);
        };
        if !bound_sent {
            self.problem(
                raw,
                key,
                format!("does not apply: the bound is sent only with {needs}"),
            );
            return None;
        }
        Some(*raw.get_ref())
    }

    pub(super) fn pagination(
        &mut self,
        raw: Spanned<RawPagination>,
        at: &str,
    ) -> Option<Pagination> {
        let at = format!("{at}.pagination");
        let style = raw.get_ref().style.get_ref().clone();
        let r = raw.get_ref();
        let keys: [(&str, Option<std::ops::Range<usize>>); 14] = [
            ("token_path", r.token_path.as_ref().map(Spanned::span)),
            ("token_param", r.token_param.as_ref().map(Spanned::span)),
            ("token_field", r.token_field.as_ref().map(Spanned::span)),
            ("more_path", r.more_path.as_ref().map(Spanned::span)),
            ("end_path", r.end_path.as_ref().map(Spanned::span)),
            ("next_url_path", r.next_url_path.as_ref().map(Spanned::span)),
            ("link_header", r.link_header.as_ref().map(Spanned::span)),
            ("updated_param", r.updated_param.as_ref().map(Spanned::span)),
            ("id_param", r.id_param.as_ref().map(Spanned::span)),
            ("offset_param", r.offset_param.as_ref().map(Spanned::span)),
            ("first_offset", r.first_offset.as_ref().map(Spanned::span)),
            ("page_param", r.page_param.as_ref().map(Spanned::span)),
            ("first_page", r.first_page.as_ref().map(Spanned::span)),
            ("overlap", r.overlap.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match style.as_str() {
            "cursor" => &[
                "token_path",
                "token_param",
                "token_field",
                "more_path",
                "end_path",
            ],
            "next_url" => &["next_url_path", "link_header"],
            "keyset" => &["updated_param", "id_param"],
            "offset" => &["offset_param", "first_offset", "overlap", "more_path"],
            "page" => &[
                "page_param",
                "offset_param",
                "first_page",
                "overlap",
                "more_path",
            ],
            _ => {
                self.problem(
                    &r.style,
                    format!("{at}.style"),
                    "expected one of \"cursor\", \"next_url\", \"keyset\", \"offset\", \"page\"",
                );
                return None;
            }
        };
        let mut ok = true;
        for (key, span) in keys {
            if let Some(span) = span
                && !allowed.contains(&key)
            {
                let marker = Spanned::new(span, ());
                self.problem(
                    &marker,
                    format!("{at}.{key}"),
                    format!(
                        "does not apply to style = {style:?} (it takes: {})",
                        allowed.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let overlap = match r.overlap.as_ref() {
            None => Some(10),
            Some(n) => self.count(n, &format!("{at}.overlap"), 1, 1000),
        };
        let more_path = r.more_path.as_ref().map(|p| FieldPath::parse(p.get_ref()));
        let pagination = match style.as_str() {
            "cursor" => {
                if let (Some(path), Some(_)) = (&r.token_path, &r.token_field) {
                    self.problem(
                        path,
                        format!("{at}.token_path"),
                        "the next token comes from the answer (`token_path`) or from its last record (`token_field`), not both",
                    );
                    return None;
                }
                Pagination::Cursor {
                    token_path: path_or(r.token_path.as_ref(), "next_cursor"),
                    token_param: string_or(r.token_param.as_ref(), "cursor"),
                    token_field: r
                        .token_field
                        .as_ref()
                        .map(|p| FieldPath::parse(p.get_ref())),
                    more_path: more_path.clone(),
                    end_path: r.end_path.as_ref().map(|p| FieldPath::parse(p.get_ref())),
                }
            }
            "next_url" => {
                let from_link = r.link_header.as_ref().is_some_and(|b| *b.get_ref());
                match (&r.next_url_path, from_link) {
                    (Some(path), false) => Pagination::NextUrl {
                        from: NextUrlFrom::Body(FieldPath::parse(path.get_ref())),
                    },
                    (None, true) => Pagination::NextUrl {
                        from: NextUrlFrom::LinkHeader,
                    },
                    (Some(_), true) => {
                        self.problem(
                            &raw,
                            at,
                            "give either `next_url_path` or `link_header = true`, not both",
                        );
                        return None;
                    }
                    (None, false) => {
                        self.problem(
                            &raw,
                            at,
                            "style = \"next_url\" needs `next_url_path = \"links.next\"` (a body field) or `link_header = true`",
                        );
                        return None;
                    }
                }
            }
            "keyset" => {
                let (Some(updated), Some(id)) = (&r.updated_param, &r.id_param) else {
                    self.problem(
                        &raw,
                        at,
                        "style = \"keyset\" needs `updated_param` and `id_param` (the query parameters that take the last record's updated_at and id)",
                    );
                    return None;
                };
                Pagination::Keyset {
                    updated_param: updated.get_ref().clone(),
                    id_param: id.get_ref().clone(),
                }
            }
            "offset" => Pagination::Offset {
                offset_param: string_or(r.offset_param.as_ref(), "offset"),
                first_offset: self.first(
                    r.first_offset.as_ref(),
                    &format!("{at}.first_offset"),
                    0,
                )?,
                overlap: overlap?,
                more_path: more_path.clone(),
            },
            _ => {
                if let (Some(_), Some(offset)) = (&r.page_param, &r.offset_param) {
                    self.problem(
                        offset,
                        format!("{at}.offset_param"),
                        "a page is asked for by its number (`page_param`) or by the offset of its first record (`offset_param`), not both",
                    );
                    return None;
                }
                Pagination::Page {
                    page_param: string_or(
                        r.page_param.as_ref().or(r.offset_param.as_ref()),
                        "page",
                    ),
                    first_page: self.first(
                        r.first_page.as_ref(),
                        &format!("{at}.first_page"),
                        1,
                    )?,
                    overlap: overlap?,
                    by_offset: r.offset_param.is_some(),
                    more_path: more_path.clone(),
                }
            }
        };
        ok.then_some(pagination)
    }

    /// Where an API starts counting offsets or pages: 0 or 1, `default`
    /// unless said.
    fn first(&mut self, raw: Option<&Spanned<i64>>, key: &str, default: u64) -> Option<u64> {
        match raw {
            None => Some(default),
            Some(n) => self.count(n, key, 0, 1).map(u64::from),
        }
    }

    /// `{offset}` in a parameter takes an offset walk's position, which then
    /// goes nowhere else: with another style, or beside an `offset_param`
    /// said too, the file says two things.
    fn offset_in_params(
        &mut self,
        params: &BTreeMap<String, S<String>>,
        pagination: Option<&Pagination>,
        named_offset_param: Option<S<String>>,
        at: &str,
    ) {
        let Some((key, value)) = params
            .iter()
            .find(|(_, v)| v.get_ref().contains(OFFSET_IN_PARAMS))
        else {
            return;
        };
        match (pagination, named_offset_param) {
            (Some(Pagination::Offset { .. }), None) | (None, _) => {}
            (Some(Pagination::Offset { .. }), Some(named)) => self.problem(
                &named,
                format!("{at}.pagination.offset_param"),
                format!("the position goes into `{key}` ({{offset}}): leave out offset_param"),
            ),
            (Some(other), _) => self.problem(
                value,
                format!("{at}.params.{key}"),
                format!(
                    "{{offset}} takes the position of style = \"offset\" pagination, not of {:?}",
                    other.style()
                ),
            ),
        }
    }

    #[allow(clippy::too_many_arguments)] // one argument per shared key of the table
    pub(crate) fn http(
        &mut self,
        base_url: &Spanned<String>,
        headers: &BTreeMap<String, Spanned<String>>,
        auth: Option<&Spanned<RawAuth>>,
        timeout: Option<&Spanned<String>>,
        rate_limit: Option<&Spanned<f64>>,
        rate_limit_probe: Option<&Spanned<String>>,
        error_path: Option<&Spanned<String>>,
        transient_errors: Option<&Spanned<Vec<Spanned<String>>>>,
        at: &str,
    ) -> Option<HttpSpec> {
        let url = self.url(base_url, &format!("{at}.base_url"));
        let mut header_list = Vec::new();
        for (name, value) in headers {
            let key = format!("{at}.headers.{name}");
            let Ok(header) = HeaderName::from_str(name) else {
                self.problem(value, key, "not a valid HTTP header name");
                continue;
            };
            if let Some(v) = self.string(value, &key) {
                if reqwest::header::HeaderValue::from_str(&v).is_err() {
                    self.problem(
                        value,
                        key,
                        "not a valid HTTP header value (control characters or non-ASCII)",
                    );
                    continue;
                }
                header_list.push((header, Secret::new(v)));
            }
        }
        let auth = match auth {
            None => Some(AuthSpec::None),
            Some(a) => self.auth(a, &format!("{at}.auth")),
        };
        let timeout = self.duration_or(timeout, &format!("{at}.timeout"), Duration::from_secs(30));
        let rate_limit = match rate_limit {
            Some(r) if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) => {
                self.problem(
                    r,
                    format!("{at}.rate_limit"),
                    "expected requests per second > 0",
                );
                return None;
            }
            r => r.map(|r| *r.get_ref()),
        };
        let rate_limit_probe = match rate_limit_probe {
            Some(p) => match self.duration(p, &format!("{at}.rate_limit_probe"))? {
                Duration::ZERO => {
                    self.problem(
                        p,
                        format!("{at}.rate_limit_probe"),
                        "expected a duration > 0",
                    );
                    return None;
                }
                d => d,
            },
            None => crate::policy::DEFAULT_PROBE_PERIOD,
        };
        Some(HttpSpec {
            base_url: url?,
            headers: header_list,
            auth: auth?,
            timeout: timeout?,
            rate_limit,
            rate_limit_probe,
            error_path: error_path.map(|p| FieldPath::parse(p.get_ref())),
            transient_errors: transient_errors
                .map(|w| self.words(w, &format!("{at}.transient_errors")))
                .unwrap_or_default(),
        })
    }

    fn auth(&mut self, raw: &Spanned<RawAuth>, at: &str) -> Option<AuthSpec> {
        let r = raw.get_ref();
        let kind = r.kind.get_ref().as_str();
        let fields: [(&str, Option<&Spanned<String>>); 12] = [
            ("token", r.token.as_ref()),
            ("username", r.username.as_ref()),
            ("password", r.password.as_ref()),
            ("key", r.key.as_ref()),
            ("header", r.header.as_ref()),
            ("query_param", r.query_param.as_ref()),
            ("token_url", r.token_url.as_ref()),
            ("client_id", r.client_id.as_ref()),
            ("client_secret", r.client_secret.as_ref()),
            ("scope", r.scope.as_ref()),
            ("refresh_token", r.refresh_token.as_ref()),
            ("scheme", r.scheme.as_ref()),
        ];
        let (allowed, required): (&[&str], &[&str]) = match kind {
            "none" => (&[], &[]),
            "bearer" => (&["token", "scheme"], &["token"]),
            "basic" => (&["username", "password"], &["username", "password"]),
            "api_key" => (&["key", "header", "query_param"], &["key"]),
            "oauth2" => (
                &[
                    "token_url",
                    "client_id",
                    "client_secret",
                    "scope",
                    "refresh_token",
                    "scheme",
                ],
                &["token_url", "client_id", "client_secret"],
            ),
            _ => {
                self.problem(
                    &r.kind,
                    format!("{at}.type"),
                    "expected one of \"none\", \"bearer\", \"basic\", \"api_key\", \"oauth2\"",
                );
                return None;
            }
        };
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        let mut ok = true;
        for (key, value) in fields {
            let Some(value) = value else { continue };
            if !allowed.contains(&key) {
                self.problem(
                    value,
                    format!("{at}.{key}"),
                    format!("does not apply to type = {kind:?}"),
                );
                ok = false;
                continue;
            }
            match self.string(value, &format!("{at}.{key}")) {
                Some(v) => {
                    values.insert(key, v);
                }
                None => ok = false,
            }
        }
        for key in required {
            if !values.contains_key(key) && fields.iter().any(|(k, v)| k == key && v.is_none()) {
                self.problem(raw, at, format!("type = {kind:?} needs `{key}`"));
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        if let Some(scheme) = values.get("scheme")
            && (scheme.is_empty()
                || scheme.contains(char::is_whitespace)
                || HeaderValue::from_str(scheme).is_err())
        {
            self.problem(
                raw,
                format!("{at}.scheme"),
                "expected one word, the Authorization header's scheme (Bearer, Zoho-oauthtoken)",
            );
            return None;
        }
        let scheme = values
            .remove("scheme")
            .unwrap_or_else(|| "Bearer".to_owned());
        let mut take = |key: &str| values.remove(key).unwrap_or_default();
        Some(match kind {
            "none" => AuthSpec::None,
            "bearer" => AuthSpec::Bearer {
                token: Secret::new(take("token")),
                scheme,
            },
            "basic" => AuthSpec::Basic {
                username: take("username"),
                password: Secret::new(take("password")),
            },
            "api_key" => {
                let header = take("header");
                let query = take("query_param");
                let placement = match (header.is_empty(), query.is_empty()) {
                    (false, true) => match HeaderName::from_str(&header) {
                        Ok(name) => KeyPlacement::Header(name),
                        Err(_) => {
                            self.problem(
                                raw,
                                format!("{at}.header"),
                                "not a valid HTTP header name",
                            );
                            return None;
                        }
                    },
                    (true, false) => KeyPlacement::Query(query),
                    _ => {
                        self.problem(
                            raw,
                            at,
                            "type = \"api_key\" needs exactly one of `header` or `query_param`",
                        );
                        return None;
                    }
                };
                AuthSpec::ApiKey {
                    placement,
                    key: Secret::new(take("key")),
                }
            }
            _ => {
                let token_url = take("token_url");
                let Ok(token_url) = Url::parse(&token_url) else {
                    self.problem(
                        raw,
                        format!("{at}.token_url"),
                        "expected an absolute http(s) URL",
                    );
                    return None;
                };
                let scope = take("scope");
                let refresh_token = take("refresh_token");
                AuthSpec::OAuth2 {
                    token_url,
                    client_id: take("client_id"),
                    client_secret: Secret::new(take("client_secret")),
                    scope: (!scope.is_empty()).then_some(scope),
                    refresh_token: (!refresh_token.is_empty()).then(|| Secret::new(refresh_token)),
                    scheme,
                }
            }
        })
    }
}
