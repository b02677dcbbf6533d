//! The SQLite backend of the state store: one embedded file (WAL, synchronous
//! commits, versioned migrations), its run locks beside it. Ledger rows are
//! staged per commit and merged into the ledger's sorted runs (see
//! [`ledger`]); lookups read every run, folded as a merge folds them.

pub(super) mod audit;
mod claim;
mod commit;
mod dlq;
mod events;
pub(super) mod history;
mod ledger;
pub mod lock;
mod named;
mod operating;
mod reset;
mod runs;
mod scan;
pub(super) mod shared;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::*;
use crate::record::is_older;

/// Rows go to SQLite as one JSON array per table, unpacked there by `jsonb_each`
/// (which parses the text once and hands each row over as binary JSON): one cached
/// statement whatever the number of rows, where a statement with a placeholder per
/// value would be prepared again for every new row count. Binding each value
/// costs more, not less: staging ledger rows as bound values in a table of
/// columns made a commit about a tenth dearer in `benches/state.rs`, and sqlx
/// asks SQLite the name of every numbered placeholder, which SQLite finds by a
/// walk of all of them, so a statement of N numbered ones binds in N² steps.
fn json_rows<T: Serialize>(rows: &[T]) -> Result<String, StateError> {
    serde_json::to_string(rows).map_err(|e| StateError::Corrupt(e.to_string()))
}

/// What a page's lookup ([`Store::known`]) reads besides blocks, as one JSON
/// array, in one statement (one trip to SQLite's thread, where each trip
/// waits to be scheduled on cores the engine and the reading thread share):
/// - the fingerprints of the page's dead letters (`?2`) that keep a payload
///   from being tried again: unresolved ones, and discarded ones (`?3`);
/// - the sync's ledger runs, oldest first;
/// - the source ids that held one of the external ids `?4` other than their
///   own (a row whose external id is its own source id is found by that id).
///
/// `CROSS JOIN` keeps the page's ids outside: without statistics, SQLite's
/// planner would read the sync's whole dead-letter queue and look each
/// letter up in the ids. A sync without dead letters or holders (most of
/// them, most of the time) is not probed for each id: a page's probes took
/// 0.9 ms of SQLite's thread.
pub(super) const KNOWN: &str = "
SELECT json_array(
  CASE WHEN EXISTS (SELECT 1 FROM dead_letters AS any_letter WHERE sync = ?1) THEN
  (SELECT json_group_array(json_array(d.source_id, d.fingerprint))
     FROM json_each(?2) AS page CROSS JOIN dead_letters AS d
       ON d.sync = ?1 AND d.source_id = page.value
     WHERE d.resolved_at IS NULL OR d.resolution = ?3)
  ELSE json_array() END,
  (SELECT json_group_array(json_array(id, rows, blocks))
     FROM (SELECT id, rows, blocks FROM ledger_runs WHERE sync = ?1 ORDER BY id)),
  CASE WHEN EXISTS (SELECT 1 FROM ledger_holders AS any_holder WHERE sync = ?1) THEN
  (SELECT json_group_array(source_id)
     FROM (SELECT DISTINCT source_id FROM ledger_holders
           WHERE sync = ?1 AND external_id IN (SELECT value FROM json_each(?4))))
  ELSE json_array() END)";

/// What [`KNOWN`] gives: dead letters' fingerprints, runs, holders.
type KnownRead = (Vec<(String, String)>, Vec<(i64, i64, i64)>, Vec<String>);

/// What a page's lookup found: dead letters' fingerprints, and folded rows.
type KnownRows = (Vec<(String, String)>, HashMap<String, runs::RunRow>);

/// A record's row in a later run (or staged commit) folded over its row in an
/// earlier one, as a merge folds them: the later wins unless it is older
/// (versions when both have one, `updated_at` otherwise), and keeps the earlier
/// destination id when it has none.
fn supersede(earlier: Option<LedgerEntry>, later: LedgerEntry) -> LedgerEntry {
    match earlier {
        Some(e) if is_older(later.version, later.updated_at, e.version, e.updated_at) => e,
        Some(e) => LedgerEntry {
            dest_id: later.dest_id.or(e.dest_id),
            ..later
        },
        None => later,
    }
}

/// The embedded state store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads, and the few writes made outside a run's transactions.
    pool: SqlitePool,
    /// The one connection every write transaction of the store goes through
    /// ([`writer`](Self::writer)): SQLite takes one writer at a time anyway.
    /// A run's commits then never wait for a connection behind the page
    /// lookups, and the connection's page cache, which another connection's
    /// commit would empty, stays warm from one commit to the next. Opened
    /// with the store, so its SQLite thread runs at the priority of the
    /// thread that opens the store — not at the reading thread's lower one,
    /// which a pooled connection that thread first opened inherits. At
    /// 100,000 records, medians of eight alternated runs: into JSON Lines
    /// 93,200 instead of 90,900 records/s, into an API (put) 27,400 instead
    /// of 26,700.
    writes: SqlitePool,
    /// Where the store lives: the locks of its syncs' runs are beside it.
    path: std::path::PathBuf,
    /// Set when a destination table in the store's file shares its writes.
    shared: std::sync::Arc<
        std::sync::OnceLock<std::sync::Arc<super::shared::SharedWrites<sqlx::Sqlite>>>,
    >,
    /// The syncs whose destination table shares them, with how many of
    /// their destinations do now.
    sharing: shared::Syncs,
    /// The indexes of the ledger's runs read so far.
    runs: std::sync::Arc<ledger::RunIndexes>,
}

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "intent_batches",
        include_str!("../../../migrations/sqlite/0002_intent_batches.sql"),
    ),
    (
        3,
        "ledger_staging",
        include_str!("../../../migrations/sqlite/0003_ledger_staging.sql"),
    ),
    (
        4,
        "late_writes",
        include_str!("../../../migrations/sqlite/0004_late_writes.sql"),
    ),
    (
        5,
        "record_events",
        include_str!("../../../migrations/sqlite/0005_record_events.sql"),
    ),
    (
        6,
        "run_history",
        include_str!("../../../migrations/sqlite/0006_run_history.sql"),
    ),
    (
        7,
        "audit_log",
        include_str!("../../../migrations/sqlite/0007_audit_log.sql"),
    ),
    (
        8,
        "resets",
        include_str!("../../../migrations/sqlite/0008_resets.sql"),
    ),
    (
        9,
        "tombstones",
        include_str!("../../../migrations/sqlite/0009_tombstones.sql"),
    ),
    (
        10,
        "live_holders",
        include_str!("../../../migrations/sqlite/0010_live_holders.sql"),
    ),
    (
        11,
        "own_key_holders",
        include_str!("../../../migrations/sqlite/0011_own_key_holders.sql"),
    ),
    (
        12,
        "alert_incidents",
        include_str!("../../../migrations/sqlite/0012_alert_incidents.sql"),
    ),
    (
        13,
        "paused_syncs",
        include_str!("../../../migrations/sqlite/0013_paused_syncs.sql"),
    ),
    (
        14,
        "ledger_levels",
        include_str!("../../../migrations/sqlite/0014_ledger_levels.sql"),
    ),
    (
        15,
        "ledger_runs",
        include_str!("../../../migrations/sqlite/0015_ledger_runs.sql"),
    ),
    (
        16,
        "drop_ledger_table",
        include_str!("../../../migrations/sqlite/0016_drop_ledger_table.sql"),
    ),
    (
        17,
        "ledger_index_pieces",
        include_str!("../../../migrations/sqlite/0017_ledger_index_pieces.sql"),
    ),
    (
        18,
        "sink_positions",
        include_str!("../../../migrations/sqlite/0018_sink_positions.sql"),
    ),
    (
        19,
        "sync_destinations",
        include_str!("../../../migrations/sqlite/0019_sync_destinations.sql"),
    ),
    (
        20,
        "audit_destination_moved",
        include_str!("../../../migrations/sqlite/0020_audit_destination_moved.sql"),
    ),
    (
        21,
        "refresh_tokens",
        include_str!("../../../migrations/sqlite/0021_refresh_tokens.sql"),
    ),
    (
        22,
        "sync_mappings",
        include_str!("../../../migrations/sqlite/0022_sync_mappings.sql"),
    ),
];

/// The migration after which the ledger table's rows are read into runs
/// (`ledger::read_table_into_runs`), before the next drops the table.
const RUNS_MIGRATION: i64 = 15;

impl SqliteStore {
    /// Opens (creating if needed) and migrates the store.
    pub async fn open(path: &Path) -> Result<SqliteStore, StateError> {
        let shown = path.display().to_string();
        let io = |e| StateError::Open {
            path: shown.clone(),
            source: sqlx::Error::Io(e),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            private::create_dir_all(dir).map_err(io)?;
        }
        // SQLite creates the database as 0644, and its `-wal` and `-shm` files with
        // the database's mode: an empty file made here first is what it then opens.
        match private::file_options()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StateError::Open {
                path: shown.clone(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // No `temp_store = memory` for the store's own writes: a statement
            // journal (every multi-row write in a transaction keeps one) then
            // stays in memory up to 64 KiB and spills to a temporary file past
            // that, whereas in memory it never would. When a merge upserted
            // staged rows into a ledger B-tree it journaled most of the
            // ledger, 400 MiB at 1,000,000 records; the store's statements
            // journal little now, and in memory a sync of 100,000 records
            // into JSON Lines ran no faster (medians of five alternated runs:
            // 111,700 against 114,300 records/s). The connection a table in
            // the store's file shares does keep them in memory (`shared.rs`):
            // there every batch's upsert journals the pages it changes.
            // A merge of staged ledger rows rewrites most of the ledger's pages in
            // one commit. Checkpointing every 10,000 pages (160 MiB of WAL at
            // 16 KiB pages) instead of SQLite's 1,000 copies a page hit by
            // several commits back into the database once, not once per commit
            // (about a quarter less time per commit at 100,000 records in
            // `benches/state.rs`, measured with 4 KiB pages, when every commit
            // inserted its rows straight into the ledger). With 16 KiB pages,
            // 2,500 (the same 40 MiB) measured no different at 1,000,000
            // records (12.4–13.5 against 13.0–15.0 us per record). The last
            // connection to close checkpoints and removes the WAL.
            .pragma("wal_autocheckpoint", "10000")
            // 1 MiB of page cache per connection instead of SQLite's 2: the store
            // keeps up to four connections (the writer and three pooled for
            // reads), each with a full cache, and past
            // 100,000 records the ledger is far larger than either size, so
            // lookups read it from the OS's cache whatever the size. In WAL mode
            // a connection empties its cache whenever another one committed, so
            // only a connection that both writes and looks up keeps one warm:
            // with 16 MiB, about the whole store at 100,000 records (16.3 MiB), that
            // cut the store's CPU per record by a fifth there, but took a sync's
            // peak RSS at 1,000,000 records from 78 to 97 MiB, so it is not done.
            // Nor for the writer alone, which no other connection's commit
            // empties: with 16 MiB a sync of 100,000 records into JSON Lines
            // ran no faster (80,700–98,700 against 87,100–97,100 records/s,
            // four alternated runs) at 84–88 instead of 67–71 MiB of peak RSS.
            .pragma("cache_size", "-1024")
            // 16 KiB pages for a new store (an existing one keeps its size): a
            // merge of staged ledger rows writes a quarter as many pages, each
            // holding four times the rows, and at 1,000,000 records that took
            // the commits from 31 to 19 us per record in `benches/state.rs`;
            // 4 KiB and 16 KiB cost the same at 100,000, and 64 KiB pages made
            // each lookup read twice the bytes. Once the ledger had two levels,
            // 4 and 8 KiB cost the same as 16 at 1,000,000 too (first run,
            // CPU per record: 11.7–12.1 and 11.9 against 11.4–13.2 us; smaller
            // pages made lookups cheaper and commits dearer by as much).
            .page_size(16384)
            .busy_timeout(Duration::from_secs(30))
            // sqlx hands a statement's rows from SQLite's thread to the task
            // through a channel of 50: past that, the thread waits for the task
            // and each side wakes the other every few rows. A buffer larger
            // than a page's rows lets the thread run the statement through
            // (into a SQLite table at 100,000 records: 8,000 voluntary context
            // switches instead of 20,000, and 0.2 s less system time).
            .row_buffer_size(4096);
        // Taken before the first connection, which sets WAL mode: another
        // process doing that at the same instant is refused (locked) at once.
        let lock_path = path.to_owned();
        let migrating = tokio::task::spawn_blocking(move || lock::migrating(&lock_path))
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(3)
            // A connection to a file in this process does not go stale as a
            // network one does: no ping (a trip to SQLite's thread) before each use.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|source| StateError::Open {
                path: shown.clone(),
                source,
            })?;
        let migrate = |upto: i64| {
            let migrations = MIGRATIONS
                .iter()
                .filter(|(version, _, _)| *version <= upto)
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        (*name).into(),
                        MigrationType::Simple,
                        sqlx::SqlSafeStr::into_sql_str(*sql),
                        false,
                    )
                })
                .collect();
            let mut migrator = Migrator::with_migrations(migrations);
            // A store migrated past `upto` already is left as it is by the
            // first step; the last still refuses a store newer than this build.
            migrator.set_ignore_missing(upto < i64::MAX);
            migrator
        };
        let migrated = |source| StateError::Migrate {
            path: shown.clone(),
            source,
        };
        migrate(RUNS_MIGRATION).run(&pool).await.map_err(migrated)?;
        // Checked first without a write lock: another process's run may hold
        // one for as long as a destination table shares its transaction.
        if ledger::table_remains(&pool).await? {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            ledger::read_table_into_runs(&mut tx).await?;
            tx.commit().await?;
        }
        migrate(i64::MAX).run(&pool).await.map_err(migrated)?;
        drop(migrating);
        // Never closed for idleness or age: a new one would lose the cache, and
        // would be opened by whichever thread asked first.
        let writes = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| StateError::Open {
                path: shown,
                source,
            })?;
        Ok(SqliteStore {
            pool,
            writes,
            path: path.to_owned(),
            shared: Default::default(),
            sharing: Default::default(),
            runs: Default::default(),
        })
    }

    pub(in crate::state) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The syncs with a ledger, in runs or staged.
    pub(in crate::state) async fn ledger_syncs(&self) -> Result<Vec<String>, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT sync FROM ledger_runs UNION SELECT sync FROM ledger_staged ORDER BY sync",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A sync's whole ledger, a chunk of rows at a time (`state copy`).
    pub(in crate::state) async fn ledger_chunks(
        &self,
        sync: &str,
    ) -> Result<scan::LedgerChunks, StateError> {
        scan::LedgerChunks::new(&self.pool, sync).await
    }

    /// Closes the store. A shared transaction still open holds rows that no
    /// commit of the store covers: it is rolled back (the pool waits for
    /// every connection it lent).
    pub async fn close(self) {
        if let Some(shared) = self.shared.get() {
            shared.roll_back().await;
        }
        self.writes.close().await;
        self.pool.close().await;
    }

    /// The open run of a sync, if any.
    pub async fn open_run(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        let row = sqlx::query(
            "SELECT r.*, c.cursor, c.counters, c.updated_at AS checkpoint_at
             FROM runs r JOIN checkpoints c USING (run_id)
             WHERE r.sync = ? AND r.kind = ? AND r.status = ?",
        )
        .bind(sync)
        .bind(kind.as_str())
        .bind(RunStatus::Open.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| run_with_checkpoint(&r)).transpose()
    }

    /// The last completed run of a sync, if any.
    pub async fn last_completed(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        let row = sqlx::query(
            "SELECT r.*, c.cursor, c.counters, c.updated_at AS checkpoint_at
             FROM runs r JOIN checkpoints c USING (run_id)
             WHERE r.sync = ? AND r.kind = ? AND r.status = ?
             ORDER BY r.completed_at DESC LIMIT 1",
        )
        .bind(sync)
        .bind(kind.as_str())
        .bind(RunStatus::Completed.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| run_with_checkpoint(&r)).transpose()
    }

    /// Stores a new open run, its starting checkpoint and its first invocation,
    /// before anything is fetched.
    pub async fn begin_run(&self, run: &RunRow, cursor: &Value) -> Result<(), StateError> {
        let mut tx = self.writer().await?;
        sqlx::query(
            "INSERT INTO runs (run_id, sync, kind, status, lower_bound, watermark, started_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.run_id)
        .bind(&run.sync)
        .bind(run.kind.as_str())
        .bind(RunStatus::Open.as_str())
        .bind(run.lower_bound.map(|t| t.as_microsecond()))
        .bind(run.watermark.as_microsecond())
        .bind(run.started_at.as_microsecond())
        .bind(run.updated_at.as_microsecond())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO checkpoints (run_id, cursor, counters, updated_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&run.run_id)
        .bind(cursor.to_string())
        .bind(counters_json(&Counters::default()))
        .bind(run.started_at.as_microsecond())
        .execute(&mut *tx)
        .await?;
        history::begin_invocation(&mut tx, &run.run_id, run.started_at.as_microsecond()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives up a run that made no progress: nothing of it is resumed, and the next
    /// run plans its window afresh, as if it had never started; it stays in the
    /// history as failed.
    pub async fn abandon_run(&self, run_id: &str) -> Result<(), StateError> {
        let mut tx = self.writer().await?;
        sqlx::query("DELETE FROM intents WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM readbacks WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ? AND status = ?")
            .bind(RunStatus::Failed.as_str())
            .bind(Timestamp::now().as_microsecond())
            .bind(run_id)
            .bind(RunStatus::Open.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// What the ledger and dead-letter queue know of these source ids, and which
    /// source ids the ledger has holding these external ids. A discarded dead
    /// letter is known as an unresolved one is: its fingerprint keeps the same
    /// payload from being tried again (a changed one is). Staged ledger rows
    /// are not read: a run merges those of earlier invocations before its first
    /// lookup and keeps its own in memory until they are merged. In one read
    /// transaction, so that the runs listed are the runs read.
    pub async fn known(
        &self,
        sync: &str,
        ids: &[&str],
        external_ids: &[&str],
    ) -> Result<Known, StateError> {
        let mut known = Known::default();
        if ids.is_empty() && external_ids.is_empty() {
            return Ok(known);
        }
        // Runs listed by one statement and read by the next may be merged
        // away between the two; then both go again in one transaction.
        let mut conn = self.pool.acquire().await?;
        let rows = match self.known_on(&mut conn, sync, ids, external_ids).await? {
            Some(read) => read,
            None => {
                drop(conn);
                let mut tx = self.pool.begin().await?;
                let read = self.known_on(&mut tx, sync, ids, external_ids).await?;
                tx.commit().await?;
                read.ok_or_else(|| {
                    StateError::Corrupt(format!("a ledger run of {sync} lost blocks"))
                })?
            }
        };
        let (dead, rows) = rows;
        known.dead.extend(dead);
        let wanted: HashSet<&str> = external_ids.iter().copied().collect();
        let page: HashSet<&str> = ids.iter().copied().collect();
        for (source_id, row) in rows {
            let entry = row.entry;
            if entry.deleted_at.is_none() && wanted.contains(entry.external_id.as_str()) {
                known
                    .holders
                    .insert(entry.external_id.clone(), source_id.clone());
            }
            if page.contains(source_id.as_str()) {
                known.ledger.insert(source_id, entry);
            }
        }
        Ok(known)
    }

    /// [`known`](Self::known)'s reads: the page's dead letters, and the rows
    /// of its ids and of the holders of its external ids; `None` when a run
    /// listed was merged away before its blocks were read.
    async fn known_on(
        &self,
        conn: &mut sqlx::SqliteConnection,
        sync: &str,
        ids: &[&str],
        external_ids: &[&str],
    ) -> Result<Option<KnownRows>, StateError> {
        let read: String = sqlx::query_scalar(KNOWN)
            .bind(sync)
            .bind(json_rows(ids)?)
            .bind(DeadLetterResolution::Discarded.as_str())
            .bind(json_rows(external_ids)?)
            .fetch_one(&mut *conn)
            .await?;
        let (dead, runs, holders): KnownRead =
            serde_json::from_str(&read).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let runs: Vec<ledger::RunInfo> = runs.into_iter().map(ledger::RunInfo::from).collect();
        let mut looked: Vec<&str> = ids.to_vec();
        // Most syncs key the destination by the source's id: the same list
        // twice, sorted whole, was half of this sort's work.
        if external_ids != ids {
            looked.extend(external_ids);
        }
        looked.extend(holders.iter().map(String::as_str));
        looked.sort_unstable();
        looked.dedup();
        let rows = ledger::lookup_listed(conn, &self.runs, false, sync, &runs, &looked).await?;
        Ok(rows.map(|rows| (dead, rows)))
    }

    /// Every write of the run `run_id` (every run's, with `None`), or of a run
    /// that ended, not known to have settled, newest version per source id:
    /// after a crash the destination may hold any of them, so nothing older may
    /// be written over them until the run completes. Another open run's writes
    /// are weighed when each write is announced instead (`claim`): that run may
    /// be running.
    pub async fn floors(&self, sync: &str, run_id: Option<&str>) -> Result<Floors, StateError> {
        let rows = sqlx::query(
            "SELECT e.value ->> 0 AS source_id, e.value ->> 1 AS version, e.value ->> 2 AS updated_at,
                    e.value ->> 3 AS settles_at
             FROM intents, jsonb_each(intents.rows) AS e
             WHERE intents.sync = ?1 AND (?2 IS NULL OR intents.run_id = ?2 OR intents.run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = ?1 AND status = ?3))",
        )
        .bind(sync)
        .bind(run_id)
        .bind(RunStatus::Open.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut floors = Floors::default();
        for row in rows {
            let settles_at: Option<i64> = row.try_get("settles_at")?;
            floors.add(Intent {
                source_id: row.try_get("source_id")?,
                version: row.try_get("version")?,
                updated_at: micros(row.try_get("updated_at")?)?,
                settles_at: settles_at.map(micros).transpose()?,
            });
        }
        Ok(floors)
    }

    pub async fn sink_position(&self, sync: &str) -> Result<Option<String>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM sink_positions WHERE sync = ?")
                .bind(sync)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn announced_elsewhere(&self, sync: &str, run_id: &str) -> Result<bool, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM intents AS i JOIN runs AS o USING (run_id)
                            WHERE i.sync = ?1 AND i.run_id != ?2 AND o.status = ?3)",
        )
        .bind(sync)
        .bind(run_id)
        .bind(RunStatus::Open.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    /// The records of a sync waiting to be read back: those of the run `run_id`,
    /// whatever invocation wrote them, and those left by runs that ended; an open
    /// run of another kind, which may be running now, reads back its own.
    pub async fn readbacks(&self, sync: &str, run_id: &str) -> Result<Vec<Readback>, StateError> {
        let rows = sqlx::query(
            "SELECT source_id, external_id, dest_id, version, updated_at, payload, payload_hash, settles_at
             FROM readbacks
             WHERE sync = ?1 AND (run_id = ?2 OR run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = ?1 AND status = ?3))
             ORDER BY settles_at, source_id",
        )
        .bind(sync)
        .bind(run_id)
        .bind(RunStatus::Open.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(readback).collect()
    }

    pub async fn status(&self, sync: &str) -> Result<SyncStatus, StateError> {
        let dead_letters = self.open_dead_letters(sync).await?;
        let mut ledger_records = 0;
        self.scan_ledger(sync, |_| ledger_records += 1).await?;
        Ok(SyncStatus {
            open_run: self.open_run(sync, RunKind::Incremental).await?,
            last_completed: self.last_completed(sync, RunKind::Incremental).await?,
            dead_letters,
            ledger_records,
            mark: self.high_water_mark(sync).await?,
            other_open: self.open_runs_besides(sync, RunKind::Incremental).await?,
            paused: self.paused_syncs().await?.iter().any(|s| s == sync),
        })
    }

    /// How many of a sync's dead letters are open (not resolved).
    pub async fn open_dead_letters(&self, sync: &str) -> Result<i64, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM dead_letters WHERE sync = ? AND resolved_at IS NULL",
        )
        .bind(sync)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The open runs of a sync other than its run of `kind`, oldest first.
    pub async fn open_runs_besides(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Vec<(RunRow, Checkpoint)>, StateError> {
        let rows = sqlx::query(
            "SELECT r.*, c.cursor, c.counters, c.updated_at AS checkpoint_at
             FROM runs r JOIN checkpoints c USING (run_id)
             WHERE r.sync = ? AND r.kind != ? AND r.status = ? ORDER BY r.started_at",
        )
        .bind(sync)
        .bind(kind.as_str())
        .bind(RunStatus::Open.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_with_checkpoint).collect()
    }

    /// Unresolved dead letters of a sync, oldest first.
    pub async fn dead_letters(&self, sync: &str) -> Result<Vec<DeadLetter>, StateError> {
        let rows = sqlx::query(
            "SELECT source_id, run_id, stage, error, payload, fingerprint, attempts, last_failed_at
             FROM dead_letters WHERE sync = ? AND resolved_at IS NULL ORDER BY first_failed_at, source_id",
        )
        .bind(sync)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dead_letter).collect()
    }

    /// The ledger of a sync, by source id: its runs and its staged rows
    /// folded as merges would fold them.
    pub async fn ledger(&self, sync: &str) -> Result<Vec<LedgerEntry>, StateError> {
        let mut ledger = Vec::new();
        self.scan_ledger(sync, |row| ledger.push(row.entry)).await?;
        Ok(ledger)
    }

    /// Every record of a sync's ledger, in source id order, read in one
    /// transaction.
    async fn scan_ledger(
        &self,
        sync: &str,
        each: impl FnMut(runs::RunRow),
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        scan::scan_all(&mut tx, sync, each).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod plans;
