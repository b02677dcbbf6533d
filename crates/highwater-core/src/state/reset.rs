//! Rewinding a sync (`highwater reset`) and the high-water mark it moves: the
//! newest of the last completed incremental run's watermark and the last reset.
//! A reset abandons the open incremental run only when forced, keeps the writes
//! that run announced as floors (they may have landed), optionally forgets the
//! ledger, and is recorded in the audit log — all in one transaction.

use jiff::Timestamp;

use super::StateError;

/// Where the next incremental run of a sync starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HighWaterMark {
    /// Nothing completed and nothing reset: from the sync's `start`.
    None,
    /// The last completed incremental run's watermark: the next run reaches
    /// back from it by the lookback.
    Run(Timestamp),
    /// Rewound by an operator: the next run reads from here exactly (`None`:
    /// from the sync's `start`).
    Reset(Option<Timestamp>),
}

impl HighWaterMark {
    /// The mark as a point in time, when there is one.
    pub fn at(self) -> Option<Timestamp> {
        match self {
            HighWaterMark::Run(t) | HighWaterMark::Reset(Some(t)) => Some(t),
            HighWaterMark::None | HighWaterMark::Reset(None) => None,
        }
    }
}

/// What to reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRequest {
    pub sync: String,
    /// Re-read from here; `None`: from the sync's start.
    pub to: Option<Timestamp>,
    /// Drop the ledger too: every record is written again.
    pub forget_ledger: bool,
    /// Abandon the open incremental run instead of refusing.
    pub force: bool,
    pub reason: Option<String>,
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetDone {
    pub audit_id: i64,
    /// The open run it abandoned.
    pub abandoned: Option<String>,
    /// Ledger rows it forgot.
    pub forgotten: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(
        "run {0} is open (a stopped or failed run the next `run` resumes): finish it, or pass --force to abandon it"
    )]
    RunOpen(String),
    #[error(transparent)]
    State(#[from] StateError),
}
