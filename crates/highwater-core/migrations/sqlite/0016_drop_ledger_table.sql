-- The ledger's rows are in runs now (read there when the store opened with
-- migration 15).
DROP TABLE ledger;
