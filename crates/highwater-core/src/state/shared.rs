//! Owns the shared-transaction mode: when a destination table lives in the
//! state store's own database (the same SQLite file, or the same PostgreSQL
//! database), the destination writes its rows in a write transaction of the
//! store, held open between commits, and the store's next page commit (its
//! ledger rows and checkpoint) commits them with it. Rows then never reach
//! the table without what the store knows of them, nor the reverse: a crash
//! loses both or neither.
//!
//! Each backend decides which of its writes go in the open transaction:
//! every one for SQLite, whose single writer lock the process would
//! otherwise wait on itself (`sqlite/shared.rs`); the page commits of the one
//! run that opened it for PostgreSQL (`postgres/shared.rs`).
//!
//! Invariant: a transaction that held rows is committed or, if anything in it
//! failed, rolled back whole — and then every later commit through it is
//! refused ([`StateError::SharedTransactionLost`]): the engine was told those
//! rows were written, and committing its ledger rows now would claim rows the
//! table does not hold. The run ends as a crash would, and the next one
//! resumes from the last commit.

use std::ops::{Deref, DerefMut};

use sqlx::{Database, Executor, Pool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::StateError;

/// A write transaction of the store, shared with a destination table.
#[derive(Debug)]
pub struct SharedWrites<DB: Database> {
    pool: Pool<DB>,
    /// The statement that begins it, when not a plain `BEGIN`.
    begin: Option<&'static str>,
    /// A statement run on the connection before it begins one.
    setup: Option<&'static str>,
    slot: Mutex<Slot<DB>>,
}

#[derive(Debug)]
struct Slot<DB: Database> {
    open: Option<Transaction<'static, DB>>,
    /// A transaction was taken and neither put back nor committed.
    lost: bool,
}

/// The open transaction, held by one writer at a time.
#[derive(Debug)]
pub struct SharedTx<'a, DB: Database> {
    slot: MutexGuard<'a, Slot<DB>>,
    tx: Transaction<'static, DB>,
}

impl<DB: Database> SharedWrites<DB> {
    pub(super) fn new(
        pool: Pool<DB>,
        begin: Option<&'static str>,
        setup: Option<&'static str>,
    ) -> SharedWrites<DB> {
        SharedWrites {
            pool,
            begin,
            setup,
            slot: Mutex::new(Slot {
                open: None,
                lost: false,
            }),
        }
    }

    /// Rolls back the open transaction, if any; nothing may commit after.
    pub(super) async fn roll_back(&self) {
        let mut slot = self.slot.lock().await;
        if let Some(tx) = slot.open.take() {
            slot.lost = true;
            let _ = tx.rollback().await;
        }
    }

    /// The open transaction, begun when none is.
    pub async fn lock(&self) -> Result<SharedTx<'_, DB>, StateError>
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        let mut slot = self.slot.lock().await;
        if slot.lost {
            return Err(StateError::SharedTransactionLost);
        }
        let tx = match slot.open.take() {
            Some(tx) => tx,
            None => {
                if let Some(setup) = self.setup {
                    self.pool.execute(setup).await?;
                }
                match self.begin {
                    Some(statement) => self.pool.begin_with(statement).await?,
                    None => self.pool.begin().await?,
                }
            }
        };
        // Until `keep` or `commit`: dropped in between, the transaction rolls
        // back, and what was written in it is lost.
        slot.lost = true;
        Ok(SharedTx { slot, tx })
    }

    pub(super) async fn close(&self) {
        self.roll_back().await;
        self.pool.close().await;
    }
}

impl<DB: Database> SharedTx<'_, DB> {
    /// Leaves the transaction open for the store's next commit.
    pub fn keep(self) {
        let SharedTx { mut slot, tx } = self;
        slot.open = Some(tx);
        slot.lost = false;
    }

    pub(super) async fn commit(self) -> Result<(), StateError> {
        let SharedTx { mut slot, tx } = self;
        tx.commit().await?;
        slot.lost = false;
        Ok(())
    }

    /// The transaction itself, for a nested one (a savepoint).
    pub fn transaction(&mut self) -> &mut Transaction<'static, DB> {
        &mut self.tx
    }
}

impl<DB: Database> Deref for SharedTx<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: Database> DerefMut for SharedTx<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}
