//! Owns writing mapped records to the destination, idempotently, and telling the
//! engine what became of each: written (with the destination's id), or refused
//! (record-level: dead-letter it), or an error that stops the run.
//!
//! Every destination is one [`Sink`]: a folder of its own (`http/`, `jsonl/`,
//! `sqlite/`, `postgres/`, the last two over the shared `table/`) with its raw
//! config, its validation (`config.rs`) and its writes, and one line in
//! [`DestinationSpec`]. The engine only calls the trait.
//! Invariant: a write is only ever repeated through an idempotent path — the same
//! PUT, the same `Idempotency-Key`, a fresh lookup before any create, or an upsert
//! by key. A sink never sees checkpoints or the ledger beyond the destination id it
//! is handed.

pub mod http;
pub mod jsonl;
pub mod postgres;
pub mod sqlite;
pub mod table;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::ser::SerializeMap;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{JsonType, MappingSpec, StoreLocation, UriTemplate, Validator};
use crate::http::HttpError;
use crate::mapping::MappedRecord;
use crate::obs::RetryCounts;
use crate::policy::RetryPolicy;
use crate::state::Store;
use crate::stop::Stop;

/// One record to write.
#[derive(Debug)]
pub struct Write<'a> {
    pub source_id: &'a str,
    pub record: &'a MappedRecord,
    /// The source version; `updated_at` stands in when there is none.
    pub version: Option<i64>,
    pub updated_at: Timestamp,
    /// The destination id the ledger remembers, which saves a lookup.
    pub known_dest_id: Option<&'a str>,
    /// The request worked out ahead by [`Sink::encode`], if it was.
    pub encoded: Option<Encoded>,
    /// A rewrite because a read back found the destination holding this older
    /// state (named by its version), not the record's first write.
    pub rewrite_over: Option<String>,
    /// An earlier write of this record (in flight at a crash, or without a clear
    /// answer) may land until then: nothing may be created for it before, since
    /// that write may be a create.
    pub unsettled_until: Option<Timestamp>,
}

impl Write<'_> {
    /// The version as a key: a retry of this version is recognised, a newer one is not.
    pub fn version_key(&self) -> String {
        match self.version {
            Some(v) => format!("v{v}"),
            None => format!("t{}", self.updated_at.as_microsecond()),
        }
    }

    /// The version as one number, for a destination that compares versions: the
    /// source version, or `updated_at` in epoch microseconds when there is none.
    pub fn version_number(&self) -> i64 {
        self.version
            .unwrap_or_else(|| self.updated_at.as_microsecond())
    }
}

/// One record to delete at the destination.
#[derive(Debug)]
pub struct Delete<'a> {
    pub external_id: &'a str,
    /// The destination id the ledger remembers, if any.
    pub known_dest_id: Option<&'a str>,
    /// An earlier write of this record may land until then: the delete waits,
    /// or that write would bring the record back.
    pub unsettled_until: Option<Timestamp>,
}

/// A record's request worked out ahead of its write, away from the write path: the
/// body, and the URL when it depends on the record alone.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub body: bytes::Bytes,
    pub url: Option<url::Url>,
}

/// A write the destination confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub dest_id: Option<String>,
    /// When the last attempt of this write that got no clear answer went out:
    /// it (and any before it) may still be applied, over anything written
    /// after it, until the destination's late-write window from then has passed.
    pub unsettled_since: Option<Instant>,
    /// Requests the write itself took (lookups not counted).
    pub attempts: u32,
}

/// What the destination holds for one external id, as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    Nothing,
    Object {
        dest_id: Option<String>,
        object: Value,
        /// The version number the destination keeps beside the object, where
        /// it keeps one (a table's version column: the source's version, or
        /// `updated_at` in epoch microseconds, as [`Write::version_number`]).
        version: Option<i64>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Record-level: the destination refused this record. Dead-letter it.
    /// `status` is the HTTP status, or, for an item of a batch's answer that
    /// gives none of its own, [`http::REFUSED_IN_ANSWER`].
    #[error("destination refused the record: {}{reason}", http_status(*.status))]
    Rejected { status: u16, reason: String },
    /// Record-level: the record cannot even be addressed (its id makes no URL, or
    /// no header, or several destination objects claim it). Dead-letter it.
    #[error("cannot address the record at the destination: {0}")]
    Unwritable(String),
    /// Record-level, and no failure: the destination's version precondition
    /// refused the write because it holds a newer version of the record.
    #[error("the destination holds a newer version of the record")]
    Superseded,
    /// Stops the run at its last checkpoint (auth, exhausted retries, stop signal…).
    #[error(transparent)]
    Http(HttpError),
    #[error("destination file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot build the destination client: {0}")]
    Client(#[from] reqwest::Error),
    /// A batch sent to an endpoint that is not an upsert got no clear answer:
    /// sending it again might apply it twice, so the run stops.
    #[error(
        "a batch of {count} records ({first} … {last}) got no clear answer ({detail}); the endpoint is not an upsert by external id (upsert = false), so it was not sent again: check what the destination holds for them, then run again"
    )]
    BatchUnknown {
        count: usize,
        first: String,
        last: String,
        detail: String,
    },
    /// Stops the run: this worker's lease of the sync ran out or was taken
    /// over, so the write was not sent (another worker may run the sync now).
    #[error("not sent: {0}")]
    Fenced(String),
    /// Record-level: the database refused the row (a constraint, a value of
    /// the wrong type). Dead-letter it.
    #[error("the database refused the row: {0}")]
    Refused(String),
    /// Stops the run at its last checkpoint: the database cannot be written
    /// until a person acts (authentication, permission, a table it may not
    /// create or change).
    #[error("database destination {0}")]
    Database(String),
    /// Stops the run at its last checkpoint, resumable: the database stayed
    /// unreachable or busy through every retry (the last statement may have
    /// committed; repeating the upsert is harmless).
    #[error("database destination {0}")]
    DatabaseGaveUp(String),
    /// Stops the run: a batch endpoint refused record after record sent
    /// alone, and no request of the batch: it refuses the requests.
    #[error(
        "the batch endpoint refused {records} records one after another, each sent alone, and took no request of their batch: it refuses the requests themselves, not a record (check path, method, batch_field and batch_body); the last refusal: {last}"
    )]
    RefusesEveryRequest { records: usize, last: String },
    /// Not sent: a write before it in its batch stopped the run.
    #[error("not sent: an earlier write of its batch stopped the run")]
    NotSent,
}

/// What a failed write means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consequence {
    /// Only this record is concerned: it is resolved (dead-lettered, or skipped
    /// as stale) and the run goes on.
    Record,
    /// The run stops at its last checkpoint, resumable, and a later run may
    /// well succeed as things are (retries ran out, or a stop was asked for);
    /// `outcome_known` is false when the write may have been applied.
    Transient { outcome_known: bool },
    /// The run stops at its last checkpoint: nothing will work until a person
    /// acts (credentials, configuration, the file or the client).
    Fatal,
}

impl SinkError {
    pub fn consequence(&self) -> Consequence {
        match self {
            SinkError::Rejected { .. }
            | SinkError::Unwritable(_)
            | SinkError::Superseded
            | SinkError::Refused(_) => Consequence::Record,
            SinkError::Http(HttpError::Unknown { .. })
            | SinkError::BatchUnknown { .. }
            | SinkError::DatabaseGaveUp(_) => Consequence::Transient {
                outcome_known: false,
            },
            SinkError::Http(
                HttpError::Exhausted { .. } | HttpError::RateLimited { .. } | HttpError::Stopped(_),
            )
            | SinkError::NotSent => Consequence::Transient {
                outcome_known: true,
            },
            SinkError::Http(
                HttpError::Unauthorized { .. }
                | HttpError::Auth(..)
                | HttpError::Fatal { .. }
                | HttpError::Untrusted { .. }
                | HttpError::Rejected { .. },
            )
            | SinkError::Database(_)
            | SinkError::RefusesEveryRequest { .. }
            | SinkError::Fenced(_)
            | SinkError::File { .. }
            | SinkError::Client(_) => Consequence::Fatal,
        }
    }

    /// Whether the write surely never reached the destination's data: refused
    /// there, or turned away before it was sent (credentials).
    pub fn sent_nothing(&self) -> bool {
        self.is_record_level()
            || matches!(
                self,
                SinkError::Http(HttpError::Unauthorized { .. } | HttpError::Auth(..))
                    | SinkError::Fenced(_)
            )
    }

    pub fn is_record_level(&self) -> bool {
        self.consequence() == Consequence::Record
    }
}

impl From<HttpError> for SinkError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Rejected { status, body } => SinkError::Rejected {
                status,
                reason: body,
            },
            e => SinkError::Http(e),
        }
    }
}

/// One sync's destination, as the config file says it: one variant per
/// destination, each validated by its own folder's `config.rs`.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per sync, built once; boxing buys nothing"
)]
pub enum DestinationSpec {
    Http(http::config::HttpDestinationSpec),
    JsonLines(jsonl::config::JsonLinesSpec),
    Sqlite(sqlite::config::SqliteSpec),
    Postgres(postgres::config::PostgresSpec),
}

/// A file's path from the root, whatever directory the config was named
/// from (`--config hw.toml` here, or its whole path from cron), without
/// reading the file system: the file may not be there yet.
/// A refusal's status as its message says it: none for an item refused in a
/// batch's answer without one of its own.
fn http_status(status: u16) -> String {
    match status {
        http::REFUSED_IN_ANSWER => "in the batch's answer: ".to_owned(),
        status => format!("HTTP {status} "),
    }
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// What a destination's validation may look at beyond its own table.
#[derive(Debug)]
pub(crate) struct DestinationContext<'a> {
    /// The config file's directory: relative paths start there.
    pub base_dir: &'a Path,
    /// Where the state store is: a table in its database shares its
    /// transactions.
    pub state: &'a StoreLocation,
    /// The sync's mapping, when it is valid.
    pub mapping: Option<&'a MappingSpec>,
    /// The top-level fields a soft delete sets, with its value's type.
    pub soft_delete: Vec<(String, Option<JsonType>)>,
}

/// How a destination takes deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteRequest {
    /// It removes the record itself (saying how): no `delete_path`.
    Own(&'static str),
    /// A DELETE on `delete_path`; `knows_dest_id` when a write's answer or a
    /// lookup gives the destination's id, for `{dest_id}`.
    Path { knows_dest_id: bool },
}

impl DestinationSpec {
    /// Where its records land, as a sync's ledger describes them: its type
    /// and place, never a secret. A run into another place is refused while
    /// the ledger holds rows (`engine::invocation`): it would skip every
    /// record the ledger says is written.
    pub fn identity(&self) -> String {
        match self {
            DestinationSpec::Http(spec) => {
                format!("http {}", crate::http::redact(&spec.http.base_url))
            }
            DestinationSpec::JsonLines(spec) => format!("jsonl {}", absolute(&spec.path)),
            DestinationSpec::Sqlite(spec) => {
                format!("sqlite {} table {}", absolute(&spec.path), spec.table.table)
            }
            DestinationSpec::Postgres(spec) => format!("postgres {}", postgres::identity(spec)),
        }
    }

    /// The HTTP API it writes to, for a destination that is one.
    pub fn http(&self) -> Option<&crate::config::HttpSpec> {
        match self {
            DestinationSpec::Http(spec) => Some(&spec.http),
            DestinationSpec::JsonLines(_)
            | DestinationSpec::Sqlite(_)
            | DestinationSpec::Postgres(_) => None,
        }
    }

    /// The `[sync.destination]` table of the sync at `index` in the file,
    /// validated by the folder of its `type`.
    pub(crate) fn validate(
        v: &mut Validator<'_>,
        kind: &serde_spanned::Spanned<String>,
        index: usize,
        ctx: &DestinationContext<'_>,
        at: &str,
    ) -> Option<DestinationSpec> {
        let table = ["sync".into(), index.into(), "destination".into()];
        match kind.get_ref().as_str() {
            "http" => {
                let raw = v.table(&table)?;
                http::config::validate(v, raw, ctx.mapping, at).map(DestinationSpec::Http)
            }
            "jsonl" => {
                let raw = v.table(&table)?;
                jsonl::config::validate(v, raw, ctx.base_dir, at).map(DestinationSpec::JsonLines)
            }
            "sqlite" => {
                let raw = v.table(&table)?;
                sqlite::config::validate(v, raw, ctx, at).map(DestinationSpec::Sqlite)
            }
            "postgres" => {
                let raw = v.table(&table)?;
                postgres::config::validate(v, raw, ctx, at).map(DestinationSpec::Postgres)
            }
            _ => {
                v.problem(
                    kind,
                    format!("{at}.destination.type"),
                    "expected \"http\", \"jsonl\", \"sqlite\" or \"postgres\"",
                );
                None
            }
        }
    }

    /// Opens the destination; `delete_path` is where a sync that deletes sends
    /// its DELETE requests, for a destination that takes them. A run passes
    /// its state store: a table in the store's database (its SQLite file, its
    /// PostgreSQL database) then writes in the store's own transactions
    /// (`state::shared`); without it (a dry run, a reconcile), that table is
    /// written as any other.
    pub fn open(
        &self,
        sync: &str,
        retry: RetryPolicy,
        delete_path: Option<UriTemplate>,
        store: Option<&Store>,
    ) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(match self {
            DestinationSpec::Http(spec) => {
                Arc::new(http::HttpSink::new(sync, spec.clone(), retry, delete_path)?)
            }
            DestinationSpec::JsonLines(spec) => Arc::new(jsonl::JsonLinesSink::open(spec.clone())?),
            DestinationSpec::Sqlite(spec) => {
                let shared = store
                    .filter(|_| spec.shares_state)
                    .and_then(|s| s.share_sqlite_writes(sync));
                Arc::new(sqlite::open(spec, retry, shared)?)
            }
            DestinationSpec::Postgres(spec) => {
                let shared = store
                    .filter(|_| spec.shares_state)
                    .and_then(|s| s.share_postgres_writes(&postgres::application_name(spec, sync)))
                    .transpose()
                    .map_err(|e| SinkError::Database(e.to_string()))?;
                Arc::new(postgres::open(spec, sync, retry, shared)?)
            }
        })
    }

    /// Whether runs of several kinds of the sync may write at once. A
    /// destination written by lookup, then create, cannot tell whether another
    /// process is creating the same record at that moment (nothing makes a
    /// create idempotent), and a JSON Lines file has one writer: the runs of
    /// such a sync take turns. A table's upsert by key, compared by version,
    /// is safe from two processes — but a table in the state store's
    /// database is written in a transaction held from a page's first write to
    /// its commit (in SQLite, the store's write lock, which another run's
    /// commits would wait on): those take turns too.
    pub fn takes_concurrent_runs(&self) -> bool {
        match self {
            DestinationSpec::Http(spec) => spec.takes_concurrent_runs(),
            DestinationSpec::JsonLines(_) => false,
            DestinationSpec::Sqlite(spec) => !spec.shares_state,
            DestinationSpec::Postgres(spec) => !spec.shares_state,
        }
    }

    /// How it takes deletions.
    pub fn delete_request(&self) -> DeleteRequest {
        match self {
            DestinationSpec::Http(spec) => spec.delete_request(),
            DestinationSpec::JsonLines(_) => {
                DeleteRequest::Own("a jsonl destination removes the record's line itself")
            }
            DestinationSpec::Sqlite(_) => {
                DeleteRequest::Own("a sqlite destination deletes the record's row itself")
            }
            DestinationSpec::Postgres(_) => {
                DeleteRequest::Own("a postgres destination deletes the record's row itself")
            }
        }
    }
}

/// An object with one field set (added, or replacing the object's own), written
/// in key order as `serde_json`'s own map would be.
struct WithField<'a> {
    object: &'a serde_json::Map<String, Value>,
    field: &'a str,
    value: &'a str,
}

impl serde::Serialize for WithField<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self.object.len() + usize::from(!self.object.contains_key(self.field));
        let mut map = serializer.serialize_map(Some(len))?;
        let mut placed = false;
        for (key, value) in self.object {
            if !placed && key.as_str() >= self.field {
                map.serialize_entry(self.field, self.value)?;
                placed = true;
                if key == self.field {
                    continue;
                }
            }
            map.serialize_entry(key, value)?;
        }
        if !placed {
            map.serialize_entry(self.field, self.value)?;
        }
        map.end()
    }
}

/// A destination: it writes, deletes and reads back one record at a time, or
/// writes a batch; the defaults suit a destination with no more to say.
/// Each write is idempotent by itself (see the module's invariant): the engine
/// may send it again after a crash or a write without a clear answer.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// How many writes (or batches) may be in flight at once.
    fn concurrency(&self) -> usize {
        1
    }

    /// How many records one [`Sink::write_batch`] takes at most.
    fn batch_size(&self) -> usize {
        1
    }

    /// The request for `record`, worked out ahead of its write, when this
    /// destination sends one; `None` also when it cannot be built, which the
    /// write itself then reports.
    fn encode(&self, _record: &MappedRecord) -> Option<Encoded> {
        None
    }

    async fn write(&self, write: Write<'_>, stop: &Stop) -> Result<Written, SinkError>;

    /// Writes several records, answering for each in order. By default one
    /// after the other, stopping at the first error that is not the record's
    /// own (the rest get that error too, and nothing is sent for them).
    async fn write_batch(
        &self,
        writes: Vec<Write<'_>>,
        stop: &Stop,
    ) -> Vec<Result<Written, SinkError>> {
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            let fatal = results
                .last()
                .is_some_and(|r: &Result<Written, SinkError>| {
                    r.as_ref().is_err_and(|e| !e.is_record_level())
                });
            if fatal {
                results.push(Err(SinkError::NotSent));
                continue;
            }
            results.push(self.write(write, stop).await);
        }
        results
    }

    /// Deletes one record, idempotently: a record already gone is deleted too.
    async fn delete(&self, delete: &Delete<'_>, stop: &Stop) -> Result<Written, SinkError>;

    /// Whether one record can be read back to see what the destination holds.
    fn can_read_back(&self) -> bool {
        false
    }

    /// Whether a write sent again as it is leaves the destination holding it,
    /// whatever landed before (a PUT by external id, an upsert): a record
    /// that cannot be read back is then settled by sending it again once
    /// older writes of it can no longer land.
    fn resends_safely(&self) -> bool {
        false
    }

    /// What the destination holds for `external_id`.
    async fn read_back(&self, _external_id: &str, _stop: &Stop) -> Result<Held, SinkError> {
        Err(SinkError::Unwritable(
            "this destination cannot be read back".into(),
        ))
    }

    /// How long a write without a clear answer may still be applied.
    fn late_write_window(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether the destination itself refuses a write older than what it holds,
    /// so that a late write can never go back over a newer one.
    fn refuses_older_writes(&self) -> bool {
        false
    }

    /// Whether a write lands only with the state store's next commit: a
    /// table in the store's own database, written in its open transaction. A
    /// crash then undoes the rows with what the store knew of them, so no
    /// write is ever of unknown outcome, and none is announced first.
    fn lands_with_the_commit(&self) -> bool {
        false
    }

    /// Where the writes so far end in the destination's own log, for one
    /// whose writes count only once a commit of the state store stores that
    /// position: a run's start ([`resume`](Self::resume)) drops what a crash
    /// left past the last one stored. Such a write never lands without its
    /// ledger row, or its announcement in the same commit, so it goes out
    /// at once. `None`: a write lands when it is sent.
    fn position(&self) -> Option<String> {
        None
    }

    /// A commit storing `position` is durable.
    fn committed(&self, _position: &str) -> Result<(), SinkError> {
        Ok(())
    }

    /// Called once as a run starts, before any write, with the position the
    /// sync's last commit stored (`None`: no commit stored one).
    async fn resume(&self, _position: Option<&str>) -> Result<(), SinkError> {
        Ok(())
    }

    /// Makes every write so far durable; called before a page's checkpoint commits.
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Called once a run's writes are over (before the run completes, and
    /// after a stop): what `flush` made durable takes its final form (a file
    /// compacts its log into the file people read).
    async fn finish(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Retries made so far.
    fn retries(&self) -> RetryCounts {
        RetryCounts::default()
    }

    /// Its API refused requests for its rate limit while none was configured.
    fn unpaced(&self) -> Option<crate::http::Unpaced> {
        None
    }

    /// Its API keeps the refresh tokens its OAuth2 endpoint rotates with
    /// `keeper` (`Api::keep_tokens_with`).
    fn keep_tokens_with(&self, _keeper: std::sync::Arc<dyn crate::auth::TokenKeeper>) {}

    /// How long the run loop may sleep between events: a timer kept due before
    /// any write's own saves tokio re-arming its driver for each write.
    fn timer_lead(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

/// Deletes one record once an earlier write of it can no longer land (until
/// then, that write would bring the record back).
pub async fn delete(
    sink: &dyn Sink,
    delete: Delete<'_>,
    stop: &Stop,
) -> Result<Written, SinkError> {
    if let Some(until) = delete.unsettled_until {
        let wait = Timestamp::now()
            .duration_until(until)
            .try_into()
            .unwrap_or_default();
        stop.sleep(wait)
            .await
            .map_err(|r| SinkError::Http(HttpError::Stopped(r)))?;
    }
    sink.delete(&delete, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// One file is one destination however the config was named: from its
    /// directory (`--config hw.toml`) or by its whole path.
    #[test]
    fn a_file_s_identity_is_its_path_from_the_root() {
        let file = |path: &str| {
            DestinationSpec::JsonLines(jsonl::config::JsonLinesSpec {
                path: PathBuf::from(path),
                external_id_field: "external_id".into(),
                compact_lines: jsonl::COMPACT_LINES,
            })
            .identity()
        };
        let cwd = std::env::current_dir().expect("a working directory");
        let whole = cwd.join("out").join("a.jsonl");
        assert_eq!(file("out/a.jsonl"), format!("jsonl {}", whole.display()));
        assert_eq!(file("./out/a.jsonl"), file("out/a.jsonl"));
        assert_eq!(file(&whole.display().to_string()), file("out/a.jsonl"));
        assert_ne!(file("out/b.jsonl"), file("out/a.jsonl"));
    }
}
