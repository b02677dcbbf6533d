-- The audit log records a destination said to have moved (`run
-- --destination-moved`). SQLite cannot change a CHECK constraint in place, so
-- `audit_log` is rebuilt, its ids kept (and with them AUTOINCREMENT's
-- sequence). `resets` references it, and a migration runs inside a
-- transaction, where `PRAGMA foreign_keys = OFF` does nothing: its rows are
-- set aside first and put back once the new `audit_log` is in place.
CREATE TABLE resets_kept AS SELECT sync, at, to_at, audit_id FROM resets;
DROP TABLE resets;

CREATE TABLE audit_log_checked (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    sync    TEXT NOT NULL,
    action  TEXT NOT NULL
            CHECK (action IN ('dead_letter_discard', 'dead_letter_replay', 'reset',
                              'destination_moved')),
    -- JSON: the records it touched by source id, or the whole sync.
    scope   TEXT NOT NULL,
    reason  TEXT,
    -- JSON object: what the action alone needs to say.
    details TEXT NOT NULL
);
INSERT INTO audit_log_checked (id, at, sync, action, scope, reason, details)
  SELECT id, at, sync, action, scope, reason, details FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_checked RENAME TO audit_log;
-- `audit_log(sync, limit)` reads a sync's newest entries first.
CREATE INDEX audit_log_by_sync ON audit_log (sync, id);

CREATE TABLE resets (
    sync     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    to_at    INTEGER,
    audit_id INTEGER NOT NULL REFERENCES audit_log (id),
    PRIMARY KEY (sync, at)
) WITHOUT ROWID;
INSERT INTO resets (sync, at, to_at, audit_id)
  SELECT sync, at, to_at, audit_id FROM resets_kept;
DROP TABLE resets_kept;
