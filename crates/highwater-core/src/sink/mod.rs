//! Owns writing mapped records to the destination, idempotently, and telling the
//! engine what became of each: written (with the destination's id), or refused
//! (record-level: dead-letter it), or an error that stops the run.
//! Invariant: a write is only ever repeated through an idempotent path — the same
//! PUT, the same `Idempotency-Key`, or a fresh lookup before any create. The sink
//! never sees checkpoints or the ledger beyond the destination id it is handed.

pub mod http;
pub mod jsonl;

use jiff::Timestamp;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::DestinationSpec;
use crate::http::HttpError;
use crate::mapping::MappedRecord;
use crate::obs::RetryCounts;
use crate::policy::RetryPolicy;
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
    /// When an attempt of this write that got no clear answer went out: that
    /// attempt may still be applied, over anything written after it, until the
    /// destination's late-write window has passed.
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
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Record-level: the destination refused this record. Dead-letter it.
    #[error("destination refused the record: HTTP {status} {reason}")]
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
}

impl SinkError {
    /// Whether only this record is concerned: it is resolved (dead-lettered, or
    /// skipped as stale) and the run goes on.
    pub fn is_record_level(&self) -> bool {
        matches!(
            self,
            SinkError::Rejected { .. } | SinkError::Unwritable(_) | SinkError::Superseded
        )
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

/// The destination of one sync.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per run, never moved around")]
pub enum Sink {
    Http(http::HttpSink),
    JsonLines(jsonl::JsonLinesSink),
}

impl Sink {
    pub fn open(sync: &str, spec: &DestinationSpec, retry: RetryPolicy) -> Result<Sink, SinkError> {
        Ok(match spec {
            DestinationSpec::Http(spec) => {
                Sink::Http(http::HttpSink::new(sync, spec.clone(), retry)?)
            }
            DestinationSpec::JsonLines(spec) => {
                Sink::JsonLines(jsonl::JsonLinesSink::open(spec.clone())?)
            }
        })
    }

    /// The same sink, deleting through `delete_path` (an HTTP destination's
    /// DELETE request; a file removes its lines without one).
    pub fn deleting(self, delete_path: Option<crate::config::UriTemplate>) -> Sink {
        match self {
            Sink::Http(mut sink) => {
                sink.delete_path = delete_path;
                Sink::Http(sink)
            }
            sink => sink,
        }
    }

    /// How many writes may be in flight at once.
    pub fn concurrency(&self) -> usize {
        match self {
            Sink::Http(sink) => sink.concurrency(),
            Sink::JsonLines(_) => 1,
        }
    }

    /// The request for `record`, when this destination sends one; `None` also when
    /// it cannot be built, which the write itself then reports.
    pub fn encode(&self, record: &MappedRecord) -> Option<Encoded> {
        match self {
            Sink::Http(sink) => sink.encode(record).ok(),
            Sink::JsonLines(_) => None,
        }
    }

    pub async fn write(&self, write: Write<'_>, stop: &Stop) -> Result<Written, SinkError> {
        match self {
            Sink::Http(sink) => sink.write(write, stop).await,
            Sink::JsonLines(sink) => sink.write(write),
        }
    }

    /// Deletes one record, idempotently: a record already gone (404, 410, no
    /// lookup match, no line) is deleted too.
    pub async fn delete(&self, delete: Delete<'_>, stop: &Stop) -> Result<Written, SinkError> {
        if let Some(until) = delete.unsettled_until {
            let wait = Timestamp::now()
                .duration_until(until)
                .try_into()
                .unwrap_or_default();
            stop.sleep(wait)
                .await
                .map_err(|r| SinkError::Http(HttpError::Stopped(r)))?;
        }
        match self {
            Sink::Http(sink) => sink.delete(&delete, stop).await,
            Sink::JsonLines(sink) => Ok(sink.delete(delete.external_id)),
        }
    }

    /// Whether one record can be read back to see what the destination holds.
    pub fn can_read_back(&self) -> bool {
        match self {
            Sink::Http(sink) => sink.can_read_back(),
            Sink::JsonLines(_) => true,
        }
    }

    /// What the destination holds for `external_id`.
    pub async fn read_back(&self, external_id: &str, stop: &Stop) -> Result<Held, SinkError> {
        match self {
            Sink::Http(sink) => sink.read_back(external_id, stop).await,
            Sink::JsonLines(sink) => Ok(sink.read_back(external_id)),
        }
    }

    /// How long a write without a clear answer may still be applied.
    pub fn late_write_window(&self) -> std::time::Duration {
        match self {
            Sink::Http(sink) => sink.spec().late_write_window,
            Sink::JsonLines(_) => std::time::Duration::ZERO,
        }
    }

    /// Whether the destination itself refuses a write older than what it holds,
    /// so that a late write can never go back over a newer one.
    pub fn refuses_older_writes(&self) -> bool {
        match self {
            Sink::Http(sink) => sink.spec().version_header.is_some(),
            Sink::JsonLines(_) => true,
        }
    }

    /// Makes every write so far durable; called before a page's checkpoint commits.
    pub async fn flush(&self) -> Result<(), SinkError> {
        match self {
            Sink::Http(_) => Ok(()),
            Sink::JsonLines(sink) => sink.flush(),
        }
    }

    /// Retries made so far.
    pub fn retries(&self) -> RetryCounts {
        match self {
            Sink::Http(sink) => sink.retries(),
            Sink::JsonLines(_) => RetryCounts::default(),
        }
    }
}
