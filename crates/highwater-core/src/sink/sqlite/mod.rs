//! Owns the SQLite table destination: a database file of its own, written
//! through one connection in WAL mode, each upsert a statement that commits
//! on its own and is made durable with every other before the page's
//! checkpoint commits (`flush` syncs the WAL) — or the state store's file,
//! written in the store's open write transaction (`state::shared`), so that
//! rows and the checkpoint commit together.
//! The SQL text is the table layer's (`sink/table/sql.rs`); this folder runs
//! it and says what each SQLite result code means.

pub mod config;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use super::SinkError;
use super::table::sql::Dialect;
use super::table::{Database, DbFailure, TableSink, TableSpec};
use crate::policy::{Class, RetryPolicy};
use crate::state::TableSharing;
use crate::state::shared::SharedWrites;
use config::SqliteSpec;

/// The SQLite table destination.
pub type SqliteSink = TableSink<Sqlite>;

#[derive(Debug)]
pub struct Sqlite {
    connection: Connection,
}

#[derive(Debug)]
enum Connection {
    /// A file of its own (at `path`): each statement commits on its own.
    Own { pool: SqlitePool, path: PathBuf },
    /// The state store's file: each statement runs in the store's open write
    /// transaction, which the store's next commit commits; held for as long
    /// as the destination is, the sharing tells the store so.
    Shared {
        writes: Arc<SharedWrites<sqlx::Sqlite>>,
        _sharing: TableSharing,
    },
}

/// Opens the destination; the file and table are made at the first write.
/// `shared` is the state store's write transaction, for a table in its file.
pub fn open(
    spec: &SqliteSpec,
    retry: RetryPolicy,
    shared: Option<(Arc<SharedWrites<sqlx::Sqlite>>, TableSharing)>,
) -> Result<SqliteSink, SinkError> {
    let shown = format!("{} table {}", spec.path.display(), spec.table.table);
    let connection = match shared {
        Some((shared, sharing)) => {
            tracing::info!(table = %shown, "rows commit with the checkpoint, in the state store's transactions");
            Connection::Shared {
                writes: shared,
                _sharing: sharing,
            }
        }
        None => {
            // SQLite creates a missing file, not its directory; the state
            // store and the JSON Lines destination create theirs too.
            if let Some(dir) = spec.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    SinkError::Database(format!(
                        "{shown}: cannot create the directory {}: {e}",
                        dir.display()
                    ))
                })?;
            }
            let options = SqliteConnectOptions::from_str("sqlite://")
                .map_err(|e| SinkError::Database(format!("{shown}: {e}")))?
                .filename(&spec.path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // NORMAL: a commit does not sync the WAL; `flush` does, once
                // for every upsert since the last, before the engine counts
                // them written. FULL held the one connection through a sync
                // per upsert.
                .synchronous(SqliteSynchronous::Normal)
                .pragma("temp_store", "memory")
                // Another process writing the same file waits its turn.
                .busy_timeout(Duration::from_secs(10))
                // An upsert returns a key per row written: a buffer of
                // 4,096 (batches of up to that many rows) lets SQLite's thread
                // return them all without waiting for the task every 50 rows,
                // as the state store's does.
                .row_buffer_size(4096);
            Connection::Own {
                pool: SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_lazy_with(options),
                path: spec.path.clone(),
            }
        }
    };
    Ok(TableSink::new(
        Sqlite { connection },
        spec.table.clone(),
        retry,
        shown,
    ))
}

/// Runs `$query.$method(connection)` on the destination's connection. In the
/// store's shared transaction, a statement that failed for its row (SQLite
/// undid that statement alone) or DDL that found its work done leaves the
/// transaction open; any other failure rolls it back whole, losing rows the
/// engine was told are written, so it is fatal, and the store refuses every
/// later commit of this process ([`SharedWrites`]).
macro_rules! on_connection {
    ($db:expr, $query:expr, $method:ident) => {
        match &$db.connection {
            Connection::Own { pool, .. } => $query.$method(pool).await.map_err(failure),
            Connection::Shared { writes: shared, .. } => {
                let mut tx = shared.lock().await.map_err(DbFailure::shared_refused)?;
                match $query.$method(&mut *tx).await.map_err(failure) {
                    Ok(value) => {
                        tx.keep();
                        Ok(value)
                    }
                    Err(e) if e.class == Class::RecordLevel || e.already_exists => {
                        tx.keep();
                        Err(e)
                    }
                    Err(e) => {
                        drop(tx);
                        Err(DbFailure {
                            class: Class::Fatal,
                            ..e
                        })
                    }
                }
            }
        }
    };
}

#[async_trait::async_trait]
impl Database for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// With their declared types: a column whose type names JSON takes JSON
    /// text, any other the SQL value the JSON holds (`sql.rs`).
    async fn columns(&self, spec: &TableSpec) -> Result<Option<Vec<(String, String)>>, DbFailure> {
        let rows = on_connection!(
            self,
            sqlx::query("SELECT name, type FROM pragma_table_info(?1)").bind(&spec.table),
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

    /// Syncs the file's WAL; in the store's file, the store's commit makes
    /// the rows durable with the checkpoint.
    async fn flush(&self) -> Result<(), DbFailure> {
        match &self.connection {
            Connection::Own { path, .. } => crate::wal::sync(path).await.map_err(|e| DbFailure {
                class: Class::Fatal,
                code: None,
                message: e.to_string(),
                already_exists: false,
            }),
            Connection::Shared { .. } => Ok(()),
        }
    }

    fn in_the_store_transaction(&self) -> bool {
        matches!(self.connection, Connection::Shared { .. })
    }
}

/// What a failed SQLite statement means. A constraint, a value too big or of
/// the wrong type is the row's; a busy or locked file is worth another try
/// (nothing was applied); a broken pool or I/O error too (the statement
/// committed or not: repeating the upsert is idempotent); anything else
/// (no such table, read-only file, no permission) needs a person.
fn failure(e: sqlx::Error) -> DbFailure {
    let transient = |outcome_known| Class::Transient { outcome_known };
    let (class, code, message) = match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned());
            let primary = code
                .as_deref()
                .and_then(|c| c.parse::<i64>().ok())
                .map_or(1, |c| c & 0xff);
            let class = match primary {
                // SQLITE_CONSTRAINT, SQLITE_TOOBIG, SQLITE_MISMATCH
                18..=20 => Class::RecordLevel,
                // SQLITE_BUSY, SQLITE_LOCKED
                5 | 6 => transient(true),
                // SQLITE_IOERR, SQLITE_FULL, SQLITE_PROTOCOL
                10 | 13 | 15 => transient(false),
                _ => Class::Fatal,
            };
            (class, code, db.message().to_owned())
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            (transient(false), None, e.to_string())
        }
        _ => (Class::Fatal, None, e.to_string()),
    };
    let already_exists = message.contains("duplicate column") || message.contains("already exists");
    DbFailure {
        class,
        code,
        message,
        already_exists,
    }
}
