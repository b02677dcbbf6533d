-- A commit's ledger rows are staged here, one row per commit, and merged into
-- the ledger in source-id order every few thousand rows and when a run completes.
-- Ids arrive in `updated_at` order, so a page's rows land all over the ledger's
-- B-tree: inserted there at every commit, each row cost about one page written.
-- Merged in key order, each ledger page is written once per merge.
CREATE TABLE ledger_staged (
    sync       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    -- JSONB array of [source_id, external_id, dest_id, version, updated_at,
    -- payload_hash, run_id], in the order the commit resolved them.
    rows       BLOB NOT NULL,
    written_at INTEGER NOT NULL,
    PRIMARY KEY (sync, seq)
) WITHOUT ROWID;
