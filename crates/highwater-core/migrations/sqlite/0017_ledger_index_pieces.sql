-- A ledger run's index in pieces, `id` being the run's id times 2^32 plus
-- the piece's place: first the filter's length and the run's fences, then
-- the filter's words, 1 MiB a piece. Stored as one value, the index was
-- copied whole to be written (into bytes, then twice by SQLite) and to be
-- read, 20 MB each time for a run of 10,000,000 records. A run written
-- before keeps its index in `ledger_runs.idx`; a run written since has an
-- empty `idx` there.
CREATE TABLE ledger_index (
    id   INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
