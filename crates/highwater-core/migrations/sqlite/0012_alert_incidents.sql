-- Incidents a sync's alerts were raised for: at most one open per sync and kind
-- (a failed run, too many open dead letters, a high-water mark too far
-- behind). Its webhook is called once, when it opens; `notified_at` stays
-- empty until a call is answered, so a later invocation tries again. It closes
-- when its condition clears, and the next time it holds is a new incident.
CREATE TABLE alert_incidents (
    incident_id TEXT PRIMARY KEY,
    sync        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('run_failed', 'dead_letters', 'lag')),
    run_id      TEXT,
    reason      TEXT NOT NULL,
    opened_at   INTEGER NOT NULL,
    notified_at INTEGER,
    closed_at   INTEGER
) WITHOUT ROWID;
CREATE UNIQUE INDEX alert_incidents_one_open ON alert_incidents (sync, kind)
  WHERE closed_at IS NULL;
