-- Records written again while an older write of theirs may still land late (a
-- request that got no clear answer, or one in flight at a crash): before the run
-- completes, each is read back from the destination and rewritten if that older
-- write went over it. The payload is kept so that a later invocation can rewrite.
CREATE TABLE readbacks (
    sync         TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    dest_id      TEXT,
    version      INTEGER,
    updated_at   INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    -- When every older write of the record has landed or never will (epoch µs).
    settles_at   INTEGER NOT NULL,
    PRIMARY KEY (sync, source_id)
) WITHOUT ROWID;

-- Which source record holds an external id: two source records mapping onto one
-- destination record are refused, across runs too.
CREATE INDEX ledger_by_external_id ON ledger (sync, external_id);
