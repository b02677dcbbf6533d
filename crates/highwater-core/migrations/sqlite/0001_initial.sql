-- Runs: one execution of a sync. The watermark is stored before the first fetch.
CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    sync         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'completed')),
    lower_bound  INTEGER,
    watermark    INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    completed_at INTEGER
);
-- At most one open run per sync and kind: a second one would lose the first's cursor.
CREATE UNIQUE INDEX runs_one_open ON runs (sync, kind) WHERE status = 'open';
CREATE INDEX runs_by_sync ON runs (sync, kind, status, completed_at);

-- The durable position of a run; advanced only past fully resolved pages.
CREATE TABLE checkpoints (
    run_id     TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    cursor     TEXT NOT NULL,
    counters   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- What highwater last wrote for each source record.
CREATE TABLE ledger (
    sync         TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    dest_id      TEXT,
    version      INTEGER,
    updated_at   INTEGER NOT NULL,
    payload_hash TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    written_at   INTEGER NOT NULL,
    PRIMARY KEY (sync, source_id)
) WITHOUT ROWID;

-- Writes announced before they were sent and not yet settled: after a crash the
-- destination may hold these versions, so nothing older may be written over them.
CREATE TABLE pending (
    sync       TEXT NOT NULL,
    source_id  TEXT NOT NULL,
    version    INTEGER,
    updated_at INTEGER NOT NULL,
    run_id     TEXT NOT NULL,
    PRIMARY KEY (sync, source_id)
) WITHOUT ROWID;

-- Records that could not be written, with why; one row per source record.
CREATE TABLE dead_letters (
    sync            TEXT NOT NULL,
    source_id       TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    stage           TEXT NOT NULL,
    error           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_failed_at  INTEGER NOT NULL,
    resolved_at     INTEGER,
    PRIMARY KEY (sync, source_id)
) WITHOUT ROWID;
