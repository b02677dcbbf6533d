-- The ledger's second level. Staged rows merge here, and this level merges
-- into `ledger` only once it holds a set fraction of it: a merge of scattered
-- ids rewrites nearly every page of the table it goes into, so merging every
-- 20,000 rows into the whole ledger made each merge cost in proportion to the
-- ledger. A record's row in this level is newer than its row in `ledger`
-- unless the two lose to each other as merges decide (version, then
-- `updated_at`); every reader folds the two levels the way a merge would.
CREATE TABLE ledger_recent (
    sync         TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    dest_id      TEXT,
    version      INTEGER,
    updated_at   INTEGER NOT NULL,
    payload_hash TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    written_at   INTEGER NOT NULL,
    deleted_at   INTEGER,
    PRIMARY KEY (sync, source_id)
) WITHOUT ROWID;
CREATE INDEX ledger_recent_by_external_id ON ledger_recent (sync, external_id, deleted_at)
  WHERE deleted_at IS NULL AND external_id <> source_id;

-- Rows in `ledger` per sync, counted whenever the second level merges into
-- it: what the second level's size is weighed against.
CREATE TABLE ledger_levels (
    sync        TEXT PRIMARY KEY,
    ledger_rows INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO ledger_levels (sync, ledger_rows) SELECT sync, COUNT(*) FROM ledger GROUP BY sync;
