//! Owns the config file: raw TOML → validated [`Config`] in two stages (`raw` mirrors
//! the file, this module checks it and builds `spec`; `source`, `mapping` and
//! `deletes` check their tables, and each destination's folder under `sink/`
//! its own `[sync.destination]`, read once its `type` is known). `highwater validate` is exactly
//! [`parse`].
//! Invariant: pure — no IO besides [`load`] reading the file; environment variables
//! come in through a lookup function. Secrets never appear in a [`ConfigError`].

mod deletes;
mod mapping;
mod operating;
mod raw;
mod source;
pub mod spec;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;
use url::Url;

use crate::policy::RetryPolicy;
use crate::record::FieldPath;
use crate::secret::Secret;
use raw::*;
pub(crate) use raw::{RawAuth, S};
pub use spec::*;
pub(crate) use values::path_or;
use values::string_or;
pub use values::{interpolate, parse_long_duration, parse_template};

/// One step from the root of the file to a table: a key, or an item of an array
/// of tables.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TablePath<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for TablePath<'a> {
    fn from(key: &'a str) -> Self {
        TablePath::Key(key)
    }
}

impl From<usize> for TablePath<'_> {
    fn from(index: usize) -> Self {
        TablePath::Index(index)
    }
}

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
/// The schema a PostgreSQL state store's tables live in when `[state] schema`
/// is not given.
pub const DEFAULT_STATE_SCHEMA: &str = "highwater";
/// How long a lease of a sync's runs lasts from its last renewal when `[state]
/// lease` is not given.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Ledger rows a run stages between merges when `[state] merge_rows` is not given.
/// Until a merge is durable the run keeps those rows in memory (a few hundred
/// bytes each), since lookups read only the merged ledger. A merge writes a
/// run of its rows and, now and then, folds runs of like size together
/// (`state/sqlite/ledger.rs`): its cost no longer grows with the ledger, and
/// fewer rows in memory cost less than fewer merges. At 1,000,000 records
/// (`benches/db.rs`, medians of three rounds), 2,000 against 20,000 ran at
/// 0.88 against 0.81 of the plain loader into PostgreSQL and 0.91 against
/// 0.82 into SQLite, at 68 and 79 against 87 and 90 MiB of peak RSS; at
/// 100,000, 1,000 and 500 ran no faster than 2,000 (500 slower into SQLite:
/// 0.76 against 0.83).
pub const DEFAULT_MERGE_ROWS: usize = 2_000;
/// How long what happened to each record is kept for `explain` when `[state]
/// event_retention` is not given.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How far each run reaches back before the last run's watermark when `lookback`
/// is not given. Without an overlap, a record the API stamps before a watermark but
/// makes visible only after it (a slow transaction, a lagging replica) is never
/// read; re-reading a few minutes costs little, since the ledger skips what is
/// unchanged.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(5 * 60);

/// Reads and validates a config file, taking `${VAR}` values from the process
/// environment.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    parse(&read(file)?, file, &|name| std::env::var(name).ok())
}

/// Reads a config file's `[state]` and the names of its syncs, validating
/// those alone: see [`parse_state`].
pub fn load_state(file: &Path) -> Result<StateFile, ConfigError> {
    parse_state(&read(file)?, file, &|name| std::env::var(name).ok())
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError {
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
    })
}

/// Validates config text. `file` is used for messages and to resolve relative paths;
/// `env` resolves `${VAR}`.
pub fn parse(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    validated(text, file, env, |v, raw, base_dir| {
        let mut config = v.file(raw, file, base_dir);
        config.warnings = std::mem::take(&mut v.warnings);
        config
    })
}

/// What the commands that only read or tend the state store need of a config
/// file: the store, and the names of the syncs whose state it holds. The
/// syncs' values are not validated, nor their `${VAR}` secrets read: an
/// operator looks at a store without the credentials of the APIs it syncs.
/// The file must still be TOML of the config's shape, without unknown keys,
/// and `[state]` valid, variables included.
pub fn parse_state(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StateFile, ConfigError> {
    validated(text, file, env, |v, raw, base_dir| {
        let state = v.state(raw.state.as_ref(), base_dir);
        let mut names = Names::default();
        let syncs = raw
            .sync
            .iter()
            .filter(|sync| names.first(v, sync))
            .map(|sync| sync.get_ref().name.get_ref().clone())
            .collect();
        StateFile {
            file: file.to_path_buf(),
            state,
            syncs,
        }
    })
}

/// The file's text read as TOML of the config's shape, then `build` from it
/// (given the directory relative paths start from): what it built, or every
/// problem found on the way.
fn validated<T>(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    build: impl FnOnce(&mut Validator<'_>, RawFile, &Path) -> T,
) -> Result<T, ConfigError> {
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
    let raw = v.deserialize().map_err(fail)?;
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let built = build(&mut v, raw, &base_dir);
    match v.problems.is_empty() {
        true => Ok(built),
        false => Err(fail(v.problems)),
    }
}

/// Problems of the file's shape named at most, one `validate` at a time.
const SHAPE_PROBLEMS: usize = 20;

/// Takes out of `root` the key at `path` (as serde names it, spans and all),
/// so that the rest of the file can be read; false when the path leads to no
/// key of a table (an element of an array is never taken: the syncs'
/// numbers would move).
fn take_out(
    root: &mut Spanned<toml::de::DeValue<'_>>,
    path: &[serde_path_to_error::Segment],
) -> bool {
    use serde_path_to_error::Segment;
    let steps: Vec<&Segment> = path
        .iter()
        .filter(
            |s| !matches!(s, Segment::Map { key } if key.starts_with("$__serde_spanned_private")),
        )
        .collect();
    let Some((last, before)) = steps.split_last() else {
        return false;
    };
    let mut at = root;
    for step in before {
        at = match (step, at.get_mut()) {
            (Segment::Map { key }, toml::de::DeValue::Table(table)) => {
                match table.iter_mut().find(|(k, _)| k.get_ref() == key) {
                    Some((_, value)) => value,
                    None => return false,
                }
            }
            (Segment::Seq { index }, toml::de::DeValue::Array(array)) => {
                match array.get_mut(*index) {
                    Some(value) => value,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    match (last, at.get_mut()) {
        (Segment::Map { key }, toml::de::DeValue::Table(table)) => {
            let found = table.keys().find(|k| k.get_ref() == key).cloned();
            found.is_some_and(|k| table.remove(&k).is_some())
        }
        _ => false,
    }
}

/// The names of the syncs read so far, each with its line.
#[derive(Default)]
struct Names(BTreeMap<String, usize>);

impl Names {
    /// Whether `sync` is the first of its name; a problem when it is not.
    fn first(&mut self, v: &mut Validator<'_>, sync: &Spanned<RawSync>) -> bool {
        let name = sync.get_ref().name.get_ref();
        if let Some(first_line) = self.0.get(name) {
            let message = format!("sync {name:?} is defined twice (first at line {first_line})");
            v.problem(&sync.get_ref().name, "sync.name", message);
            return false;
        }
        self.0.insert(name.clone(), v.line(sync.span().start));
        true
    }
}

pub(crate) struct Validator<'a> {
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Validator<'_> {
    /// The file read into its raw shape, or every problem of that shape: a
    /// key of the wrong type, or unknown, is taken out and the file read
    /// again, so that one `validate` names them all (up to
    /// `SHAPE_PROBLEMS`); the checks of the values follow once the shape
    /// is right.
    fn deserialize(&self) -> Result<RawFile, Vec<Problem>> {
        let root = toml::de::DeTable::parse(self.text).map_err(|e| {
            vec![Problem {
                line: Some(self.line(e.span().map_or(0, |s| s.start))),
                key: String::new(),
                message: format!("invalid TOML: {}", e.message()),
            }]
        })?;
        let span = root.span();
        let mut value = Spanned::new(span, toml::de::DeValue::Table(root.into_inner()));
        let mut problems: Vec<Problem> = Vec::new();
        loop {
            let de = toml::de::ValueDeserializer::from(value.clone());
            let e = match serde_path_to_error::deserialize(de) {
                Ok(raw) if problems.is_empty() => return Ok(raw),
                Ok(_) => break,
                Err(e) => e,
            };
            // A key missing because one of the wrong type was taken out is
            // no problem of the file's.
            if !problems.is_empty() && e.inner().message().starts_with("missing field") {
                break;
            }
            let path: Vec<serde_path_to_error::Segment> = e.path().iter().cloned().collect();
            problems.push(self.serde_problem(e, ""));
            if problems.len() >= SHAPE_PROBLEMS || !take_out(&mut value, &path) {
                break;
            }
        }
        problems.sort_by_key(|p| p.line);
        Err(problems)
    }

    /// A table of the file read on its own, with the file's spans: one whose
    /// keys depend on another key's value, as a destination's on its `type`.
    /// `path` leads from the root to it; a problem is recorded, not returned.
    pub(crate) fn table<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &[TablePath<'_>],
    ) -> Option<Spanned<T>> {
        let root = toml::de::DeTable::parse(self.text).ok()?;
        let span = root.span();
        let mut value = Spanned::new(span, toml::de::DeValue::Table(root.into_inner()));
        let mut prefix = String::new();
        for step in path {
            let next = match step {
                TablePath::Key(key) => {
                    prefix.push_str(&format!(
                        "{}{key}",
                        if prefix.is_empty() { "" } else { "." }
                    ));
                    value.get_ref().get(*key)
                }
                TablePath::Index(i) => {
                    prefix.push_str(&format!("[{i}]"));
                    value.get_ref().get(*i)
                }
            };
            value = next?.clone();
        }
        let de = toml::de::ValueDeserializer::from(value);
        match serde_path_to_error::deserialize(de) {
            Ok(table) => Some(table),
            Err(e) => {
                let problem = self.serde_problem(e, &prefix);
                self.problems.push(problem);
                None
            }
        }
    }

    /// A serde error as a problem: its key in the file's words (`prefix` leads
    /// to where deserializing began), its line, and a message saying what the
    /// file should hold.
    fn serde_problem(
        &self,
        e: serde_path_to_error::Error<toml::de::Error>,
        prefix: &str,
    ) -> Problem {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") => prefix.to_owned(),
            (false, _) => format!("{prefix}.{inner}"),
        };
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
            .replace("$__serde_spanned_private_value", "")
            .replace(&format!(".{TOML_DATETIME}"), "");
        let path = self.readable_path(path.trim_end_matches('.'));
        Problem {
            line: Some(self.line(span.map_or(0, |s| s.start))),
            key: path,
            message,
        }
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

    pub(crate) fn problem<T>(
        &mut self,
        at: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let problem = self.located(at, key.into(), message.into());
        self.problems.push(problem);
    }

    pub(crate) fn warning<T>(
        &mut self,
        at: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let warning = self.located(at, key.into(), message.into());
        self.warnings.push(warning);
    }

    /// `value` as the JSON it will be sent as, or a problem at `key` saying
    /// why it has none.
    /// Words a reason is searched for: none empty, which every reason holds.
    pub(crate) fn words(&mut self, words: &S<Vec<S<String>>>, key: &str) -> Vec<String> {
        let mut kept = Vec::new();
        for word in words.get_ref() {
            if word.get_ref().trim().is_empty() {
                self.problem(word, key, "an empty entry would match every reason");
            } else {
                kept.push(word.get_ref().clone());
            }
        }
        kept
    }

    pub(crate) fn json(
        &mut self,
        value: &S<toml::Value>,
        key: String,
    ) -> Option<serde_json::Value> {
        if let Some(message) = not_json(value.get_ref()) {
            self.problem(value, key, message);
            return None;
        }
        let json = serde_json::to_value(value.get_ref()).ok();
        if json.is_none() {
            self.problem(value, key, "expected a JSON-compatible value");
        }
        json
    }

    fn located<T>(&self, at: &Spanned<T>, key: String, message: String) -> Problem {
        Problem {
            line: Some(self.line(at.span().start)),
            key,
            message,
        }
    }

    fn file(&mut self, raw: RawFile, file: &Path, base_dir: &Path) -> Config {
        let state = self.state(raw.state.as_ref(), base_dir);
        let mut syncs: Vec<SyncSpec> = Vec::new();
        let mut names = Names::default();
        for (index, sync) in raw.sync.into_iter().enumerate() {
            if !names.first(self, &sync) {
                continue;
            }
            if let Some(spec) = self.sync(sync.into_inner(), index, base_dir, &state.store) {
                syncs.push(spec);
            }
        }
        Config {
            file: file.to_path_buf(),
            state,
            syncs,
            warnings: Vec::new(),
        }
    }

    /// `[state]`, each key's default where it is not given.
    fn state(&mut self, raw: Option<&Spanned<RawState>>, base_dir: &Path) -> StateSpec {
        let store = self.store_location(raw, base_dir);
        let lease = match raw.and_then(|s| s.get_ref().lease.as_ref()) {
            Some(text) => self.duration(text, "state.lease").unwrap_or(DEFAULT_LEASE),
            None => DEFAULT_LEASE,
        };
        let merge_rows = match raw.and_then(|s| s.get_ref().merge_rows.as_ref()) {
            Some(rows) => self
                .count(rows, "state.merge_rows", 500, 10_000_000)
                .map_or(DEFAULT_MERGE_ROWS, |n| n as usize),
            None => DEFAULT_MERGE_ROWS,
        };
        // A sync's first run once skipped the lookups of ids it had not read;
        // it looks every id up now, as fast with either store, so a config
        // that still sets the key runs as before, told the key does nothing.
        if let Some(ids) = raw.and_then(|s| s.get_ref().first_run_ids.as_ref()) {
            self.warning(
                ids,
                "state.first_run_ids",
                "no longer has an effect: every run looks its ids up in the ledger; remove it",
            );
        }
        let event_retention = match raw.and_then(|s| s.get_ref().event_retention.as_ref()) {
            Some(text) => self
                .long_duration(text, "state.event_retention")
                .unwrap_or(DEFAULT_EVENT_RETENTION),
            None => DEFAULT_EVENT_RETENTION,
        };
        StateSpec {
            store,
            lease,
            merge_rows,
            event_retention,
        }
    }

    /// `[state]`: a file (`path`, the default) or a PostgreSQL schema (`url`
    /// and `schema`), not both.
    fn store_location(
        &mut self,
        raw: Option<&Spanned<RawState>>,
        base_dir: &Path,
    ) -> StoreLocation {
        let file = |path: &str| StoreLocation::File(base_dir.join(path));
        let Some(state) = raw else {
            return file(DEFAULT_STATE_PATH);
        };
        let r = state.get_ref();
        match (&r.path, &r.url) {
            (Some(path), Some(_)) => {
                self.problem(
                    path,
                    "state.path",
                    "give either `path` (a SQLite file) or `url` (a PostgreSQL database), not both",
                );
                file(DEFAULT_STATE_PATH)
            }
            (Some(path), None) => {
                if let Some(schema) = &r.schema {
                    self.problem(
                        schema,
                        "state.schema",
                        "`schema` is for a PostgreSQL store (`url`)",
                    );
                }
                file(&self.string(path, "state.path").unwrap_or_default())
            }
            (None, Some(url)) => {
                let text = self.string(url, "state.url").unwrap_or_default();
                let parses = (text.starts_with("postgres://") || text.starts_with("postgresql://"))
                    && Url::parse(&text).is_ok();
                if !parses {
                    self.problem(
                        url,
                        "state.url",
                        "expected a PostgreSQL URL, like \"postgres://user:${PGPASSWORD}@host:5432/database\"",
                    );
                }
                let schema = match &r.schema {
                    Some(schema) => {
                        let ok = !schema.get_ref().is_empty()
                            && schema.get_ref().len() <= 63
                            && schema
                                .get_ref()
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !schema.get_ref().starts_with(|c: char| c.is_ascii_digit());
                        if !ok {
                            self.problem(
                                schema,
                                "state.schema",
                                "expected a schema name of letters, digits and `_` (not first), up to 63",
                            );
                        }
                        schema.get_ref().clone()
                    }
                    None => DEFAULT_STATE_SCHEMA.to_owned(),
                };
                StoreLocation::Postgres {
                    url: Secret::new(text),
                    schema,
                }
            }
            (None, None) => {
                if let Some(schema) = &r.schema {
                    self.problem(
                        schema,
                        "state.schema",
                        "`schema` is for a PostgreSQL store (`url`)",
                    );
                }
                file(DEFAULT_STATE_PATH)
            }
        }
    }

    fn sync(
        &mut self,
        raw: RawSync,
        index: usize,
        base_dir: &Path,
        state: &StoreLocation,
    ) -> Option<SyncSpec> {
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
        let soft_delete = raw
            .deletes
            .as_ref()
            .and_then(|d| d.get_ref().soft_delete.as_ref())
            .map(|fields| {
                fields
                    .get_ref()
                    .iter()
                    .filter_map(|(field, value)| {
                        let first = FieldPath::parse(field).segments().first()?.clone();
                        let nested = field.contains('.');
                        let kind = if nested {
                            None
                        } else {
                            crate::sink::table::config::toml_type(value.get_ref())
                        };
                        Some((first, kind))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let context = crate::sink::DestinationContext {
            base_dir,
            state,
            mapping: mapping.as_ref(),
            soft_delete,
        };
        let kind = &raw.destination.get_ref().kind;
        let destination = DestinationSpec::validate(self, kind, index, &context, &at);
        let retry = self.retry(raw.retry, &at);
        let budgets = self.budgets(raw.budgets, &at);
        let schedule = match raw.schedule {
            None => Some(None),
            Some(schedule) => self.schedule(&schedule, &at).map(Some),
        };
        let alerts = match raw.alerts {
            None => Some(None),
            Some(alerts) => self.alerts(alerts, &at).map(Some),
        };
        let deletes = match raw.deletes {
            None => Some(None),
            Some(deletes) => self
                .deletes(deletes, source.as_ref(), destination.as_ref(), &at)
                .map(Some),
        };
        let (source, mapping, destination, deletes, alerts, schedule) = (
            source?,
            mapping?,
            destination?,
            deletes?,
            alerts?,
            schedule?,
        );
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
            deletes,
            alerts,
            schedule,
            fingerprint,
        })
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
        let outage = self.duration_or(
            raw.outage.as_ref(),
            &format!("{at}.outage"),
            defaults.outage,
        );
        let rate_limited_for = self.duration_or(
            raw.rate_limited_for.as_ref(),
            &format!("{at}.rate_limited_for"),
            defaults.rate_limited_for,
        );
        RetryPolicy {
            base: base.unwrap_or(defaults.base),
            cap: cap.unwrap_or(defaults.cap),
            max_attempts: max_attempts.unwrap_or(defaults.max_attempts),
            outage: outage.unwrap_or(defaults.outage),
            rate_limited_for: rate_limited_for.unwrap_or(defaults.rate_limited_for),
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

#[cfg(test)]
mod tests;
