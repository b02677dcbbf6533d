//! The compare-and-set of announced writes in PostgreSQL (see `state::claim`):
//! the same check as SQLite's, inside the commit's transaction, which holds
//! the sync's advisory lock, so two runs of one sync never announce at once.
//! Another run is running when a worker holds its kind's lease, unexpired.

use super::*;
use crate::record::is_older;

/// Checks `batch` against the ledger and every other run's announced writes,
/// inside the transaction that will announce it.
pub(super) async fn check(
    tx: &mut Tx,
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
                   WHERE i.sync = $1 AND i.run_id != $2 AND o.status = $3),
           EXISTS (SELECT 1 FROM runs AS o
                   WHERE o.sync = $1 AND o.run_id != $2
                     AND o.updated_at >= COALESCE(
                       (SELECT MAX(started_at) FROM invocations WHERE run_id = $2), 0))",
    )
    .bind(sync)
    .bind(run_id)
    .bind(RunStatus::Open.as_str())
    .fetch_one(&mut **tx)
    .await?;
    if !announced_elsewhere && !committed_since {
        return Ok(Announced::default());
    }
    if committed_since {
        super::commit::fold_staged(tx, sync).await?;
    }
    let ids: Vec<&str> = batch.intents.iter().map(|i| i.source_id.as_str()).collect();
    let mut newest: HashMap<String, (Option<i64>, i64)> = HashMap::new();
    let rows = sqlx::query(
        "SELECT l.source_id, l.version, l.updated_at
           FROM unnest($2::text[]) AS i (id),
                LATERAL (SELECT * FROM ledger
                         WHERE sync = $1 AND source_id = i.id OFFSET 0) AS l",
    )
    .bind(sync)
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        newest.insert(
            row.try_get("source_id")?,
            (row.try_get("version")?, row.try_get("updated_at")?),
        );
    }
    let others = others_writes(tx, sync, run_id, &ids).await?;
    let mut announced = Announced::default();
    for intent in &batch.intents {
        let (version, updated_at) = (intent.version, intent.updated_at);
        let in_ledger = newest.get(&intent.source_id).is_some_and(|(v, at)| {
            micros(*at).is_ok_and(|at| is_older(version, updated_at, *v, at))
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

/// Other runs' writes of `ids` that may still land, the newest per id.
async fn others_writes(
    conn: &mut sqlx::PgConnection,
    sync: &str,
    run_id: &str,
    ids: &[&str],
) -> Result<HashMap<String, Behind>, StateError> {
    let now = Timestamp::now();
    let rows = sqlx::query(
        "SELECT e.value ->> 0 AS source_id, (e.value ->> 1)::bigint AS version,
                (e.value ->> 2)::bigint AS updated_at, (e.value ->> 3)::bigint AS settles_at,
                o.status,
                COALESCE((e.value ->> 4)::bigint, 0) >= COALESCE(
                  (SELECT MAX(started_at) FROM invocations AS n WHERE n.run_id = o.run_id), 0)
                  AS current,
                EXISTS (SELECT 1 FROM leases AS l
                        WHERE l.sync = i.sync AND l.kind = o.kind
                          AND l.expires_at > clock_timestamp()) AS leased
         FROM intents AS i JOIN runs AS o USING (run_id),
              jsonb_array_elements(i.rows) AS e (value)
         WHERE i.sync = $1 AND i.run_id != $2 AND e.value ->> 0 = ANY($3)",
    )
    .bind(sync)
    .bind(run_id)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
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
        let status: String = row.try_get("status")?;
        // Announced by the invocation of its run that holds the lease now;
        // an earlier invocation's worker is gone, and a worker past its lease
        // sends nothing more.
        let current: bool = row.try_get("current")?;
        let leased: bool = row.try_get("leased")?;
        let live =
            intent.settles_at.is_none() && current && leased && status == RunStatus::Open.as_str();
        add_other(&mut others, intent, live);
    }
    Ok(others)
}

impl PgStore {
    /// Of `ids`, those another run that is running now has a write of
    /// announced and not yet settled.
    pub async fn pending_elsewhere(
        &self,
        sync: &str,
        run_id: &str,
        ids: &[&str],
    ) -> Result<HashSet<String>, StateError> {
        let mut conn = self.pool.acquire().await?;
        let others = others_writes(&mut conn, sync, run_id, ids).await?;
        Ok(others
            .into_values()
            .filter(|o| o.live)
            .map(|o| o.intent.source_id)
            .collect())
    }
}
