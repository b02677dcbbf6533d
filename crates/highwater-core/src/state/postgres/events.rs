//! Record events in PostgreSQL, one row of JSON text per commit, parsed only
//! when read.

use super::*;

/// Appends a commit's events, in the commit's transaction.
pub(super) async fn append(
    tx: &mut sqlx::PgConnection,
    sync: &str,
    run_id: &str,
    now: i64,
    events: &[RecordEvent],
) -> Result<(), StateError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = event_rows(events);
    let rows = serde_json::to_string(&rows).map_err(|e| StateError::Corrupt(e.to_string()))?;
    // The sync's advisory lock, held by the commit's transaction, keeps two
    // commits of the same microsecond from taking the same `seq`.
    sqlx::query(
        "INSERT INTO record_events (sync, at, run_id, seq, events)
         SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1, $4
         FROM record_events WHERE sync = $1 AND at = $2 AND run_id = $3",
    )
    .bind(sync)
    .bind(now)
    .bind(run_id)
    .bind(rows)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl PgStore {
    /// Every retained event of one record, oldest first.
    pub async fn record_story(
        &self,
        sync: &str,
        source_id: &str,
    ) -> Result<Vec<StoryEvent>, StateError> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.at, e.value::text AS event
             FROM record_events AS r,
                  json_array_elements(r.events::json) WITH ORDINALITY AS e (value, key)
             WHERE r.sync = $1 AND e.value ->> 0 = $2
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
        let mut tx = self.snapshot().await?;
        let merged = sqlx::query(
            "SELECT source_id, external_id, dest_id, version, updated_at, payload_hash, run_id, deleted_at
             FROM ledger WHERE sync = $1 AND source_id = $2",
        )
        .bind(sync)
        .bind(source_id)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(ledger_entry)
        .transpose()?;
        let (staged, _) = super::commit::staged_rows(&mut tx, sync, Some(source_id)).await?;
        tx.commit().await?;
        let ledger = super::commit::merged(
            merged
                .iter()
                .map(|e| (e, 0))
                .chain(staged.iter().map(|(e, at)| (e, *at))),
        )
        .pop()
        .map(|(e, _)| e);
        let dead_letter = sqlx::query(
            "SELECT stage, error, attempts, first_failed_at, last_failed_at, resolved_at, resolution
             FROM dead_letters WHERE sync = $1 AND source_id = $2",
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
        let announced = self.announced(sync, source_id).await?;
        let to_read_back: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM readbacks WHERE sync = $1 AND source_id = $2)",
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
        let mut tx = self.writer(Some(sync)).await?;
        let done = sqlx::query("DELETE FROM record_events WHERE sync = $1 AND at < $2")
            .bind(sync)
            .bind(before.as_microsecond())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// One record's floor among every run's announced writes (what
    /// `floors(sync, None)` holds for it): only its own intents are read,
    /// not the sync's.
    async fn announced(&self, sync: &str, source_id: &str) -> Result<Option<Intent>, StateError> {
        let rows = sqlx::query(
            "SELECT e.value ->> 0 AS source_id, (e.value ->> 1)::bigint AS version,
                    (e.value ->> 2)::bigint AS updated_at, (e.value ->> 3)::bigint AS settles_at
             FROM intents AS i, jsonb_array_elements(i.rows) AS e
             WHERE i.sync = $1 AND e.value ->> 0 = $2",
        )
        .bind(sync)
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        let mut floors = Floors::default();
        for row in rows {
            let settles_at: Option<i64> = row.try_get("settles_at")?;
            floors.add(Intent {
                source_id: row.try_get("source_id")?,
                version: row.try_get("version")?,
                updated_at: micros(row.try_get("updated_at")?)?,
                settles_at: settles_at.map(micros).transpose()?,
            });
        }
        Ok(floors.newest.remove(source_id))
    }
}
