-- A commit's events as the JSON text it was given: every page commit writes
-- one array of a thousand events or so, which JSONB parsed into its binary
-- form for `explain`, which reads a record's events rarely and can parse
-- them then (100,000 records: 0.28 s of the server's time as JSONB, 0.12 s
-- as text).
ALTER TABLE record_events ALTER COLUMN events TYPE TEXT USING events::text;
