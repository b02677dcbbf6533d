-- Key text columns compare byte by byte (COLLATE "C"), as SQLite's do: orders
-- and ranges (a replay's pages, run-id prefixes) match, and the keys serve them.
-- The PostgreSQL state store: the schema the SQLite store reached by its
-- thirteenth migration, less its staging of ledger rows (a commit writes the
-- ledger itself: PostgreSQL's writers do not wait on one file lock), plus the
-- leases that let several workers share it. Times are epoch microseconds, as
-- in SQLite, except a lease's expiry, which only the database's clock reads.

-- Runs: one execution of a sync. The watermark is stored before the first fetch.
CREATE TABLE runs (
    run_id       TEXT COLLATE "C" PRIMARY KEY,
    sync         TEXT COLLATE "C" NOT NULL,
    kind         TEXT NOT NULL
                 CHECK (kind IN ('incremental', 'backfill', 'deletes', 'full', 'replay', 'repair')),
    status       TEXT NOT NULL CHECK (status IN ('open', 'completed', 'failed')),
    lower_bound  BIGINT,
    watermark    BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    completed_at BIGINT,
    -- JSON arrays of the first few source ids the run put in the ledger and
    -- dead-lettered: examples an operator can look up.
    sample_written       JSONB NOT NULL DEFAULT '[]',
    sample_dead_lettered JSONB NOT NULL DEFAULT '[]'
);
-- At most one open run per sync and kind: a second one would lose the first's cursor.
CREATE UNIQUE INDEX runs_one_open ON runs (sync, kind) WHERE status = 'open';
CREATE INDEX runs_by_sync ON runs (sync, kind, status, completed_at);
CREATE INDEX runs_by_start ON runs (sync, started_at);

-- The durable position of a run; advanced only past fully resolved pages.
CREATE TABLE checkpoints (
    run_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    cursor     TEXT NOT NULL,
    counters   TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per invocation of a run, numbered from 1 (see the SQLite store's
-- sixth migration).
CREATE TABLE invocations (
    run_id         TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    number         BIGINT NOT NULL,
    started_at     BIGINT NOT NULL,
    ended_at       BIGINT,
    outcome        TEXT CHECK (outcome IN ('completed', 'stopped', 'failed', 'crashed')),
    stop_reason    TEXT,
    error_class    TEXT,
    error          TEXT,
    cursor_start   TEXT NOT NULL,
    cursor_end     TEXT,
    counters_start TEXT NOT NULL,
    counters_end   TEXT,
    retries        TEXT,
    PRIMARY KEY (run_id, number)
);

-- What highwater last wrote for each source record; a tombstone when
-- `deleted_at` is set.
CREATE TABLE ledger (
    sync         TEXT COLLATE "C" NOT NULL,
    source_id    TEXT COLLATE "C" NOT NULL,
    external_id  TEXT COLLATE "C" NOT NULL,
    dest_id      TEXT,
    version      BIGINT,
    updated_at   BIGINT NOT NULL,
    payload_hash TEXT NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    written_at   BIGINT NOT NULL,
    deleted_at   BIGINT,
    PRIMARY KEY (sync, source_id)
);
-- Which live source record holds an external id, for the rows whose external
-- id is not their own source id (the primary key finds those).
CREATE INDEX ledger_by_external_id ON ledger (sync, external_id)
  WHERE deleted_at IS NULL AND external_id <> source_id;

-- Writes announced before they were sent, one row per commit: JSON array of
-- [source_id, version, updated_at, settles_at, announced_at].
CREATE TABLE intents (
    sync   TEXT COLLATE "C" NOT NULL,
    batch  TEXT COLLATE "C" NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL,
    rows   JSONB NOT NULL,
    PRIMARY KEY (sync, batch)
);

-- Records to read back before their run completes (see the SQLite store's
-- fourth migration).
CREATE TABLE readbacks (
    sync         TEXT COLLATE "C" NOT NULL,
    source_id    TEXT COLLATE "C" NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    external_id  TEXT COLLATE "C" NOT NULL,
    dest_id      TEXT,
    version      BIGINT,
    updated_at   BIGINT NOT NULL,
    payload      TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    settles_at   BIGINT NOT NULL,
    PRIMARY KEY (sync, source_id)
);

-- Records that could not be written, with why; one row per source record.
CREATE TABLE dead_letters (
    sync            TEXT COLLATE "C" NOT NULL,
    source_id       TEXT COLLATE "C" NOT NULL,
    run_id          TEXT COLLATE "C" NOT NULL,
    stage           TEXT NOT NULL CHECK (stage IN ('source', 'mapping', 'destination')),
    error           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    first_failed_at BIGINT NOT NULL,
    last_failed_at  BIGINT NOT NULL,
    resolved_at     BIGINT,
    resolution      TEXT CHECK (resolution IN ('written', 'discarded')),
    audit_id        BIGINT,
    PRIMARY KEY (sync, source_id)
);

-- What happened to each record in each run, for `highwater explain`: one row
-- per commit, its events as one JSON array of
-- [source_id, page, action, version, updated_at, dest_id, attempts, detail].
CREATE TABLE record_events (
    sync   TEXT COLLATE "C" NOT NULL,
    at     BIGINT NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL,
    seq    BIGINT NOT NULL,
    events JSONB NOT NULL,
    PRIMARY KEY (sync, at, run_id, seq)
);

-- The audit log: one row per operator action. An identity column never gives
-- an entry's id to another.
CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    sync    TEXT COLLATE "C" NOT NULL,
    action  TEXT NOT NULL
            CHECK (action IN ('dead_letter_discard', 'dead_letter_replay', 'reset')),
    scope   TEXT NOT NULL,
    reason  TEXT,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_by_sync ON audit_log (sync, id);

-- Where an operator rewound a sync's high-water mark.
CREATE TABLE resets (
    sync     TEXT COLLATE "C" NOT NULL,
    at       BIGINT NOT NULL,
    to_at    BIGINT,
    audit_id BIGINT NOT NULL REFERENCES audit_log (id),
    PRIMARY KEY (sync, at)
);

-- Incidents a sync's alerts were raised for: at most one open per sync and kind.
CREATE TABLE alert_incidents (
    incident_id TEXT COLLATE "C" PRIMARY KEY,
    sync        TEXT COLLATE "C" NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('run_failed', 'dead_letters', 'lag')),
    run_id      TEXT COLLATE "C",
    reason      TEXT NOT NULL,
    opened_at   BIGINT NOT NULL,
    notified_at BIGINT,
    closed_at   BIGINT
);
CREATE UNIQUE INDEX alert_incidents_one_open ON alert_incidents (sync, kind)
  WHERE closed_at IS NULL;

-- Syncs an operator paused in `highwater serve`.
CREATE TABLE paused_syncs (
    sync      TEXT COLLATE "C" PRIMARY KEY,
    paused_at BIGINT NOT NULL
);

-- Who runs a sync's runs of one kind: the worker holding the row while its
-- expiry, in the database's clock, is ahead. `token` grows with every new
-- holder (from `lease_tokens`), and every commit of the holder's run checks it
-- in its own transaction, so a worker that lost its lease commits nothing.
CREATE SEQUENCE lease_tokens;
CREATE TABLE leases (
    sync        TEXT COLLATE "C" NOT NULL,
    kind        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    token       BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sync, kind)
);
