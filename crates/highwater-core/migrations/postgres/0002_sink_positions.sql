-- As SQLite's migration 18: where a destination's own log ended at a sync's
-- last commit.
CREATE TABLE sink_positions (
    sync     TEXT COLLATE "C" PRIMARY KEY,
    position TEXT NOT NULL
);
