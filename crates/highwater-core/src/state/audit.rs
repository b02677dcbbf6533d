//! Owns the audit log: one row per operator action (a dead-letter discard, a
//! replay, a reset) — when, which sync, what action, the records or scope it
//! touched, the reason given and the action's own details as JSON. It records
//! what was done; it decides nothing and is never read by a run.
//! Invariant: an action's entry commits in the transaction that does the action
//! ([`insert`]), so the log never names an action that did not happen, nor misses
//! one that did.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AuditAction, Columns, StateError, micros};

/// An operator action, as it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub sync: String,
    pub action: AuditAction,
    pub scope: AuditScope,
    /// Why, in the operator's words (required by some actions, e.g. a discard).
    pub reason: Option<String>,
    /// What the action alone needs to say (a JSON object).
    pub details: Value,
}

/// What an action touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditScope {
    /// Records of the sync, by source id.
    Records { ids: Vec<String> },
    /// The whole sync.
    Sync,
}

/// An entry of the log, with its id and time.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Timestamp,
    pub entry: AuditEntry,
}

/// The entry of a sync's ledger taken to describe `to`, where it described
/// `from`: the same destination at a new address.
pub(super) fn moved(sync: &str, from: &str, to: &str, reason: Option<&str>) -> AuditEntry {
    AuditEntry {
        sync: sync.to_owned(),
        action: AuditAction::DestinationMoved,
        scope: AuditScope::Sync,
        reason: reason.map(str::to_owned),
        details: serde_json::json!({ "from": from, "to": to }),
    }
}

/// An entry of the log as stored.
pub(super) fn record(row: &impl Columns) -> Result<AuditRecord, StateError> {
    let corrupt =
        |what: &str, e: serde_json::Error| StateError::Corrupt(format!("audit {what}: {e}"));
    Ok(AuditRecord {
        id: row.int("id")?,
        at: micros(row.int("at")?)?,
        entry: AuditEntry {
            sync: row.text("sync")?,
            action: row.text("action")?.parse()?,
            scope: serde_json::from_str(&row.text("scope")?).map_err(|e| corrupt("scope", e))?,
            reason: row.opt_text("reason")?,
            details: serde_json::from_str(&row.text("details")?)
                .map_err(|e| corrupt("details", e))?,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::state::tests::temp_db;
    use crate::state::{AuditAction, Store};

    fn discard(sync: &str, ids: &[&str], reason: &str) -> AuditEntry {
        AuditEntry {
            sync: sync.into(),
            action: AuditAction::DeadLetterDiscard,
            scope: AuditScope::Records {
                ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            },
            reason: Some(reason.into()),
            details: json!({"all": false}),
        }
    }

    #[tokio::test]
    async fn entries_come_back_as_written_newest_first_and_per_sync() {
        let path = temp_db("audit-log");
        let store = Store::open(&path).await.expect("open");
        let first = store
            .audit(&discard("billing", &["a", "b"], "test data"))
            .await
            .expect("audit");
        let other = store
            .audit(&discard("orders", &["x"], "elsewhere"))
            .await
            .expect("audit");
        let reset = AuditEntry {
            sync: "billing".into(),
            action: AuditAction::Reset,
            scope: AuditScope::Sync,
            reason: None,
            details: json!({"to": "2026-01-01T00:00:00Z", "forget_ledger": false}),
        };
        let second = store.audit(&reset).await.expect("audit");
        assert!(first.id < other.id && other.id < second.id, "ids grow");

        let log = store.audit_log("billing", 10).await.expect("log");
        assert_eq!(
            log,
            [second.clone(), first.clone()],
            "newest first, own sync"
        );
        assert_eq!(log[1].entry, discard("billing", &["a", "b"], "test data"));
        assert_eq!(log[0].entry.scope, AuditScope::Sync);
        assert_eq!(log[0].entry.reason, None);
        assert_eq!(
            store.audit_log("billing", 1).await.expect("log"),
            std::slice::from_ref(&second),
            "limited to the newest"
        );
        assert_eq!(
            store.audit_record(other.id).await.expect("one"),
            Some(other)
        );
        assert_eq!(store.audit_record(999).await.expect("none"), None);

        // Actions are a closed set in SQLite too.
        let refused = sqlx::query(
            "INSERT INTO audit_log (at, sync, action, scope, reason, details)
             VALUES (0, 'billing', 'delete_everything', '{\"kind\":\"sync\"}', NULL, '{}')",
        )
        .execute(store.sqlite_pool())
        .await;
        assert!(refused.is_err(), "an unknown action was admitted");
        store.close().await;
        let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
    }

    /// A store from before destinations could move keeps its audit log and
    /// resets through the rebuild that admits the new action; a move then
    /// takes the next id, and a move to where the ledger is already changes
    /// nothing.
    #[tokio::test]
    async fn a_move_is_recorded_once_in_a_log_kept_from_before() {
        let (path, pool) = crate::state::tests::store_before("audit-moved", 19).await;
        sqlx::query(
            "INSERT INTO audit_log (at, sync, action, scope, reason, details)
             VALUES (5000000, 'billing', 'reset', '{\"kind\":\"sync\"}', 'why', '{}');
             INSERT INTO resets (sync, at, to_at, audit_id) VALUES ('billing', 5000000, 3000000, 1);
             INSERT INTO sync_destinations (sync, destination, since)
             VALUES ('billing', 'jsonl /a.jsonl', 1)",
        )
        .execute(&pool)
        .await
        .expect("version 19 rows");
        pool.close().await;
        let store = Store::open(&path).await.expect("migrate");
        let log = store.audit_log("billing", 10).await.expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].entry.reason.as_deref(), Some("why"));
        assert_eq!(
            store.high_water_mark("billing").await.expect("mark"),
            crate::state::HighWaterMark::Reset(Timestamp::from_second(3).ok())
        );

        let was = store
            .move_destination("billing", "jsonl /b.jsonl", Some("new volume"))
            .await
            .expect("move");
        assert_eq!(was.as_deref(), Some("jsonl /a.jsonl"));
        let destination = store.destination_of("billing").await.expect("destination");
        assert_eq!(destination.as_deref(), Some("jsonl /b.jsonl"));
        let log = store.audit_log("billing", 10).await.expect("log");
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].id, 2);
        assert_eq!(log[0].entry.action, AuditAction::DestinationMoved);
        assert_eq!(
            log[0].entry.details,
            json!({"from": "jsonl /a.jsonl", "to": "jsonl /b.jsonl"})
        );
        assert_eq!(log[0].entry.reason.as_deref(), Some("new volume"));
        let again = store
            .move_destination("billing", "jsonl /b.jsonl", None)
            .await;
        assert_eq!(again.expect("no move"), None);
        assert_eq!(store.audit_log("billing", 10).await.expect("log").len(), 2);
        store.close().await;
        let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
    }

    #[test]
    fn scopes_are_stored_as_tagged_json() {
        let records = AuditScope::Records {
            ids: vec!["a".into()],
        };
        assert_eq!(
            serde_json::to_value(&records).expect("json"),
            json!({"kind": "records", "ids": ["a"]})
        );
        assert_eq!(
            serde_json::to_value(AuditScope::Sync).expect("json"),
            json!({"kind": "sync"})
        );
    }
}
