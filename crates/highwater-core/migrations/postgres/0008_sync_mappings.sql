-- As SQLite's migration 22: the mapping the sync's records were last written with.
ALTER TABLE sync_destinations ADD COLUMN mapping TEXT;
