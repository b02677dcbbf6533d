-- The ledger as sorted runs (`src/state/sqlite/runs.rs` gives their format,
-- `ledger.rs` their merges): a merge into a B-tree keyed by source id
-- inserted every row on its own, once per level it passed through, and at
-- 1,000,000 records those inserts took more than a third of a sync.
-- A sync's runs, oldest first by id; `idx` is the run's filter of ids and
-- the first id of each block. Ids are never given twice: an index read once
-- stays true.
CREATE TABLE ledger_runs (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    sync   TEXT NOT NULL,
    rows   INTEGER NOT NULL,
    blocks INTEGER NOT NULL,
    idx    BLOB NOT NULL
);
CREATE INDEX ledger_runs_by_sync ON ledger_runs (sync, id);

-- A run's blocks of rows, `id` being the run's id times 2^32 plus the
-- block's place in it.
CREATE TABLE ledger_blocks (
    id   INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);

-- Source ids that held an external id other than their own, live, in some
-- merged row: a lookup of holders reads these ids' folded rows.
CREATE TABLE ledger_holders (
    sync        TEXT NOT NULL,
    external_id TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    PRIMARY KEY (sync, external_id, source_id)
) WITHOUT ROWID;

-- The second level folds into the ledger, which the store reads into one
-- run per sync when it opens, before migration 16 drops it.
INSERT INTO ledger (sync, source_id, external_id, dest_id, version, updated_at, payload_hash, run_id, written_at, deleted_at)
  SELECT sync, source_id, external_id, dest_id, version, updated_at, payload_hash, run_id, written_at, deleted_at
  FROM ledger_recent WHERE true ORDER BY sync, source_id
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
             ELSE excluded.updated_at >= ledger.updated_at END;
DROP TABLE ledger_recent;
DROP TABLE ledger_levels;
INSERT INTO ledger_holders (sync, external_id, source_id)
  SELECT sync, external_id, source_id FROM ledger
  WHERE deleted_at IS NULL AND external_id <> source_id;
