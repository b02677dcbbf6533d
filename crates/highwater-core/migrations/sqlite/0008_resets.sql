-- Where an operator rewound a sync's high-water mark (`highwater reset`): the
-- newest of these and the last completed incremental run is the high-water
-- mark. `to_at` NULL re-reads from the sync's start.
CREATE TABLE resets (
    sync     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    to_at    INTEGER,
    audit_id INTEGER NOT NULL REFERENCES audit_log (id),
    PRIMARY KEY (sync, at)
) WITHOUT ROWID;
