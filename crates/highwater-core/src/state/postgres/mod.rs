//! The PostgreSQL backend of the state store: the same tables and behaviour as
//! SQLite's, in a schema of a database that any number of workers share.
//! A commit writes its ledger rows into the ledger itself (a writer here does
//! not hold the whole store), so its rows are visible to lookups once it is
//! confirmed — except in the shared-transaction mode, where they are staged
//! and folded in after a commit the engine asks to merge (`commit.rs`); the
//! readers of a whole sync's ledger or of one record fold staged rows in as a
//! merge would. Every write transaction of a sync
//! takes the sync's advisory lock first: the compare-and-set of announced
//! writes and the settling of floors read and write as one, as SQLite's single
//! writer does. A store handed a run's lease ([`Fence`]) checks, in every
//! write transaction, that the lease is still the run's: a worker that lost it
//! commits nothing.

mod audit;
mod claim;
mod commit;
mod dlq;
mod events;
mod history;
pub mod lease;
mod operating;
mod reset;
pub mod shared;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row, Transaction};

use super::*;
use lease::Fence;

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "sink_positions",
        include_str!("../../../migrations/postgres/0002_sink_positions.sql"),
    ),
    (
        3,
        "ledger_staged",
        include_str!("../../../migrations/postgres/0003_ledger_staged.sql"),
    ),
    (
        4,
        "record_events_text",
        include_str!("../../../migrations/postgres/0004_record_events_text.sql"),
    ),
    (
        5,
        "sync_destinations",
        include_str!("../../../migrations/postgres/0005_sync_destinations.sql"),
    ),
    (
        6,
        "audit_destination_moved",
        include_str!("../../../migrations/postgres/0006_audit_destination_moved.sql"),
    ),
    (
        7,
        "refresh_tokens",
        include_str!("../../../migrations/postgres/0007_refresh_tokens.sql"),
    ),
    (
        8,
        "sync_mappings",
        include_str!("../../../migrations/postgres/0008_sync_mappings.sql"),
    ),
];

/// Where a PostgreSQL store is: the database's URL and the schema its tables
/// live in.
#[derive(Clone)]
pub struct PgLocation {
    pub url: String,
    pub schema: String,
    /// How long a lease lasts from its last renewal.
    pub lease: Duration,
}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLocation")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    location: Arc<PgLocation>,
    /// The schema a table named without one is in, for the store's user.
    default_schema: String,
    /// The lease a run holds, checked by every write transaction.
    fence: Option<Arc<Fence>>,
    /// The transaction this store's page commits share with a destination
    /// table in its database, once one asked (`shared.rs`).
    shared: Arc<std::sync::OnceLock<Arc<shared::PgShared>>>,
    /// How the pool connects, for a pool of a thread's own ([`PgStore::on_own_pool`]).
    connect: Connect,
}

/// Connect options, shown without the password they may hold.
#[derive(Clone)]
struct Connect(Arc<PgConnectOptions>);

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgConnectOptions { .. }")
    }
}

/// A write transaction of the store.
pub(super) type Tx = Transaction<'static, Postgres>;

impl PgStore {
    /// Connects to the store, creating its schema and migrating it. Workers
    /// starting at once take turns: one applies what is missing, the others
    /// then find it applied.
    pub async fn open(location: &PgLocation) -> Result<PgStore, StateError> {
        let shown = format!("{} (schema {})", redact_url(&location.url), location.schema);
        let open = |source| StateError::Open {
            path: shown.clone(),
            source,
        };
        let schema = location.schema.clone();
        let options = named(PgConnectOptions::from_str(&location.url).map_err(open)?);
        // The schema's creation and its migrations are one critical section
        // across workers: two `CREATE SCHEMA IF NOT EXISTS` at once can fail.
        let mut first = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(open)?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('highwater.migrations', 0))")
            .execute(&mut first)
            .await
            .map_err(open)?;
        let default_schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&mut first)
            .await
            .map_err(open)?;
        let created = sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(&schema)
        )))
        .execute(&mut first)
        .await;
        if let Err(source) = created {
            return Err(open(source));
        }
        let pool = pool_in(&schema, 8, location.lease)
            .connect_with(options.clone())
            .await
            .map_err(open)?;
        let migrations = MIGRATIONS
            .iter()
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
        let migrated = Migrator::with_migrations(migrations).run(&pool).await;
        let _ =
            sqlx::query("SELECT pg_advisory_unlock(hashtextextended('highwater.migrations', 0))")
                .execute(&mut first)
                .await;
        let _ = first.close().await;
        migrated.map_err(|source| StateError::Migrate {
            path: shown.clone(),
            source,
        })?;
        Ok(PgStore {
            pool,
            location: Arc::new(location.clone()),
            default_schema: default_schema.unwrap_or_else(|| "public".to_owned()),
            fence: None,
            shared: Default::default(),
            connect: Connect(Arc::new(options)),
        })
    }

    /// Whether the schema holds a store yet, without creating anything.
    pub async fn exists(url: &str, schema: &str) -> Result<bool, StateError> {
        let open = |source| StateError::Open {
            path: format!("{} (schema {schema})", redact_url(url)),
            source,
        };
        let options = named(PgConnectOptions::from_str(url).map_err(open)?);
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(open)?;
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                            WHERE table_schema = $1 AND table_name = 'runs')",
        )
        .bind(schema)
        .fetch_one(&mut conn)
        .await
        .map_err(open)?;
        let _ = conn.close().await;
        Ok(found)
    }

    /// Whether a write may be sent now (see [`Fence::check`]).
    pub(super) fn check_fence(&self) -> Result<(), StateError> {
        self.fence.as_deref().map_or(Ok(()), Fence::check)
    }

    pub async fn close(self) {
        if let Some(shared) = self.shared.get() {
            shared.writes.close().await;
        }
        self.pool.close().await;
    }

    /// This store on a pool of its own, for a thread that runs a runtime of its
    /// own (the reading thread, the committer); call it inside that runtime and
    /// [`PgStore::close_pool`] before the runtime ends. A connection's socket
    /// belongs to the runtime that opened it and fails once that runtime is
    /// gone, under whichever runtime uses it: opened by such a thread into the
    /// pool every task shares, it failed the query of whoever held it when the
    /// thread ended — the run history's record of how the invocation ended,
    /// or `serve`'s `/status`.
    pub(super) fn on_own_pool(&self) -> PgStore {
        PgStore {
            pool: pool_in(&self.location.schema, 2, self.location.lease)
                .connect_lazy_with(PgConnectOptions::clone(&self.connect.0)),
            ..self.clone()
        }
    }

    /// Closes a pool of a thread's own ([`PgStore::on_own_pool`]).
    pub(super) async fn close_pool(&self) {
        self.pool.close().await;
    }

    /// This store, its write transactions fenced by `fence`.
    pub(super) fn fenced(&self, fence: Arc<Fence>) -> PgStore {
        PgStore {
            fence: Some(fence),
            shared: Default::default(),
            ..self.clone()
        }
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A read-only transaction that sees one snapshot throughout: a fold of
    /// staged ledger rows commits wholly before it or after it.
    pub(super) async fn snapshot(&self) -> Result<Tx, StateError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A write transaction: under `sync`'s advisory lock when it writes for
    /// one sync, and fenced by the store's lease when it has one.
    pub(super) async fn writer(&self, sync: Option<&str>) -> Result<Tx, StateError> {
        let mut tx = self.pool.begin().await?;
        self.guard(&mut tx, sync).await?;
        Ok(tx)
    }

    /// Takes `sync`'s advisory lock in `tx` and checks the store's lease.
    async fn guard(&self, tx: &mut Tx, sync: Option<&str>) -> Result<(), StateError> {
        let sync = sync.or(self.fence.as_deref().map(|f| f.sync()));
        if let Some(sync) = sync {
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended('highwater.sync:' || $1, 0))",
            )
            .bind(sync)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(fence) = &self.fence {
            fence.check_in(tx).await?;
        }
        Ok(())
    }
}

impl PgStore {
    async fn run_where(
        &self,
        condition: &str,
        binds: (&str, &str, &str),
    ) -> Result<Vec<(RunRow, Checkpoint)>, StateError> {
        // Both parts are constants of this module.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN checkpoints c USING (run_id) WHERE {condition}"
        )))
        .bind(binds.0)
        .bind(binds.1)
        .bind(binds.2)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_with_checkpoint).collect()
    }

    pub async fn open_run(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        let open = (sync, kind.as_str(), RunStatus::Open.as_str());
        Ok(self
            .run_where("r.sync = $1 AND r.kind = $2 AND r.status = $3", open)
            .await?
            .pop())
    }

    pub async fn last_completed(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Option<(RunRow, Checkpoint)>, StateError> {
        let completed = (sync, kind.as_str(), RunStatus::Completed.as_str());
        Ok(self
            .run_where(
                "r.sync = $1 AND r.kind = $2 AND r.status = $3
                 ORDER BY r.completed_at DESC LIMIT 1",
                completed,
            )
            .await?
            .pop())
    }

    pub async fn open_runs_besides(
        &self,
        sync: &str,
        kind: RunKind,
    ) -> Result<Vec<(RunRow, Checkpoint)>, StateError> {
        let open = (sync, kind.as_str(), RunStatus::Open.as_str());
        self.run_where(
            "r.sync = $1 AND r.kind != $2 AND r.status = $3 ORDER BY r.started_at",
            open,
        )
        .await
    }

    pub async fn begin_run(&self, run: &RunRow, cursor: &Value) -> Result<(), StateError> {
        let mut tx = self.writer(Some(&run.sync)).await?;
        sqlx::query(
            "INSERT INTO runs (run_id, sync, kind, status, lower_bound, watermark, started_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
            "INSERT INTO checkpoints (run_id, cursor, counters, updated_at) VALUES ($1, $2, $3, $4)",
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

    pub async fn abandon_run(&self, run_id: &str) -> Result<(), StateError> {
        let mut tx = self.writer(None).await?;
        sqlx::query("DELETE FROM intents WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM readbacks WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE runs SET status = $1, updated_at = $2 WHERE run_id = $3 AND status = $4",
        )
        .bind(RunStatus::Failed.as_str())
        .bind(Timestamp::now().as_microsecond())
        .bind(run_id)
        .bind(RunStatus::Open.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The page's lookup, in one statement: ledger rows (kind 0), dead
    /// letters (1) and holders of external ids (2), as SQLite's; a row keyed
    /// by its own source id is found by the primary key, the others by the
    /// partial external-id index. Each id is looked up on its own (`LATERAL`,
    /// fenced by `OFFSET 0` so the planner cannot fold it into a join): a
    /// store filled since its last `ANALYZE` — a first run's — otherwise gets
    /// a plan that reads the sync's whole ledger, 1 ms a record at 100,000.
    /// The dead letters and the holders of other ids are probed only when
    /// the sync has any (a test once per statement): most syncs have none,
    /// and the probes were two thirds of a first run's lookups.
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
        let rows = sqlx::query(
            "SELECT 0 AS kind, l.source_id, l.external_id, l.dest_id, l.version, l.updated_at,
                    l.payload_hash, l.run_id, l.deleted_at, NULL AS fingerprint
               FROM unnest($2::text[]) AS i (id),
                    LATERAL (SELECT * FROM ledger
                             WHERE sync = $1 AND source_id = i.id OFFSET 0) AS l
             UNION ALL
             SELECT 1, d.source_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, d.fingerprint
               FROM unnest($2::text[]) AS i (id),
                    LATERAL (SELECT * FROM dead_letters
                             WHERE sync = $1 AND source_id = i.id
                               AND (resolved_at IS NULL OR resolution = $4) OFFSET 0) AS d
              WHERE EXISTS (SELECT 1 FROM dead_letters WHERE sync = $1)
             UNION ALL
             SELECT 2, l.source_id, l.external_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
               FROM unnest($3::text[]) AS e (id),
                    LATERAL (SELECT * FROM ledger
                             WHERE sync = $1 AND external_id = e.id AND deleted_at IS NULL
                               AND external_id <> source_id OFFSET 0) AS l
              WHERE EXISTS (SELECT 1 FROM ledger WHERE sync = $1 AND deleted_at IS NULL
                                                   AND external_id <> source_id)
             UNION ALL
             SELECT 2, l.source_id, l.external_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
               FROM (SELECT unnest($3::text[]) EXCEPT SELECT unnest($2::text[])) AS e (id),
                    LATERAL (SELECT * FROM ledger
                             WHERE sync = $1 AND source_id = e.id AND external_id = source_id
                               AND deleted_at IS NULL OFFSET 0) AS l",
        )
        .bind(sync)
        .bind(ids)
        .bind(external_ids)
        .bind(DeadLetterResolution::Discarded.as_str())
        .fetch_all(&self.pool)
        .await?;
        let wanted: HashSet<&str> = external_ids.iter().copied().collect();
        for row in &rows {
            let kind: i32 = row.try_get("kind")?;
            match kind {
                0 => {
                    let entry = ledger_entry(row)?;
                    if entry.deleted_at.is_none()
                        && entry.external_id == entry.source_id
                        && wanted.contains(entry.external_id.as_str())
                    {
                        known
                            .holders
                            .insert(entry.external_id.clone(), entry.source_id.clone());
                    }
                    known.ledger.insert(entry.source_id.clone(), entry);
                }
                1 => {
                    known
                        .dead
                        .insert(row.try_get("source_id")?, row.try_get("fingerprint")?);
                }
                _ => {
                    known
                        .holders
                        .insert(row.try_get("external_id")?, row.try_get("source_id")?);
                }
            }
        }
        Ok(known)
    }

    pub async fn sink_position(&self, sync: &str) -> Result<Option<String>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM sink_positions WHERE sync = $1")
                .bind(sync)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn announced_elsewhere(&self, sync: &str, run_id: &str) -> Result<bool, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM intents AS i JOIN runs AS o USING (run_id)
                            WHERE i.sync = $1 AND i.run_id != $2 AND o.status = $3)",
        )
        .bind(sync)
        .bind(run_id)
        .bind(RunStatus::Open.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn floors(&self, sync: &str, run_id: Option<&str>) -> Result<Floors, StateError> {
        let rows = sqlx::query(
            "SELECT e.value ->> 0 AS source_id, (e.value ->> 1)::bigint AS version,
                    (e.value ->> 2)::bigint AS updated_at, (e.value ->> 3)::bigint AS settles_at
             FROM intents, jsonb_array_elements(intents.rows) AS e (value)
             WHERE intents.sync = $1 AND ($2::text IS NULL OR intents.run_id = $2
               OR intents.run_id NOT IN (SELECT run_id FROM runs WHERE sync = $1 AND status = $3))",
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

    pub async fn readbacks(&self, sync: &str, run_id: &str) -> Result<Vec<Readback>, StateError> {
        let rows = sqlx::query(
            "SELECT source_id, external_id, dest_id, version, updated_at, payload, payload_hash, settles_at
             FROM readbacks
             WHERE sync = $1 AND (run_id = $2 OR run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = $1 AND status = $3))
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
        let mut conn = self.pool.acquire().await?;
        let (staged, _) = commit::staged_rows(&mut conn, sync, None).await?;
        let staged: HashSet<&str> = staged.iter().map(|(e, _)| e.source_id.as_str()).collect();
        let staged: Vec<&str> = staged.into_iter().collect();
        // Staged rows count once each, and not again when the ledger has their record.
        let ledger_records: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM ledger WHERE sync = $1)
                    + cardinality($2::text[])
                    - (SELECT COUNT(*) FROM ledger WHERE sync = $1 AND source_id = ANY($2))",
        )
        .bind(sync)
        .bind(&staged)
        .fetch_one(&mut *conn)
        .await?;
        drop(conn);
        Ok(SyncStatus {
            open_run: self.open_run(sync, RunKind::Incremental).await?,
            last_completed: self.last_completed(sync, RunKind::Incremental).await?,
            dead_letters: self.open_dead_letters(sync).await?,
            ledger_records,
            mark: self.high_water_mark(sync).await?,
            other_open: self.open_runs_besides(sync, RunKind::Incremental).await?,
            paused: self.paused_syncs().await?.iter().any(|s| s == sync),
        })
    }

    pub async fn open_dead_letters(&self, sync: &str) -> Result<i64, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM dead_letters WHERE sync = $1 AND resolved_at IS NULL",
        )
        .bind(sync)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn dead_letters(&self, sync: &str) -> Result<Vec<DeadLetter>, StateError> {
        let rows = sqlx::query(
            "SELECT source_id, run_id, stage, error, payload, fingerprint, attempts, last_failed_at
             FROM dead_letters WHERE sync = $1 AND resolved_at IS NULL
             ORDER BY first_failed_at, source_id",
        )
        .bind(sync)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dead_letter).collect()
    }

    /// The ledger of a sync, by source id, its staged rows folded in.
    pub async fn ledger(&self, sync: &str) -> Result<Vec<LedgerEntry>, StateError> {
        let mut tx = self.snapshot().await?;
        let rows = sqlx::query(
            "SELECT source_id, external_id, dest_id, version, updated_at, payload_hash, run_id, deleted_at
             FROM ledger WHERE sync = $1",
        )
        .bind(sync)
        .fetch_all(&mut *tx)
        .await?;
        let (staged, _) = commit::staged_rows(&mut tx, sync, None).await?;
        tx.commit().await?;
        let mut ledger = rows
            .iter()
            .map(ledger_entry)
            .collect::<Result<Vec<_>, _>>()?;
        if !staged.is_empty() {
            // Only the records with staged rows are folded (copied): the
            // ledger may be the size of the source.
            let ids: HashSet<&str> = staged.iter().map(|(e, _)| e.source_id.as_str()).collect();
            let (older, mut rest): (Vec<_>, Vec<_>) = ledger
                .into_iter()
                .partition(|e| ids.contains(e.source_id.as_str()));
            let folded = commit::merged(
                older
                    .iter()
                    .map(|e| (e, 0))
                    .chain(staged.iter().map(|(e, at)| (e, *at))),
            );
            rest.extend(folded.into_iter().map(|(e, _)| e));
            ledger = rest;
        }
        ledger.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        Ok(ledger)
    }
}

/// A pool of up to `connections`, each looking in `schema` first. A session
/// left idle inside a transaction for a whole `lease` is ended by the server:
/// its process is frozen or gone (a live run never waits that long between
/// the statements of one transaction), and the row and advisory locks it
/// holds would otherwise keep every other worker waiting on it for as long as
/// it stays frozen — past its lease, which is all another worker waits for.
fn pool_in(schema: &str, connections: u32, lease: Duration) -> PgPoolOptions {
    let search_path = quote_ident(schema);
    let idle = format!("{}ms", lease.as_millis().max(1_000));
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _| {
            let (search_path, idle) = (search_path.clone(), idle.clone());
            Box::pin(async move {
                sqlx::query(
                    "SELECT set_config('search_path', $1, false),
                            set_config('idle_in_transaction_session_timeout', $2, false)",
                )
                .bind(search_path)
                .bind(idle)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
}

/// An identifier quoted for PostgreSQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The store's connections keep the `application_name` their URL gives
/// them: an operator finds them in `pg_stat_activity` by it.
fn named(options: PgConnectOptions) -> PgConnectOptions {
    if options.get_application_name().is_some() {
        options
    } else {
        options.application_name("highwater state")
    }
}

/// `url` as messages may show it: without credentials or query.
fn redact_url(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| "postgres://…".to_owned(), |u| crate::http::redact(&u))
}

/// The columns [`run_with_checkpoint`] reads, from `runs r JOIN checkpoints c`.
const RUN_COLUMNS: &str = "r.run_id, r.sync, r.kind, r.status, r.lower_bound, r.watermark,
    r.started_at, r.updated_at, r.completed_at, r.sample_written::text AS sample_written,
    r.sample_dead_lettered::text AS sample_dead_lettered,
    c.cursor, c.counters, c.updated_at AS checkpoint_at";
