//! Owns the shared-transaction mode: when a destination table lives in the
//! store's own SQLite file, the destination writes its rows in the store's
//! write transaction, held open between commits, and the store's next commit
//! (a page's: its ledger rows and checkpoint) commits them with it. Rows then
//! never reach the table without what the store knows of them, nor the
//! reverse: a crash loses both or neither.
//!
//! Every write of the store goes through [`Store::writer`]: in this mode it is
//! the open transaction (begun when none is), otherwise a transaction of its
//! own. So nothing of the store ever waits on a write lock its own process
//! holds.
//!
//! Invariant: a transaction that held rows is committed or, if anything in it
//! failed, rolled back whole — and then every later write of the store in this
//! process is refused ([`StateError::SharedTransactionLost`]): the engine was
//! told those rows were written, and committing its ledger rows now would
//! claim rows the table does not hold. The run ends as a crash would, and the
//! next one resumes from the last commit.

use std::ops::{Deref, DerefMut};

use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::{SqliteStore, StateError};

/// The store's write transaction, shared with a destination table in its file.
#[derive(Debug)]
pub struct SharedWrites {
    pool: SqlitePool,
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    open: Option<Transaction<'static, Sqlite>>,
    /// A transaction was taken and neither put back nor committed.
    lost: bool,
}

/// The open transaction, held by one writer at a time.
#[derive(Debug)]
pub struct SharedTx<'a> {
    slot: MutexGuard<'a, Slot>,
    tx: Transaction<'static, Sqlite>,
}

impl SharedWrites {
    pub(super) fn new(pool: SqlitePool) -> SharedWrites {
        SharedWrites {
            pool,
            slot: Mutex::new(Slot::default()),
        }
    }

    /// Rolls back the open transaction, if any; nothing may commit after.
    pub(super) async fn roll_back(&self) {
        let mut slot = self.slot.lock().await;
        if slot.open.take().is_some() {
            slot.lost = true;
        }
    }

    /// The open transaction, begun (`BEGIN IMMEDIATE`) when none is.
    pub async fn lock(&self) -> Result<SharedTx<'_>, StateError> {
        let mut slot = self.slot.lock().await;
        if slot.lost {
            return Err(StateError::SharedTransactionLost);
        }
        let tx = match slot.open.take() {
            Some(tx) => tx,
            None => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        // Until `keep` or `commit`: dropped in between, the transaction rolls
        // back, and what was written in it is lost.
        slot.lost = true;
        Ok(SharedTx { slot, tx })
    }
}

impl SharedTx<'_> {
    /// Leaves the transaction open for the store's next commit.
    pub fn keep(self) {
        let SharedTx { mut slot, tx } = self;
        slot.open = Some(tx);
        slot.lost = false;
    }

    async fn commit(self) -> Result<(), StateError> {
        let SharedTx { mut slot, tx } = self;
        tx.commit().await?;
        slot.lost = false;
        Ok(())
    }
}

impl Deref for SharedTx<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for SharedTx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// A write transaction of the store: its own, or the shared one.
#[derive(Debug)]
pub(super) enum Writer<'a> {
    Own(Transaction<'static, Sqlite>),
    Shared(SharedTx<'a>),
}

impl Writer<'_> {
    pub(super) async fn commit(self) -> Result<(), StateError> {
        match self {
            Writer::Own(tx) => Ok(tx.commit().await?),
            Writer::Shared(tx) => tx.commit().await,
        }
    }
}

impl Deref for Writer<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match self {
            Writer::Own(tx) => tx,
            Writer::Shared(tx) => tx,
        }
    }
}

impl DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            Writer::Own(tx) => tx,
            Writer::Shared(tx) => tx,
        }
    }
}

impl SqliteStore {
    /// Shares the store's write transaction from now on, with a destination
    /// table in its file; the handle that destination writes through.
    pub fn share_writes(&self) -> std::sync::Arc<SharedWrites> {
        self.shared
            .get_or_init(|| std::sync::Arc::new(SharedWrites::new(self.pool.clone())))
            .clone()
    }

    /// The transaction a write of the store goes in.
    pub(super) async fn writer(&self) -> Result<Writer<'_>, StateError> {
        Ok(match self.shared.get() {
            Some(shared) => Writer::Shared(shared.lock().await?),
            None => Writer::Own(self.pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }
}
