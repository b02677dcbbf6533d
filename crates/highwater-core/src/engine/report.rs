//! What a run reports: its options, its outcome, its progress while it goes,
//! and why it failed — the engine's answer to the CLI and the daemon.

use std::time::Duration;

use jiff::Timestamp;

use crate::http::HttpError;
use crate::sink::SinkError;
use crate::source::{SourceError, Window};
use crate::state::{Counters, RunKind, StateError};
use crate::stop::StopReason;

/// Limits for one invocation; `None` falls back to the sync's `[budgets]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub max_runtime: Option<Duration>,
    pub max_pages: Option<u64>,
    /// Ledger rows staged between merges; `None` is
    /// [`DEFAULT_MERGE_ROWS`](crate::config::DEFAULT_MERGE_ROWS).
    pub merge_rows: Option<usize>,
    /// How long record events are kept; `None` is
    /// [`DEFAULT_EVENT_RETENTION`](crate::config::DEFAULT_EVENT_RETENTION).
    pub event_retention: Option<Duration>,
}

/// What a run did, as far as it got.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub sync: String,
    pub run_id: String,
    pub resumed: bool,
    pub window: Window,
    pub outcome: RunOutcome,
    /// Totals over every invocation of this run.
    pub counters: Counters,
    /// This invocation's share of the totals.
    pub session: Counters,
    pub retries: u64,
    pub elapsed: Duration,
    /// Records a late write had set back, written again after reading them back.
    pub repaired: Vec<String>,
    /// Records written again while an older write of theirs could still
    /// land, which the destination could not be read back to check, sent
    /// again once it could no longer land (a PUT, an upsert).
    pub resent: Vec<String>,
    /// Records written again while an older write of theirs could still land,
    /// which the destination could not be read back to check (no read path).
    pub unverified: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    /// Stopped at a checkpoint; the run stays open and the next invocation resumes it.
    Stopped(StopReason),
}

/// Live progress for a progress bar.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub run_id: String,
    pub resumed: bool,
    pub counters: Counters,
}

/// A run that could not go on. The run stays open at its last checkpoint when it
/// had made progress (`resumable`); otherwise it is kept, failed, for the history
/// only. `run_id` is `None` when the run could not even be opened.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct RunFailure {
    pub cause: FailureCause,
    pub run_id: Option<String>,
    pub counters: Counters,
    pub resumable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FailureCause {
    #[error("source: {0}")]
    Source(SourceError),
    #[error("destination: {0}")]
    Destination(SinkError),
    #[error(
        "halted: {dead} of the last {window} records were dead-lettered, more than {limit:.0}% of them; the mapping or the destination rejects nearly everything. Latest reason: {reason}"
    )]
    Surge {
        dead: usize,
        window: usize,
        limit: f64,
        reason: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot build an HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot start a thread of the run: {0}")]
    Thread(std::io::Error),
    #[error("the reading thread stopped before the source was exhausted")]
    ReaderGone,
    #[error(
        "{} record(s) cannot be confirmed, so the run stops before completing (the next attempt reads them again): {}",
        .0.len(),
        .0.join("; ")
    )]
    Unconfirmed(Vec<String>),
    #[error(
        "a {kind} run over {} → {watermark} is open: finish it with the same range, or reset it, before another",
        .lower.map_or_else(|| "the start".to_owned(), |t| t.to_string())
    )]
    OtherRunOpen {
        kind: RunKind,
        lower: Option<Timestamp>,
        watermark: Timestamp,
    },
    #[error(
        "the destination changed: the ledger of sync {sync:?} describes {was}, and the config now names {now}. A run would skip every record the ledger says is written, so it is refused, with nothing read. To write every record to the new destination, run `highwater reset {sync} --forget-ledger` (records it already holds are found by their external id, not duplicated); if it is the same destination at a new address, `highwater run {sync} --destination-moved` keeps the ledger; to write to the old one, put its config back"
    )]
    DestinationChanged {
        sync: String,
        was: String,
        now: String,
    },
    #[error("a {0} run does not read the source: there is no dry run of it")]
    NotForDryRun(RunKind),
    #[error("sync {0:?} has no deletes endpoint: set `path` in its [sync.deletes]")]
    NoDeletesFeed(String),
    #[error(
        "refusing to delete {count} of the {total} records the ledger holds ({:.1}%), more than full_delete_limit ({:.1}%): nothing was deleted. If the source really no longer has them, run again with --allow-mass-delete",
        *.count as f64 * 100.0 / (*.total).max(1) as f64,
        .limit * 100.0
    )]
    MassDelete {
        count: usize,
        total: usize,
        limit: f64,
    },
}

impl FailureCause {
    /// Whether the run stopped because this worker's lease of the sync was
    /// lost: another worker may be running it now.
    pub fn lost_lease(&self) -> bool {
        matches!(
            self,
            FailureCause::State(StateError::LeaseLost { .. })
                | FailureCause::Destination(SinkError::Fenced(_))
        ) || self.stopped() == Some(StopReason::LeaseLost)
    }

    /// Whether the run's failure comes from a stop request rather than a fault.
    pub(super) fn stopped(&self) -> Option<StopReason> {
        match self {
            FailureCause::Source(SourceError::Http(HttpError::Stopped(r)))
            | FailureCause::Destination(SinkError::Http(HttpError::Stopped(r))) => Some(*r),
            FailureCause::Source(SourceError::Http(HttpError::Auth(
                crate::auth::AuthError::Stopped(r),
                _,
            )))
            | FailureCause::Destination(SinkError::Http(HttpError::Auth(
                crate::auth::AuthError::Stopped(r),
                _,
            ))) => Some(*r),
            _ => None,
        }
    }
}
