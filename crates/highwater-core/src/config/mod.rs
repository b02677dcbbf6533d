//! Owns the config file: raw TOML → validated [`Config`] in two stages (`raw` mirrors
//! the file, this module checks it and builds `spec`). `highwater validate` is exactly
//! [`parse`].
//! Invariant: pure — no IO besides [`load`] reading the file; environment variables
//! come in through a lookup function. Secrets never appear in a [`ConfigError`].

mod raw;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use reqwest::header::HeaderName;
use serde_spanned::Spanned;
use url::Url;

use crate::policy::RetryPolicy;
use crate::record::FieldPath;
use crate::secret::Secret;
use raw::*;
pub use spec::*;

/// Everything wrong with a config file, each problem with its line and key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

/// One thing wrong in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; `None` when the file could not be read at all.
    pub line: Option<usize>,
    /// Where in the file, e.g. `sync "billing".source.pagination.style`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", p.in_file(&self.file))?;
        }
        Ok(())
    }
}

impl Problem {
    /// `file:line: key: message`, as errors and warnings are shown.
    pub fn in_file<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        struct InFile<'a>(&'a Problem, &'a Path);
        impl fmt::Display for InFile<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let (p, file) = (self.0, self.1.display());
                match (p.line, p.key.is_empty()) {
                    (Some(line), false) => write!(f, "{file}:{line}: {}: {}", p.key, p.message),
                    (Some(line), true) => write!(f, "{file}:{line}: {}", p.message),
                    (None, _) => write!(f, "{file}: {}", p.message),
                }
            }
        }
        InFile(self, file)
    }
}

/// The config file used when `--config` is not given.
pub const DEFAULT_FILE: &str = "highwater.toml";
/// The state store used when `[state] path` is not given, relative to the config file.
pub const DEFAULT_STATE_PATH: &str = ".highwater/state.db";
/// Ledger rows a run stages between merges when `[state] merge_rows` is not given.
/// Until a merge is durable the run keeps those rows in memory (a few hundred
/// bytes each), since lookups read only the merged ledger; the larger the batch,
/// the fewer times a merge rewrites the ledger's pages.
pub const DEFAULT_MERGE_ROWS: usize = 20_000;
/// How far each run reaches back before the last run's watermark when `lookback`
/// is not given. Without an overlap, a record the API stamps before a watermark but
/// makes visible only after it (a slow transaction, a lagging replica) is never
/// read; re-reading a few minutes costs little, since the ledger skips what is
/// unchanged.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(5 * 60);

/// Reads and validates a config file, taking `${VAR}` values from the process
/// environment.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem {
            line: None,
            key: String::new(),
            message: match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "config file not found (create it, or pass --config PATH)".to_owned()
                }
                _ => format!("cannot read config file: {e}"),
            },
        }],
    })?;
    parse(&text, file, &|name| std::env::var(name).ok())
}

/// Validates config text. `file` is used for messages and to resolve relative paths;
/// `env` resolves `${VAR}`.
pub fn parse(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut v = Validator {
        text,
        env,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let fail = |problems| ConfigError {
        file: file.to_path_buf(),
        problems,
    };
    let raw = match v.deserialize() {
        Ok(raw) => raw,
        Err(problem) => return Err(fail(vec![problem])),
    };
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config = v.file(raw, file, &base_dir);
    if v.problems.is_empty() {
        config.warnings = v.warnings;
        Ok(config)
    } else {
        Err(fail(v.problems))
    }
}

struct Validator<'a> {
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Validator<'_> {
    fn deserialize(&self) -> Result<RawFile, Problem> {
        let de = toml::Deserializer::parse(self.text).map_err(|e| Problem {
            line: Some(self.line(e.span().map_or(0, |s| s.start))),
            key: String::new(),
            message: format!("invalid TOML: {}", e.message()),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let span = e.inner().span();
            // A TOML date or time reaches serde as a table with one private key,
            // so serde would call it a table, or a string inside that table.
            let value = span.clone().and_then(|s| self.text.get(s)).unwrap_or("");
            let message = if path.contains(TOML_DATETIME) || is_datetime(value) {
                DATETIME_REFUSED.to_owned()
            } else {
                describe_serde_message(e.inner().message())
            };
            // Spanned<T> shows up in serde paths as a private field: drop it.
            let path = path
                .replace(".$__serde_spanned_private_value", "")
                .replace(&format!(".{TOML_DATETIME}"), "");
            let path = self.readable_path(&path);
            Problem {
                line: Some(self.line(span.map_or(0, |s| s.start))),
                key: path,
                message,
            }
        })
    }

    /// `sync[1].source` → `sync "billing".source`, when the sync has a name.
    fn readable_path(&self, path: &str) -> String {
        let Some(rest) = path.strip_prefix("sync[") else {
            return path.to_owned();
        };
        let Some((index, tail)) = rest.split_once(']') else {
            return path.to_owned();
        };
        let name = index.parse::<usize>().ok().and_then(|i| {
            let table: toml::Table = toml::from_str(self.text).ok()?;
            let sync = table.get("sync")?.as_array()?.get(i)?;
            Some(sync.get("name")?.as_str()?.to_owned())
        });
        match name {
            Some(name) => format!("sync {name:?}{tail}"),
            None => path.to_owned(),
        }
    }

    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn problem<T>(&mut self, at: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        let problem = self.located(at, key.into(), message.into());
        self.problems.push(problem);
    }

    fn warning<T>(&mut self, at: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        let warning = self.located(at, key.into(), message.into());
        self.warnings.push(warning);
    }

    fn located<T>(&self, at: &Spanned<T>, key: String, message: String) -> Problem {
        Problem {
            line: Some(self.line(at.span().start)),
            key,
            message,
        }
    }

    fn file(&mut self, raw: RawFile, file: &Path, base_dir: &Path) -> Config {
        let state_path = match raw.state.as_ref().and_then(|s| s.get_ref().path.as_ref()) {
            Some(path) => self.string(path, "state.path").unwrap_or_default(),
            None => DEFAULT_STATE_PATH.to_owned(),
        };
        let merge_rows = match raw
            .state
            .as_ref()
            .and_then(|s| s.get_ref().merge_rows.as_ref())
        {
            Some(rows) => self
                .count(rows, "state.merge_rows", 500, 10_000_000)
                .map_or(DEFAULT_MERGE_ROWS, |n| n as usize),
            None => DEFAULT_MERGE_ROWS,
        };
        let mut syncs: Vec<SyncSpec> = Vec::new();
        let mut seen = BTreeMap::new();
        for sync in raw.sync {
            let name = sync.get_ref().name.get_ref().clone();
            if let Some(first_line) = seen.get(&name) {
                let message =
                    format!("sync {name:?} is defined twice (first at line {first_line})");
                self.problem(&sync.get_ref().name, "sync.name", message);
                continue;
            }
            seen.insert(name.clone(), self.line(sync.span().start));
            if let Some(spec) = self.sync(sync.into_inner(), base_dir) {
                syncs.push(spec);
            }
        }
        Config {
            file: file.to_path_buf(),
            state: StateSpec {
                path: base_dir.join(state_path),
                merge_rows,
            },
            syncs,
            warnings: Vec::new(),
        }
    }

    fn sync(&mut self, raw: RawSync, base_dir: &Path) -> Option<SyncSpec> {
        let name = raw.name.get_ref().clone();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            self.problem(
                &raw.name,
                "sync.name",
                "expected a name of letters, digits, `_` or `-`",
            );
        }
        let at = format!("sync {name:?}");
        let source = self.source(raw.source, &at);
        let mapping = self.mapping(raw.mapping, source.as_ref(), &at);
        let destination = self.destination(raw.destination, base_dir, &at);
        let retry = self.retry(raw.retry, &at);
        let budgets = self.budgets(raw.budgets, &at);
        let (source, mapping, destination) = (source?, mapping?, destination?);
        let fingerprint = blake3::hash(format!("{mapping:?}{destination:?}").as_bytes()).to_hex()
            [..16]
            .to_owned();
        Some(SyncSpec {
            name,
            source,
            mapping,
            destination,
            retry,
            budgets,
            fingerprint,
        })
    }

    fn source(&mut self, raw: Spanned<RawSource>, at: &str) -> Option<SourceSpec> {
        let at = format!("{at}.source");
        let table = Spanned::new(raw.span(), ());
        let raw = raw.into_inner();
        let http = self.http(
            &raw.base_url,
            &raw.headers,
            raw.auth.as_ref(),
            raw.timeout.as_ref(),
            raw.rate_limit.as_ref(),
            raw.error_path.as_ref(),
            &at,
        );
        let mut params = Vec::new();
        for (name, value) in &raw.params {
            if let Some(v) = self.string(value, &format!("{at}.params.{name}")) {
                params.push((name.clone(), Secret::new(v)));
            }
        }
        let time_format = match raw.time_format.as_ref() {
            None => Some(TimeFormat::Rfc3339),
            Some(s) => match s.get_ref().as_str() {
                "rfc3339" => Some(TimeFormat::Rfc3339),
                "epoch_seconds" => Some(TimeFormat::EpochSeconds),
                "epoch_millis" => Some(TimeFormat::EpochMillis),
                _ => {
                    self.problem(
                        s,
                        format!("{at}.time_format"),
                        "expected \"rfc3339\", \"epoch_seconds\" or \"epoch_millis\"",
                    );
                    None
                }
            },
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
        let pagination = self.pagination(raw.pagination, &at);
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
        let keyset = matches!(pagination, Some(Pagination::Keyset { .. }));
        let sorted = keyset || raw.sorted.as_ref().is_some_and(|s| *s.get_ref());
        if raw.lower_bound_param.is_none() && !keyset {
            self.warning(
                &table,
                &at,
                "no `lower_bound_param` and pagination is not keyset: every run reads everything the source has, not only what changed since the last run",
            );
        }
        let lower_bound_exclusive = self.bound_exclusive(
            raw.lower_bound_exclusive.as_ref(),
            raw.lower_bound_param.is_some() || keyset,
            &format!("{at}.lower_bound_exclusive"),
            "`lower_bound_param` or keyset pagination",
        );
        let upper_bound_exclusive = self.bound_exclusive(
            raw.upper_bound_exclusive.as_ref(),
            raw.upper_bound_param.is_some(),
            &format!("{at}.upper_bound_exclusive"),
            "`upper_bound_param`",
        );
        Some(SourceSpec {
            http: http?,
            path: raw.path.map(Spanned::into_inner).unwrap_or_default(),
            params,
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
            pagination: pagination?,
        })
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

    fn pagination(&mut self, raw: Spanned<RawPagination>, at: &str) -> Option<Pagination> {
        let at = format!("{at}.pagination");
        let style = raw.get_ref().style.get_ref().clone();
        let r = raw.get_ref();
        let keys: [(&str, Option<std::ops::Range<usize>>); 10] = [
            ("token_path", r.token_path.as_ref().map(Spanned::span)),
            ("token_param", r.token_param.as_ref().map(Spanned::span)),
            ("next_url_path", r.next_url_path.as_ref().map(Spanned::span)),
            ("link_header", r.link_header.as_ref().map(Spanned::span)),
            ("updated_param", r.updated_param.as_ref().map(Spanned::span)),
            ("id_param", r.id_param.as_ref().map(Spanned::span)),
            ("offset_param", r.offset_param.as_ref().map(Spanned::span)),
            ("page_param", r.page_param.as_ref().map(Spanned::span)),
            ("first_page", r.first_page.as_ref().map(Spanned::span)),
            ("overlap", r.overlap.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match style.as_str() {
            "cursor" => &["token_path", "token_param"],
            "next_url" => &["next_url_path", "link_header"],
            "keyset" => &["updated_param", "id_param"],
            "offset" => &["offset_param", "overlap"],
            "page" => &["page_param", "first_page", "overlap"],
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
        let pagination = match style.as_str() {
            "cursor" => Pagination::Cursor {
                token_path: path_or(r.token_path.as_ref(), "next_cursor"),
                token_param: string_or(r.token_param.as_ref(), "cursor"),
            },
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
                overlap: overlap?,
            },
            _ => {
                let first_page = match r.first_page.as_ref() {
                    None => Some(1),
                    Some(n) => self
                        .count(n, &format!("{at}.first_page"), 0, 1)
                        .map(u64::from),
                };
                Pagination::Page {
                    page_param: string_or(r.page_param.as_ref(), "page"),
                    first_page: first_page?,
                    overlap: overlap?,
                }
            }
        };
        ok.then_some(pagination)
    }

    #[allow(clippy::too_many_arguments)] // one argument per shared key of the table
    fn http(
        &mut self,
        base_url: &Spanned<String>,
        headers: &BTreeMap<String, Spanned<String>>,
        auth: Option<&Spanned<RawAuth>>,
        timeout: Option<&Spanned<String>>,
        rate_limit: Option<&Spanned<f64>>,
        error_path: Option<&Spanned<String>>,
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
        Some(HttpSpec {
            base_url: url?,
            headers: header_list,
            auth: auth?,
            timeout: timeout?,
            rate_limit,
            error_path: error_path.map(|p| FieldPath::parse(p.get_ref())),
        })
    }

    fn auth(&mut self, raw: &Spanned<RawAuth>, at: &str) -> Option<AuthSpec> {
        let r = raw.get_ref();
        let kind = r.kind.get_ref().as_str();
        let fields: [(&str, Option<&Spanned<String>>); 10] = [
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
        ];
        let (allowed, required): (&[&str], &[&str]) = match kind {
            "none" => (&[], &[]),
            "bearer" => (&["token"], &["token"]),
            "basic" => (&["username", "password"], &["username", "password"]),
            "api_key" => (&["key", "header", "query_param"], &["key"]),
            "oauth2" => (
                &["token_url", "client_id", "client_secret", "scope"],
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
        let mut take = |key: &str| values.remove(key).unwrap_or_default();
        Some(match kind {
            "none" => AuthSpec::None,
            "bearer" => AuthSpec::Bearer {
                token: Secret::new(take("token")),
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
                AuthSpec::OAuth2 {
                    token_url,
                    client_id: take("client_id"),
                    client_secret: Secret::new(take("client_secret")),
                    scope: (!scope.is_empty()).then_some(scope),
                }
            }
        })
    }

    fn mapping(
        &mut self,
        raw: Option<Spanned<RawMapping>>,
        source: Option<&SourceSpec>,
        at: &str,
    ) -> Option<MappingSpec> {
        let at = format!("{at}.mapping");
        let raw = raw.map(Spanned::into_inner).unwrap_or_default();
        let default_id = source.map_or_else(|| "id".to_owned(), |s| s.id_field.to_string());
        let external_id = match raw.external_id.as_ref() {
            None => parse_template(&format!("{{{default_id}}}")).ok(),
            Some(t) => match parse_template(t.get_ref()) {
                Ok(template)
                    if template
                        .parts
                        .iter()
                        .any(|p| matches!(p, TemplatePart::Field(_))) =>
                {
                    Some(template)
                }
                Ok(_) => {
                    self.problem(
                        t,
                        format!("{at}.external_id"),
                        "expected a template naming at least one source field, like \"inv-{id}\"",
                    );
                    None
                }
                Err(message) => {
                    self.problem(t, format!("{at}.external_id"), message);
                    None
                }
            },
        };
        let mut fields = Vec::new();
        for (out, src) in &raw.fields {
            if out.is_empty() || src.get_ref().is_empty() || out.split('.').any(str::is_empty) {
                self.problem(
                    src,
                    format!("{at}.fields.{out}"),
                    "expected a dotted field path",
                );
                continue;
            }
            fields.push((FieldPath::parse(out), FieldPath::parse(src.get_ref())));
        }
        let mut constants = Vec::new();
        for (out, value) in &raw.constants {
            if let Some(message) = not_json(value.get_ref()) {
                self.problem(value, format!("{at}.constants.{out}"), message);
                continue;
            }
            match serde_json::to_value(value.get_ref()) {
                Ok(v) => constants.push((FieldPath::parse(out), v)),
                Err(_) => self.problem(
                    value,
                    format!("{at}.constants.{out}"),
                    "expected a JSON-compatible value",
                ),
            }
        }
        let mut required = Vec::new();
        for (out, kind) in &raw.required {
            let json_type = match kind.get_ref().as_str() {
                "string" => JsonType::String,
                "integer" => JsonType::Integer,
                "number" => JsonType::Number,
                "boolean" => JsonType::Boolean,
                "object" => JsonType::Object,
                "array" => JsonType::Array,
                _ => {
                    self.problem(
                        kind,
                        format!("{at}.required.{out}"),
                        "expected one of \"string\", \"integer\", \"number\", \"boolean\", \"object\", \"array\"",
                    );
                    continue;
                }
            };
            required.push((FieldPath::parse(out), json_type));
        }
        Some(MappingSpec {
            external_id: external_id?,
            fields,
            constants,
            required,
        })
    }

    fn destination(
        &mut self,
        raw: Spanned<RawDestination>,
        base_dir: &Path,
        at: &str,
    ) -> Option<DestinationSpec> {
        let at = format!("{at}.destination");
        let r = raw.get_ref();
        let http_only: [(&str, Option<std::ops::Range<usize>>); 21] = [
            ("base_url", r.base_url.as_ref().map(Spanned::span)),
            ("mode", r.mode.as_ref().map(Spanned::span)),
            ("auth", r.auth.as_ref().map(Spanned::span)),
            ("timeout", r.timeout.as_ref().map(Spanned::span)),
            ("rate_limit", r.rate_limit.as_ref().map(Spanned::span)),
            ("error_path", r.error_path.as_ref().map(Spanned::span)),
            ("concurrency", r.concurrency.as_ref().map(Spanned::span)),
            ("dest_id_field", r.dest_id_field.as_ref().map(Spanned::span)),
            ("path", r.path.as_ref().map(Spanned::span)),
            ("method", r.method.as_ref().map(Spanned::span)),
            (
                "idempotency_header",
                r.idempotency_header.as_ref().map(Spanned::span),
            ),
            ("lookup_path", r.lookup_path.as_ref().map(Spanned::span)),
            ("lookup_param", r.lookup_param.as_ref().map(Spanned::span)),
            (
                "lookup_results_path",
                r.lookup_results_path.as_ref().map(Spanned::span),
            ),
            ("create_path", r.create_path.as_ref().map(Spanned::span)),
            ("update_path", r.update_path.as_ref().map(Spanned::span)),
            ("update_method", r.update_method.as_ref().map(Spanned::span)),
            (
                "version_header",
                r.version_header.as_ref().map(Spanned::span),
            ),
            (
                "late_write_window",
                r.late_write_window.as_ref().map(Spanned::span),
            ),
            ("read_path", r.read_path.as_ref().map(Spanned::span)),
            (
                "read_results_path",
                r.read_results_path.as_ref().map(Spanned::span),
            ),
        ];
        match r.kind.get_ref().as_str() {
            "jsonl" => {
                let mut ok = true;
                for (key, span) in http_only.iter().cloned() {
                    if let Some(span) = span {
                        self.problem(
                            &Spanned::new(span, ()),
                            format!("{at}.{key}"),
                            "does not apply to type = \"jsonl\"",
                        );
                        ok = false;
                    }
                }
                if !r.headers.is_empty() {
                    self.problem(
                        &raw,
                        format!("{at}.headers"),
                        "does not apply to type = \"jsonl\"",
                    );
                    ok = false;
                }
                let Some(file) = r.file.as_ref() else {
                    self.problem(&raw, at, "type = \"jsonl\" needs `file`");
                    return None;
                };
                let file = self.string(file, &format!("{at}.file"))?;
                ok.then(|| {
                    DestinationSpec::JsonLines(JsonLinesSpec {
                        path: base_dir.join(file),
                        external_id_field: r
                            .external_id_field
                            .as_ref()
                            .map_or_else(|| "external_id".to_owned(), |f| f.get_ref().clone()),
                    })
                })
            }
            "http" => self.http_destination(&raw, http_only, &at),
            _ => {
                self.problem(
                    &r.kind,
                    format!("{at}.type"),
                    "expected \"http\" or \"jsonl\"",
                );
                None
            }
        }
    }

    fn http_destination(
        &mut self,
        raw: &Spanned<RawDestination>,
        keys: [(&str, Option<std::ops::Range<usize>>); 21],
        at: &str,
    ) -> Option<DestinationSpec> {
        let r = raw.get_ref();
        if let Some(file) = &r.file {
            self.problem(
                file,
                format!("{at}.file"),
                "does not apply to type = \"http\"",
            );
            return None;
        }
        let Some(base_url) = r.base_url.as_ref() else {
            self.problem(raw, at, "type = \"http\" needs `base_url`");
            return None;
        };
        let Some(mode) = r.mode.as_ref() else {
            self.problem(
                raw,
                at,
                "type = \"http\" needs `mode` (\"put\", \"lookup\" or \"post\")",
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
                "create_path",
                "update_path",
                "update_method",
            ],
            _ => {
                self.problem(
                    mode,
                    format!("{at}.mode"),
                    "expected \"put\", \"lookup\" or \"post\"",
                );
                return None;
            }
        };
        let mode_specific = [
            "path",
            "method",
            "idempotency_header",
            "read_path",
            "read_results_path",
            "lookup_path",
            "lookup_param",
            "lookup_results_path",
            "create_path",
            "update_path",
            "update_method",
        ];
        let mut ok = true;
        for (key, span) in keys {
            if let Some(span) = span
                && mode_specific.contains(&key)
                && !mode_keys.contains(&key)
            {
                self.problem(
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
        let http = self.http(
            base_url,
            &r.headers,
            r.auth.as_ref(),
            r.timeout.as_ref(),
            r.rate_limit.as_ref(),
            r.error_path.as_ref(),
            at,
        );
        let concurrency = match r.concurrency.as_ref() {
            None => Some(8),
            Some(n) => self
                .count(n, &format!("{at}.concurrency"), 1, 256)
                .map(|n| n as usize),
        };
        let mode = self.write_mode(raw, mode_name, at);
        // A create whose outcome is unknown is resolved by looking the record up
        // again, and a POST's answer is matched by it: both need the field.
        if r.external_id_field.is_none() && matches!(mode_name, "lookup" | "post") {
            self.problem(
                raw,
                at,
                format!(
                    "mode = {mode_name:?} needs `external_id_field` (the field of a destination object that holds the external id)"
                ),
            );
            ok = false;
        }
        let version_header = r.version_header.as_ref().and_then(|h| {
            let parsed = HeaderName::from_str(h.get_ref()).ok();
            if parsed.is_none() {
                self.problem(
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
            .map(|d| self.duration(d, &format!("{at}.late_write_window")));
        if let Some(path) = &r.read_path
            && !path.get_ref().contains("{external_id}")
        {
            self.problem(
                path,
                format!("{at}.read_path"),
                "expected a path containing {external_id}",
            );
            ok = false;
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
            self.problem(
                results,
                format!("{at}.read_results_path"),
                "needs `read_path`",
            );
            return None;
        }
        Some(DestinationSpec::Http(HttpDestinationSpec {
            http,
            mode: mode?,
            version_header,
            late_write_window,
            read,
            external_id_field: r.external_id_field.as_ref().map(|f| f.get_ref().clone()),
            dest_id_field: match (&r.dest_id_field, mode_name) {
                (Some(field), _) => Some(FieldPath::parse(field.get_ref())),
                (None, "lookup") => Some(FieldPath::parse("id")),
                (None, _) => None,
            },
            concurrency: concurrency?,
        }))
    }

    fn write_mode(
        &mut self,
        raw: &Spanned<RawDestination>,
        mode: &str,
        at: &str,
    ) -> Option<WriteMode> {
        let r = raw.get_ref();
        let need = |v: &mut Self,
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
                let path = need(self, &r.path, "path", Some("{external_id}"));
                let method = self.method(r.method.as_ref(), Method::PUT, &format!("{at}.method"));
                Some(WriteMode::Put {
                    path: path?,
                    method: method?,
                })
            }
            "post" => {
                let path = need(self, &r.path, "path", None);
                let header = r.idempotency_header.as_ref().map_or(
                    Some(HeaderName::from_static("idempotency-key")),
                    |h| {
                        let parsed = HeaderName::from_str(h.get_ref()).ok();
                        if parsed.is_none() {
                            self.problem(
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
                let lookup_path = need(self, &r.lookup_path, "lookup_path", None);
                let create_path = need(self, &r.create_path, "create_path", None);
                let update_path = need(self, &r.update_path, "update_path", Some("{dest_id}"));
                let update_method = self.method(
                    r.update_method.as_ref(),
                    Method::PATCH,
                    &format!("{at}.update_method"),
                );
                let lookup_param = r.lookup_param.as_ref().map(|p| p.get_ref().clone());
                if let Some(path) = &lookup_path
                    && lookup_param.is_none()
                    && !path.0.contains("{external_id}")
                {
                    self.problem(
                        raw,
                        at,
                        "mode = \"lookup\" needs `lookup_param`, or {external_id} in `lookup_path`",
                    );
                    return None;
                }
                Some(WriteMode::Lookup {
                    lookup_path: lookup_path?,
                    lookup_param,
                    results_path: path_or(r.lookup_results_path.as_ref(), "data"),
                    create_path: create_path?,
                    update_path: update_path?,
                    update_method: update_method?,
                })
            }
        }
    }

    fn retry(&mut self, raw: Option<Spanned<RawRetry>>, at: &str) -> RetryPolicy {
        let at = format!("{at}.retry");
        let defaults = RetryPolicy::default();
        let Some(raw) = raw.map(Spanned::into_inner) else {
            return defaults;
        };
        let base = self.duration_or(raw.base.as_ref(), &format!("{at}.base"), defaults.base);
        let cap = self.duration_or(raw.cap.as_ref(), &format!("{at}.cap"), defaults.cap);
        let max_attempts = match raw.max_attempts.as_ref() {
            None => Some(defaults.max_attempts),
            Some(n) => self.count(n, &format!("{at}.max_attempts"), 1, 100),
        };
        RetryPolicy {
            base: base.unwrap_or(defaults.base),
            cap: cap.unwrap_or(defaults.cap),
            max_attempts: max_attempts.unwrap_or(defaults.max_attempts),
        }
    }

    fn budgets(&mut self, raw: Option<Spanned<RawBudgets>>, at: &str) -> BudgetSpec {
        let at = format!("{at}.budgets");
        let defaults = BudgetSpec::default();
        let Some(raw) = raw.map(Spanned::into_inner) else {
            return defaults;
        };
        let max_runtime = raw
            .max_runtime
            .as_ref()
            .and_then(|d| self.duration(d, &format!("{at}.max_runtime")));
        let max_pages = raw
            .max_pages
            .as_ref()
            .and_then(|n| self.count(n, &format!("{at}.max_pages"), 1, u32::MAX))
            .map(u64::from);
        let dead_letter_ratio = match raw.dead_letter_ratio.as_ref() {
            Some(r) if !(0.0..=1.0).contains(r.get_ref()) => {
                self.problem(
                    r,
                    format!("{at}.dead_letter_ratio"),
                    "expected a share between 0.0 and 1.0",
                );
                defaults.dead_letter_ratio
            }
            Some(r) => *r.get_ref(),
            None => defaults.dead_letter_ratio,
        };
        let dead_letter_window = match raw.dead_letter_window.as_ref() {
            Some(n) => self
                .count(n, &format!("{at}.dead_letter_window"), 1, 1_000_000)
                .map_or(defaults.dead_letter_window, |n| n as usize),
            None => defaults.dead_letter_window,
        };
        BudgetSpec {
            max_runtime,
            max_pages,
            dead_letter_ratio,
            dead_letter_window,
        }
    }

    fn method(
        &mut self,
        raw: Option<&Spanned<String>>,
        default: Method,
        key: &str,
    ) -> Option<Method> {
        let Some(raw) = raw else {
            return Some(default);
        };
        match raw.get_ref().to_ascii_uppercase().as_str() {
            "PUT" => Some(Method::PUT),
            "PATCH" => Some(Method::PATCH),
            "POST" => Some(Method::POST),
            _ => {
                self.problem(raw, key, "expected \"PUT\", \"PATCH\" or \"POST\"");
                None
            }
        }
    }

    fn url(&mut self, raw: &Spanned<String>, key: &str) -> Option<Url> {
        let text = self.string(raw, key)?;
        match Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                self.problem(
                    raw,
                    key,
                    "expected an absolute http(s) URL, like \"https://api.example.com\"",
                );
                None
            }
        }
    }

    /// The value with `${VAR}` replaced from the environment.
    fn string(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
        match interpolate(raw.get_ref(), self.env) {
            Ok(value) => Some(value),
            Err(message) => {
                self.problem(raw, key, message);
                None
            }
        }
    }

    fn duration(&mut self, raw: &Spanned<String>, key: &str) -> Option<Duration> {
        let parsed = raw
            .get_ref()
            .parse::<SignedDuration>()
            .ok()
            .and_then(|d| Duration::try_from(d).ok());
        if parsed.is_none() {
            self.problem(
                raw,
                key,
                "expected a duration like \"500ms\", \"30s\", \"5m\" or \"1h\"",
            );
        }
        parsed
    }

    fn duration_or(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        match raw {
            None => Some(default),
            Some(raw) => self.duration(raw, key),
        }
    }

    fn count(&mut self, raw: &Spanned<i64>, key: &str, min: u32, max: u32) -> Option<u32> {
        let n = *raw.get_ref();
        if n < i64::from(min) || n > i64::from(max) {
            self.problem(
                raw,
                key,
                format!("expected a whole number from {min} to {max}"),
            );
            return None;
        }
        u32::try_from(n).ok()
    }
}

fn path_or(raw: Option<&Spanned<String>>, default: &str) -> FieldPath {
    FieldPath::parse(raw.map_or(default, |p| p.get_ref().as_str()))
}

fn string_or(raw: Option<&Spanned<String>>, default: &str) -> String {
    raw.map_or_else(|| default.to_owned(), |p| p.get_ref().clone())
}

/// The key toml gives a date or time when it hands one to serde.
const TOML_DATETIME: &str = "$__toml_private_datetime";

/// No key takes a TOML date or time: timestamps are RFC 3339 strings.
const DATETIME_REFUSED: &str = "a date or time is not accepted here (in quotes it is a string)";

fn is_datetime(value_text: &str) -> bool {
    value_text.trim().parse::<toml::value::Datetime>().is_ok()
}

/// Why a TOML value cannot be sent as JSON as written, if it cannot: serde
/// would turn a date into a table with a private key and nan or inf into null.
fn not_json(value: &toml::Value) -> Option<&'static str> {
    match value {
        toml::Value::Datetime(_) => Some(DATETIME_REFUSED),
        toml::Value::Float(f) if !f.is_finite() => Some("nan and inf have no JSON form"),
        toml::Value::Array(items) => items.iter().find_map(not_json),
        toml::Value::Table(table) => table.values().find_map(not_json),
        _ => None,
    }
}

/// Rewords serde's messages for people writing a config file: keys, not fields,
/// and TOML's names for types (table, array, integer), not Rust's (struct
/// RawAuth, map, sequence, i64).
fn describe_serde_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key {rest}");
    }
    // "invalid type: <what was found>, expected <what the struct wants>"; what
    // was found may quote the file, so only its type name is reworded.
    let Some((found, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    // toml reads an integer past i64 as an i128.
    let (found, too_large) = match found.strip_suffix(" as i128") {
        Some(found) => (found, true),
        None => (found, false),
    };
    if too_large && expected == "i64" {
        let number = found.strip_prefix("invalid type: ").unwrap_or(found);
        return format!("{number} is out of range");
    }
    let found = match found {
        "invalid type: map" => "invalid type: table",
        "invalid type: sequence" => "invalid type: array",
        found => found,
    };
    let expected = match expected {
        "a map" => "a table",
        "a sequence" => "an array",
        "i64" => "an integer",
        "f64" => "a number",
        expected if expected.starts_with("struct ") => "a table",
        expected => expected,
    };
    format!("{found}, expected {expected}")
}

/// Replaces `${NAME}` with the environment variable's value; `$$` is a literal `$`.
/// Errors name the variable, never a value.
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err("unterminated ${ — expected ${NAME}".to_owned());
            };
            let name = &tail[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid variable name in ${{{name}}}"));
            }
            match env(name) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `"inv-{id}"` into literal and field parts.
pub fn parse_template(text: &str) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Literal(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err("unterminated { in template".to_owned());
        };
        let field = &rest[open + 1..open + close];
        if field.is_empty() || field.split('.').any(str::is_empty) {
            return Err(format!("{{{field}}} is not a field path"));
        }
        parts.push(TemplatePart::Field(FieldPath::parse(field)));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest.to_owned()));
    }
    Ok(Template { parts })
}

#[cfg(test)]
mod tests;
