//! The interface of the state store: `Store`, the same methods over either
//! backend, with the locks of runs and a commit's acknowledgement. Each
//! method is its backend's; what they mean is in the backends' docs.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use super::*;
use crate::config::{StateSpec, StoreLocation};

/// The state store: one of its backends, each the only code that speaks its
/// SQL. Every method means the same on each; a backend's own trade-offs are
/// documented where it implements them.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) backend: Backend,
}

#[derive(Debug, Clone)]
pub(super) enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Calls the same method on whichever backend the store is.
macro_rules! on_backend {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($s) => $call,
            Backend::Postgres($s) => $call,
        }
    };
}

/// What the store says of a confirmed commit.
#[derive(Debug, Default)]
pub struct Committed {
    /// Which announced writes it refused or put behind another run's.
    pub announced: Announced,
    /// Its ledger rows (and every earlier commit's) are now what lookups read:
    /// with a merge of staged rows in SQLite and in PostgreSQL's
    /// shared-transaction mode, at once otherwise in PostgreSQL.
    pub visible: bool,
}

impl Store {
    /// Opens (creating if needed) and migrates the SQLite store at `path`.
    pub async fn open(path: &Path) -> Result<Store, StateError> {
        Ok(Store {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(path).await?),
        })
    }

    /// Opens (creating if needed) and migrates the store the config names.
    pub async fn connect(spec: &StateSpec) -> Result<Store, StateError> {
        let backend = match &spec.store {
            StoreLocation::File(path) => Backend::Sqlite(sqlite::SqliteStore::open(path).await?),
            StoreLocation::Postgres { url, schema } => {
                let location = postgres::PgLocation {
                    url: url.expose().to_owned(),
                    schema: schema.clone(),
                    lease: spec.lease,
                };
                Backend::Postgres(postgres::PgStore::open(&location).await?)
            }
        };
        Ok(Store { backend })
    }

    /// Whether the store the config names holds anything yet: a command that
    /// only reads it never creates it.
    pub async fn exists(spec: &StateSpec) -> Result<bool, StateError> {
        match &spec.store {
            StoreLocation::File(path) => Ok(path.exists()),
            StoreLocation::Postgres { url, schema } => {
                postgres::PgStore::exists(url.expose(), schema).await
            }
        }
    }

    /// Takes the lock of `sync`'s runs of `kind` — every kind's when the
    /// sync's runs take turns (`alone`) — for a run about to start.
    pub async fn lock_run(
        &self,
        sync: &str,
        kind: RunKind,
        alone: bool,
    ) -> Result<RunLock, LockError> {
        let kinds: &[RunKind] = if alone { RunKind::ALL } else { &[kind] };
        self.lock_kinds(sync, kinds).await
    }

    /// Takes the locks of every run kind of `sync`: no run of it can start or
    /// go on while an operator command changes what they read.
    pub async fn lock_all(&self, sync: &str) -> Result<RunLock, LockError> {
        self.lock_kinds(sync, RunKind::ALL).await
    }

    async fn lock_kinds(&self, sync: &str, kinds: &[RunKind]) -> Result<RunLock, LockError> {
        let held = match &self.backend {
            Backend::Sqlite(s) => lock::Held::Files(s.lock(sync, kinds)?),
            Backend::Postgres(s) => lock::Held::Lease(s.lease(sync, kinds).await?),
        };
        Ok(RunLock { held })
    }

    /// Closes the store and lets `lock` go, in the order the backend needs: a
    /// SQLite store's shared transaction is rolled back before its file lock
    /// goes; a lease is deleted while the store's connections are still open.
    pub async fn close_releasing(self, lock: RunLock) {
        match self.backend {
            Backend::Sqlite(s) => {
                s.close().await;
                drop(lock);
            }
            Backend::Postgres(s) => {
                lock.release().await;
                s.close().await;
            }
        }
    }

    /// This store, its writes fenced by `lock`: with a lease, every write
    /// transaction checks it is still held, and [`Store::check_lease`] says
    /// whether a write may be sent.
    pub fn fenced(&self, lock: &RunLock) -> Store {
        match (&self.backend, &lock.held) {
            (Backend::Postgres(s), lock::Held::Lease(leases)) => Store {
                backend: Backend::Postgres(s.fenced(leases.fence())),
            },
            _ => self.clone(),
        }
    }

    /// Whether a write may be sent now: always, unless the store is fenced by
    /// a lease that ran out by this process's clock or was taken over.
    pub fn check_lease(&self) -> Result<(), StateError> {
        match &self.backend {
            Backend::Postgres(s) => s.check_fence(),
            Backend::Sqlite(_) => Ok(()),
        }
    }

    /// Who runs `sync`'s runs of `kind` now: the process holding the lock, or
    /// the worker holding the lease; `None` when nobody does.
    pub async fn lock_holder(&self, sync: &str, kind: RunKind) -> Option<String> {
        match &self.backend {
            Backend::Sqlite(s) => s.lock_holder(sync, kind),
            Backend::Postgres(s) => s.lease_holder(sync, kind).await.ok().flatten(),
        }
    }

    /// Which workers run which syncs now, as `(sync, worker)`: those holding
    /// leases in a PostgreSQL store; none for a SQLite store, whose runs are
    /// on one machine.
    pub async fn lease_holders(&self) -> Result<Vec<(String, String)>, StateError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(s) => s.lease_holders().await,
        }
    }

    /// Commits what the run has resolved and the writes it is about to send
    /// (see each backend's `commit_page`); the acknowledgement says which
    /// writes went ahead and whether the rows are visible to lookups yet.
    pub async fn commit_page(
        &self,
        sync: &str,
        run_id: &str,
        page: &PageCommit,
        cursor: Option<&Value>,
        counters: &Counters,
    ) -> Result<Committed, StateError> {
        Ok(match &self.backend {
            Backend::Sqlite(s) => Committed {
                announced: s.commit_page(sync, run_id, page, cursor, counters).await?,
                visible: page.merge,
            },
            Backend::Postgres(s) => s.commit_page(sync, run_id, page, cursor, counters).await?,
        })
    }

    /// The SQLite store's pool, for tests that read its tables directly.
    #[cfg(test)]
    pub(crate) fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match &self.backend {
            Backend::Sqlite(s) => s.pool(),
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    /// This store for a thread that runs a runtime of its own: the same
    /// store, on a pool of its own when its connections are sockets of a
    /// runtime (PostgreSQL's; SQLite's are its own threads'). Call it inside
    /// that runtime, and [`Store::close_thread`] before the runtime ends.
    pub fn for_thread(&self) -> Store {
        match &self.backend {
            Backend::Sqlite(_) => self.clone(),
            Backend::Postgres(s) => Store {
                backend: Backend::Postgres(s.on_own_pool()),
            },
        }
    }

    /// Lets go of the connections of a store from [`Store::for_thread`].
    pub async fn close_thread(&self) {
        if let Backend::Postgres(s) = &self.backend {
            s.close_pool().await;
        }
    }

    /// Closes the store, letting go of its connections.
    pub async fn close(self) {
        match self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }

    /// The open run of a sync, if any.
    pub async fn open_run(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        on_backend!(self, s => s.open_run(sync, kind).await)
    }

    /// The last completed run of a sync, if any.
    pub async fn last_completed(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        on_backend!(self, s => s.last_completed(sync, kind).await)
    }

    /// Stores a new open run, its starting checkpoint and its first invocation,
    /// before anything is fetched.
    pub async fn begin_run(&self, run: &RunRow, cursor: &Value) -> Result<(), StateError> {
        on_backend!(self, s => s.begin_run(run, cursor).await)
    }

    /// Gives up a run that made no progress: nothing of it is resumed, and the next
    /// run plans its window afresh, as if it had never started; it stays in the
    /// history as failed.
    pub async fn abandon_run(&self, run_id: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.abandon_run(run_id).await)
    }

    /// What the ledger and dead-letter queue know of these source ids, and which
    /// source ids the ledger has holding these external ids. A discarded dead
    /// letter is known as an unresolved one is: its fingerprint keeps the same
    /// payload from being tried again (a changed one is). Staged ledger rows
    /// are not read: a run merges those of earlier invocations before its first
    /// lookup and keeps its own in memory until they are merged.
    pub async fn known(
        &self,
        sync: &str,
        ids: &[&str],
        external_ids: &[&str],
    ) -> Result<Known, StateError> {
        on_backend!(self, s => s.known(sync, ids, external_ids).await)
    }

    /// Every write of the run `run_id` (every run's, with `None`), or of a run
    /// that ended, not known to have settled, newest version per source id:
    /// after a crash the destination may hold any of them, so nothing older may
    /// be written over them until the run completes. Another open run's writes
    /// are weighed when each write is announced instead (`claim`): that run may
    /// be running.
    pub async fn floors(&self, sync: &str, run_id: Option<&str>) -> Result<Floors, StateError> {
        on_backend!(self, s => s.floors(sync, run_id).await)
    }

    /// Where the sync's destination's own log ended at its last commit that
    /// stored one ([`PageCommit::sink_position`]).
    pub async fn sink_position(&self, sync: &str) -> Result<Option<String>, StateError> {
        on_backend!(self, s => s.sink_position(sync).await)
    }

    /// Whether an open run of the sync other than `run_id` has announced
    /// writes: the compare-and-set of announcements (`claim`) weighs them.
    pub async fn announced_elsewhere(&self, sync: &str, run_id: &str) -> Result<bool, StateError> {
        on_backend!(self, s => s.announced_elsewhere(sync, run_id).await)
    }

    /// The records of a sync waiting to be read back: those of the run `run_id`,
    /// whatever invocation wrote them, and those left by runs that ended; an open
    /// run of another kind, which may be running now, reads back its own.
    pub async fn readbacks(&self, sync: &str, run_id: &str) -> Result<Vec<Readback>, StateError> {
        on_backend!(self, s => s.readbacks(sync, run_id).await)
    }

    pub async fn status(&self, sync: &str) -> Result<SyncStatus, StateError> {
        on_backend!(self, s => s.status(sync).await)
    }

    /// How many of a sync's dead letters are open (not resolved).
    pub async fn open_dead_letters(&self, sync: &str) -> Result<i64, StateError> {
        on_backend!(self, s => s.open_dead_letters(sync).await)
    }

    /// The open runs of a sync other than its run of `kind`, oldest first.
    pub async fn open_runs_besides(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Vec<(RunRow, Checkpoint)>, StateError> {
        on_backend!(self, s => s.open_runs_besides(sync, kind).await)
    }

    /// Unresolved dead letters of a sync, oldest first.
    pub async fn dead_letters(&self, sync: &str) -> Result<Vec<DeadLetter>, StateError> {
        on_backend!(self, s => s.dead_letters(sync).await)
    }

    /// The ledger of a sync, by source id, with its staged rows applied in the order
    /// a merge would apply them.
    pub async fn ledger(&self, sync: &str) -> Result<Vec<LedgerEntry>, StateError> {
        on_backend!(self, s => s.ledger(sync).await)
    }

    /// Merges ledger rows staged by an earlier invocation of `sync`, so that
    /// [`Store::known`] sees them; a no-op, without a write, when there are none.
    pub async fn merge_staged(&self, sync: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.merge_staged(sync).await)
    }

    /// Completes a run: from now on its watermark is the sync's high-water mark.
    /// Every announced write has settled and every record read back, except the
    /// writes in `unsettled`, which may still land: they stay floors for the
    /// next run.
    pub async fn complete_run(
        &self,
        run_id: &str,
        cursor: &Value,
        counters: &Counters,
        unsettled: &[Intent],
    ) -> Result<(), StateError> {
        on_backend!(self, s => s.complete_run(run_id, cursor, counters, unsettled).await)
    }

    /// Of `ids`, those another run that is running now has a write of
    /// announced and not yet settled: a run that went behind such a write
    /// waits for it before it reads the record back.
    pub async fn pending_elsewhere(
        &self,
        sync: &str,
        run_id: &str,
        ids: &[&str],
    ) -> Result<HashSet<String>, StateError> {
        on_backend!(self, s => s.pending_elsewhere(sync, run_id, ids).await)
    }

    /// The unresolved dead letters of a sync, oldest first.
    pub async fn unresolved_dead_letters(
        &self,
        sync: &str,
    ) -> Result<Vec<DeadLetterSummary>, StateError> {
        on_backend!(self, s => s.unresolved_dead_letters(sync).await)
    }

    /// The next unresolved dead letters to replay, by source id after `after`,
    /// restricted to `ids` when given: the record each keeps, as it was read.
    pub async fn dead_letters_to_replay(
        &self,
        sync: &str,
        after: Option<&str>,
        ids: Option<&[String]>,
        limit: u32,
    ) -> Result<Vec<(String, Value)>, StateError> {
        on_backend!(self, s => s.dead_letters_to_replay(sync, after, ids, limit).await)
    }

    /// One record's dead letter, resolved or not, with its payload.
    pub async fn dead_letter(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<Option<DeadLetterDetail>, StateError> {
        on_backend!(self, s => s.dead_letter(sync, source_id).await)
    }

    /// Discards dead letters: marks them resolved as discarded, keeping their
    /// rows, and records the discard with its reason in the audit log, in one
    /// transaction. Ids without an unresolved dead letter refuse the whole
    /// discard, so that a typo never discards half of what was meant.
    pub async fn discard_dead_letters(
        &self,
        sync: &str,
        scope: DiscardScope<'_>,
        reason: &str,
    ) -> Result<Discarded, StateError> {
        on_backend!(self, s => s.discard_dead_letters(sync, scope, reason).await)
    }

    /// Every retained event of one record, oldest first.
    pub async fn record_story(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<Vec<StoryEvent>, StateError> {
        on_backend!(self, s => s.record_story(sync, source_id).await)
    }

    /// Where one record stands: its ledger row (the latest, staged or merged),
    /// its dead letter, a write announced for it and not settled.
    pub async fn record_state(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<RecordState, StateError> {
        on_backend!(self, s => s.record_state(sync, source_id).await)
    }

    /// Forgets the events of `sync` older than `before`; returns how many
    /// commits' worth went.
    pub async fn prune_events(&self, sync: &str, before: Timestamp) -> Result<u64, StateError> {
        on_backend!(self, s => s.prune_events(sync, before).await)
    }

    /// Records a new invocation of an open run, resumed from its checkpoint. An
    /// earlier invocation that never recorded its end was killed: the caller holds
    /// the sync's lock, so it is not running any more.
    pub async fn resume_run(&self, run_id: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.resume_run(run_id).await)
    }

    /// Records how the run's current invocation ended; its cursor at the end is
    /// the run's checkpoint.
    pub async fn end_invocation(
        &self,
        run_id: &str,
        end: &InvocationEnd,
    ) -> Result<(), StateError> {
        on_backend!(self, s => s.end_invocation(run_id, end).await)
    }

    /// The runs of a sync, newest first, at most `limit` of them.
    pub async fn runs(&self, sync: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        on_backend!(self, s => s.runs(sync, limit).await)
    }

    /// One run's audit record, by its id.
    pub async fn run_record(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        on_backend!(self, s => s.run_record(run_id).await)
    }

    /// Ids of runs (of any sync) that start with `prefix`, at most `limit`: people
    /// type the short id a list shows.
    pub async fn run_ids_starting_with(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StateError> {
        on_backend!(self, s => s.run_ids_starting_with(prefix, limit).await)
    }

    /// Records an operator action done outside a transaction of the store's own;
    /// returns its id. An action that changes the store records itself in the same
    /// transaction instead (a discard does).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StateError> {
        on_backend!(self, s => s.audit(entry).await)
    }

    /// A sync's newest `limit` entries, newest first.
    pub async fn audit_log(&self, sync: &str, limit: u32) -> Result<Vec<AuditRecord>, StateError> {
        on_backend!(self, s => s.audit_log(sync, limit).await)
    }

    /// One entry, by id.
    pub async fn audit_record(&self, id: i64) -> Result<Option<AuditRecord>, StateError> {
        on_backend!(self, s => s.audit_record(id).await)
    }

    pub async fn high_water_mark(&self, sync: &str) -> Result<HighWaterMark, StateError> {
        on_backend!(self, s => s.high_water_mark(sync).await)
    }

    /// Rewinds the sync's high-water mark, as one transaction.
    pub async fn reset(&self, request: &ResetRequest) -> Result<ResetDone, ResetError> {
        on_backend!(self, s => s.reset(request).await)
    }

    /// The open incident of `kind` for `sync`: the one already open, unchanged,
    /// or a new one with this run and reason.
    pub async fn open_incident(
        &self,
        sync: &str,
        kind: IncidentKind,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<Incident, StateError> {
        on_backend!(self, s => s.open_incident(sync, kind, run_id, reason).await)
    }

    /// The incident's webhook call was answered.
    pub async fn incident_notified(&self, incident_id: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.incident_notified(incident_id).await)
    }

    /// The condition of `kind` no longer holds for `sync`: its open incident,
    /// if any, closes, and the next time it holds is a new incident.
    pub async fn close_incident(&self, sync: &str, kind: IncidentKind) -> Result<(), StateError> {
        on_backend!(self, s => s.close_incident(sync, kind).await)
    }

    /// Pauses or resumes a sync's schedule.
    pub async fn set_paused(&self, sync: &str, paused: bool) -> Result<(), StateError> {
        on_backend!(self, s => s.set_paused(sync, paused).await)
    }

    /// The syncs whose schedule is paused.
    pub async fn paused_syncs(&self) -> Result<Vec<String>, StateError> {
        on_backend!(self, s => s.paused_syncs().await)
    }

    /// The destination `sync`'s ledger describes (`DestinationSpec::identity`),
    /// once a run has said; `reset --forget-ledger` forgets it with the ledger.
    pub async fn destination_of(&self, sync: &str) -> Result<Option<String>, StateError> {
        on_backend!(self, s => s.destination_of(sync).await)
    }

    /// The operator says the config's `destination` is the place the
    /// sync's ledger describes, at a new address (a new host name, a
    /// restored database): the ledger describes it from now on, its records
    /// kept as written there, recorded in the audit log in the same
    /// transaction. The destination it described before; `None`, changing
    /// nothing, when it described this one or none.
    pub async fn move_destination(
        &self,
        sync: &str,
        destination: &str,
        reason: Option<&str>,
    ) -> Result<Option<String>, StateError> {
        on_backend!(self, s => s.move_destination(sync, destination, reason).await)
    }

    /// `sync`'s ledger describes `destination` from now on.
    pub async fn record_destination(
        &self,
        sync: &str,
        destination: &str,
    ) -> Result<(), StateError> {
        on_backend!(self, s => s.record_destination(sync, destination).await)
    }

    /// The mapping `sync`'s records were last written with
    /// (`MappingSpec::fingerprint`), once a run has said.
    pub async fn mapping_of(&self, sync: &str) -> Result<Option<String>, StateError> {
        on_backend!(self, s => s.mapping_of(sync).await)
    }

    /// `sync`'s records are written with `mapping` from now on; kept with the
    /// destination its ledger describes, and forgotten with it.
    pub async fn record_mapping(&self, sync: &str, mapping: &str) -> Result<(), StateError> {
        on_backend!(self, s => s.record_mapping(sync, mapping).await)
    }

    /// The refresh token an OAuth2 endpoint that rotates them gave last for
    /// `credential` (`auth::credential`), if any.
    pub async fn kept_refresh_token(&self, credential: &str) -> Result<Option<String>, StateError> {
        on_backend!(self, s => s.kept_refresh_token(credential).await)
    }

    /// `token` is what the endpoint gave last for `credential`.
    pub async fn keep_refresh_token(
        &self,
        credential: &str,
        token: &str,
    ) -> Result<(), StateError> {
        on_backend!(self, s => s.keep_refresh_token(credential, token).await)
    }

    /// Shares the store's write transaction from now on, with the destination
    /// table of `sync` in its file; the handle that destination writes
    /// through, and the sharing, which lasts as long as it is held. `None`
    /// for a store that is not a SQLite file.
    pub fn share_sqlite_writes(
        &self,
        sync: &str,
    ) -> Option<(
        std::sync::Arc<shared::SharedWrites<sqlx::Sqlite>>,
        super::TableSharing,
    )> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s.share_writes(sync)),
            Backend::Postgres(_) => None,
        }
    }

    /// Shares this store's page commits from now on with a destination table
    /// in its PostgreSQL database, written on a connection named
    /// `application_name`; the handle that destination writes through. The
    /// store should be a run's own ([`Store::fenced`]): a transaction lost
    /// ends that run. `None` for a SQLite store.
    pub fn share_postgres_writes(
        &self,
        application_name: &str,
    ) -> Option<Result<std::sync::Arc<PgShared>, StateError>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(s) => Some(s.share_writes(application_name)),
        }
    }
}

#[async_trait::async_trait]
impl crate::auth::TokenKeeper for Store {
    async fn kept(&self, credential: &str) -> Result<Option<String>, String> {
        self.kept_refresh_token(credential)
            .await
            .map_err(|e| e.to_string())
    }

    async fn keep(&self, credential: &str, token: &str) -> Result<(), String> {
        self.keep_refresh_token(credential, token)
            .await
            .map_err(|e| e.to_string())
    }
}
