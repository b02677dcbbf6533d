//! Owns what the database destinations (`sqlite/`, `postgres/`) share: the
//! table's spec and column plan (`config.rs`), the SQL text per dialect
//! (`sql.rs`), the splitting of a refused batch (`split.rs`), and the
//! [`Sink`] itself, over one [`Database`] per folder that runs statements and
//! says what each failure means.
//!
//! A write is a multi-row upsert by key that lands only where the table's
//! version is not newer (`<=`: a rewrite of the same version with another
//! payload lands); a row the upsert does not return is held newer at the
//! destination (superseded). Every statement commits on its own, so it
//! committed or it did not: repeating it is the idempotent path, and no write
//! lands late.
//! Invariant: no checkpoint, no ledger, no state store here.

pub mod config;
pub mod split;
pub mod sql;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{Delete, Held, Sink, SinkError, Write, Written};
use crate::config::JsonType;
use crate::http::HttpError;
use crate::obs::RetryCounts;
use crate::policy::{Class, Failed, GaveUp, RetryPolicy, retry};
use crate::stop::Stop;
use split::{RowOutcome, Splitter};
use sql::{Dialect, SqlColumn, Statements};

/// A table destination, validated: where the rows go and how they look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub table: String,
    /// PostgreSQL only; `None` is the connection's `search_path`.
    pub schema: Option<String>,
    /// Holds the mapping's external id; the upsert's conflict key.
    pub key_column: String,
    /// Holds the record's version ([`Write::version_number`]), compared in the upsert.
    pub version_column: String,
    pub layout: Layout,
    /// Create the table when it is missing.
    pub create_table: bool,
    /// Add a column for a newly mapped field; otherwise refuse to start.
    pub evolve: bool,
    pub batch_size: usize,
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A column per top-level output field of the mapping.
    Columns(Vec<SqlColumn>),
    /// The whole payload in one JSON column.
    Json { payload_column: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    BigInt,
    Double,
    Boolean,
    Json,
}

impl ColumnType {
    pub fn of(json: JsonType) -> ColumnType {
        match json {
            JsonType::String => ColumnType::Text,
            JsonType::Integer => ColumnType::BigInt,
            JsonType::Number => ColumnType::Double,
            JsonType::Boolean => ColumnType::Boolean,
            JsonType::Object | JsonType::Array => ColumnType::Json,
        }
    }
}

/// One failed statement, as the database's folder classified it.
#[derive(Debug, Clone)]
pub struct DbFailure {
    pub class: Class,
    /// The SQLSTATE, or SQLite's extended result code.
    pub code: Option<String>,
    pub message: String,
    /// DDL that lost a race with another process doing the same (a table or
    /// column that now exists): done.
    pub already_exists: bool,
}

impl DbFailure {
    /// The state store refused its shared transaction to the table: an
    /// earlier failure rolled it back, with rows the run was told are written.
    pub fn shared_refused(e: crate::state::StateError) -> DbFailure {
        DbFailure {
            class: Class::Fatal,
            code: None,
            message: e.to_string(),
            already_exists: false,
        }
    }
}

impl fmt::Display for DbFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} (code {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// One database: runs a statement on a pooled connection, classifying its
/// failure (a connection that failed is not used again).
#[async_trait::async_trait]
pub trait Database: Send + Sync + fmt::Debug + 'static {
    fn dialect(&self) -> Dialect;
    /// The columns the table has, each with the type it declares, or `None`
    /// when there is no such table.
    async fn columns(&self, spec: &TableSpec) -> Result<Option<Vec<(String, String)>>, DbFailure>;
    async fn execute(&self, sql: &str) -> Result<(), DbFailure>;
    /// Runs the upsert over `rows` (a JSON array) and gives the keys it returned.
    async fn upsert(&self, sql: &str, rows: &str) -> Result<Vec<String>, DbFailure>;
    async fn delete(&self, sql: &str, key: &str) -> Result<(), DbFailure>;
    /// The row as a JSON object's text.
    async fn read(&self, sql: &str, key: &str) -> Result<Option<String>, DbFailure>;
    /// Makes every statement committed so far durable, for a database whose
    /// commits do not do it themselves.
    async fn flush(&self) -> Result<(), DbFailure> {
        Ok(())
    }

    /// Whether its statements run in the state store's open transaction,
    /// which the store's next page commit commits.
    fn in_the_store_transaction(&self) -> bool {
        false
    }
}

/// A table destination over one database.
#[derive(Debug)]
pub struct TableSink<D: Database> {
    db: D,
    spec: TableSpec,
    retry: RetryPolicy,
    /// Where messages say the rows go.
    shown: String,
    /// The statements for the table as it is, once it is there.
    prepared: tokio::sync::OnceCell<Statements>,
    retries: Mutex<RetryCounts>,
    /// Whether any statement got the database's answer: until one has, a
    /// failing database is wrong in the config or down from the start, and
    /// a statement gives up after its attempts instead of waiting out an
    /// outage.
    answered: AtomicBool,
}

/// Rows per statement at most, whatever the batch size: a refused statement
/// is halved from there.
const MAX_ROWS_PER_STATEMENT: usize = 10_000;

impl<D: Database> TableSink<D> {
    pub fn new(db: D, spec: TableSpec, retry: RetryPolicy, shown: String) -> Self {
        TableSink {
            db,
            spec,
            retry,
            shown,
            prepared: tokio::sync::OnceCell::new(),
            retries: Mutex::new(RetryCounts::default()),
            answered: AtomicBool::new(false),
        }
    }

    pub fn database(&self) -> &D {
        &self.db
    }

    /// Creates the table when missing and adds the columns it lacks, once
    /// (idempotent DDL: another process doing the same at once is fine);
    /// the statements then read values as the table's columns are typed.
    async fn prepare(&self, stop: &Stop) -> Result<&Statements, SinkError> {
        self.prepared
            .get_or_try_init(|| async {
                let existing = self
                    .statement(stop, || self.db.columns(&self.spec))
                    .await?
                    .0;
                let existing = match existing {
                    Some(columns) => columns,
                    None if self.spec.create_table => {
                        self.create(stop).await?;
                        self.statement(stop, || self.db.columns(&self.spec))
                            .await?
                            .0
                            .unwrap_or_default()
                    }
                    None => {
                        return Err(SinkError::Database(format!(
                            "{}: the table does not exist, and create_table = false",
                            self.shown
                        )));
                    }
                };
                let declared: HashMap<String, String> = existing.into_iter().collect();
                if !declared.contains_key(&self.spec.key_column) {
                    return Err(SinkError::Database(format!(
                        "{}: the table has no key column `{}` (key_column)",
                        self.shown, self.spec.key_column
                    )));
                }
                for column in sql::columns(&self.spec) {
                    if declared.contains_key(&column.name) {
                        continue;
                    }
                    if !self.spec.evolve {
                        return Err(SinkError::Database(format!(
                            "{}: the mapping writes the column `{}`, which the table does not have, and evolve = false: add the column or set evolve = true",
                            self.shown, column.name
                        )));
                    }
                    let add = self.db.dialect().add_column(&self.spec, &column);
                    self.ddl(stop, &add).await?;
                    tracing::info!(table = %self.shown, column = %column.name, "column added");
                }
                Ok(self.db.dialect().statements(&self.spec, &declared))
            })
            .await
    }

    /// The table, and the schema it is named in where that is not there yet
    /// (SQLSTATE 3F000): only then, since `CREATE SCHEMA IF NOT EXISTS` needs
    /// the right to create schemas even where the schema is there.
    async fn create(&self, stop: &Stop) -> Result<(), SinkError> {
        let done = |result: Result<(), DbFailure>| match result {
            Err(e) if e.already_exists => Ok(()),
            other => other,
        };
        // No table yet: the types it is created with.
        let statements = self.db.dialect().statements(&self.spec, &HashMap::new());
        self.statement(stop, || async {
            match self.db.execute(&statements.create).await {
                Err(e) if e.code.as_deref() == Some("3F000") => {
                    let Some(schema) = &statements.create_schema else {
                        return Err(e);
                    };
                    done(self.db.execute(schema).await)?;
                    tracing::info!(table = %self.shown, "schema created");
                    done(self.db.execute(&statements.create).await)
                }
                other => done(other),
            }
        })
        .await
        .map(|_| ())
    }

    /// DDL that may race with another process's: losing is fine.
    async fn ddl(&self, stop: &Stop, sql: &str) -> Result<(), SinkError> {
        self.statement(stop, || async {
            match self.db.execute(sql).await {
                Err(e) if e.already_exists => Ok(()),
                other => other,
            }
        })
        .await
        .map(|_| ())
    }

    /// Runs one statement through the retry loop: a transient failure is
    /// tried again (every statement here is idempotent), a record-level one
    /// is the row's, anything else stops the run.
    async fn statement<T, F, Fut>(&self, stop: &Stop, mut attempt: F) -> Result<(T, u32), SinkError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbFailure>>,
    {
        let policy = if self.answered.load(Ordering::Relaxed) {
            self.retry
        } else {
            RetryPolicy {
                outage: Duration::ZERO,
                ..self.retry
            }
        };
        let result = retry(
            policy,
            stop,
            true,
            |_| {
                let fut = attempt();
                async move {
                    let result = fut.await;
                    // A statement refused for what it holds was answered.
                    if !matches!(&result, Err(e) if matches!(e.class, Class::Transient { .. })) {
                        self.answered.store(true, Ordering::Relaxed);
                    }
                    result.map_err(|e| {
                        let class = e.class;
                        Failed::new(e, class)
                    })
                }
            },
            |failed, delay| {
                self.retries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .connection += 1;
                tracing::warn!(
                    table = %self.shown,
                    error = %failed.error,
                    delay_ms = delay.as_millis() as u64,
                    "database statement retried"
                );
            },
        )
        .await;
        match result {
            Ok((value, attempts)) => Ok((value, attempts.made)),
            Err(GaveUp::Final {
                error,
                class: Class::RecordLevel,
            }) => Err(SinkError::Refused(error.to_string())),
            Err(GaveUp::Final { error, .. }) => Err(SinkError::Database(format!(
                "{}: {error}{}",
                self.shown,
                self.hint(&error)
            ))),
            Err(
                GaveUp::Unknown { error, attempts }
                | GaveUp::Exhausted {
                    last: error,
                    attempts,
                    ..
                },
            ) => Err(SinkError::DatabaseGaveUp(format!(
                "{}: gave up after {attempts} attempts: {error}",
                self.shown
            ))),
            Err(GaveUp::Stopped(reason)) => Err(SinkError::Http(HttpError::Stopped(reason))),
        }
    }

    /// What to do about a failure the database's words leave a person to
    /// work out.
    fn hint(&self, error: &DbFailure) -> String {
        // PostgreSQL's SQLSTATE, SQLite's message: the upsert's conflict key
        // is no primary key or unique index of a table its owner made.
        let no_unique_key = error.code.as_deref() == Some("42P10")
            || error
                .message
                .contains("does not match any PRIMARY KEY or UNIQUE constraint");
        if !no_unique_key {
            return String::new();
        }
        let table = self.db.dialect().table_name(&self.spec);
        format!(
            "; the key column `{}` (key_column) needs a primary key or a unique index: \
             CREATE UNIQUE INDEX {} ON {table} ({})",
            self.spec.key_column,
            sql::quote(&format!("{}_{}_key", self.spec.table, self.spec.key_column)),
            sql::quote(&self.spec.key_column)
        )
    }

    /// One row of the upsert, as a JSON object keyed by column: written out
    /// from the write's own payload, without a copy of it as an object first.
    fn row(&self, write: &Write<'_>) -> Result<String, SinkError> {
        let mut row = Vec::with_capacity(256);
        row.push(b'{');
        let unwritable = |e: serde_json::Error| SinkError::Unwritable(e.to_string());
        field(&mut row, &self.spec.key_column, &write.record.external_id).map_err(unwritable)?;
        row.push(b',');
        field(&mut row, &self.spec.version_column, &write.version_number()).map_err(unwritable)?;
        match &self.spec.layout {
            Layout::Json { payload_column } => {
                row.push(b',');
                field(&mut row, payload_column, &write.record.payload).map_err(unwritable)?;
            }
            Layout::Columns(columns) => {
                let Some(payload) = write.record.payload.as_object() else {
                    return Err(SinkError::Unwritable(
                        "the mapped payload is not an object: it has no columns".into(),
                    ));
                };
                for (name, value) in payload {
                    if !columns.iter().any(|c| &c.name == name) {
                        return Err(SinkError::Unwritable(format!(
                            "the payload's field `{name}` has no column in {}",
                            self.shown
                        )));
                    }
                    row.push(b',');
                    field(&mut row, name, value).map_err(unwritable)?;
                }
            }
        }
        row.push(b'}');
        String::from_utf8(row)
            .map_err(|e| SinkError::Unwritable(format!("a row is not UTF-8: {e}")))
    }
}

/// `"name":value` onto a row.
fn field(
    row: &mut Vec<u8>,
    name: &str,
    value: &impl serde::Serialize,
) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *row, name)?;
    row.push(b':');
    serde_json::to_writer(&mut *row, value)
}

#[async_trait::async_trait]
impl<D: Database> Sink for TableSink<D> {
    fn concurrency(&self) -> usize {
        self.spec.concurrency
    }

    fn batch_size(&self) -> usize {
        self.spec.batch_size
    }

    async fn write(&self, write: Write<'_>, stop: &Stop) -> Result<Written, SinkError> {
        self.write_batch(vec![write], stop)
            .await
            .pop()
            .unwrap_or(Err(SinkError::NotSent))
    }

    async fn write_batch(
        &self,
        writes: Vec<Write<'_>>,
        stop: &Stop,
    ) -> Vec<Result<Written, SinkError>> {
        let mut results: Vec<Option<Result<Written, SinkError>>> =
            (0..writes.len()).map(|_| None).collect();
        let statements = match self.prepare(stop).await {
            Ok(statements) => statements,
            Err(e) => return fail_rest(results, e),
        };
        // Rows that cannot be encoded are refused alone; the rest go.
        let mut rows = Vec::with_capacity(writes.len());
        let mut keys = Vec::with_capacity(writes.len());
        let mut places = Vec::with_capacity(writes.len());
        for (i, write) in writes.iter().enumerate() {
            match self.row(write) {
                Ok(row) => {
                    rows.push(row);
                    keys.push(write.record.external_id.as_str());
                    places.push(i);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut splitter = Splitter::new(&keys, self.spec.batch_size.min(MAX_ROWS_PER_STATEMENT));
        let mut attempts = vec![0u32; rows.len()];
        while let Some(range) = splitter.next_range() {
            let mut body =
                String::with_capacity(range.clone().map(|i| rows[i].len() + 1).sum::<usize>() + 2);
            body.push('[');
            for (n, i) in range.clone().enumerate() {
                if n > 0 {
                    body.push(',');
                }
                body.push_str(&rows[i]);
            }
            body.push(']');
            let outcome = self
                .statement(stop, || self.db.upsert(&statements.upsert, &body))
                .await;
            match outcome {
                Ok((returned, made)) => {
                    for i in range.clone() {
                        attempts[i] += made;
                    }
                    let returned: HashSet<String> = returned.into_iter().collect();
                    splitter.applied(range, |i| returned.contains(keys[i]));
                }
                Err(SinkError::Refused(reason)) => {
                    for i in range.clone() {
                        attempts[i] += 1;
                    }
                    splitter.refused(range, reason);
                }
                Err(e) => {
                    for (n, outcome) in splitter.finish().into_iter().enumerate() {
                        if let Some(outcome) = outcome {
                            results[places[n]] = Some(row_result(outcome, keys[n], attempts[n]));
                        }
                    }
                    return fail_rest(results, e);
                }
            }
        }
        for (n, outcome) in splitter.finish().into_iter().enumerate() {
            let result = match outcome {
                Some(outcome) => row_result(outcome, keys[n], attempts[n]),
                None => Err(SinkError::NotSent),
            };
            results[places[n]] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(SinkError::NotSent)))
            .collect()
    }

    /// Deletes the row by key; a row not there is deleted already.
    async fn delete(&self, delete: &Delete<'_>, stop: &Stop) -> Result<Written, SinkError> {
        let statements = self.prepare(stop).await?;
        let (_, made) = self
            .statement(stop, || {
                self.db.delete(&statements.delete, delete.external_id)
            })
            .await?;
        Ok(Written {
            dest_id: Some(delete.external_id.to_owned()),
            unsettled_since: None,
            attempts: made,
        })
    }

    fn can_read_back(&self) -> bool {
        true
    }

    /// The row as a JSON object, a JSON column's value as JSON; in the JSON
    /// layout, the payload its column holds, as it was written.
    async fn read_back(&self, external_id: &str, stop: &Stop) -> Result<Held, SinkError> {
        let statements = self.prepare(stop).await?;
        let (row, _) = self
            .statement(stop, || self.db.read(&statements.read, external_id))
            .await?;
        let Some(text) = row else {
            return Ok(Held::Nothing);
        };
        let mut row: Value = serde_json::from_str(&text).map_err(|e| {
            SinkError::Database(format!("{}: a row read back is not JSON: {e}", self.shown))
        })?;
        let version = row.get(&self.spec.version_column).and_then(Value::as_i64);
        let object = match &self.spec.layout {
            Layout::Json { payload_column } => row
                .get_mut(payload_column)
                .map(Value::take)
                .unwrap_or_default(),
            Layout::Columns(_) => row,
        };
        Ok(Held::Object {
            dest_id: Some(external_id.to_owned()),
            object,
            version,
        })
    }

    /// A statement commits on its own: it committed or it did not.
    fn late_write_window(&self) -> Duration {
        Duration::ZERO
    }

    /// The upsert compares versions.
    fn refuses_older_writes(&self) -> bool {
        true
    }

    fn lands_with_the_commit(&self) -> bool {
        self.db.in_the_store_transaction()
    }

    /// Not retried: after a failed sync the kernel may have dropped the
    /// pages it could not write and report the next sync clean, so the run
    /// stops at its last checkpoint and the next run writes those rows again.
    async fn flush(&self) -> Result<(), SinkError> {
        self.db.flush().await.map_err(|e| {
            SinkError::Database(format!("{}: cannot make the rows durable: {e}", self.shown))
        })
    }

    async fn finish(&self) -> Result<(), SinkError> {
        Sink::flush(self).await
    }

    fn retries(&self) -> RetryCounts {
        *self.retries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn row_result(outcome: RowOutcome, key: &str, attempts: u32) -> Result<Written, SinkError> {
    match outcome {
        RowOutcome::Written => Ok(Written {
            dest_id: Some(key.to_owned()),
            unsettled_since: None,
            attempts: attempts.max(1),
        }),
        RowOutcome::Superseded => Err(SinkError::Superseded),
        RowOutcome::Refused(reason) => Err(SinkError::Refused(reason)),
    }
}

/// The first write without an answer gets the error that stopped the batch,
/// the others are not sent.
fn fail_rest(
    results: Vec<Option<Result<Written, SinkError>>>,
    error: SinkError,
) -> Vec<Result<Written, SinkError>> {
    let mut error = Some(error);
    results
        .into_iter()
        .map(|r| match r {
            Some(r) => r,
            None => Err(error.take().unwrap_or(SinkError::NotSent)),
        })
        .collect()
}
