//! Reading a sync's ledger in source id order: its staged rows ([`Staged`],
//! each commit's rows unpacked and sorted), its runs a few blocks at a
//! time ([`RunCursor`]), and both folded as a merge folds them ([`Scan`]) —
//! for a merge (`ledger.rs`), for `ledger`, `status` and a reset's count
//! ([`scan_all`]), for `state copy` ([`LedgerChunks`]), and one record's
//! staged rows for `explain`.

use std::collections::VecDeque;

use sqlx::SqliteConnection;

use super::json_rows;
use super::ledger::{BLOCKS_PER_TRIP, RunInfo, first_block, runs_of};
use super::runs::{Block, RunRow, fold};
use crate::state::{StateError, staged};

/// A sync's staged rows in id order, each id's folded in commit order. Each
/// commit's rows are read as it staged them (`state/staged.rs`), unpacked and
/// sorted here: unpacked by SQLite's JSON functions a value at a time and
/// sorted there, a merge's read of 2,000 staged rows took 4.7 ms of SQLite's
/// thread, 0.24 s of a 1.7 s sync of 100,000 records into JSON Lines.
pub(super) struct Staged {
    rows: std::vec::IntoIter<RunRow>,
    /// The row read after the last one handed out, of another id.
    pending: Option<RunRow>,
}

impl Staged {
    /// The staged rows of a sync, of one id (`Some`) or all.
    pub async fn read(
        conn: &mut SqliteConnection,
        sync: &str,
        only: Option<&str>,
    ) -> Result<Staged, StateError> {
        // Stores before JSON text staged JSONB; `json` reads it back as text.
        let commits: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT CASE WHEN typeof(rows) = 'blob' AND substr(rows, 1, 1) != x'0f'
                         THEN json(rows) ELSE rows END,
                    written_at
             FROM ledger_staged WHERE sync = ?1 ORDER BY seq",
        )
        .bind(sync)
        .fetch_all(&mut *conn)
        .await?;
        let mut rows = Vec::new();
        for (bytes, written_at) in &commits {
            for line in staged::unpack(bytes)? {
                if only.is_some_and(|id| id != line.0) {
                    continue;
                }
                rows.push(RunRow {
                    entry: staged::entry(line)?,
                    written_at: *written_at,
                });
            }
        }
        // Stable: an id's rows stay in commit order, as they fold.
        rows.sort_by(|a, b| a.entry.source_id.cmp(&b.entry.source_id));
        Ok(Staged {
            rows: rows.into_iter(),
            pending: None,
        })
    }

    /// Rows staged and not yet handed out, counting each copy of an id.
    pub fn copies(&self) -> usize {
        self.rows.len() + usize::from(self.pending.is_some())
    }

    /// The holders among the staged rows: `(external_id, source_id)` of each
    /// live row whose external id is not its source id.
    pub fn holders(&self) -> Vec<(&str, &str)> {
        self.rows
            .as_slice()
            .iter()
            .map(|row| &row.entry)
            .filter(|e| e.deleted_at.is_none() && e.external_id != e.source_id)
            .map(|e| (e.external_id.as_str(), e.source_id.as_str()))
            .collect()
    }

    fn line(&mut self) -> Option<RunRow> {
        self.pending.take().or_else(|| self.rows.next())
    }

    /// The next id's rows, folded.
    pub fn next(&mut self) -> Result<Option<RunRow>, StateError> {
        let Some(mut row) = self.line() else {
            return Ok(None);
        };
        while let Some(later) = self.line() {
            if later.entry.source_id != row.entry.source_id {
                self.pending = Some(later);
                break;
            }
            row = fold(Some(row), later);
        }
        Ok(Some(row))
    }
}

/// One run read in id order, a few blocks at a time.
struct RunCursor {
    run: i64,
    blocks: i64,
    next_block: i64,
    /// Blocks read and not decoded yet. Decoded, a row takes several times
    /// its stored bytes (its strings each a heap allocation): decoding a
    /// trip's blocks at once held about 5 MB of rows at 1,000,000 records,
    /// and one block at a time, a sync of 10,000,000 peaked at 142 MiB of
    /// RSS against 151–158.
    read: VecDeque<Vec<u8>>,
    /// The rows of the block decoded last, not merged yet.
    rows: VecDeque<RunRow>,
}

impl RunCursor {
    /// Makes sure the cursor's next row is read, if it has one.
    async fn fill(&mut self, conn: &mut SqliteConnection) -> Result<(), StateError> {
        while self.rows.is_empty() {
            if let Some(bytes) = self.read.pop_front() {
                let block = Block::decode(&bytes)?;
                for at in 0..block.len() {
                    self.rows.push_back(block.row(at)?);
                }
                continue;
            }
            if self.next_block >= self.blocks {
                break;
            }
            let first = first_block(self.run) + self.next_block;
            let last = first + BLOCKS_PER_TRIP as i64 - 1;
            let read: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT data FROM ledger_blocks WHERE id BETWEEN ?1 AND ?2 ORDER BY id",
            )
            .bind(first)
            .bind(last.min(first_block(self.run) + self.blocks - 1))
            .fetch_all(&mut *conn)
            .await?;
            let expected = (self.blocks - self.next_block).min(BLOCKS_PER_TRIP as i64);
            if read.len() as i64 != expected {
                return Err(StateError::Corrupt(format!(
                    "ledger run {} is missing blocks",
                    self.run
                )));
            }
            self.next_block += expected;
            self.read.extend(read);
        }
        Ok(())
    }
}

/// A sync's runs and staged rows read together in id order,
/// each id's rows folded: what a merge of all of them would hold.
pub(super) struct Scan {
    cursors: Vec<RunCursor>,
    staged: Staged,
    /// The next of the staged rows, once read.
    staged_head: Option<RunRow>,
}

impl Scan {
    /// Reads `runs` (oldest first), then `staged`.
    pub fn new(runs: &[RunInfo], staged: Staged) -> Scan {
        Scan {
            cursors: runs
                .iter()
                .map(|r| RunCursor {
                    run: r.id,
                    blocks: r.blocks,
                    next_block: 0,
                    read: VecDeque::new(),
                    rows: VecDeque::new(),
                })
                .collect(),
            staged,
            staged_head: None,
        }
    }

    /// The next record's row, folded across runs and staged rows.
    pub async fn next(
        &mut self,
        conn: &mut SqliteConnection,
    ) -> Result<Option<RunRow>, StateError> {
        for cursor in &mut self.cursors {
            cursor.fill(conn).await?;
        }
        if self.staged_head.is_none() {
            self.staged_head = self.staged.next()?;
        }
        let heads = self
            .cursors
            .iter()
            .filter_map(|c| c.rows.front())
            .chain(self.staged_head.as_ref());
        let Some(least) = heads.map(|r| &r.entry.source_id).min().cloned() else {
            return Ok(None);
        };
        let mut row: Option<RunRow> = None;
        for cursor in &mut self.cursors {
            if cursor
                .rows
                .front()
                .is_some_and(|r| r.entry.source_id == least)
            {
                row = cursor.rows.pop_front().map(|later| fold(row.take(), later));
            }
        }
        if self
            .staged_head
            .as_ref()
            .is_some_and(|r| r.entry.source_id == least)
        {
            row = self.staged_head.take().map(|later| fold(row.take(), later));
        }
        Ok(row)
    }
}

/// Every record of a sync in its ledger, runs and staged rows folded, in
/// source id order, handed to `each`.
pub(super) async fn scan_all(
    conn: &mut SqliteConnection,
    sync: &str,
    mut each: impl FnMut(RunRow),
) -> Result<(), StateError> {
    let runs = runs_of(conn, sync).await?;
    let staged = Staged::read(conn, sync, None).await?;
    let mut scan = Scan::new(&runs, staged);
    while let Some(row) = scan.next(conn).await? {
        each(row);
    }
    Ok(())
}

/// A sync's whole ledger (runs and staged rows folded) read a chunk at a
/// time in one read transaction, each row a JSON object named by the columns
/// of PostgreSQL's ledger table: what `state copy` moves.
pub(in crate::state) struct LedgerChunks {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    scan: Scan,
    sync: String,
}

impl LedgerChunks {
    pub(super) async fn new(
        pool: &sqlx::SqlitePool,
        sync: &str,
    ) -> Result<LedgerChunks, StateError> {
        let mut tx = pool.begin().await?;
        let runs = runs_of(&mut tx, sync).await?;
        let staged = Staged::read(&mut tx, sync, None).await?;
        Ok(LedgerChunks {
            tx,
            scan: Scan::new(&runs, staged),
            sync: sync.to_owned(),
        })
    }

    /// Up to `rows` more rows as one JSON array, or `None` once all are read.
    pub async fn next(&mut self, rows: usize) -> Result<Option<String>, StateError> {
        let mut chunk = Vec::new();
        while chunk.len() < rows {
            let Some(row) = self.scan.next(&mut self.tx).await? else {
                break;
            };
            let e = row.entry;
            chunk.push(serde_json::json!({
                "sync": self.sync,
                "source_id": e.source_id,
                "external_id": e.external_id,
                "dest_id": e.dest_id,
                "version": e.version,
                "updated_at": e.updated_at.as_microsecond(),
                "payload_hash": e.payload_hash,
                "run_id": e.run_id,
                "written_at": row.written_at,
                "deleted_at": e.deleted_at.map(jiff::Timestamp::as_microsecond),
            }));
        }
        if chunk.is_empty() {
            return Ok(None);
        }
        json_rows(&chunk).map(Some)
    }
}
