-- As SQLite's migration 19: the destination a sync's ledger describes.
CREATE TABLE sync_destinations (
    sync        TEXT COLLATE "C" PRIMARY KEY,
    destination TEXT NOT NULL,
    since       BIGINT NOT NULL
);
