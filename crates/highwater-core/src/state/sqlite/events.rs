//! Record events in SQLite, one row of JSON per commit, written with the
//! rest of the commit (`commit.rs`).

use super::*;

impl SqliteStore {
    /// Every retained event of one record, oldest first.
    pub async fn record_story(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<Vec<StoryEvent>, StateError> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.at, json(e.value) AS event
             FROM record_events AS r, jsonb_each(r.events) AS e
             WHERE r.sync = ? AND e.value ->> 0 = ?
             ORDER BY r.at, r.seq, e.key",
        )
        .bind(sync)
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("event")?;
                let (source_id, page, action, version, updated_at, dest_id, attempts, detail): StoredEvent =
                    serde_json::from_str(&text)
                    .map_err(|e| StateError::Corrupt(format!("record event: {e}")))?;
                Ok(StoryEvent {
                    run_id: row.try_get("run_id")?,
                    at: micros(row.try_get("at")?)?,
                    event: RecordEvent {
                        source_id,
                        page,
                        action,
                        version,
                        updated_at: updated_at.map(micros).transpose()?,
                        dest_id,
                        attempts,
                        detail,
                    },
                })
            })
            .collect()
    }

    /// Where one record stands: its ledger row (the latest, staged or merged),
    /// its dead letter, a write announced for it and not settled.
    pub async fn record_state(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<RecordState, StateError> {
        let mut tx = self.pool.begin().await?;
        let runs = ledger::runs_of(&mut tx, sync).await?;
        let mut found =
            ledger::lookup(&mut tx, &self.runs, false, sync, &runs, &[source_id]).await?;
        let mut staged = scan::Staged::read(&mut tx, sync, Some(source_id)).await?;
        tx.commit().await?;
        let mut row = found.remove(source_id);
        if let Some(later) = staged.next()? {
            row = Some(runs::fold(row, later));
        }
        let ledger = row.map(|row| row.entry);
        let dead_letter = sqlx::query(
            "SELECT stage, error, attempts, first_failed_at, last_failed_at, resolved_at, resolution
             FROM dead_letters WHERE sync = ? AND source_id = ?",
        )
        .bind(sync)
        .bind(source_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| {
            let resolved_at: Option<i64> = row.try_get("resolved_at")?;
            let resolution: Option<String> = row.try_get("resolution")?;
            Ok::<_, StateError>(DeadLetterState {
                stage: row.try_get::<String, _>("stage")?.parse()?,
                error: row.try_get("error")?,
                attempts: row.try_get("attempts")?,
                first_failed_at: micros(row.try_get("first_failed_at")?)?,
                last_failed_at: micros(row.try_get("last_failed_at")?)?,
                resolved_at: resolved_at.map(micros).transpose()?,
                resolution: resolution.map(|r| r.parse()).transpose()?,
            })
        })
        .transpose()?;
        let announced = self.floors(sync, None).await?.remove(source_id);
        let to_read_back: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM readbacks WHERE sync = ? AND source_id = ?)",
        )
        .bind(sync)
        .bind(source_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(RecordState {
            ledger,
            dead_letter,
            announced,
            to_read_back,
        })
    }

    /// Forgets the events of `sync` older than `before`; returns how many
    /// commits' worth went.
    pub async fn prune_events(&self, sync: &str, before: Timestamp) -> Result<u64, StateError> {
        let mut tx = self.writer().await?;
        let done = sqlx::query("DELETE FROM record_events WHERE sync = ? AND at < ?")
            .bind(sync)
            .bind(before.as_microsecond())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
