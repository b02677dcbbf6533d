//! Owns the SQLite table destination: a database file of its own (not the
//! state store's), written through one connection in WAL mode with
//! `synchronous = FULL`, each upsert a statement that commits on its own.
//! The SQL text is the table layer's (`sink/table/sql.rs`); this folder runs
//! it and says what each SQLite result code means.

pub mod config;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use super::SinkError;
use super::table::sql::Dialect;
use super::table::{Database, DbFailure, TableSink, TableSpec};
use crate::policy::{Class, RetryPolicy};
use config::SqliteSpec;

/// The SQLite table destination.
pub type SqliteSink = TableSink<Sqlite>;

#[derive(Debug)]
pub struct Sqlite {
    pool: SqlitePool,
}

/// Opens the destination; the file and table are made at the first write.
pub fn open(spec: &SqliteSpec, retry: RetryPolicy) -> Result<SqliteSink, SinkError> {
    let shown = format!("{} table {}", spec.path.display(), spec.table.table);
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| SinkError::Database(format!("{shown}: {e}")))?
        .filename(&spec.path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a row the engine was told is written survives power loss.
        .synchronous(SqliteSynchronous::Full)
        .pragma("temp_store", "memory")
        // Another process writing the same file waits its turn.
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(options);
    Ok(TableSink::new(
        Sqlite { pool },
        spec.table.clone(),
        retry,
        shown,
    ))
}

#[async_trait::async_trait]
impl Database for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn columns(&self, spec: &TableSpec) -> Result<Option<Vec<String>>, DbFailure> {
        let rows = sqlx::query("SELECT name FROM pragma_table_info(?1)")
            .bind(&spec.table)
            .fetch_all(&self.pool)
            .await
            .map_err(failure)?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(failure))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn execute(&self, sql: &str) -> Result<(), DbFailure> {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(failure)
    }

    async fn upsert(&self, sql: &str, rows: &str) -> Result<Vec<String>, DbFailure> {
        sqlx::query_scalar::<_, String>(AssertSqlSafe(sql))
            .bind(rows)
            .fetch_all(&self.pool)
            .await
            .map_err(failure)
    }

    async fn delete(&self, sql: &str, key: &str) -> Result<(), DbFailure> {
        sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(failure)
    }

    async fn read(&self, sql: &str, key: &str) -> Result<Option<String>, DbFailure> {
        sqlx::query_scalar::<_, String>(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(failure)
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
