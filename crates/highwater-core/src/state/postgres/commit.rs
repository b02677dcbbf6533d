//! A run's writes to the PostgreSQL store: each page's commit, in one
//! transaction under the sync's advisory lock, and the run's completion. A
//! commit's ledger rows go straight into the ledger, except in the
//! shared-transaction mode: there they are staged (`ledger_staged`, one row
//! per commit), and a commit that the engine asks to merge folds them into
//! the ledger after its own transaction, on the store's own connection, while
//! the destination's next rows go into the shared one. Upserted, several rows
//! of one record are first reduced to the one a merge in their order would
//! leave (an upsert cannot touch one row twice in a statement).

use super::*;

/// The upsert of ledger rows, one array per column: the newest version wins
/// (versions when both rows have one, `updated_at` otherwise), and within
/// one version the later row, as SQLite's merge of staged rows.
const LEDGER_UPSERT: &str = "
INSERT INTO ledger (sync, source_id, external_id, dest_id, version, updated_at, payload_hash,
                    run_id, written_at, deleted_at)
SELECT $1, r.source_id, r.external_id, r.dest_id, r.version, r.updated_at, r.payload_hash,
       r.run_id, r.written_at, r.deleted_at
  FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[],
              $8::text[], $9::bigint[], $10::bigint[])
       AS r (source_id, external_id, dest_id, version, updated_at, payload_hash, run_id, deleted_at,
             written_at)
ON CONFLICT (sync, source_id) DO UPDATE SET
  external_id = excluded.external_id,
  dest_id = COALESCE(excluded.dest_id, ledger.dest_id),
  version = excluded.version,
  updated_at = excluded.updated_at,
  payload_hash = excluded.payload_hash,
  run_id = excluded.run_id,
  written_at = excluded.written_at,
  deleted_at = excluded.deleted_at
WHERE CASE WHEN excluded.version IS NOT NULL AND ledger.version IS NOT NULL
           THEN excluded.version >= ledger.version
           ELSE excluded.updated_at >= ledger.updated_at END";

const DEAD_LETTER_UPSERT: &str = "
INSERT INTO dead_letters (sync, source_id, run_id, stage, error, payload, fingerprint, attempts,
                          first_failed_at, last_failed_at)
SELECT $1, d.source_id, d.run_id, d.stage, d.error, d.payload, d.fingerprint, d.attempts, $2, $2
  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[])
       AS d (source_id, run_id, stage, error, payload, fingerprint, attempts)
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
  audit_id = NULL";

const READBACK_UPSERT: &str = "
INSERT INTO readbacks (sync, source_id, run_id, external_id, dest_id, version, updated_at,
                       payload, payload_hash, settles_at)
SELECT $1, r.source_id, $2, r.external_id, r.dest_id, r.version, r.updated_at, r.payload,
       r.payload_hash, r.settles_at
  FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[],
              $9::text[], $10::bigint[])
       AS r (source_id, external_id, dest_id, version, updated_at, payload, payload_hash, settles_at)
ON CONFLICT (sync, source_id) DO UPDATE SET
  run_id = excluded.run_id,
  external_id = excluded.external_id,
  dest_id = excluded.dest_id,
  version = excluded.version,
  updated_at = excluded.updated_at,
  payload = excluded.payload,
  payload_hash = excluded.payload_hash,
  settles_at = excluded.settles_at";

/// The run's examples: the first ids of its ledger rows and dead letters, up
/// to [`SAMPLE_IDS`]; once it has them, a commit only reads the array's length.
const SAMPLES: &str = "
UPDATE runs SET updated_at = $2,
  sample_written = CASE WHEN jsonb_array_length(runs.sample_written) < 5 THEN (
    SELECT COALESCE(jsonb_agg(s.id ORDER BY s.part, s.place), '[]'::jsonb) FROM (
      SELECT u.id, u.part, u.place FROM (
        SELECT 0 AS part, o AS place, v AS id
          FROM jsonb_array_elements_text(runs.sample_written) WITH ORDINALITY AS t (v, o)
        UNION ALL
        SELECT 1, o, v FROM unnest($3::text[]) WITH ORDINALITY AS n (v, o)
          WHERE v NOT IN (SELECT jsonb_array_elements_text(runs.sample_written))) AS u
      ORDER BY u.part, u.place LIMIT 5) AS s)
    ELSE runs.sample_written END,
  sample_dead_lettered = CASE WHEN jsonb_array_length(runs.sample_dead_lettered) < 5 THEN (
    SELECT COALESCE(jsonb_agg(s.id ORDER BY s.part, s.place), '[]'::jsonb) FROM (
      SELECT u.id, u.part, u.place FROM (
        SELECT 0 AS part, o AS place, v AS id
          FROM jsonb_array_elements_text(runs.sample_dead_lettered) WITH ORDINALITY AS t (v, o)
        UNION ALL
        SELECT 1, o, v FROM unnest($4::text[]) WITH ORDINALITY AS n (v, o)
          WHERE v NOT IN (SELECT jsonb_array_elements_text(runs.sample_dead_lettered))) AS u
      ORDER BY u.part, u.place LIMIT 5) AS s)
    ELSE runs.sample_dead_lettered END
WHERE run_id = $1";

impl PgStore {
    /// As SQLite's: announcements (checked against other runs), retired
    /// batches, ledger rows, dead letters, the checkpoint, unsettled writes,
    /// read-backs and events, in one transaction. Its ledger rows are visible
    /// to lookups once it returns, unless they were staged and not merged.
    pub async fn commit_page(
        &self,
        sync: &str,
        run_id: &str,
        page: &PageCommit,
        cursor: Option<&Value>,
        counters: &Counters,
    ) -> Result<Committed, StateError> {
        let now = Timestamp::now().as_microsecond();
        let staging = self.shared.get().is_some();
        let mut writer = self.page_writer(sync).await?;
        let tx = writer.tx();
        let announced = match &page.announce {
            Some(batch) => claim::check(tx, sync, run_id, batch).await?,
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
        insert_batch(tx, sync, run_id, kept.as_ref(), now).await?;
        if !page.retire.is_empty() {
            sqlx::query("DELETE FROM intents WHERE sync = $1 AND batch = ANY($2)")
                .bind(sync)
                .bind(&page.retire)
                .execute(&mut **tx)
                .await?;
        }
        if staging {
            stage_ledger(tx, sync, &page.ledger, now).await?;
        } else {
            upsert_ledger(tx, sync, page.ledger.iter().map(|e| (e, now))).await?;
        }
        if !page.resolved.is_empty() {
            // A write resolves the record's dead letter; one discarded earlier
            // too, since the record is now at the destination.
            sqlx::query(
                "UPDATE dead_letters SET resolved_at = $1, resolution = $2, audit_id = NULL
                 WHERE (resolved_at IS NULL OR resolution = $3) AND sync = $4
                   AND source_id = ANY($5)",
            )
            .bind(now)
            .bind(DeadLetterResolution::Written.as_str())
            .bind(DeadLetterResolution::Discarded.as_str())
            .bind(sync)
            .bind(&page.resolved)
            .execute(&mut **tx)
            .await?;
        }
        upsert_dead_letters(tx, sync, &page.dead_letters, now).await?;
        sqlx::query(
            "UPDATE checkpoints SET cursor = COALESCE($1, cursor), counters = $2, updated_at = $3
             WHERE run_id = $4",
        )
        .bind(cursor.map(Value::to_string))
        .bind(counters_json(counters))
        .bind(now)
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
        sqlx::query(SAMPLES)
            .bind(run_id)
            .bind(now)
            .bind(sample_ids(page.ledger.iter().map(|e| e.source_id.as_str())))
            .bind(sample_ids(
                page.dead_letters.iter().map(|d| d.source_id.as_str()),
            ))
            .execute(&mut **tx)
            .await?;
        insert_batch(tx, sync, run_id, page.unsettled.as_ref(), now).await?;
        upsert_readbacks(tx, sync, run_id, &page.readbacks).await?;
        events::append(tx, sync, run_id, now, &page.events).await?;
        if let Some(position) = &page.sink_position {
            sqlx::query(
                "INSERT INTO sink_positions (sync, position) VALUES ($1, $2)
                 ON CONFLICT (sync) DO UPDATE SET position = excluded.position",
            )
            .bind(sync)
            .bind(position)
            .execute(&mut **tx)
            .await?;
        }
        writer.commit().await?;
        if staging && page.merge {
            self.merge_staged(sync).await?;
        }
        Ok(Committed {
            announced,
            visible: !staging || page.merge,
        })
    }

    /// Folds the sync's staged ledger rows into the ledger, in a transaction
    /// of the store's own; a no-op, without a write, when there are none.
    pub async fn merge_staged(&self, sync: &str) -> Result<(), StateError> {
        let any: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledger_staged WHERE sync = $1)")
                .bind(sync)
                .fetch_one(&self.pool)
                .await?;
        if !any {
            return Ok(());
        }
        let mut tx = self.writer(Some(sync)).await?;
        fold_staged(&mut tx, sync).await?;
        tx.commit().await?;
        Ok(())
    }

    /// As SQLite's: the run's watermark becomes the sync's high-water mark,
    /// its floors settle (an incremental run's also those left by runs that
    /// ended), and the writes in `unsettled` stay floors for the next run.
    pub async fn complete_run(
        &self,
        run_id: &str,
        cursor: &Value,
        counters: &Counters,
        unsettled: &[Intent],
    ) -> Result<(), StateError> {
        let now = Timestamp::now().as_microsecond();
        let (sync, kind): (String, String) =
            sqlx::query_as("SELECT sync, kind FROM runs WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(&self.pool)
                .await?;
        let mut tx = self.writer(Some(&sync)).await?;
        sqlx::query(
            "UPDATE checkpoints SET cursor = $1, counters = $2, updated_at = $3 WHERE run_id = $4",
        )
        .bind(cursor.to_string())
        .bind(counters_json(counters))
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        let incremental = kind == RunKind::Incremental.as_str();
        for statement in [
            "DELETE FROM intents WHERE sync = $1 AND (run_id = $2 OR ($3 AND run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = $1 AND status = $4)))",
            "DELETE FROM readbacks WHERE sync = $1 AND (run_id = $2 OR ($3 AND run_id NOT IN
               (SELECT run_id FROM runs WHERE sync = $1 AND status = $4)))",
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
            insert_batch(&mut tx, &sync, run_id, Some(&batch), now).await?;
        }
        sqlx::query(
            "UPDATE runs SET status = $1, completed_at = $2, updated_at = $2 WHERE run_id = $3",
        )
        .bind(RunStatus::Completed.as_str())
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        history::complete_invocation(&mut tx, run_id, cursor, counters, now).await?;
        fold_staged(&mut tx, &sync).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_batch(
    tx: &mut Tx,
    sync: &str,
    run_id: &str,
    batch: Option<&IntentBatch>,
    now: i64,
) -> Result<(), StateError> {
    let Some(batch) = batch.filter(|b| !b.intents.is_empty()) else {
        return Ok(());
    };
    let rows = serde_json::to_string(&intent_rows(Some(batch), now))
        .map_err(|e| StateError::Corrupt(e.to_string()))?;
    sqlx::query("INSERT INTO intents (sync, batch, run_id, rows) VALUES ($1, $2, $3, $4::jsonb)")
        .bind(sync)
        .bind(&batch.id)
        .bind(run_id)
        .bind(rows)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The row a merge of `rows` (each with when it was written) in their order
/// leaves for each record: a later row replaces the one before when it is
/// not older (by version when both have one, by `updated_at` otherwise),
/// keeping a destination id it lacks.
pub(super) fn merged<'a>(
    rows: impl IntoIterator<Item = (&'a LedgerEntry, i64)>,
) -> Vec<(LedgerEntry, i64)> {
    let mut by_id: HashMap<&str, (LedgerEntry, i64)> = HashMap::new();
    for (row, written_at) in rows {
        match by_id.get_mut(row.source_id.as_str()) {
            Some((kept, kept_at)) => {
                let wins = match (row.version, kept.version) {
                    (Some(new), Some(old)) => new >= old,
                    _ => row.updated_at >= kept.updated_at,
                };
                if wins {
                    let dest_id = row.dest_id.clone().or_else(|| kept.dest_id.take());
                    *kept = LedgerEntry {
                        dest_id,
                        ..row.clone()
                    };
                    *kept_at = written_at;
                }
            }
            None => {
                by_id.insert(&row.source_id, (row.clone(), written_at));
            }
        }
    }
    let mut merged: Vec<(LedgerEntry, i64)> = by_id.into_values().collect();
    // In key order: each insert lands near the last one in the index.
    merged.sort_by(|a, b| a.0.source_id.cmp(&b.0.source_id));
    merged
}

/// A sync's staged ledger rows, oldest commit first, each with when it was
/// written; and the last commit's `seq`.
pub(super) async fn staged_rows(
    conn: &mut sqlx::PgConnection,
    sync: &str,
    only: Option<&str>,
) -> Result<(Vec<(LedgerEntry, i64)>, Option<i64>), StateError> {
    let commits: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, written_at, rows FROM ledger_staged WHERE sync = $1 ORDER BY seq",
    )
    .bind(sync)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = Vec::new();
    for (_, written_at, bytes) in &commits {
        for line in staged::unpack(bytes)? {
            if only.is_some_and(|id| id != line.0) {
                continue;
            }
            rows.push((staged::entry(line)?, *written_at));
        }
    }
    Ok((rows, commits.last().map(|(seq, _, _)| *seq)))
}

/// Folds the sync's staged ledger rows into the ledger, in `tx`, which holds
/// the sync's advisory lock: no other fold takes the same rows.
pub(super) async fn fold_staged(tx: &mut Tx, sync: &str) -> Result<(), StateError> {
    let (rows, last) = staged_rows(tx, sync, None).await?;
    let Some(last) = last else {
        return Ok(());
    };
    upsert_ledger(tx, sync, rows.iter().map(|(e, at)| (e, *at))).await?;
    sqlx::query("DELETE FROM ledger_staged WHERE sync = $1 AND seq <= $2")
        .bind(sync)
        .bind(last)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn stage_ledger(
    tx: &mut Tx,
    sync: &str,
    rows: &[LedgerEntry],
    now: i64,
) -> Result<(), StateError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO ledger_staged (sync, written_at, rows) VALUES ($1, $2, $3)")
        .bind(sync)
        .bind(now)
        .bind(staged::pack(rows)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_ledger<'a>(
    tx: &mut Tx,
    sync: &str,
    rows: impl IntoIterator<Item = (&'a LedgerEntry, i64)>,
) -> Result<(), StateError> {
    let rows = merged(rows);
    if rows.is_empty() {
        return Ok(());
    }
    let column =
        |f: fn(&LedgerEntry) -> Option<String>| rows.iter().map(|(e, _)| f(e)).collect::<Vec<_>>();
    let number =
        |f: fn(&LedgerEntry) -> Option<i64>| rows.iter().map(|(e, _)| f(e)).collect::<Vec<_>>();
    sqlx::query(LEDGER_UPSERT)
        .bind(sync)
        .bind(column(|e| Some(e.source_id.clone())))
        .bind(column(|e| Some(e.external_id.clone())))
        .bind(column(|e| e.dest_id.clone()))
        .bind(number(|e| e.version))
        .bind(number(|e| Some(e.updated_at.as_microsecond())))
        .bind(column(|e| Some(e.payload_hash.clone())))
        .bind(column(|e| Some(e.run_id.clone())))
        .bind(number(|e| e.deleted_at.map(Timestamp::as_microsecond)))
        .bind(rows.iter().map(|(_, at)| *at).collect::<Vec<i64>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_dead_letters(
    tx: &mut Tx,
    sync: &str,
    letters: &[DeadLetter],
    now: i64,
) -> Result<(), StateError> {
    if letters.is_empty() {
        return Ok(());
    }
    // Several letters of one record in a commit: the later one's reason, every
    // one's attempts, as one insert after another would leave them.
    let mut by_id: Vec<(&DeadLetter, i64)> = Vec::with_capacity(letters.len());
    let mut place: HashMap<&str, usize> = HashMap::with_capacity(letters.len());
    for letter in letters {
        match place.get(letter.source_id.as_str()) {
            Some(&i) => {
                let attempts = by_id[i].1 + letter.attempts;
                by_id[i] = (letter, attempts);
            }
            None => {
                place.insert(&letter.source_id, by_id.len());
                by_id.push((letter, letter.attempts));
            }
        }
    }
    let text = |f: fn(&DeadLetter) -> String| by_id.iter().map(|(d, _)| f(d)).collect::<Vec<_>>();
    sqlx::query(DEAD_LETTER_UPSERT)
        .bind(sync)
        .bind(now)
        .bind(text(|d| d.source_id.clone()))
        .bind(text(|d| d.run_id.clone()))
        .bind(text(|d| d.stage.as_str().to_owned()))
        .bind(text(|d| d.error.clone()))
        .bind(text(|d| d.payload.to_string()))
        .bind(text(|d| d.fingerprint.clone()))
        .bind(by_id.iter().map(|(_, n)| *n).collect::<Vec<i64>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_readbacks(
    tx: &mut Tx,
    sync: &str,
    run_id: &str,
    readbacks: &[Readback],
) -> Result<(), StateError> {
    if readbacks.is_empty() {
        return Ok(());
    }
    let mut latest: HashMap<&str, &Readback> = HashMap::with_capacity(readbacks.len());
    for r in readbacks {
        latest.insert(&r.source_id, r);
    }
    let rows: Vec<&Readback> = latest.into_values().collect();
    let text = |f: fn(&Readback) -> Option<String>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let number = |f: fn(&Readback) -> Option<i64>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    sqlx::query(READBACK_UPSERT)
        .bind(sync)
        .bind(run_id)
        .bind(text(|r| Some(r.source_id.clone())))
        .bind(text(|r| Some(r.external_id.clone())))
        .bind(text(|r| r.dest_id.clone()))
        .bind(number(|r| r.version))
        .bind(number(|r| Some(r.updated_at.as_microsecond())))
        .bind(text(|r| Some(r.payload.to_string())))
        .bind(text(|r| Some(r.payload_hash.clone())))
        .bind(number(|r| Some(r.settles_at.as_microsecond())))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, version: Option<i64>, at: i64, dest: Option<&str>) -> LedgerEntry {
        LedgerEntry {
            source_id: id.into(),
            external_id: id.into(),
            dest_id: dest.map(Into::into),
            version,
            updated_at: Timestamp::from_second(at).expect("time"),
            payload_hash: format!("h{at}"),
            run_id: "r".into(),
            deleted_at: None,
        }
    }

    #[test]
    fn a_commits_rows_reduce_to_what_merging_them_in_order_leaves() {
        let rows = [
            row("a", Some(2), 10, Some("d-a")),
            row("b", None, 5, None),
            row("a", Some(1), 30, None),
            row("a", Some(2), 20, None),
            row("b", None, 4, Some("d-b")),
        ];
        let merged = merged(rows.iter().zip(1..));
        assert_eq!(merged.len(), 2);
        // `a`: version 1 loses, the later version 2 wins and keeps the id,
        // with when it was written.
        assert_eq!(merged[0].0.updated_at.as_second(), 20);
        assert_eq!(merged[0].0.dest_id.as_deref(), Some("d-a"));
        assert_eq!(merged[0].1, 4);
        // `b`: the older copy loses, with its destination id.
        assert_eq!(merged[1].0.updated_at.as_second(), 5);
        assert_eq!(merged[1].0.dest_id, None);
        assert_eq!(merged[1].1, 2);
    }
}
