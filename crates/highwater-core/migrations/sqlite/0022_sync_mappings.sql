-- The mapping the sync's records were last written with (a hash of what a
-- mapped record holds): a run with another one says that the records already
-- written keep the old fields until they change or a full run rewrites them.
ALTER TABLE sync_destinations ADD COLUMN mapping TEXT;
