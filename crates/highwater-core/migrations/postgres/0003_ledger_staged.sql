-- Ledger rows a page commit staged instead of upserting them: those of a run
-- whose destination table shares the commit's transaction, where the
-- ledger's upserts would wait on the one connection the table's rows go
-- through. One row per commit, its rows packed as SQLite stages them
-- (`state/staged.rs`), folded into `ledger` in `seq` order on the store's own
-- connections. Stored out of line and uncompressed: written once, read once.
CREATE TABLE ledger_staged (
    sync       TEXT COLLATE "C" NOT NULL,
    seq        BIGINT GENERATED ALWAYS AS IDENTITY,
    written_at BIGINT NOT NULL,
    rows       BYTEA NOT NULL,
    PRIMARY KEY (sync, seq)
);
ALTER TABLE ledger_staged ALTER COLUMN rows SET STORAGE EXTERNAL;
