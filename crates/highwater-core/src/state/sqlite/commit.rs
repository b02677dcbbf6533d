//! A run's writes to the store: each page's commit (one statement list, one
//! transaction), the merge of staged ledger rows into the ledger's runs, and the run's
//! completion, which moves the high-water mark and settles the floors.

use super::claim;
use super::named::{Param, Params, Statements};
use super::*;

/// Everything [`Store::commit_page`] changes, as one statement list with
/// named parameters (`named.rs`), run in one transaction and in one trip to
/// SQLite's thread. Ledger rows are staged, one row per commit (the commit's
/// rows packed by `state::staged::pack`, in id order);
/// [`merge_staged`] folds them into the ledger's runs.
const COMMIT_PAGE: &str = "
INSERT INTO intents (sync, batch, run_id, rows)
  SELECT sync, batch, run_id, rows FROM (SELECT :sync AS sync, :batch AS batch, :run_id AS run_id, :intents AS rows)
  WHERE batch IS NOT NULL;
DELETE FROM intents WHERE sync = :sync AND batch IN (SELECT value FROM json_each(:retire));
INSERT INTO ledger_staged (sync, seq, rows, written_at)
  SELECT p.sync, COALESCE((SELECT MAX(seq) FROM ledger_staged WHERE sync = p.sync), 0) + 1, p.rows, p.now
  FROM (SELECT :sync AS sync, :ledger AS rows, :now AS now) AS p;
-- A write resolves the record's dead letter; one discarded earlier too, since the
-- record is now at the destination, which says more than the discard.
UPDATE dead_letters SET resolved_at = :now, resolution = :written, audit_id = NULL
  WHERE (resolved_at IS NULL OR resolution = :discarded) AND sync = :sync
    AND source_id IN (SELECT value FROM json_each(:resolved));
INSERT INTO dead_letters (sync, source_id, run_id, stage, error, payload, fingerprint, attempts, first_failed_at, last_failed_at)
  SELECT p.sync, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, p.now, p.now
  FROM (SELECT :sync AS sync, :now AS now) AS p, jsonb_each(:dead_letters) WHERE true ORDER BY key
  ON CONFLICT (sync, source_id) DO UPDATE SET
    run_id = excluded.run_id,
    stage = excluded.stage,
    error = excluded.error,
    payload = excluded.payload,
    fingerprint = excluded.fingerprint,
    attempts = dead_letters.attempts + excluded.attempts,
    last_failed_at = excluded.last_failed_at,
    resolved_at = NULL,
    resolution = NULL,
    audit_id = NULL;
UPDATE checkpoints SET cursor = COALESCE(:cursor, cursor), counters = :counters, updated_at = :now
  WHERE run_id = :run_id;
-- The run's examples: the first ids of its ledger rows and dead letters, up to
-- five (SAMPLE_IDS); once it has five, a commit only reads the array's length.
UPDATE runs SET updated_at = :now,
    sample_written = CASE WHEN json_array_length(sample_written) < 5 THEN (
      SELECT json_group_array(id) FROM (
        SELECT id FROM (
          SELECT 0 AS part, key AS place, value AS id FROM json_each(runs.sample_written)
          UNION ALL
          SELECT 1, key, value FROM json_each(:sample_written)
            WHERE value NOT IN (SELECT value FROM json_each(runs.sample_written)))
        ORDER BY part, place LIMIT 5))
      ELSE sample_written END,
    sample_dead_lettered = CASE WHEN json_array_length(sample_dead_lettered) < 5 THEN (
      SELECT json_group_array(id) FROM (
        SELECT id FROM (
          SELECT 0 AS part, key AS place, value AS id FROM json_each(runs.sample_dead_lettered)
          UNION ALL
          SELECT 1, key, value FROM json_each(:sample_dead_lettered)
            WHERE value NOT IN (SELECT value FROM json_each(runs.sample_dead_lettered)))
        ORDER BY part, place LIMIT 5))
      ELSE sample_dead_lettered END
  WHERE run_id = :run_id;
INSERT INTO intents (sync, batch, run_id, rows)
  SELECT sync, batch, run_id, rows FROM (SELECT :sync AS sync, :unsettled_batch AS batch, :run_id AS run_id, :unsettled AS rows)
  WHERE batch IS NOT NULL;
INSERT INTO readbacks (sync, source_id, run_id, external_id, dest_id, version, updated_at, payload, payload_hash, settles_at)
  SELECT p.sync, value ->> 0, p.run_id, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7
  FROM (SELECT :sync AS sync, :run_id AS run_id) AS p, jsonb_each(:readbacks) WHERE true ORDER BY key
  ON CONFLICT (sync, source_id) DO UPDATE SET
    run_id = excluded.run_id,
    external_id = excluded.external_id,
    dest_id = excluded.dest_id,
    version = excluded.version,
    updated_at = excluded.updated_at,
    payload = excluded.payload,
    payload_hash = excluded.payload_hash,
    settles_at = excluded.settles_at;
INSERT INTO record_events (sync, at, run_id, seq, events)
  SELECT :sync, :now, :run_id, COALESCE(MAX(seq), 0) + 1, :events
  FROM record_events WHERE sync = :sync AND at = :now AND run_id = :run_id;
INSERT INTO sink_positions (sync, position)
  SELECT sync, position FROM (SELECT :sync AS sync, :sink_position AS position)
  WHERE position IS NOT NULL
  ON CONFLICT (sync) DO UPDATE SET position = excluded.position;
";

/// [`COMMIT_PAGE`], split and numbered once.
pub(super) static COMMIT_PAGE_STATEMENTS: std::sync::LazyLock<Statements> =
    std::sync::LazyLock::new(|| Statements::parse(COMMIT_PAGE));

/// Folds a sync's staged ledger rows into the ledger's runs
/// ([`ledger::merge`]). During a run, in the transaction of the page commit
/// that brings the staged rows to `merge_rows` (and of the run's completion):
/// the commits after it wait for it. Merging in steps between page commits
/// instead (a range of source ids per transaction) cost more than the wait,
/// when merges were upserts into B-trees: at 100,000 records into
/// PostgreSQL, 45,800–53,600 against 55,100–57,700 records/s and 80–87
/// against 61–63 MiB of peak RSS (the run's view keeps rows until the last
/// step). Nor did a merge in a transaction of its own right after the
/// page's gain anything: only writes announced before the merge may go
/// while it runs, at most the pages in flight.
pub(super) async fn merge_staged(
    tx: &mut sqlx::SqliteConnection,
    sync: &str,
) -> Result<(), StateError> {
    ledger::merge(tx, sync).await
}

impl SqliteStore {
    /// Commits what the run has resolved (ledger rows, dead letters, retired
    /// intent batches), the writes it is about to send (a new batch) and — when the
    /// frontier moved — the advanced checkpoint, in one transaction. A write is
    /// announced only if no other run holds a newer version of its record (see
    /// [`claim`](super::claim)); the answer names those refused, which must not
    /// be sent, and those announced behind another run's write.
    pub async fn commit_page(
        &self,
        sync: &str,
        run_id: &str,
        page: &PageCommit,
        cursor: Option<&Value>,
        counters: &Counters,
    ) -> Result<Announced, StateError> {
        let now = Timestamp::now().as_microsecond();
        let unsettled = page.unsettled.as_ref().filter(|b| !b.intents.is_empty());
        let readbacks: Vec<_> = page
            .readbacks
            .iter()
            .map(|r| {
                (
                    &r.source_id,
                    &r.external_id,
                    &r.dest_id,
                    r.version,
                    r.updated_at.as_microsecond(),
                    r.payload.to_string(),
                    &r.payload_hash,
                    r.settles_at.as_microsecond(),
                )
            })
            .collect();
        let dead_letters: Vec<_> = page
            .dead_letters
            .iter()
            .map(|d| {
                (
                    &d.source_id,
                    &d.run_id,
                    d.stage.as_str(),
                    &d.error,
                    d.payload.to_string(),
                    &d.fingerprint,
                    d.attempts,
                )
            })
            .collect();
        let sample_written = sample_ids(page.ledger.iter().map(|e| e.source_id.as_str()));
        let sample_dead = sample_ids(page.dead_letters.iter().map(|d| d.source_id.as_str()));
        let mut tx = self.writer().await?;
        let announced = match &page.announce {
            Some(batch) => {
                claim::check(&mut tx, &self.path, &self.runs, sync, run_id, batch).await?
            }
            None => Announced::default(),
        };
        let kept = page.announce.as_ref().map(|b| IntentBatch {
            id: b.id.clone(),
            intents: b
                .intents
                .iter()
                .filter(|i| !announced.refused.contains(&i.source_id))
                .cloned()
                .collect(),
        });
        let batch = kept.as_ref().filter(|b| !b.intents.is_empty());
        let intents = intent_rows(batch, now);
        // A statement with no rows to unpack is not run.
        let params: Params = [
            ("sync", sync.into()),
            ("run_id", run_id.into()),
            ("now", now.into()),
            ("batch", batch.map(|b| &b.id).into()),
            ("intents", Param::rows(&intents)?),
            ("retire", Param::rows(&page.retire)?),
            (
                "ledger",
                Param::Packed {
                    bytes: staged::pack(&page.ledger)?,
                    empty: page.ledger.is_empty(),
                },
            ),
            ("written", DeadLetterResolution::Written.as_str().into()),
            ("discarded", DeadLetterResolution::Discarded.as_str().into()),
            ("resolved", Param::rows(&page.resolved)?),
            ("dead_letters", Param::rows(&dead_letters)?),
            ("cursor", cursor.map(Value::to_string).into()),
            ("counters", counters_json(counters).into()),
            ("sample_written", json_rows(&sample_written)?.into()),
            ("sample_dead_lettered", json_rows(&sample_dead)?.into()),
            ("unsettled_batch", unsettled.map(|b| &b.id).into()),
            ("unsettled", Param::rows(&intent_rows(unsettled, now))?),
            ("readbacks", Param::rows(&readbacks)?),
            (
                "events",
                Param::Packed {
                    bytes: events::events_jsonb(&page.events),
                    empty: page.events.is_empty(),
                },
            ),
            ("sink_position", page.sink_position.as_ref().into()),
        ]
        .into();
        COMMIT_PAGE_STATEMENTS.run(&mut tx, &params).await?;
        if page.merge {
            merge_staged(&mut tx, sync).await?;
        }
        if self.shares_table(sync) {
            tx.commit_atomic().await?;
        } else {
            tx.commit().await?;
        }
        Ok(announced)
    }

    /// Merges ledger rows staged by an earlier invocation of `sync`, so that
    /// [`Store::known`] sees them; a no-op, without a write, when there are none.
    pub async fn merge_staged(&self, sync: &str) -> Result<(), StateError> {
        let staged: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledger_staged WHERE sync = ?)")
                .bind(sync)
                .fetch_one(&self.pool)
                .await?;
        if staged {
            let mut tx = self.writer().await?;
            merge_staged(&mut tx, sync).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Completes a run: from now on its watermark is the sync's high-water mark.
    /// Every announced write has settled and every record read back, except the
    /// writes in `unsettled`, which may still land: they stay floors for the
    /// next run.
    pub async fn complete_run(
        &self,
        run_id: &str,
        cursor: &Value,
        counters: &Counters,
        unsettled: &[Intent],
    ) -> Result<(), StateError> {
        let now = Timestamp::now().as_microsecond();
        let mut tx = self.writer().await?;
        update_checkpoint(&mut tx, run_id, Some(cursor), counters, now).await?;
        let (sync, kind): (String, String) =
            sqlx::query_as("SELECT sync, kind FROM runs WHERE run_id = ?")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
        merge_staged(&mut tx, &sync).await?;
        // Every announced write of the run has settled: none is a floor any more.
        // An incremental run also settled the floors it found left by runs that
        // ended (it read everything since); a run of another kind read only its
        // own window, and an open run's floors are that run's to settle.
        let incremental = kind == RunKind::Incremental.as_str();
        for statement in [
            "DELETE FROM intents WHERE sync = ?1 AND (run_id = ?2 OR (?3 AND run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = ?1 AND status = ?4)))",
            "DELETE FROM readbacks WHERE sync = ?1 AND (run_id = ?2 OR (?3 AND run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = ?1 AND status = ?4)))",
        ] {
            sqlx::query(statement)
                .bind(&sync)
                .bind(run_id)
                .bind(incremental)
                .bind(RunStatus::Open.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if !unsettled.is_empty() {
            let batch = IntentBatch {
                id: format!("unsettled-{run_id}"),
                intents: unsettled.to_vec(),
            };
            sqlx::query("INSERT INTO intents (sync, batch, run_id, rows) VALUES (?, ?, ?, ?)")
                .bind(&sync)
                .bind(&batch.id)
                .bind(run_id)
                .bind(json_rows(&intent_rows(Some(&batch), now))?)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE runs SET status = ?, completed_at = ?, updated_at = ? WHERE run_id = ?",
        )
        .bind(RunStatus::Completed.as_str())
        .bind(now)
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        // The invocation's end goes with the completion, so a completed run never
        // shows an invocation without one; its retries follow in `end_invocation`.
        history::complete_invocation(&mut tx, run_id, cursor, counters, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn update_checkpoint(
    tx: &mut sqlx::SqliteConnection,
    run_id: &str,
    cursor: Option<&Value>,
    counters: &Counters,
    now: i64,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE checkpoints SET cursor = COALESCE(?, cursor), counters = ?, updated_at = ? WHERE run_id = ?",
    )
    .bind(cursor.map(Value::to_string))
    .bind(counters_json(counters))
    .bind(now)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE runs SET updated_at = ? WHERE run_id = ?")
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
