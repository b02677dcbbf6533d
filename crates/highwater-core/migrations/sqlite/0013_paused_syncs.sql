-- Syncs an operator paused in `highwater serve`: not run on their schedule
-- until resumed, whichever daemon serves them and across restarts.
CREATE TABLE paused_syncs (
    sync      TEXT PRIMARY KEY,
    paused_at INTEGER NOT NULL
) WITHOUT ROWID;
