//! `highwater state copy`: moves a SQLite store into an empty PostgreSQL one —
//! runs, checkpoints, invocations, the ledger, announced writes, read-backs,
//! dead letters, record events, the audit log, resets, incidents and pauses —
//! in one PostgreSQL transaction, so a copy that fails leaves nothing behind.
//! The ledger goes as the rows its runs and staged rows fold to.
//! Each table travels in chunks of JSON objects named by column, unpacked by
//! `jsonb_populate_recordset`, so one statement per table serves whatever its
//! columns' types.
//! Invariants: nothing is copied while a run is open (its checkpoint would
//! move on in the file, not in the copy); nothing is copied into a store that
//! already holds runs.

use sqlx::AssertSqlSafe;

use super::{Backend, RunStatus, StateError, Store};

/// What was copied, table by table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub tables: Vec<(&'static str, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("copy from a SQLite store to a PostgreSQL one (`[state] path` to `url`)")]
    Backends,
    #[error(
        "run {run_id} of sync {sync:?} is open: finish it (or reset it) before the store is copied, so that its checkpoint moves in one place only; nothing was copied"
    )]
    RunOpen { sync: String, run_id: String },
    #[error(
        "the PostgreSQL store already holds {runs} run(s): copy only into an empty schema; nothing was copied"
    )]
    NotEmpty { runs: i64 },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Each table: its name, its columns as SQLite hands them over as JSON (a
/// JSON column as JSON, not as text), and the order of its key.
const TABLES: &[(&str, &str, &str)] = &[
    (
        "runs",
        "'run_id', run_id, 'sync', sync, 'kind', kind, 'status', status, 'lower_bound', lower_bound, \
         'watermark', watermark, 'started_at', started_at, 'updated_at', updated_at, \
         'completed_at', completed_at, 'sample_written', json(sample_written), \
         'sample_dead_lettered', json(sample_dead_lettered)",
        "run_id",
    ),
    (
        "checkpoints",
        "'run_id', run_id, 'cursor', cursor, 'counters', counters, 'updated_at', updated_at",
        "run_id",
    ),
    (
        "invocations",
        "'run_id', run_id, 'number', number, 'started_at', started_at, 'ended_at', ended_at, \
         'outcome', outcome, 'stop_reason', stop_reason, 'error_class', error_class, 'error', error, \
         'cursor_start', cursor_start, 'cursor_end', cursor_end, 'counters_start', counters_start, \
         'counters_end', counters_end, 'retries', retries",
        "run_id, number",
    ),
    // Read from the ledger's runs and staged rows instead (`ledger_chunks`).
    ("ledger", "", ""),
    (
        "intents",
        "'sync', sync, 'batch', batch, 'run_id', run_id, 'rows', json(rows)",
        "sync, batch",
    ),
    (
        "readbacks",
        "'sync', sync, 'source_id', source_id, 'run_id', run_id, 'external_id', external_id, \
         'dest_id', dest_id, 'version', version, 'updated_at', updated_at, 'payload', payload, \
         'payload_hash', payload_hash, 'settles_at', settles_at",
        "sync, source_id",
    ),
    (
        "dead_letters",
        "'sync', sync, 'source_id', source_id, 'run_id', run_id, 'stage', stage, 'error', error, \
         'payload', payload, 'fingerprint', fingerprint, 'attempts', attempts, \
         'first_failed_at', first_failed_at, 'last_failed_at', last_failed_at, \
         'resolved_at', resolved_at, 'resolution', resolution, 'audit_id', audit_id",
        "sync, source_id",
    ),
    (
        "record_events",
        "'sync', sync, 'at', at, 'run_id', run_id, 'seq', seq, 'events', json(events)",
        "sync, at, run_id, seq",
    ),
    (
        "audit_log",
        "'id', id, 'at', at, 'sync', sync, 'action', action, 'scope', scope, 'reason', reason, \
         'details', details",
        "id",
    ),
    (
        "resets",
        "'sync', sync, 'at', at, 'to_at', to_at, 'audit_id', audit_id",
        "sync, at",
    ),
    (
        "alert_incidents",
        "'incident_id', incident_id, 'sync', sync, 'kind', kind, 'run_id', run_id, \
         'reason', reason, 'opened_at', opened_at, 'notified_at', notified_at, 'closed_at', closed_at",
        "incident_id",
    ),
    (
        "paused_syncs",
        "'sync', sync, 'paused_at', paused_at",
        "sync",
    ),
    (
        "sink_positions",
        "'sync', sync, 'position', position",
        "sync",
    ),
    (
        "sync_destinations",
        "'sync', sync, 'destination', destination, 'since', since, 'mapping', mapping",
        "sync",
    ),
    (
        "refresh_tokens",
        "'credential', credential, 'token', token, 'since', since",
        "credential",
    ),
];

/// Rows per statement: a chunk of the ledger is a few MiB of JSON.
const CHUNK: i64 = 5_000;

impl Store {
    /// Copies this SQLite store into `target`, an empty PostgreSQL store.
    pub async fn copy_to(&self, target: &Store) -> Result<Copied, CopyError> {
        let (Backend::Sqlite(from), Backend::Postgres(to)) = (&self.backend, &target.backend)
        else {
            return Err(CopyError::Backends);
        };
        let pool = from.pool();
        let open: Option<(String, String)> =
            sqlx::query_as("SELECT sync, run_id FROM runs WHERE status = ? LIMIT 1")
                .bind(RunStatus::Open.as_str())
                .fetch_optional(pool)
                .await
                .map_err(StateError::from)?;
        if let Some((sync, run_id)) = open {
            return Err(CopyError::RunOpen { sync, run_id });
        }
        let mut tx = to.writer(None).await?;
        let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
            .fetch_one(&mut *tx)
            .await
            .map_err(StateError::from)?;
        if runs > 0 {
            return Err(CopyError::NotEmpty { runs });
        }
        let mut copied = Copied::default();
        for (table, columns, key) in TABLES {
            if *table == "ledger" {
                let mut rows = 0u64;
                for sync in from.ledger_syncs().await? {
                    let mut chunks = from.ledger_chunks(&sync).await?;
                    while let Some(chunk) = chunks.next(CHUNK as usize).await? {
                        rows += populate(&mut tx, table, "", chunk).await?;
                    }
                }
                copied.tables.push((table, rows));
                continue;
            }
            let mut rows = 0u64;
            let mut offset = 0i64;
            loop {
                // Constants of this module only.
                let chunk: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT json_group_array(json_object({columns})) FROM
                       (SELECT * FROM {table} ORDER BY {key} LIMIT ?1 OFFSET ?2)
                     HAVING COUNT(*) > 0"
                )))
                .bind(CHUNK)
                .bind(offset)
                .fetch_optional(pool)
                .await
                .map_err(StateError::from)?;
                let Some(chunk) = chunk else { break };
                let overriding = if *table == "audit_log" {
                    "OVERRIDING SYSTEM VALUE"
                } else {
                    ""
                };
                rows += populate(&mut tx, table, overriding, chunk).await?;
                offset += CHUNK;
            }
            copied.tables.push((table, rows));
        }
        // The log's ids go on from the last one copied, never given twice.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('audit_log', 'id'),
                           GREATEST((SELECT MAX(id) FROM audit_log), 1))",
        )
        .execute(&mut *tx)
        .await
        .map_err(StateError::from)?;
        tx.commit().await.map_err(StateError::from)?;
        Ok(copied)
    }
}

/// Inserts `chunk`, a JSON array of `table`'s rows as objects named by column.
async fn populate(
    tx: &mut sqlx::PgConnection,
    table: &str,
    overriding: &str,
    chunk: String,
) -> Result<u64, StateError> {
    // Constants of this module only.
    let done = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} {overriding}
         SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb)"
    )))
    .bind(chunk)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}
