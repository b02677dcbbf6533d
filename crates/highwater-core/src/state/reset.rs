//! Rewinding a sync (`highwater reset`) and the high-water mark it moves: the
//! newest of the last completed incremental run's watermark and the last reset.
//! A reset abandons the open incremental run only when forced, keeps the writes
//! that run announced as floors (they may have landed), optionally forgets the
//! ledger, and is recorded in the audit log — all in one transaction.

use jiff::Timestamp;
use serde_json::json;
use sqlx::Row;

use super::audit::{AuditEntry, AuditScope, insert, now};
use super::{AuditAction, RunKind, RunStatus, StateError, Store, micros};

/// Where the next incremental run of a sync starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HighWaterMark {
    /// Nothing completed and nothing reset: from the sync's `start`.
    None,
    /// The last completed incremental run's watermark: the next run reaches
    /// back from it by the lookback.
    Run(Timestamp),
    /// Rewound by an operator: the next run reads from here exactly (`None`:
    /// from the sync's `start`).
    Reset(Option<Timestamp>),
}

impl HighWaterMark {
    /// The mark as a point in time, when there is one.
    pub fn at(self) -> Option<Timestamp> {
        match self {
            HighWaterMark::Run(t) | HighWaterMark::Reset(Some(t)) => Some(t),
            HighWaterMark::None | HighWaterMark::Reset(None) => None,
        }
    }
}

/// What to reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRequest {
    pub sync: String,
    /// Re-read from here; `None`: from the sync's start.
    pub to: Option<Timestamp>,
    /// Drop the ledger too: every record is written again.
    pub forget_ledger: bool,
    /// Abandon the open incremental run instead of refusing.
    pub force: bool,
    pub reason: Option<String>,
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetDone {
    pub audit_id: i64,
    /// The open run it abandoned.
    pub abandoned: Option<String>,
    /// Ledger rows it forgot.
    pub forgotten: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(
        "run {0} is open (a stopped or failed run the next `run` resumes): finish it, or pass --force to abandon it"
    )]
    RunOpen(String),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Store {
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
            forgotten = sqlx::query("DELETE FROM ledger WHERE sync = ?")
                .bind(&request.sync)
                .execute(&mut *tx)
                .await
                .map_err(StateError::from)?
                .rows_affected();
            sqlx::query("DELETE FROM ledger_staged WHERE sync = ?")
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
        let audit_id = insert(&mut tx, &entry, at).await?;
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
