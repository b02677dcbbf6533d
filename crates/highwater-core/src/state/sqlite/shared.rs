//! SQLite's side of the shared-transaction mode (`state/shared.rs`): every
//! write of the store goes through [`SqliteStore::writer`], which in this
//! mode is the open transaction (begun with `BEGIN IMMEDIATE` when none is),
//! otherwise a transaction of its own. So nothing of the store ever waits on
//! SQLite's write lock while its own process holds it; and after the open
//! transaction was lost, no write of the store in this process commits.

use std::ops::{Deref, DerefMut};
use std::path::Path;

use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::{SqliteStore, StateError};
use crate::state::shared::{SharedTx, SharedWrites};

/// A write transaction of the store: its own, or the shared one (with where
/// the store lives, to sync its WAL).
#[derive(Debug)]
pub(super) enum Writer<'a> {
    Own(Transaction<'static, Sqlite>),
    Shared(SharedTx<'a, Sqlite>, &'a Path),
}

impl Writer<'_> {
    /// Commits, durably: a commit of the shared transaction is not synced by
    /// SQLite ([`SqliteStore::share_writes`]), so the WAL it is in is synced
    /// after it, as `synchronous = FULL` would.
    pub(super) async fn commit(self) -> Result<(), StateError> {
        match self {
            Writer::Own(tx) => Ok(tx.commit().await?),
            Writer::Shared(tx, path) => {
                tx.commit().await?;
                sync_wal(path).await
            }
        }
    }

    /// Commits a page of a run whose destination table shares the
    /// transaction: atomically, and durably only once the run completes.
    pub(super) async fn commit_atomic(self) -> Result<(), StateError> {
        match self {
            Writer::Own(tx) => Ok(tx.commit().await?),
            Writer::Shared(tx, _) => tx.commit().await,
        }
    }
}

impl Deref for Writer<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match self {
            Writer::Own(tx) => tx,
            Writer::Shared(tx, _) => tx,
        }
    }
}

impl DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            Writer::Own(tx) => tx,
            Writer::Shared(tx, _) => tx,
        }
    }
}

/// Syncs the WAL of the store at `path`: every commit in it is then durable.
/// None left means the last connection's checkpoint moved them into the
/// database, and synced it.
async fn sync_wal(path: &Path) -> Result<(), StateError> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let synced = tokio::task::spawn_blocking(move || match std::fs::File::open(&wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    })
    .await
    .map_err(std::io::Error::other);
    synced
        .and_then(|r| r)
        .map_err(|e| StateError::Sql(sqlx::Error::Io(e)))
}

impl SqliteStore {
    /// Shares the store's write transaction from now on, with the destination
    /// table of `sync` in its file; the handle that destination writes
    /// through.
    ///
    /// The shared transaction's connection does not sync its commits
    /// (`synchronous = NORMAL`): a page commit of such a sync holds the
    /// table's rows with their ledger rows and checkpoint, so a power loss
    /// that undoes the last ones undoes both, the next run reads those
    /// records again, and nothing outside the file learned of them. Every
    /// other commit (a run's completion, another sync's pages, whose writes
    /// went out before) syncs the WAL after it ([`Writer::commit`]). Each
    /// sync held up the one connection the table's upserts also go through:
    /// synced each, syncs of 100,000 records into the table ran at
    /// 71,800–74,900 records/s, against 74,200–81,000 without (three
    /// alternated runs).
    pub fn share_writes(&self, sync: &str) -> std::sync::Arc<SharedWrites<Sqlite>> {
        self.sharing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sync.to_owned());
        self.shared
            .get_or_init(|| {
                std::sync::Arc::new(SharedWrites::new(
                    self.writes.clone(),
                    Some("BEGIN IMMEDIATE"),
                    Some("PRAGMA synchronous = NORMAL"),
                ))
            })
            .clone()
    }

    /// Whether `sync`'s destination table shares the store's transaction.
    pub(super) fn shares_table(&self, sync: &str) -> bool {
        self.sharing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(sync)
    }

    /// The transaction a write of the store goes in.
    pub(super) async fn writer(&self) -> Result<Writer<'_>, StateError> {
        Ok(match self.shared.get() {
            Some(shared) => Writer::Shared(shared.lock().await?, &self.path),
            None => Writer::Own(self.writes.begin_with("BEGIN IMMEDIATE").await?),
        })
    }
}
