//! Resets and the high-water mark in SQLite.

use super::*;
use serde_json::json;

impl SqliteStore {
    pub async fn high_water_mark(&self, sync: &str) -> Result<HighWaterMark, StateError> {
        let row = sqlx::query(
            "SELECT 0 AS reset, completed_at AS at, watermark AS mark FROM runs
               WHERE sync = ?1 AND kind = ?2 AND status = ?3
             UNION ALL
             SELECT 1, at, to_at FROM resets WHERE sync = ?1
             ORDER BY at DESC LIMIT 1",
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
        Ok(match (row.try_get::<i64, _>("reset")?, mark) {
            (0, Some(mark)) => HighWaterMark::Run(mark),
            (0, None) => HighWaterMark::None,
            (_, mark) => HighWaterMark::Reset(mark),
        })
    }

    /// Rewinds the sync's high-water mark, as one transaction.
    pub async fn reset(&self, request: &ResetRequest) -> Result<ResetDone, ResetError> {
        let at = now()?;
        let mut tx = self.writer().await?;
        let open: Option<String> = sqlx::query_scalar(
            "SELECT run_id FROM runs WHERE sync = ? AND kind = ? AND status = ?",
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
            sqlx::query("UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?")
                .bind(RunStatus::Failed.as_str())
                .bind(at.as_microsecond())
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(StateError::from)?;
        }
        let mut forgotten = 0;
        if request.forget_ledger {
            let mut counted = 0u64;
            scan::scan_all(&mut tx, &request.sync, |_| counted += 1).await?;
            forgotten = counted;
            ledger::forget(&mut tx, &request.sync).await?;
            // Nothing is known written anywhere: the next run's destination
            // is the one the ledger describes.
            sqlx::query("DELETE FROM sync_destinations WHERE sync = ?")
                .bind(&request.sync)
                .execute(&mut *tx)
                .await
                .map_err(StateError::from)?;
            // Nor is anything known of what the destination holds.
            sqlx::query("DELETE FROM sink_positions WHERE sync = ?")
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
        sqlx::query("INSERT INTO resets (sync, at, to_at, audit_id) VALUES (?, ?, ?, ?)")
            .bind(&request.sync)
            .bind(at.as_microsecond())
            .bind(request.to.map(Timestamp::as_microsecond))
            .bind(audit_id)
            .execute(&mut *tx)
            .await
            .map_err(StateError::from)?;
        tx.commit().await?;
        Ok(ResetDone {
            audit_id,
            abandoned: open,
            forgotten,
        })
    }
}
