//! Alert incidents, paused syncs and the destination each sync's ledger
//! describes, in PostgreSQL.

use super::*;

impl PgStore {
    /// The open incident of `kind` for `sync`: the one already open, unchanged,
    /// or a new one with this run and reason.
    pub async fn open_incident(
        &self,
        sync: &str,
        kind: IncidentKind,
        run_id: Option<&str>,
        reason: &str,
    ) -> Result<Incident, StateError> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.writer(Some(sync)).await?;
        sqlx::query(
            "INSERT INTO alert_incidents (incident_id, sync, kind, run_id, reason, opened_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (sync, kind) WHERE closed_at IS NULL DO NOTHING",
        )
        .bind(&id)
        .bind(sync)
        .bind(kind.as_str())
        .bind(run_id)
        .bind(reason)
        .bind(now()?.as_microsecond())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT * FROM alert_incidents WHERE sync = $1 AND kind = $2 AND closed_at IS NULL",
        )
        .bind(sync)
        .bind(kind.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Incident {
            incident_id: row.try_get("incident_id")?,
            sync: row.try_get("sync")?,
            kind: row.try_get::<String, _>("kind")?.parse()?,
            run_id: row.try_get("run_id")?,
            reason: row.try_get("reason")?,
            opened_at: micros(row.try_get("opened_at")?)?,
            notified_at: row
                .try_get::<Option<i64>, _>("notified_at")?
                .map(micros)
                .transpose()?,
        })
    }

    /// The incident's webhook call was answered.
    pub async fn incident_notified(&self, incident_id: &str) -> Result<(), StateError> {
        // By id, the sync unknown: one row's own column, which no other
        // write of the sync reads before it writes.
        let mut tx = self.writer(None).await?;
        sqlx::query("UPDATE alert_incidents SET notified_at = $1 WHERE incident_id = $2")
            .bind(now()?.as_microsecond())
            .bind(incident_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The condition of `kind` no longer holds for `sync`: its open incident,
    /// if any, closes, and the next time it holds is a new incident.
    pub async fn close_incident(&self, sync: &str, kind: IncidentKind) -> Result<(), StateError> {
        let mut tx = self.writer(Some(sync)).await?;
        sqlx::query(
            "UPDATE alert_incidents SET closed_at = $1
             WHERE sync = $2 AND kind = $3 AND closed_at IS NULL",
        )
        .bind(now()?.as_microsecond())
        .bind(sync)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl PgStore {
    /// Pauses or resumes a sync's schedule.
    pub async fn set_paused(&self, sync: &str, paused: bool) -> Result<(), StateError> {
        let query = if paused {
            sqlx::query(
                "INSERT INTO paused_syncs (sync, paused_at) VALUES ($1, $2)
                 ON CONFLICT (sync) DO NOTHING",
            )
            .bind(sync)
            .bind(now()?.as_microsecond())
        } else {
            sqlx::query("DELETE FROM paused_syncs WHERE sync = $1").bind(sync)
        };
        let mut tx = self.writer(Some(sync)).await?;
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The syncs whose schedule is paused.
    pub async fn paused_syncs(&self) -> Result<Vec<String>, StateError> {
        // Byte order, as SQLite lists them.
        Ok(
            sqlx::query_scalar("SELECT sync FROM paused_syncs ORDER BY sync COLLATE \"C\"")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

impl PgStore {
    /// As [`crate::state::Store::move_destination`].
    pub async fn move_destination(
        &self,
        sync: &str,
        destination: &str,
        reason: Option<&str>,
    ) -> Result<Option<String>, StateError> {
        let at = now()?;
        let mut tx = self.writer(Some(sync)).await?;
        let was: Option<String> =
            sqlx::query_scalar("SELECT destination FROM sync_destinations WHERE sync = $1")
                .bind(sync)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(was) = was.filter(|was| was != destination) else {
            return Ok(None);
        };
        sqlx::query("UPDATE sync_destinations SET destination = $1, since = $2 WHERE sync = $3")
            .bind(destination)
            .bind(at.as_microsecond())
            .bind(sync)
            .execute(&mut *tx)
            .await?;
        audit::insert(
            &mut tx,
            &crate::state::audit::moved(sync, &was, destination, reason),
            at,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(was))
    }

    /// The destination `sync`'s ledger describes, once a run has said.
    pub async fn destination_of(&self, sync: &str) -> Result<Option<String>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT destination FROM sync_destinations WHERE sync = $1")
                .bind(sync)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// `sync`'s ledger describes `destination` from now on.
    pub async fn record_destination(
        &self,
        sync: &str,
        destination: &str,
    ) -> Result<(), StateError> {
        let mut tx = self.writer(Some(sync)).await?;
        sqlx::query(
            "INSERT INTO sync_destinations (sync, destination, since) VALUES ($1, $2, $3)
             ON CONFLICT (sync) DO UPDATE SET destination = excluded.destination,
                 since = excluded.since
             WHERE sync_destinations.destination <> excluded.destination",
        )
        .bind(sync)
        .bind(destination)
        .bind(now()?.as_microsecond())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl PgStore {
    /// The refresh token kept for `credential`, if any.
    pub async fn kept_refresh_token(&self, credential: &str) -> Result<Option<String>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT token FROM refresh_tokens WHERE credential = $1")
                .bind(credential)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// `token` replaces what was kept for `credential`.
    pub async fn keep_refresh_token(
        &self,
        credential: &str,
        token: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (credential, token, since) VALUES ($1, $2, $3)
             ON CONFLICT (credential) DO UPDATE SET token = excluded.token, since = excluded.since",
        )
        .bind(credential)
        .bind(token)
        .bind(now()?.as_microsecond())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl PgStore {
    /// As [`crate::state::Store::mapping_of`].
    pub async fn mapping_of(&self, sync: &str) -> Result<Option<String>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT mapping FROM sync_destinations WHERE sync = $1")
                .bind(sync)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// As [`crate::state::Store::record_mapping`].
    pub async fn record_mapping(&self, sync: &str, mapping: &str) -> Result<(), StateError> {
        sqlx::query("UPDATE sync_destinations SET mapping = $1 WHERE sync = $2")
            .bind(mapping)
            .bind(sync)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
