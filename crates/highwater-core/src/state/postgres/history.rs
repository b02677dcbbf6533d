//! Run history in PostgreSQL: invocations and run records.

use sqlx::AssertSqlSafe;

use super::*;
use crate::state::history::{invocation, record};

/// A query of runs with their checkpoints, `rest` after the join. The text is
/// built from constants only.
fn runs_query(rest: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN checkpoints c USING (run_id) {rest}"
    ))
}

impl PgStore {
    /// Records a new invocation of an open run, resumed from its checkpoint. An
    /// earlier invocation that never recorded its end was killed: the caller holds
    /// the sync's lock, so it is not running any more.
    pub async fn resume_run(&self, run_id: &str) -> Result<(), StateError> {
        let sync = self.sync_of_run(run_id).await?;
        let mut tx = self.writer(sync.as_deref()).await?;
        sqlx::query("UPDATE invocations SET outcome = $1 WHERE run_id = $2 AND outcome IS NULL")
            .bind(InvocationOutcome::Crashed.as_str())
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        begin_invocation(&mut tx, run_id, Timestamp::now().as_microsecond()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records how the run's current invocation ended; its cursor at the end is
    /// the run's checkpoint.
    pub async fn end_invocation(
        &self,
        run_id: &str,
        end: &InvocationEnd,
    ) -> Result<(), StateError> {
        let retries =
            serde_json::to_string(&end.retries).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let sync = self.sync_of_run(run_id).await?;
        let mut tx = self.writer(sync.as_deref()).await?;
        sqlx::query(
            "UPDATE invocations SET
               ended_at = $2, outcome = $3, stop_reason = $4, error_class = $5, error = $6,
               cursor_end = (SELECT cursor FROM checkpoints WHERE run_id = $1),
               counters_end = $7, retries = $8
             WHERE run_id = $1
               AND number = (SELECT MAX(number) FROM invocations WHERE run_id = $1)",
        )
        .bind(run_id)
        .bind(Timestamp::now().as_microsecond())
        .bind(end.outcome.as_str())
        .bind(&end.stop_reason)
        .bind(&end.error_class)
        .bind(&end.error)
        .bind(counters_json(&end.counters))
        .bind(retries)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The runs of a sync, newest first, at most `limit` of them.
    pub async fn runs(&self, sync: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        // Run ids break ties byte by byte, as SQLite compares them.
        let rows = sqlx::query(runs_query(
            "WHERE r.sync = $1 ORDER BY r.started_at DESC, r.run_id COLLATE \"C\" DESC LIMIT $2",
        ))
        .bind(sync)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            records.push(record(row)?);
        }
        let ids: Vec<&str> = records.iter().map(|r| r.run.run_id.as_str()).collect();
        let rows = sqlx::query(
            "SELECT * FROM invocations WHERE run_id = ANY($1::text[]) ORDER BY run_id, number",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let run_id: String = row.try_get("run_id")?;
            if let Some(record) = records.iter_mut().find(|r| r.run.run_id == run_id) {
                record.invocations.push(invocation(row)?);
            }
        }
        Ok(records)
    }

    /// One run's audit record, by its id.
    pub async fn run_record(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let row = sqlx::query(runs_query("WHERE r.run_id = $1"))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut record = record(&row)?;
        let rows = sqlx::query("SELECT * FROM invocations WHERE run_id = $1 ORDER BY number")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            record.invocations.push(invocation(row)?);
        }
        Ok(Some(record))
    }

    /// Ids of runs (of any sync) that start with `prefix`, at most `limit`: people
    /// type the short id a list shows.
    pub async fn run_ids_starting_with(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StateError> {
        // Byte order, as SQLite's: which `limit` ids come back is the same.
        let ids = sqlx::query_scalar(
            "SELECT run_id FROM runs WHERE starts_with(run_id, $1)
             ORDER BY run_id COLLATE \"C\" LIMIT $2",
        )
        .bind(prefix)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// The sync a run is of, for the advisory lock of a write by run id; `None`
    /// for a run the store does not have (the write then finds nothing to
    /// change). A run never changes sync, so it may be read before the lock.
    pub(super) async fn sync_of_run(&self, run_id: &str) -> Result<Option<String>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT sync FROM runs WHERE run_id = $1")
                .bind(run_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

/// Opens the next invocation of a run, at the run's checkpoint.
pub(super) async fn begin_invocation(
    tx: &mut sqlx::PgConnection,
    run_id: &str,
    now: i64,
) -> Result<(), StateError> {
    sqlx::query(
        "INSERT INTO invocations (run_id, number, started_at, cursor_start, counters_start)
         SELECT c.run_id,
                COALESCE((SELECT MAX(number) FROM invocations WHERE run_id = c.run_id), 0) + 1,
                $1, c.cursor, c.counters
         FROM checkpoints c WHERE c.run_id = $2",
    )
    .bind(now)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Ends the run's current invocation as completed, with the run.
pub(super) async fn complete_invocation(
    tx: &mut sqlx::PgConnection,
    run_id: &str,
    cursor: &Value,
    counters: &Counters,
    now: i64,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE invocations SET ended_at = $2, outcome = $3, cursor_end = $4, counters_end = $5
         WHERE run_id = $1
           AND number = (SELECT MAX(number) FROM invocations WHERE run_id = $1)",
    )
    .bind(run_id)
    .bind(now)
    .bind(InvocationOutcome::Completed.as_str())
    .bind(cursor.to_string())
    .bind(counters_json(counters))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
