//! Dead letters in SQLite: listing, replay pages, discards.

use super::*;
use crate::state::dlq::summary;
use serde_json::json;

/// The columns [`summary`] reads, in every query here: sqlx takes SQL as static
/// text only, so a macro repeats them.
macro_rules! summary_columns {
    () => {
        "source_id, run_id, stage, error, attempts, first_failed_at, last_failed_at"
    };
}

impl SqliteStore {
    /// The unresolved dead letters of a sync, oldest first.
    pub async fn unresolved_dead_letters(
        &self,
        sync: &str,
    ) -> Result<Vec<DeadLetterSummary>, StateError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            summary_columns!(),
            " FROM dead_letters
             WHERE sync = ? AND resolved_at IS NULL ORDER BY first_failed_at, source_id"
        ))
        .bind(sync)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary).collect()
    }

    /// The next unresolved dead letters to replay, by source id after `after`,
    /// restricted to `ids` when given: the record each keeps, as it was read.
    pub async fn dead_letters_to_replay(
        &self,
        sync: &str,
        after: Option<&str>,
        ids: Option<&[String]>,
        limit: u32,
    ) -> Result<Vec<(String, Value)>, StateError> {
        let ids = ids
            .map(|ids| serde_json::to_string(ids).map_err(|e| StateError::Corrupt(e.to_string())))
            .transpose()?;
        let rows = sqlx::query(
            "SELECT source_id, payload FROM dead_letters
             WHERE sync = ?1 AND resolved_at IS NULL AND source_id > ?2
               AND (?3 IS NULL OR source_id IN (SELECT value FROM json_each(?3)))
             ORDER BY source_id LIMIT ?4",
        )
        .bind(sync)
        .bind(after.unwrap_or(""))
        .bind(ids)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload")?;
                let payload = serde_json::from_str(&payload)
                    .map_err(|e| StateError::Corrupt(format!("dead letter payload: {e}")))?;
                Ok((row.try_get("source_id")?, payload))
            })
            .collect()
    }

    /// One record's dead letter, resolved or not, with its payload.
    pub async fn dead_letter(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<Option<DeadLetterDetail>, StateError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            summary_columns!(),
            ", payload, resolved_at, resolution, audit_id
             FROM dead_letters WHERE sync = ? AND source_id = ?"
        ))
        .bind(sync)
        .bind(source_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let payload: String = row.try_get("payload")?;
        let resolved_at: Option<i64> = row.try_get("resolved_at")?;
        let how: Option<String> = row.try_get("resolution")?;
        let audit_id: Option<i64> = row.try_get("audit_id")?;
        let resolution = match resolved_at {
            None => None,
            Some(at) => Some(Resolved {
                at: micros(at)?,
                // Only a store older than the column could lack it, and then a
                // write resolved the letter: there was no other way.
                how: how
                    .map(|h| h.parse())
                    .transpose()?
                    .unwrap_or(DeadLetterResolution::Written),
                audit: match audit_id {
                    Some(id) => self.audit_record(id).await?,
                    None => None,
                },
            }),
        };
        Ok(Some(DeadLetterDetail {
            summary: summary(&row)?,
            payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
            resolution,
        }))
    }

    /// Discards dead letters: marks them resolved as discarded, keeping their
    /// rows, and records the discard with its reason in the audit log, in one
    /// transaction. Ids without an unresolved dead letter refuse the whole
    /// discard, so that a typo never discards half of what was meant.
    pub async fn discard_dead_letters(
        &self,
        sync: &str,
        scope: DiscardScope<'_>,
        reason: &str,
    ) -> Result<Discarded, StateError> {
        let mut tx = self.writer().await?;
        let asked: Option<Vec<&str>> = match scope {
            DiscardScope::Ids(ids) => {
                let mut seen = HashSet::new();
                Some(
                    ids.iter()
                        .map(String::as_str)
                        .filter(|id| seen.insert(*id))
                        .collect(),
                )
            }
            DiscardScope::All => None,
        };
        // A NULL list stands for every unresolved letter of the sync.
        let letters = sqlx::query(concat!(
            "SELECT ",
            summary_columns!(),
            " FROM dead_letters
             WHERE sync = ?1 AND resolved_at IS NULL
               AND (?2 IS NULL OR source_id IN (SELECT value FROM json_each(?2)))
             ORDER BY first_failed_at, source_id"
        ))
        .bind(sync)
        .bind(asked.as_deref().map(ids_json).transpose()?)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(summary)
        .collect::<Result<Vec<_>, _>>()?;
        if let Some(asked) = &asked {
            let found: HashSet<&str> = letters.iter().map(|l| l.source_id.as_str()).collect();
            let missing: Vec<String> = asked
                .iter()
                .filter(|id| !found.contains(*id))
                .map(|id| (*id).to_owned())
                .collect();
            if !missing.is_empty() {
                // Dropping the transaction rolls it back; nothing was written.
                return Ok(Discarded::NotUnresolved(missing));
            }
        }
        if letters.is_empty() {
            return Ok(Discarded::Done {
                ids: Vec::new(),
                audit: None,
            });
        }
        let ids: Vec<String> = letters.iter().map(|l| l.source_id.clone()).collect();
        let entry = AuditEntry {
            sync: sync.to_owned(),
            action: AuditAction::DeadLetterDiscard,
            scope: AuditScope::Records { ids: ids.clone() },
            reason: Some(reason.to_owned()),
            // What each letter was when discarded: a later failure of a changed
            // payload overwrites the row, not this.
            details: json!({
                "all": matches!(scope, DiscardScope::All),
                "letters": letters.iter().map(|l| json!({
                    "source_id": l.source_id,
                    "stage": l.stage.as_str(),
                    "reason": l.reason,
                    "attempts": l.attempts,
                })).collect::<Vec<_>>(),
            }),
        };
        let at = now()?;
        let audit_id = audit::insert(&mut tx, &entry, at).await?;
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        sqlx::query(
            "UPDATE dead_letters SET resolved_at = ?, resolution = ?, audit_id = ?
             WHERE sync = ? AND resolved_at IS NULL AND source_id IN (SELECT value FROM json_each(?))",
        )
        .bind(at.as_microsecond())
        .bind(DeadLetterResolution::Discarded.as_str())
        .bind(audit_id)
        .bind(sync)
        .bind(ids_json(&id_refs)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Discarded::Done {
            ids,
            audit: Some(AuditRecord {
                id: audit_id,
                at,
                entry,
            }),
        })
    }
}

fn ids_json(ids: &[&str]) -> Result<String, StateError> {
    serde_json::to_string(ids).map_err(|e| StateError::Corrupt(e.to_string()))
}
