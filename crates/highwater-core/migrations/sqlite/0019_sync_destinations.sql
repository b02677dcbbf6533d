-- The destination a sync's ledger describes (its type and where it is, no
-- secrets): a run into another one is refused while the ledger holds rows,
-- since it would skip what the ledger says is written.
CREATE TABLE sync_destinations (
    sync        TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    since       INTEGER NOT NULL
) WITHOUT ROWID;
