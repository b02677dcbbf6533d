-- What happened to each record in each run, for `highwater explain`: one row
-- per commit, its events as one JSONB array of
-- [source_id, page, action, version, updated_at, dest_id, attempts, detail].
-- Appended in time order and pruned by age, so the key leads with the time.
CREATE TABLE record_events (
    sync   TEXT NOT NULL,
    at     INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    events BLOB NOT NULL,
    PRIMARY KEY (sync, at, run_id, seq)
) WITHOUT ROWID;
