-- Announced writes move from one row per record to one row per commit: a batch
-- of intents is written once and deleted once every page it covers has
-- committed, instead of an insert and a delete per record. What an open run had
-- announced and not settled stays a floor, as one batch per run.
CREATE TABLE intents (
    sync   TEXT NOT NULL,
    batch  TEXT NOT NULL,
    run_id TEXT NOT NULL,
    -- JSON array of [source_id, version, updated_at (microseconds)].
    rows   TEXT NOT NULL,
    PRIMARY KEY (sync, batch)
) WITHOUT ROWID;

INSERT INTO intents (sync, batch, run_id, rows)
SELECT sync, 'migrated-' || run_id, run_id, json_group_array(json_array(source_id, version, updated_at))
FROM pending GROUP BY sync, run_id;

DROP TABLE pending;
