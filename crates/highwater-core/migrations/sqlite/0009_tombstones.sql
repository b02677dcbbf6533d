-- Deletes: a ledger row whose record was deleted at the source keeps its ids
-- and last written version, and says since when the record is gone. A later
-- copy not newer than the deletion is never written; a newer one (the record
-- re-created) is. Staged ledger rows carry it as their eighth element.
ALTER TABLE ledger ADD COLUMN deleted_at INTEGER;
