//! Resets and the high-water mark in PostgreSQL.

use serde_json::json;

use super::*;

impl PgStore {
    pub async fn high_water_mark(&self, sync: &str) -> Result<HighWaterMark, StateError> {
        // SQLite sorts a NULL `at` last and, on a tie, returns the run (its
        // merge of the two parts takes the first part's row first): so do
        // these `NULLS LAST` and `reset`.
        let row = sqlx::query(
            "SELECT 0 AS reset, completed_at AS at, watermark AS mark FROM runs
               WHERE sync = $1 AND kind = $2 AND status = $3
             UNION ALL
             SELECT 1, at, to_at FROM resets WHERE sync = $1
             ORDER BY at DESC NULLS LAST, reset LIMIT 1",
        )
        .bind(sync)
        .bind(RunKind::Incremental.as_str())
        .bind(RunStatus::Completed.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(HighWaterMark::None);
        };
        let mark: Option<i64> = row.try_get("mark")?;
        let mark = mark.map(micros).transpose()?;
        Ok(match (row.try_get::<i32, _>("reset")?, mark) {
            (0, Some(mark)) => HighWaterMark::Run(mark),
            (0, None) => HighWaterMark::None,
            (_, mark) => HighWaterMark::Reset(mark),
        })
    }

    /// Rewinds the sync's high-water mark, as one transaction.
    pub async fn reset(&self, request: &ResetRequest) -> Result<ResetDone, ResetError> {
        let at = now()?;
        let mut tx = self.writer(Some(&request.sync)).await?;
        let open: Option<String> = sqlx::query_scalar(
            "SELECT run_id FROM runs WHERE sync = $1 AND kind = $2 AND status = $3",
        )
        .bind(&request.sync)
        .bind(RunKind::Incremental.as_str())
        .bind(RunStatus::Open.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StateError::from)?;
        if let Some(run_id) = &open {
            if !request.force {
                return Err(ResetError::RunOpen(run_id.clone()));
            }
            // Its announced writes stay floors: they may have landed, and the
            // next run must not write anything older over them.
            sqlx::query("UPDATE runs SET status = $1, updated_at = $2 WHERE run_id = $3")
                .bind(RunStatus::Failed.as_str())
                .bind(at.as_microsecond())
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(StateError::from)?;
        }
        let mut forgotten = 0;
        if request.forget_ledger {
            // Folded first, staged rows count as the ledger rows they become.
            super::commit::fold_staged(&mut tx, &request.sync).await?;
            forgotten = sqlx::query("DELETE FROM ledger WHERE sync = $1")
                .bind(&request.sync)
                .execute(&mut *tx)
                .await
                .map_err(StateError::from)?
                .rows_affected();
            // Nothing is known written anywhere: the next run's destination
            // is the one the ledger describes.
            sqlx::query("DELETE FROM sync_destinations WHERE sync = $1")
                .bind(&request.sync)
                .execute(&mut *tx)
                .await
                .map_err(StateError::from)?;
            // Nor is anything known of what the destination holds.
            sqlx::query("DELETE FROM sink_positions WHERE sync = $1")
                .bind(&request.sync)
                .execute(&mut *tx)
                .await
                .map_err(StateError::from)?;
        }
        let entry = AuditEntry {
            sync: request.sync.clone(),
            action: AuditAction::Reset,
            scope: AuditScope::Sync,
            reason: request.reason.clone(),
            details: json!({
                "to": request.to.map(|t| t.to_string()),
                "forget_ledger": request.forget_ledger,
                "abandoned_run": open,
                "ledger_rows_forgotten": forgotten,
            }),
        };
        let audit_id = audit::insert(&mut tx, &entry, at).await?;
        sqlx::query("INSERT INTO resets (sync, at, to_at, audit_id) VALUES ($1, $2, $3, $4)")
            .bind(&request.sync)
            .bind(at.as_microsecond())
            .bind(request.to.map(Timestamp::as_microsecond))
            .bind(audit_id)
            .execute(&mut *tx)
            .await
            .map_err(StateError::from)?;
        tx.commit().await.map_err(StateError::from)?;
        Ok(ResetDone {
            audit_id,
            abandoned: open,
            forgotten,
        })
    }
}
