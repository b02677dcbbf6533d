//! The audit log's rows in PostgreSQL.

use serde::Serialize;

use super::*;
use crate::state::audit::record;

impl PgStore {
    /// Records an operator action done outside a transaction of the store's own;
    /// returns its id. An action that changes the store records itself in the same
    /// transaction instead (a discard does).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StateError> {
        let at = now()?;
        let mut tx = self.writer(Some(&entry.sync)).await?;
        let id = insert(&mut tx, entry, at).await?;
        tx.commit().await?;
        Ok(AuditRecord {
            id,
            at,
            entry: entry.clone(),
        })
    }

    /// A sync's newest `limit` entries, newest first.
    pub async fn audit_log(&self, sync: &str, limit: u32) -> Result<Vec<AuditRecord>, StateError> {
        let rows = sqlx::query(
            "SELECT id, at, sync, action, scope, reason, details FROM audit_log
             WHERE sync = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(sync)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// One entry, by id.
    pub async fn audit_record(&self, id: i64) -> Result<Option<AuditRecord>, StateError> {
        let row = sqlx::query(
            "SELECT id, at, sync, action, scope, reason, details FROM audit_log WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }
}

/// Appends an entry in the caller's transaction; returns its id.
pub(super) async fn insert(
    tx: &mut sqlx::PgConnection,
    entry: &AuditEntry,
    at: Timestamp,
) -> Result<i64, StateError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at, sync, action, scope, reason, details)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(at.as_microsecond())
    .bind(&entry.sync)
    .bind(entry.action.as_str())
    .bind(to_json(&entry.scope)?)
    .bind(&entry.reason)
    .bind(to_json(&entry.details)?)
    .fetch_one(&mut *tx)
    .await?;
    Ok(id)
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|e| StateError::Corrupt(format!("audit entry: {e}")))
}
