//! The compare-and-set of announced writes, in SQLite (see `state::claim`).

use super::*;
use crate::record::is_older;

/// Checks `batch` against the ledger and every other run's announced writes,
/// inside the transaction that will announce it, after merging the staged
/// ledger rows, so that the ledger read here is whole.
pub(super) async fn check(
    tx: &mut sqlx::SqliteConnection,
    state_path: &Path,
    indexes: &super::ledger::RunIndexes,
    sync: &str,
    run_id: &str,
    batch: &IntentBatch,
) -> Result<Announced, StateError> {
    if batch.intents.is_empty() {
        return Ok(Announced::default());
    }
    let (announced_elsewhere, committed_since): (bool, bool) = sqlx::query_as(
        "SELECT
           EXISTS (SELECT 1 FROM intents AS i JOIN runs AS o USING (run_id)
                   WHERE i.sync = ?1 AND i.run_id != ?2 AND o.status = ?3),
           EXISTS (SELECT 1 FROM runs AS o
                   WHERE o.sync = ?1 AND o.run_id != ?2
                     AND o.updated_at >= COALESCE(
                       (SELECT MAX(started_at) FROM invocations WHERE run_id = ?2), 0))",
    )
    .bind(sync)
    .bind(run_id)
    .bind(RunStatus::Open.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if !announced_elsewhere && !committed_since {
        return Ok(Announced::default());
    }
    if committed_since {
        super::commit::merge_staged(tx, sync).await?;
    }
    let ids: Vec<&str> = batch.intents.iter().map(|i| i.source_id.as_str()).collect();
    let runs = super::ledger::runs_of(tx, sync).await?;
    let newest = super::ledger::lookup(tx, indexes, true, sync, &runs, &ids).await?;
    let ids = serde_json::to_string(&ids).map_err(|e| StateError::Corrupt(e.to_string()))?;
    let others = others_writes(tx, state_path, sync, run_id, &ids).await?;
    let mut announced = Announced::default();
    for intent in &batch.intents {
        let (version, updated_at) = (intent.version, intent.updated_at);
        let in_ledger = newest.get(&intent.source_id).is_some_and(|row| {
            is_older(version, updated_at, row.entry.version, row.entry.updated_at)
        });
        let other = others.get(&intent.source_id);
        let newer_elsewhere = other
            .is_some_and(|o| is_older(version, updated_at, o.intent.version, o.intent.updated_at));
        if in_ledger || newer_elsewhere {
            announced.refused.insert(intent.source_id.clone());
        } else if let Some(other) = other {
            announced
                .behind
                .insert(intent.source_id.clone(), other.clone());
        }
    }
    Ok(announced)
}

/// Other runs' writes of the source ids in `ids` (a JSON array) that may still
/// land, the newest per id.
async fn others_writes(
    conn: &mut sqlx::SqliteConnection,
    state_path: &Path,
    sync: &str,
    run_id: &str,
    ids: &str,
) -> Result<HashMap<String, Behind>, StateError> {
    let now = jiff::Timestamp::now();
    let rows = sqlx::query(
        "SELECT e.value ->> 0 AS source_id, e.value ->> 1 AS version, e.value ->> 2 AS updated_at,
                e.value ->> 3 AS settles_at, o.kind, o.status,
                COALESCE(e.value ->> 4, 0) >= COALESCE(
                  (SELECT MAX(started_at) FROM invocations AS n WHERE n.run_id = o.run_id), 0)
                  AS current
         FROM intents AS i JOIN runs AS o USING (run_id), jsonb_each(i.rows) AS e
         WHERE i.sync = ?1 AND i.run_id != ?2
           AND e.value ->> 0 IN (SELECT value FROM json_each(?3))",
    )
    .bind(sync)
    .bind(run_id)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut live: HashMap<String, bool> = HashMap::new();
    let mut others: HashMap<String, Behind> = HashMap::new();
    for row in rows {
        let settles_at: Option<i64> = row.try_get("settles_at")?;
        let intent = Intent {
            source_id: row.try_get("source_id")?,
            version: row.try_get("version")?,
            updated_at: micros(row.try_get("updated_at")?)?,
            settles_at: settles_at.map(micros).transpose()?,
        };
        // A write that can no longer land is as good as settled.
        if intent.settles_at.is_some_and(|at| at <= now) {
            continue;
        }
        let kind: String = row.try_get("kind")?;
        let status: String = row.try_get("status")?;
        // Announced by the run's invocation that holds its lock now, if any;
        // an earlier invocation's process is gone.
        let current: bool = row.try_get("current")?;
        let running = intent.settles_at.is_none()
            && current
            && status == RunStatus::Open.as_str()
            && *live.entry(kind.clone()).or_insert_with(|| {
                kind.parse::<RunKind>()
                    .map_or(true, |kind| lock::is_running(state_path, sync, kind))
            });
        add_other(&mut others, intent, running);
    }
    Ok(others)
}

impl SqliteStore {
    /// Of `ids`, those another run that is running now has a write of
    /// announced and not yet settled: a run that went behind such a write
    /// waits for it before it reads the record back.
    pub async fn pending_elsewhere(
        &self,
        sync: &str,
        run_id: &str,
        ids: &[&str],
    ) -> Result<HashSet<String>, StateError> {
        let ids = serde_json::to_string(ids).map_err(|e| StateError::Corrupt(e.to_string()))?;
        let mut conn = self.pool.acquire().await?;
        let others = others_writes(&mut conn, &self.path, sync, run_id, &ids).await?;
        Ok(others
            .into_values()
            .filter(|o| o.live)
            .map(|o| o.intent.source_id)
            .collect())
    }
}
