//! Who may run a sync's runs of one kind now: the store's own lock, an OS
//! file lock per sync and kind beside a SQLite store (`sqlite/lock.rs`), a
//! lease per sync and kind in a PostgreSQL store (`postgres/lease.rs`). A run
//! holds its kind's (every kind's when its sync's runs take turns); operator
//! commands that change what every run reads (a reset, a discard) hold every
//! kind's.

use std::path::PathBuf;

use super::{RunKind, StateError, postgres, sqlite};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "sync {sync:?} is already running its {kind} run (process {holder}, lock {path}); not starting a second one"
    )]
    Held {
        sync: String,
        kind: RunKind,
        holder: String,
        path: PathBuf,
    },
    #[error(
        "sync {sync:?} is already running its {kind} run (process {holder}, holding its lease); not starting a second one"
    )]
    Leased {
        sync: String,
        kind: RunKind,
        holder: String,
    },
    #[error("cannot create the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StateError),
}

impl LockError {
    /// Who holds the lock refused, and of which kind: a process, or a worker
    /// holding the lease.
    pub fn held_by(&self) -> Option<(RunKind, String)> {
        match self {
            LockError::Held { kind, holder, .. } => Some((*kind, format!("process {holder}"))),
            LockError::Leased { kind, holder, .. } => Some((*kind, format!("process {holder}"))),
            LockError::Io { .. } | LockError::Store(_) => None,
        }
    }
}

/// The lock a run or a command holds for as long as it runs.
#[derive(Debug)]
pub struct RunLock {
    pub(super) held: Held,
}

#[derive(Debug)]
pub(super) enum Held {
    Files(sqlite::lock::SyncLocks),
    Lease(postgres::lease::Leases),
}

impl RunLock {
    /// Lets it go: at once for a file lock (as dropping it does), and for a
    /// lease without waiting out its expiry.
    pub async fn release(self) {
        match self.held {
            Held::Files(locks) => drop(locks),
            Held::Lease(leases) => leases.release().await,
        }
    }
}
