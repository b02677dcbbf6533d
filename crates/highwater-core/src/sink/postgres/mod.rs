//! Owns the PostgreSQL table destination: a pool of connections (named
//! `highwater <sync>` in `pg_stat_activity`), each upsert an autocommit
//! statement, so a refused row aborts no transaction but its own statement —
//! or, in the state store's database, the run's transaction that its page
//! commits go in (`state::shared`), each statement in a savepoint so that a
//! refused row undoes that statement alone, and rows and the checkpoint
//! commit together.
//! The SQL text is the table layer's (`sink/table/sql.rs`); this folder runs
//! it and says what each SQLSTATE means.
//!
//! Rows reach the upsert as one JSONB array unpacked by `jsonb_to_recordset`
//! (one bind, one prepared statement whatever the batch's size). `COPY` into
//! a temporary table and one merge statement per batch was measured against
//! it by `benches/db.rs` (PostgreSQL 15 on 127.0.0.1, batches of 1,000 rows
//! of 7 columns, the database alone): the multi-row upsert did 84,700 rows/s
//! at 100,000 rows and 64,400 at 1,000,000; COPY and merge 17,000 and
//! 15,900 — a fifth to a quarter as fast (a transaction, the staging table's
//! DDL and a second statement per batch, for rows that are small). The
//! upsert stays.

pub mod config;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::SinkError;
use super::table::sql::Dialect;
use super::table::{Database, DbFailure, TableSink, TableSpec};
use crate::policy::{Class, RetryPolicy};
use crate::state::PgShared;
use config::PostgresSpec;

/// The PostgreSQL table destination.
pub type PostgresSink = TableSink<Postgres>;

#[derive(Debug)]
pub struct Postgres {
    connection: Connection,
}

#[derive(Debug)]
enum Connection {
    /// A database of its own: each statement commits on its own.
    Own(PgPool),
    /// The state store's: each statement runs in the run's shared
    /// transaction, which the store's next page commit commits.
    Shared(Arc<PgShared>),
}

/// The `application_name` of the sync's connections: the one the URL
/// names, where it does (an operator finds their connections by it in
/// `pg_stat_activity`), else `highwater <sync>`.
pub fn application_name(spec: &PostgresSpec, sync: &str) -> String {
    PgConnectOptions::from_str(spec.url.expose())
        .ok()
        .and_then(|o| o.get_application_name().map(str::to_owned))
        .unwrap_or_else(|| format!("highwater {sync}"))
}

/// The server, database and table `spec` names, without its credentials.
pub(crate) fn identity(spec: &PostgresSpec) -> String {
    match PgConnectOptions::from_str(spec.url.expose()) {
        Ok(options) => place(&options, &spec.table),
        Err(_) => format!("{} table {}", spec.url, spec.table.table),
    }
}

/// `host:port/database table [schema.]table`.
fn place(options: &PgConnectOptions, table: &TableSpec) -> String {
    let at = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres"),
    );
    match &table.schema {
        Some(schema) => format!("{at} table {schema}.{}", table.table),
        None => format!("{at} table {}", table.table),
    }
}

/// Opens the destination; connections are made, and the table created or
/// evolved, at the first write. `shared` is the run's transaction shared
/// with the state store, for a table in its database.
pub fn open(
    spec: &PostgresSpec,
    sync: &str,
    retry: RetryPolicy,
    shared: Option<Arc<PgShared>>,
) -> Result<PostgresSink, SinkError> {
    let options = PgConnectOptions::from_str(spec.url.expose())
        .map_err(|e| SinkError::Database(format!("destination url: {e}")))?
        .application_name(&application_name(spec, sync));
    let mut table = spec.table.clone();
    if let Some(shared) = &shared {
        // The shared connection looks in the store's schema first: a table
        // named without a schema is where the destination's user has it.
        table
            .schema
            .get_or_insert_with(|| shared.default_schema.clone());
    }
    let shown = format!("PostgreSQL {}", place(&options, &table));
    let connection = match shared {
        Some(shared) => {
            tracing::info!(table = %shown, "rows commit with the checkpoint, in the state store's transactions");
            Connection::Shared(shared)
        }
        None => Connection::Own(
            PgPoolOptions::new()
                .max_connections(spec.table.concurrency as u32 + 1)
                // A connection more than statements in flight: a statement
                // waits on a connection being made, not on another
                // statement. The pool tries again to connect to a server
                // that refuses until this passes, and each attempt of a
                // statement waits that long, so it is short.
                .acquire_timeout(CONNECT_TIMEOUT)
                .test_before_acquire(true)
                .connect_lazy_with(options),
        ),
    };
    Ok(TableSink::new(Postgres { connection }, table, retry, shown))
}

/// How long a statement waits for a connection to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the pool could not hand out a connection: its own error says only that
/// it timed out, having tried again and again to connect; one connection made
/// here, outside it, fails with the cause (a refused connection, a host not
/// found, a password refused). Where that one connects, the timeout stands.
async fn why_no_connection(pool: &PgPool) -> sqlx::Error {
    reachable(pool)
        .await
        .err()
        .unwrap_or(sqlx::Error::PoolTimedOut)
}

/// Makes one connection outside the pool, and says why it could not; `Ok`
/// where it could, or where it did not answer within the timeout.
async fn reachable(pool: &PgPool) -> Result<(), sqlx::Error> {
    let options = pool.connect_options();
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&*options),
    )
    .await
    {
        Ok(Err(e)) => Err(e),
        Ok(Ok(connection)) => {
            let _ = sqlx::Connection::close(connection).await;
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// Runs `$query.$method(connection)` on the destination's connection. In the
/// run's shared transaction the statement runs in a savepoint: whatever it
/// fails for, it undoes itself alone and the transaction goes on. Only when
/// the transaction itself fails (its connection gone) is it lost, with rows
/// the engine was told are written: that is fatal for the run, and the store
/// refuses its later page commits ([`PgShared`]); the next run resumes from
/// the last one.
macro_rules! on_connection {
    ($db:expr, $query:expr, $method:ident) => {
        match &$db.connection {
            // A pool that holds no connection tries again and again to
            // make one until its timeout, each attempt of a statement as
            // long: one made first, outside it, fails at once with the
            // cause where nothing answers (a refused connection).
            Connection::Own(pool) => match if pool.size() == 0 {
                reachable(pool).await
            } else {
                Ok(())
            } {
                Err(e) => Err(failure(e)),
                Ok(()) => match $query.$method(pool).await {
                    Ok(value) => Ok(value),
                    Err(sqlx::Error::PoolTimedOut) => Err(failure(why_no_connection(pool).await)),
                    Err(e) => Err(failure(e)),
                },
            },
            Connection::Shared(shared) => {
                let mut tx = shared
                    .writes
                    .lock()
                    .await
                    .map_err(DbFailure::shared_refused)?;
                let outcome = async {
                    let mut savepoint = sqlx::Connection::begin(&mut **tx.transaction())
                        .await
                        .map_err(failure)?;
                    match $query.$method(&mut *savepoint).await {
                        Ok(value) => {
                            savepoint.commit().await.map_err(failure)?;
                            Ok(Ok(value))
                        }
                        Err(e) => {
                            savepoint.rollback().await.map_err(failure)?;
                            Ok(Err(failure(e)))
                        }
                    }
                }
                .await;
                match outcome {
                    Ok(result) => {
                        tx.keep();
                        result
                    }
                    Err(e) => {
                        drop(tx);
                        Err(shared_lost(e))
                    }
                }
            }
        }
    };
}

#[async_trait::async_trait]
impl Database for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn in_the_store_transaction(&self) -> bool {
        matches!(self.connection, Connection::Shared(_))
    }

    async fn columns(&self, spec: &TableSpec) -> Result<Option<Vec<(String, String)>>, DbFailure> {
        // The catalog, not information_schema: its `data_type` says `ARRAY`
        // or `USER-DEFINED` where the statements need `text[]` or the type.
        let rows = on_connection!(
            self,
            sqlx::query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute AS a \
                 JOIN pg_class AS c ON c.oid = a.attrelid \
                 JOIN pg_namespace AS n ON n.oid = c.relnamespace \
                 WHERE n.nspname = coalesce($1, current_schema()) AND c.relname = $2 \
                   AND a.attnum > 0 AND NOT a.attisdropped",
            )
            .bind(spec.schema.as_deref())
            .bind(&spec.table),
            fetch_all
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(failure)?,
                    r.try_get(1).map_err(failure)?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn execute(&self, sql: &str) -> Result<(), DbFailure> {
        on_connection!(self, sqlx::query(AssertSqlSafe(sql)), execute).map(|_| ())
    }

    async fn upsert(&self, sql: &str, rows: &str) -> Result<Vec<String>, DbFailure> {
        on_connection!(
            self,
            sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(rows),
            fetch_all
        )
    }

    async fn delete(&self, sql: &str, key: &str) -> Result<(), DbFailure> {
        on_connection!(self, sqlx::query(AssertSqlSafe(sql)).bind(key), execute).map(|_| ())
    }

    async fn read(&self, sql: &str, key: &str) -> Result<Option<String>, DbFailure> {
        on_connection!(
            self,
            sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(key),
            fetch_optional
        )
    }
}

/// The shared transaction failed as a whole: fatal for the run, whatever
/// the statement's own failure would have been.
fn shared_lost(e: DbFailure) -> DbFailure {
    DbFailure {
        class: Class::Fatal,
        message: format!(
            "{} — the transaction shared with the state store is lost with it: this run stops, and the next resumes from its last commit",
            e.message
        ),
        already_exists: false,
        ..e
    }
}

/// What a failed statement means, by SQLSTATE class: data (22) and integrity
/// (23) are the row's; connection (08), operator intervention (57: a
/// terminated backend), serialization and deadlock (40), resources (53) and
/// a lock not available (55P03) are worth another try, as are I/O errors and
/// a pool that timed out — a statement whose connection died committed or
/// did not, and the upsert is idempotent; the rest (authentication 28,
/// permission 42501, an undefined table 42P01, syntax) needs a person, as
/// does TLS that cannot be had: a certificate refused, or a server without
/// TLS under `sslmode=require` (a connection lost in the handshake is I/O).
fn failure(e: sqlx::Error) -> DbFailure {
    let transient = |outcome_known| Class::Transient { outcome_known };
    let (class, code, message) = match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let class = match code.get(..2).unwrap_or("") {
                "22" | "23" => Class::RecordLevel,
                "08" | "57" | "40" | "53" => transient(false),
                _ if code == "55P03" => transient(true),
                _ => Class::Fatal,
            };
            // PostgreSQL's detail and column say which value and where
            // ("numeric field overflow" alone does not).
            let mut message = db.message().to_owned();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(column) = pg.column() {
                    message.push_str(&format!(" (column {column})"));
                }
                if let Some(detail) = pg.detail() {
                    message.push_str(&format!(": {detail}"));
                }
            }
            (class, Some(code), message)
        }
        sqlx::Error::Tls(tls) if tls_needs_a_person(tls.as_ref()) => {
            (Class::Fatal, None, e.to_string())
        }
        // rustls's refusal of a certificate arrives as an I/O error.
        sqlx::Error::Io(io) if crate::http::tls_refused_in(io) => {
            (Class::Fatal, None, e.to_string())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => (transient(false), None, e.to_string()),
        _ => (Class::Fatal, None, e.to_string()),
    };
    // 42P07 duplicate table, 42701 duplicate column, 23505 (a unique index of
    // the catalog) and 42P06 duplicate schema: another process made it first.
    let already_exists = matches!(code.as_deref(), Some("42P07" | "42701" | "23505" | "42P06"));
    DbFailure {
        class,
        code,
        message,
        already_exists,
    }
}

/// Whether a connection's TLS failed on a setting rather than on the network:
/// rustls refused the certificate or protocol, or no I/O error is behind it
/// (the server said it has no TLS).
fn tls_needs_a_person(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    if crate::http::tls_refused_in(e) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return false;
        }
        source = s.source();
    }
    true
}
