//! SQLite's side of the shared-transaction mode (`state/shared.rs`): every
//! write of the store goes through [`SqliteStore::writer`], which in this
//! mode is the open transaction (begun with `BEGIN IMMEDIATE` when none is),
//! otherwise a transaction of its own. So nothing of the store ever waits on
//! SQLite's write lock while its own process holds it; and after the open
//! transaction was lost, no write of the store in this process commits.
//! That connection does not sync its commits: every commit through it syncs
//! the WAL after it, except a page commit of a sync whose table shares it
//! ([`TableSharing`]), which only needs to be atomic.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::{Arc, Mutex};

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
                crate::wal::sync(path)
                    .await
                    .map_err(|e| StateError::Sql(sqlx::Error::Io(e)))
            }
        }
    }

    /// Commits a page of a run whose destination table shares the
    /// transaction: atomically, and durably with the next commit that syncs
    /// the WAL (the run's completion at the latest).
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

/// The syncs whose destination table shares the store's transaction, with
/// how many of their destinations do.
#[derive(Debug, Default, Clone)]
pub(in crate::state) struct Syncs(Arc<Mutex<HashMap<String, usize>>>);

impl Syncs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A destination table of a sync sharing the store's transaction, for as
/// long as it is held: a sync whose next run writes elsewhere (the config
/// changed under a daemon) syncs its page commits again.
#[derive(Debug)]
pub struct TableSharing {
    sync: String,
    syncs: Syncs,
}

impl Drop for TableSharing {
    fn drop(&mut self) {
        let mut syncs = self.syncs.lock();
        if let Some(count) = syncs.get_mut(&self.sync) {
            *count -= 1;
            if *count == 0 {
                syncs.remove(&self.sync);
            }
        }
    }
}

impl SqliteStore {
    /// Shares the store's write transaction from now on, with the destination
    /// table of `sync` in its file; the handle that destination writes
    /// through, and the sharing, which lasts until it is dropped.
    ///
    /// The shared transaction's connection does not sync its commits
    /// (`synchronous = NORMAL`): a page commit of a sync sharing it holds the
    /// table's rows with their ledger rows and checkpoint, so a power loss
    /// that undoes the last ones undoes both, the next run reads those
    /// records again, and nothing outside the file learned of them. Every
    /// other commit (a run's completion, another sync's pages, whose writes
    /// went out before) syncs the WAL after it ([`Writer::commit`]). Each
    /// sync held up the one connection the table's upserts also go through:
    /// synced each, syncs of 100,000 records into the table ran at
    /// 71,800–74,900 records/s, against 74,200–81,000 without (three
    /// alternated runs).
    ///
    /// Its statement journals stay in memory (`temp_store = memory`). An
    /// upsert inside a longer transaction keeps one, so that its failure
    /// undoes its rows alone: a copy of every page it changes, a few MiB for
    /// a batch of 1,000 rows, which SQLite otherwise writes to a temporary
    /// file past 64 KiB (185 MB in a sync of 100,000 records). In memory,
    /// such syncs of 100,000 records ran at 0.72–0.73 of the plain loader
    /// against 0.66–0.72 (four runs of `benches/db.rs`), and of 1,000,000
    /// at 36,900 against 33,800 records/s, at a peak of 76 MiB against 67
    /// (79 MiB in batches of 5,000): a journal lasts one statement, and
    /// holds at most the pages one batch touches.
    pub fn share_writes(&self, sync: &str) -> (std::sync::Arc<SharedWrites<Sqlite>>, TableSharing) {
        *self.sharing.lock().entry(sync.to_owned()).or_default() += 1;
        let sharing = TableSharing {
            sync: sync.to_owned(),
            syncs: self.sharing.clone(),
        };
        let writes = self
            .shared
            .get_or_init(|| {
                std::sync::Arc::new(SharedWrites::new(
                    self.writes.clone(),
                    Some("BEGIN IMMEDIATE"),
                    Some("PRAGMA synchronous = NORMAL; PRAGMA temp_store = memory"),
                ))
            })
            .clone();
        (writes, sharing)
    }

    /// Whether a destination table of `sync` shares the store's transaction
    /// now.
    pub(super) fn shares_table(&self, sync: &str) -> bool {
        self.sharing.lock().contains_key(sync)
    }

    /// The transaction a write of the store goes in.
    pub(super) async fn writer(&self) -> Result<Writer<'_>, StateError> {
        Ok(match self.shared.get() {
            Some(shared) => Writer::Shared(shared.lock().await?, &self.path),
            None => Writer::Own(self.writes.begin_with("BEGIN IMMEDIATE").await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::temp_db;

    /// A sync's page commits go unsynced only while a destination table of
    /// it holds the sharing: a later run writing elsewhere syncs them again.
    #[tokio::test]
    async fn a_sync_shares_the_transaction_while_a_destination_holds_the_sharing() {
        let store = SqliteStore::open(&temp_db("table-sharing"))
            .await
            .expect("open");
        let (_, first) = store.share_writes("billing");
        let (_, second) = store.share_writes("billing");
        assert!(store.shares_table("billing"));
        assert!(!store.shares_table("crm"));
        drop(first);
        assert!(store.shares_table("billing"));
        drop(second);
        assert!(!store.shares_table("billing"));
        store.close().await;
    }
}
