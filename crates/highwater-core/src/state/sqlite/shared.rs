//! SQLite's side of the shared-transaction mode (`state/shared.rs`): every
//! write of the store goes through [`SqliteStore::writer`], which in this
//! mode is the open transaction (begun with `BEGIN IMMEDIATE` when none is),
//! otherwise a transaction of its own. So nothing of the store ever waits on
//! SQLite's write lock while its own process holds it; and after the open
//! transaction was lost, no write of the store in this process commits.

use std::ops::{Deref, DerefMut};

use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::{SqliteStore, StateError};
use crate::state::shared::{SharedTx, SharedWrites};

/// A write transaction of the store: its own, or the shared one.
#[derive(Debug)]
pub(super) enum Writer<'a> {
    Own(Transaction<'static, Sqlite>),
    Shared(SharedTx<'a, Sqlite>),
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
    pub fn share_writes(&self) -> std::sync::Arc<SharedWrites<Sqlite>> {
        self.shared
            .get_or_init(|| {
                std::sync::Arc::new(SharedWrites::new(
                    self.writes.clone(),
                    Some("BEGIN IMMEDIATE"),
                ))
            })
            .clone()
    }

    /// The transaction a write of the store goes in.
    pub(super) async fn writer(&self) -> Result<Writer<'_>, StateError> {
        Ok(match self.shared.get() {
            Some(shared) => Writer::Shared(shared.lock().await?),
            None => Writer::Own(self.writes.begin_with("BEGIN IMMEDIATE").await?),
        })
    }
}
