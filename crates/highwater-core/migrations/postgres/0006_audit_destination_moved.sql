-- As SQLite's migration 20: the audit log records a destination said to have
-- moved (`run --destination-moved`).
ALTER TABLE audit_log DROP CONSTRAINT audit_log_action_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_action_check
    CHECK (action IN ('dead_letter_discard', 'dead_letter_replay', 'reset', 'destination_moved'));
