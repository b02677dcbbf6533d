//! PostgreSQL's side of the shared-transaction mode (`state/shared.rs`): a
//! destination table in the store's database writes its rows in a
//! transaction of the run's own — on one connection of its own, named like
//! the sink's (`highwater <sync>` in `pg_stat_activity`), its `search_path`
//! the store's schema — and the run's page commits go in it. The store's
//! other writes keep their own transactions: PostgreSQL locks rows, not the
//! database, and between page commits the open transaction holds locks on
//! the table's rows only. The sync's advisory lock and the lease's fencing
//! check are taken by the page commit, in that transaction: a worker that
//! lost its lease commits none of the rows either.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::Postgres;
use sqlx::postgres::PgConnectOptions;

use super::{PgStore, StateError, Tx};
use crate::state::shared::{SharedTx, SharedWrites};

/// A run's transaction shared with a destination table in the store's database.
#[derive(Debug)]
pub struct PgShared {
    pub writes: SharedWrites<Postgres>,
    /// The schema a table named without one is in, for the store's user: the
    /// shared connection's own `search_path` is the store's schema.
    pub default_schema: String,
}

/// A page commit's transaction: its own, or the run's shared one.
pub(super) enum PgWriter<'a> {
    Own(Tx),
    Shared(SharedTx<'a, Postgres>),
}

impl PgWriter<'_> {
    pub(super) fn tx(&mut self) -> &mut Tx {
        match self {
            PgWriter::Own(tx) => tx,
            PgWriter::Shared(tx) => tx.transaction(),
        }
    }

    pub(super) async fn commit(self) -> Result<(), StateError> {
        match self {
            PgWriter::Own(tx) => Ok(tx.commit().await?),
            PgWriter::Shared(tx) => tx.commit().await,
        }
    }
}

impl PgStore {
    /// Shares this store's page commits from now on with a destination table
    /// in its database, written on a connection named `application_name`;
    /// the handle that destination writes through. One per fenced store, so
    /// one per run: a transaction lost ends that run only.
    pub fn share_writes(&self, application_name: &str) -> Result<Arc<PgShared>, StateError> {
        if let Some(shared) = self.shared.get() {
            return Ok(Arc::clone(shared));
        }
        let options = PgConnectOptions::from_str(&self.location.url)
            .map_err(|source| StateError::Open {
                path: super::redact_url(&self.location.url),
                source,
            })?
            .application_name(application_name);
        let pool = super::pool_in(&self.location.schema, 1, self.location.lease)
            .connect_lazy_with(options);
        let shared = Arc::new(PgShared {
            writes: SharedWrites::new(pool, None, None),
            default_schema: self.default_schema.clone(),
        });
        Ok(Arc::clone(self.shared.get_or_init(|| shared)))
    }

    /// The transaction a page commit of `sync` goes in: the shared one when
    /// there is one, under the sync's advisory lock and fenced, as any writer.
    pub(super) async fn page_writer(&self, sync: &str) -> Result<PgWriter<'_>, StateError> {
        let mut writer = match self.shared.get() {
            Some(shared) => PgWriter::Shared(shared.writes.lock().await?),
            None => PgWriter::Own(self.pool.begin().await?),
        };
        // Failed here, the shared transaction is dropped, its rows with it:
        // lost (a fence that no longer holds commits nothing).
        self.guard(writer.tx(), Some(sync)).await?;
        Ok(writer)
    }
}
