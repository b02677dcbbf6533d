-- Run history. Run kinds, run statuses and dead-letter stages are closed sets,
-- checked here by name as they are in code; a run that fails before any progress
-- is kept as 'failed' instead of deleted; every invocation of a run leaves a row.
--
-- SQLite cannot change a table's CHECK constraints in place, so `runs` and
-- `dead_letters` are rebuilt. `checkpoints` references `runs` with ON DELETE
-- CASCADE, and a migration runs inside a transaction, where `PRAGMA foreign_keys
-- = OFF` does nothing: dropping `runs` would delete every checkpoint. They are set
-- aside first and put back once the new `runs` is in place.
CREATE TABLE checkpoints_kept AS SELECT run_id, cursor, counters, updated_at FROM checkpoints;
DROP TABLE checkpoints;

CREATE TABLE runs_checked (
    run_id       TEXT PRIMARY KEY,
    sync         TEXT NOT NULL,
    kind         TEXT NOT NULL
                 CHECK (kind IN ('incremental', 'backfill', 'deletes', 'full', 'replay', 'repair')),
    status       TEXT NOT NULL CHECK (status IN ('open', 'completed', 'failed')),
    lower_bound  INTEGER,
    watermark    INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    completed_at INTEGER,
    -- JSON arrays of the first few source ids the run put in the ledger and
    -- dead-lettered: examples an operator can look up.
    sample_written       TEXT NOT NULL DEFAULT '[]',
    sample_dead_lettered TEXT NOT NULL DEFAULT '[]'
);
INSERT INTO runs_checked (run_id, sync, kind, status, lower_bound, watermark, started_at, updated_at, completed_at)
  SELECT run_id, sync, kind, status, lower_bound, watermark, started_at, updated_at, completed_at FROM runs;
DROP TABLE runs;
ALTER TABLE runs_checked RENAME TO runs;
-- At most one open run per sync and kind: a second one would lose the first's cursor.
CREATE UNIQUE INDEX runs_one_open ON runs (sync, kind) WHERE status = 'open';
CREATE INDEX runs_by_sync ON runs (sync, kind, status, completed_at);
-- `highwater runs <sync>` lists newest first.
CREATE INDEX runs_by_start ON runs (sync, started_at);

CREATE TABLE checkpoints (
    run_id     TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    cursor     TEXT NOT NULL,
    counters   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
INSERT INTO checkpoints (run_id, cursor, counters, updated_at)
  SELECT run_id, cursor, counters, updated_at FROM checkpoints_kept;
DROP TABLE checkpoints_kept;

CREATE TABLE dead_letters_checked (
    sync            TEXT NOT NULL,
    source_id       TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    stage           TEXT NOT NULL CHECK (stage IN ('source', 'mapping', 'destination')),
    error           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_failed_at  INTEGER NOT NULL,
    resolved_at     INTEGER,
    PRIMARY KEY (sync, source_id)
) WITHOUT ROWID;
INSERT INTO dead_letters_checked
  SELECT sync, source_id, run_id, stage, error, payload, fingerprint, attempts,
         first_failed_at, last_failed_at, resolved_at
  FROM dead_letters;
DROP TABLE dead_letters;
ALTER TABLE dead_letters_checked RENAME TO dead_letters;

-- One row per invocation of a run (one `highwater run`), numbered from 1: how it
-- ended, where its cursor and counters stood at its start and end, and the
-- requests it retried by class. An invocation that never recorded its end was
-- killed (or is still running): the next invocation of the run marks it
-- 'crashed'. Runs from before this migration have none.
CREATE TABLE invocations (
    run_id         TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    number         INTEGER NOT NULL,
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    outcome        TEXT CHECK (outcome IN ('completed', 'stopped', 'failed', 'crashed')),
    stop_reason    TEXT,
    error_class    TEXT,
    error          TEXT,
    cursor_start   TEXT NOT NULL,
    cursor_end     TEXT,
    -- JSON counters of the run when the invocation started and ended: the
    -- invocation's own share is the difference.
    counters_start TEXT NOT NULL,
    counters_end   TEXT,
    -- JSON object of retried requests by class.
    retries        TEXT,
    PRIMARY KEY (run_id, number)
) WITHOUT ROWID;
