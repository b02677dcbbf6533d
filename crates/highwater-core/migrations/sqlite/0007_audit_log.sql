-- The audit log: one row per operator action (a dead-letter discard, later a
-- replay or a reset), kept for as long as the store: what was done by hand, to
-- which records and why, is asked after the fact, when nothing else remembers.
-- AUTOINCREMENT: an entry's id is never given to another, even after deletes.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    sync    TEXT NOT NULL,
    action  TEXT NOT NULL
            CHECK (action IN ('dead_letter_discard', 'dead_letter_replay', 'reset')),
    -- JSON: the records it touched by source id, or the whole sync.
    scope   TEXT NOT NULL,
    reason  TEXT,
    -- JSON object: what the action alone needs to say.
    details TEXT NOT NULL
);
-- `audit_log(sync, limit)` reads a sync's newest entries first.
CREATE INDEX audit_log_by_sync ON audit_log (sync, id);

-- How a resolved dead letter was resolved: a later write, or a discard (whose
-- audit entry says why). Rows resolved before this migration were
-- resolved by a write, the only way there was.
ALTER TABLE dead_letters ADD COLUMN resolution TEXT
    CHECK (resolution IN ('written', 'discarded'));
ALTER TABLE dead_letters ADD COLUMN audit_id INTEGER;
UPDATE dead_letters SET resolution = 'written' WHERE resolved_at IS NOT NULL;
