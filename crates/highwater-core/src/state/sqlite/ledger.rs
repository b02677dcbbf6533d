//! The SQLite backend's ledger as sorted runs (their format in `runs.rs`):
//! each sync's runs (`ledger_runs`, oldest first: a later run's row of a
//! record folds over an earlier one's), their blocks (`ledger_blocks`, keyed
//! by run and place) and indexes (`ledger_index`, in pieces keyed the same
//! way; in `ledger_runs.idx` for a run written before), the holders of
//! external ids that are not their record's own source id
//! (`ledger_holders`), the merge that folds a sync's staged rows and its
//! newest runs of like size into one new run, and the lookup of ids across
//! runs (`scan.rs` reads a whole sync in id order).
//!
//! Invariants: a run is never changed once written, only replaced whole by a
//! merge, in the transaction that deletes the runs and staged rows it folds;
//! a committed run's id is never given again (`AUTOINCREMENT`), so an index
//! cached by id stays true, and none read inside a write transaction (which
//! may roll back) is cached; every reader folds a record's rows oldest run first, then its
//! staged rows in commit order, as a merge does ([`fold`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::{Row, SqliteConnection};

use super::json_rows;
use super::runs::{Block, IndexFromPieces, RunBuilder, RunIndex, RunRow, fold, id_hash};
use super::scan::{Scan, Staged};
use crate::state::StateError;

/// A merge folds the newest runs into the new one once this many, with it,
/// are of its size class or smaller; a class holds runs up to this many
/// times the rows of the class below. Each row is then written about once
/// per class it climbs (2.7 times on average when 1,000,000 rows come in
/// merges of 2,000, and the largest merge folds 128,000 rows), and a sync
/// has at most seven runs per class and the new one. Merges run in the
/// commits' transactions, and the commits after one wait for it: with 4,
/// rows were written 3.6 times, and the merges of a sync of 1,000,000
/// records into JSON Lines took 5.4 s of its 14 s, the largest 0.65 s. A
/// lookup tests every run's filter, one cache line each, and more runs
/// pass an absent id more often (one in a thousand each).
const FANOUT: usize = 8;

/// Rows of the smallest size class: merges of a few rows (small incremental
/// runs) fold into one run of this size before it joins larger ones.
const BASE_ROWS: i64 = 1024;

/// Blocks stored per statement, and read per statement by a scan.
pub(super) const BLOCKS_PER_TRIP: usize = 32;

/// Bytes of a run's filter per stored piece: what is copied of it at once,
/// made into bytes and by SQLite (the bound value and the row). Small in
/// tests, so that their indexes are read back from several pieces.
const PIECE_BYTES: usize = if cfg!(test) { 64 } else { 1 << 20 };

fn size_class(rows: i64) -> u32 {
    let mut rest = rows / BASE_ROWS;
    let mut class = 0;
    while rest >= FANOUT as i64 {
        rest /= FANOUT as i64;
        class += 1;
    }
    class
}

/// Where the runs a merge of `new_rows` staged rows folds in start, given the
/// rows of a sync's runs, oldest first: the new run takes the newest runs no
/// larger than its class once they are [`FANOUT`] with it, and again with
/// the class it then reaches.
fn merge_from(runs: &[i64], new_rows: i64) -> usize {
    let mut start = runs.len();
    let mut rows = new_rows;
    loop {
        let class = size_class(rows);
        let mut from = start;
        while from > 0 && size_class(runs[from - 1]) <= class {
            from -= 1;
        }
        if start - from + 1 < FANOUT {
            return start;
        }
        rows += runs[from..start].iter().sum::<i64>();
        start = from;
    }
}

/// The first block id of run `run`: a run's blocks are `run << 32` on.
pub(super) fn first_block(run: i64) -> i64 {
    run << 32
}

/// The indexes of runs `?1` (a JSON array of ids) stored whole, as runs
/// written before pieces have them; empty for the others.
pub(super) const INDEXES: &str =
    "SELECT id, idx FROM ledger_runs WHERE id IN (SELECT value FROM json_each(?1))";

/// The pieces of a run's index, in order: ids `?1` to `?2`.
pub(super) const INDEX_PIECES: &str =
    "SELECT data FROM ledger_index WHERE id BETWEEN ?1 AND ?2 ORDER BY id";

/// The index of run `run` from its pieces, read one piece at a time;
/// `None` when it has none (a merge replaced it).
async fn index_pieces(
    conn: &mut SqliteConnection,
    run: i64,
) -> Result<Option<RunIndex>, StateError> {
    use futures_util::TryStreamExt;
    let mut index = IndexFromPieces::default();
    let mut pieces = sqlx::query_scalar::<_, Vec<u8>>(INDEX_PIECES)
        .bind(first_block(run))
        .bind(first_block(run) + i64::from(u32::MAX))
        .fetch(&mut *conn);
    while let Some(piece) = pieces.try_next().await? {
        index.push(&piece)?;
    }
    index.finish()
}

/// The blocks `?1` (a JSON array of ids).
pub(super) const BLOCKS: &str =
    "SELECT id, data FROM ledger_blocks WHERE id IN (SELECT value FROM json_each(?1))";

/// One of a sync's runs as the catalog lists it.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunInfo {
    pub id: i64,
    pub rows: i64,
    pub blocks: i64,
}

impl From<(i64, i64, i64)> for RunInfo {
    fn from((id, rows, blocks): (i64, i64, i64)) -> RunInfo {
        RunInfo { id, rows, blocks }
    }
}

/// A sync's runs, oldest first.
pub(super) async fn runs_of(
    conn: &mut SqliteConnection,
    sync: &str,
) -> Result<Vec<RunInfo>, StateError> {
    let rows: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT id, rows, blocks FROM ledger_runs WHERE sync = ?1 ORDER BY id")
            .bind(sync)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().map(RunInfo::from).collect())
}

/// The indexes of runs read so far, by run id: a run never changes, and a
/// lookup would otherwise read its filter (16 bits an id) every time.
#[derive(Debug, Default)]
pub(super) struct RunIndexes(Mutex<HashMap<i64, (String, Arc<RunIndex>)>>);

impl RunIndexes {
    fn cached(&self, runs: &[RunInfo]) -> Vec<Option<Arc<RunIndex>>> {
        let cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        runs.iter()
            .map(|r| cache.get(&r.id).map(|(_, index)| index.clone()))
            .collect()
    }

    /// The indexes of `runs`, read from the store where not cached, and
    /// cached when `keep`: never in a write transaction, which may roll back
    /// a run it wrote, and with it the id's use (ids of committed runs are
    /// never given again). Indexes of runs a merge has replaced leave the
    /// cache when a sync's runs no longer name them.
    async fn of(
        &self,
        conn: &mut SqliteConnection,
        sync: &str,
        runs: &[RunInfo],
        keep: bool,
    ) -> Result<Option<Vec<Arc<RunIndex>>>, StateError> {
        let mut indexes = self.cached(runs);
        let missing: Vec<i64> = runs
            .iter()
            .zip(&indexes)
            .filter(|(_, index)| index.is_none())
            .map(|(run, _)| run.id)
            .collect();
        if missing.is_empty() {
            return Ok(Some(indexes.into_iter().flatten().collect()));
        }
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(INDEXES)
            .bind(json_rows(&missing)?)
            .fetch_all(&mut *conn)
            .await?;
        let mut read: HashMap<i64, Arc<RunIndex>> = HashMap::new();
        for (id, whole) in rows {
            let index = match whole.is_empty() {
                false => RunIndex::decode(&whole)?,
                true => match index_pieces(conn, id).await? {
                    Some(index) => index,
                    None => continue,
                },
            };
            read.insert(id, Arc::new(index));
        }
        for (run, index) in runs.iter().zip(&mut indexes) {
            if index.is_none() {
                match read.get(&run.id) {
                    Some(read) => *index = Some(read.clone()),
                    None => return Ok(None),
                }
            }
        }
        let indexes = indexes.into_iter().flatten().collect();
        if !keep {
            return Ok(Some(indexes));
        }
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.retain(|id, (of, _)| of != sync || runs.iter().any(|r| r.id == *id));
        cache.extend(
            read.into_iter()
                .map(|(id, index)| (id, (sync.to_owned(), index))),
        );
        Ok(Some(indexes))
    }
}

/// The blocks `ids`, by id; `None` when one is gone.
async fn blocks(
    conn: &mut SqliteConnection,
    ids: &[i64],
) -> Result<Option<HashMap<i64, Vec<u8>>>, StateError> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(BLOCKS)
        .bind(json_rows(ids)?)
        .fetch_all(&mut *conn)
        .await?;
    Ok((rows.len() == ids.len()).then(|| rows.into_iter().collect()))
}

/// The rows of `ids` in a sync's runs, each folded across the runs that hold
/// it. In a transaction (`writing` when it is the writer's), where the runs
/// listed are the runs read.
pub(super) async fn lookup(
    conn: &mut SqliteConnection,
    indexes: &RunIndexes,
    writing: bool,
    sync: &str,
    runs: &[RunInfo],
    ids: &[&str],
) -> Result<HashMap<String, RunRow>, StateError> {
    lookup_listed(conn, indexes, writing, sync, runs, ids)
        .await?
        .ok_or_else(|| StateError::Corrupt(format!("a ledger run of {sync} lost blocks")))
}

/// [`lookup`] of runs listed by an earlier statement, outside a transaction:
/// `None` when a merge has replaced one of them since.
pub(super) async fn lookup_listed(
    conn: &mut SqliteConnection,
    indexes: &RunIndexes,
    writing: bool,
    sync: &str,
    runs: &[RunInfo],
    ids: &[&str],
) -> Result<Option<HashMap<String, RunRow>>, StateError> {
    let mut found = HashMap::new();
    if runs.is_empty() || ids.is_empty() {
        return Ok(Some(found));
    }
    let Some(indexes) = indexes.of(conn, sync, runs, !writing).await? else {
        return Ok(None);
    };
    // Per id, the blocks that may hold it, oldest run first.
    let mut wanted: Vec<(&str, Vec<i64>)> = Vec::new();
    let mut block_ids: Vec<i64> = Vec::new();
    for id in ids {
        let hash = id_hash(id);
        let places: Vec<i64> = runs
            .iter()
            .zip(&indexes)
            .filter_map(|(run, index)| {
                let place = i64::try_from(index.block_for(hash, id)?).ok()?;
                Some(first_block(run.id) + place)
            })
            .collect();
        if !places.is_empty() {
            block_ids.extend(&places);
            wanted.push((id, places));
        }
    }
    if wanted.is_empty() {
        return Ok(Some(found));
    }
    block_ids.sort_unstable();
    block_ids.dedup();
    let Some(bytes) = blocks(conn, &block_ids).await? else {
        return Ok(None);
    };
    let mut decoded: HashMap<i64, Block> = HashMap::new();
    for (id, places) in wanted {
        let mut row: Option<RunRow> = None;
        for place in places {
            let block = match decoded.entry(place) {
                std::collections::hash_map::Entry::Occupied(block) => block.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let data = bytes.get(&place).ok_or_else(|| {
                        StateError::Corrupt(format!("ledger block {place} is missing"))
                    })?;
                    slot.insert(Block::decode(data)?)
                }
            };
            if let Some(later) = block.find(id)? {
                row = Some(fold(row, later));
            }
        }
        if let Some(row) = row {
            found.insert(id.to_owned(), row);
        }
    }
    Ok(Some(found))
}

/// Stores `blocks`, the next of run `run` from place `from` on.
async fn store_blocks(
    conn: &mut SqliteConnection,
    run: i64,
    from: i64,
    blocks: Vec<Vec<u8>>,
) -> Result<(), StateError> {
    let mut place = from;
    let mut blocks = blocks.into_iter().peekable();
    while blocks.peek().is_some() {
        let trip: Vec<Vec<u8>> = blocks.by_ref().take(BLOCKS_PER_TRIP).collect();
        let values = vec!["(?, ?)"; trip.len()].join(", ");
        let sql = format!("INSERT INTO ledger_blocks (id, data) VALUES {values}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for data in trip {
            query = query.bind(first_block(run) + place).bind(data);
            place += 1;
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes run `run` and its blocks.
async fn drop_run(conn: &mut SqliteConnection, run: i64) -> Result<(), StateError> {
    for table in ["ledger_blocks", "ledger_index"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id BETWEEN ?1 AND ?2"
        )))
        .bind(first_block(run))
        .bind(first_block(run) + i64::from(u32::MAX))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM ledger_runs WHERE id = ?1")
        .bind(run)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Where a run's index is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexAt {
    /// In `ledger_index`, a piece at a time.
    Pieces,
    /// In `ledger_runs.idx`, whole: only before the migration that makes
    /// `ledger_index`.
    Whole,
}

/// Stores the last blocks of run `run`, `stored` blocks being stored already,
/// and its size and index.
async fn finish_run(
    conn: &mut SqliteConnection,
    run: i64,
    stored: i64,
    builder: RunBuilder,
    at: IndexAt,
) -> Result<(), StateError> {
    let (last, count, index) = builder.finish()?;
    let blocks = stored + last.len() as i64;
    store_blocks(conn, run, stored, last).await?;
    let whole = match at {
        IndexAt::Pieces => {
            let pieces =
                std::iter::once(index.head_piece()?).chain(index.filter_pieces(PIECE_BYTES));
            for (place, piece) in pieces.enumerate() {
                sqlx::query("INSERT INTO ledger_index (id, data) VALUES (?1, ?2)")
                    .bind(first_block(run) + place as i64)
                    .bind(piece)
                    .execute(&mut *conn)
                    .await?;
            }
            Vec::new()
        }
        IndexAt::Whole => index.encode()?,
    };
    drop(index);
    sqlx::query("UPDATE ledger_runs SET rows = ?2, blocks = ?3, idx = ?4 WHERE id = ?1")
        .bind(run)
        .bind(count as i64)
        .bind(blocks)
        .bind(whole)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Folds staged `rows` and the runs `merged` (a sync's
/// newest, oldest first) into one new run of `sync`, then deletes `merged`.
/// In the caller's write transaction.
async fn write_run(
    conn: &mut SqliteConnection,
    sync: &str,
    merged: &[RunInfo],
    rows: Staged,
) -> Result<(), StateError> {
    let capacity = rows.copies() + merged.iter().map(|r| r.rows as usize).sum::<usize>();
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_runs (sync, rows, blocks, idx) VALUES (?1, 0, 0, x'') RETURNING id",
    )
    .bind(sync)
    .fetch_one(&mut *conn)
    .await?;
    let mut builder = RunBuilder::new(capacity);
    let mut stored = 0i64;
    let mut scan = Scan::new(merged, rows);
    while let Some(row) = scan.next(conn).await? {
        builder.push(row)?;
        if builder.ready() >= BLOCKS_PER_TRIP {
            let ready = builder.take_ready();
            let count = ready.len() as i64;
            store_blocks(conn, run, stored, ready).await?;
            stored += count;
        }
    }
    finish_run(conn, run, stored, builder, IndexAt::Pieces).await?;
    for old in merged {
        drop_run(conn, old.id).await?;
    }
    Ok(())
}

/// Folds a sync's staged rows into a new run, with its newest runs when they
/// are of the new run's size class or smaller and [`FANOUT`] with it
/// ([`merge_from`]), and deletes what it folded. In the caller's write
/// transaction; nothing to do without staged rows.
pub(super) async fn merge(conn: &mut SqliteConnection, sync: &str) -> Result<(), StateError> {
    let rows = Staged::read(conn, sync, None).await?;
    let copies = rows.copies();
    if copies == 0 {
        return Ok(());
    }
    let runs = runs_of(conn, sync).await?;
    let sizes: Vec<i64> = runs.iter().map(|r| r.rows).collect();
    let from = merge_from(&sizes, copies as i64);
    // Rows whose external id is not their source id; holding it or not is
    // decided on the record's folded row, so a holder is never taken out.
    let holders = rows.holders();
    if !holders.is_empty() {
        sqlx::query(
            "INSERT OR IGNORE INTO ledger_holders (sync, external_id, source_id)
             SELECT ?1, value ->> 0, value ->> 1 FROM json_each(?2)",
        )
        .bind(sync)
        .bind(json_rows(&holders)?)
        .execute(&mut *conn)
        .await?;
    }
    write_run(conn, sync, &runs[from..], rows).await?;
    sqlx::query("DELETE FROM ledger_staged WHERE sync = ?1")
        .bind(sync)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets a sync's ledger: its runs, staged rows and holders.
pub(super) async fn forget(conn: &mut SqliteConnection, sync: &str) -> Result<(), StateError> {
    for run in runs_of(conn, sync).await? {
        drop_run(conn, run.id).await?;
    }
    for table in ["ledger_staged", "ledger_holders"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE sync = ?1"
        )))
        .bind(sync)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Whether the ledger table of a store made before runs is still there.
pub(super) async fn table_remains<'c>(
    conn: impl sqlx::SqliteExecutor<'c>,
) -> Result<bool, StateError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'ledger')",
    )
    .fetch_one(conn)
    .await?)
}

/// Reads the rows of the ledger table of a store made before runs (up to
/// migration 15, which folds the second level into it) into one run per sync,
/// and empties the table, in the caller's write transaction; nothing to do
/// once migration 16 has dropped the table. The table's key order is the
/// runs' order, so its rows are read a chunk at a time, by key.
pub(super) async fn read_table_into_runs(conn: &mut SqliteConnection) -> Result<(), StateError> {
    if !table_remains(&mut *conn).await? {
        return Ok(());
    }
    let syncs: Vec<(String, i64)> =
        sqlx::query_as("SELECT sync, COUNT(*) FROM ledger GROUP BY sync ORDER BY sync")
            .fetch_all(&mut *conn)
            .await?;
    for (sync, count) in syncs {
        let run: i64 = sqlx::query_scalar(
            "INSERT INTO ledger_runs (sync, rows, blocks, idx) VALUES (?1, 0, 0, x'') RETURNING id",
        )
        .bind(&sync)
        .fetch_one(&mut *conn)
        .await?;
        let mut builder = RunBuilder::new(usize::try_from(count).unwrap_or_default());
        let mut stored = 0i64;
        let mut after = String::new();
        loop {
            let rows = sqlx::query(
                "SELECT source_id, external_id, dest_id, version, updated_at, payload_hash,
                        run_id, written_at, deleted_at
                 FROM ledger WHERE sync = ?1 AND source_id > ?2 ORDER BY source_id LIMIT 10000",
            )
            .bind(&sync)
            .bind(&after)
            .fetch_all(&mut *conn)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("source_id")?;
            for row in &rows {
                builder.push(RunRow {
                    entry: crate::state::ledger_entry(row)?,
                    written_at: row.try_get("written_at")?,
                })?;
            }
            let ready = builder.take_ready();
            let blocks = ready.len() as i64;
            store_blocks(conn, run, stored, ready).await?;
            stored += blocks;
        }
        // `ledger_index` comes with a later migration: these runs keep their
        // index whole, as runs written before it did.
        finish_run(conn, run, stored, builder, IndexAt::Whole).await?;
    }
    sqlx::query("DELETE FROM ledger")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;
    use crate::state::tests::{commit_merged, entry, run, temp_db};

    /// Runs listed before a merge replaced them are read as gone, not as
    /// holding nothing, and a lookup then reads them again.
    #[tokio::test]
    async fn runs_merged_away_after_they_were_listed_are_gone() {
        let store = Store::open(&temp_db("ledger-gone")).await.expect("open");
        store
            .begin_run(&run("r1", 1000), &serde_json::json!({"kind": "start"}))
            .await
            .expect("begin");
        let commit =
            |ids: Vec<String>| commit_merged(&store, ids.iter().map(|id| entry(id, 1)).collect());
        for batch in 0..FANOUT - 1 {
            commit((0..10).map(|i| format!("k{batch}{i}")).collect()).await;
        }
        let crate::state::Backend::Sqlite(sqlite) = &store.backend else {
            panic!("a SQLite store");
        };
        let mut conn = sqlite.pool.acquire().await.expect("conn");
        let listed = runs_of(&mut conn, "billing").await.expect("runs");
        assert_eq!(listed.len(), FANOUT - 1);
        // One more run of their class: they all fold into one.
        commit(vec!["k90".into()]).await;
        assert_eq!(runs_of(&mut conn, "billing").await.expect("runs").len(), 1);
        let gone = lookup_listed(&mut conn, &sqlite.runs, false, "billing", &listed, &["k00"])
            .await
            .expect("lookup");
        assert!(gone.is_none());
        let known = store
            .known("billing", &["k00", "k90"], &[])
            .await
            .expect("known");
        assert_eq!(known.ledger.len(), 2);
    }

    /// A run's index is stored in pieces and read back whole from them by a
    /// store that has not cached it; a merge deletes the pieces of the runs
    /// it folds with them.
    #[tokio::test]
    async fn a_run_s_index_is_stored_in_pieces_that_go_with_its_run() {
        let path = temp_db("ledger-pieces");
        let store = Store::open(&path).await.expect("open");
        store
            .begin_run(&run("r1", 1000), &serde_json::json!({"kind": "start"}))
            .await
            .expect("begin");
        for batch in 0..FANOUT + 2 {
            let rows = (0..50).map(|i| entry(&format!("k{batch}-{i}"), 1));
            commit_merged(&store, rows.collect()).await;
        }
        store.close().await;
        let store = Store::open(&path).await.expect("reopen");
        let ids = ["k0-0", "k4-17", "k9-49", "k11-0"];
        let known = store.known("billing", &ids, &[]).await.expect("known");
        let mut found: Vec<&str> = known.ledger.keys().map(String::as_str).collect();
        found.sort_unstable();
        assert_eq!(found, ["k0-0", "k4-17", "k9-49"]);
        let count = |sql: &'static str| {
            let pool = store.sqlite_pool();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(pool)
                    .await
                    .expect(sql)
            }
        };
        // A merge folded the first FANOUT: two runs or three remain.
        let runs = count("SELECT count(*) FROM ledger_runs").await;
        assert!((2..=3).contains(&runs), "{runs} runs");
        assert_eq!(
            count("SELECT count(*) FROM ledger_runs WHERE length(idx) > 0").await,
            0
        );
        let pieces = count("SELECT count(*) FROM ledger_index").await;
        assert!(pieces >= runs * 2, "{pieces} pieces of {runs} runs");
        assert_eq!(
            count("SELECT count(*) FROM ledger_index WHERE id >> 32 NOT IN (SELECT id FROM ledger_runs)")
                .await,
            0,
            "pieces of merged runs are gone"
        );
        assert_eq!(
            count("SELECT count(DISTINCT id >> 32) FROM ledger_index").await,
            runs
        );
    }

    /// The sizes of a sync's runs after `merges` merges of `rows` rows each.
    fn after(merges: usize, rows: i64) -> Vec<i64> {
        let mut runs: Vec<i64> = Vec::new();
        for _ in 0..merges {
            let from = merge_from(&runs, rows);
            let merged: i64 = runs.drain(from..).sum::<i64>() + rows;
            runs.push(merged);
        }
        runs
    }

    #[test]
    fn runs_stay_few_and_each_row_is_rewritten_a_few_times() {
        // 1,000,000 rows in merges of 2,000: classes 0 to 3.
        let mut runs: Vec<i64> = Vec::new();
        let mut written = 0i64;
        for _ in 0..500 {
            let from = merge_from(&runs, 2_000);
            let merged: i64 = runs.drain(from..).sum::<i64>() + 2_000;
            written += merged;
            runs.push(merged);
            assert!(runs.len() <= (FANOUT - 1) * 4, "{runs:?}");
        }
        assert_eq!(runs.iter().sum::<i64>(), 1_000_000);
        // Each row written about once per class it climbs.
        assert!(written <= 3 * 1_000_000, "{written} rows written");
        // Small merges fold together before they join larger runs.
        assert_eq!(after(8, 100), vec![800]);
        assert_eq!(after(7, 100), vec![100; 7]);
        let sizes = after(200, 100);
        assert!(sizes.len() <= 8, "{sizes:?}");
        assert!(
            sizes
                .windows(2)
                .all(|w| size_class(w[0]) >= size_class(w[1])),
            "{sizes:?}"
        );
    }
}
