-- Where a destination's own log ended at a sync's last commit, for a
-- destination whose writes count only once a commit stores that (a JSON
-- Lines file): what a crash left past it is cut off when a run starts.
CREATE TABLE sink_positions (
    sync     TEXT PRIMARY KEY,
    position TEXT NOT NULL
) WITHOUT ROWID;
