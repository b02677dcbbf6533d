//! Owns the dead-letter queue as operators see it: the unresolved dead letters of
//! a sync, oldest first; one dead letter in full, with how it was resolved; and
//! the discard, which resolves dead letters without writing them and records it in
//! the audit log. The run's side (dead-lettering, resolving by a write, the
//! fingerprints a run looks up) stays with the commit and [`Store::known`].
//! Invariants: a dead letter is unresolved exactly when `resolved_at` is unset, and
//! only those are listed, counted or discarded; a discard keeps the row (payload,
//! fingerprint, attempts), so the run's lookup still finds its fingerprint and the
//! same payload is not tried again; a discard and its audit entry commit together,
//! and a discard naming an id without an unresolved dead letter changes nothing.

use jiff::Timestamp;
use serde_json::Value;

use super::audit::AuditRecord;
use super::{Columns, DeadLetterResolution, DeadLetterStage, StateError, micros};

/// A dead letter as `dlq list` shows it (without its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    pub source_id: String,
    /// The run that dead-lettered it last.
    pub run_id: String,
    pub stage: DeadLetterStage,
    pub reason: String,
    /// Times the record failed (a payload not tried again adds none).
    pub attempts: i64,
    pub first_failed_at: Timestamp,
    pub last_failed_at: Timestamp,
}

/// A dead letter in full, as `dlq show` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterDetail {
    pub summary: DeadLetterSummary,
    /// The source record as it was read.
    pub payload: Value,
    /// How it stopped being unresolved; `None` while it is.
    pub resolution: Option<Resolved>,
}

/// How and when a dead letter was resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub at: Timestamp,
    pub how: DeadLetterResolution,
    /// The operator action that resolved it (a discard), with its reason.
    pub audit: Option<AuditRecord>,
}

/// Which dead letters a discard is for.
#[derive(Debug, Clone, Copy)]
pub enum DiscardScope<'a> {
    /// These source ids; each must have an unresolved dead letter.
    Ids(&'a [String]),
    /// Every unresolved dead letter of the sync.
    All,
}

/// What a discard did.
#[derive(Debug, Clone, PartialEq)]
pub enum Discarded {
    /// These dead letters (oldest first) are discarded, and the audit entry
    /// says so; none and no entry when `All` found nothing to discard.
    Done {
        ids: Vec<String>,
        audit: Option<AuditRecord>,
    },
    /// These ids have no unresolved dead letter: nothing was discarded.
    NotUnresolved(Vec<String>),
}

/// A dead letter as listed.
pub(super) fn summary(row: &impl Columns) -> Result<DeadLetterSummary, StateError> {
    Ok(DeadLetterSummary {
        source_id: row.text("source_id")?,
        run_id: row.text("run_id")?,
        stage: row.text("stage")?.parse()?,
        reason: row.text("error")?,
        attempts: row.int("attempts")?,
        first_failed_at: micros(row.int("first_failed_at")?)?,
        last_failed_at: micros(row.int("last_failed_at")?)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::state::tests::{store_before, temp_db};
    use crate::state::{
        AuditAction, AuditScope, Counters, DeadLetter, LedgerEntry, PageCommit, RunKind, RunRow,
        RunStatus, Store,
    };

    fn letter(id: &str, stage: DeadLetterStage, fingerprint: &str) -> DeadLetter {
        DeadLetter {
            source_id: id.into(),
            run_id: "r1".into(),
            stage,
            error: format!("{id} refused"),
            payload: json!({"id": id, "fp": fingerprint}),
            fingerprint: fingerprint.into(),
            attempts: 1,
            last_failed_at: Timestamp::UNIX_EPOCH,
        }
    }

    async fn commit(store: &Store, page: PageCommit) {
        store
            .commit_page("billing", "r1", &page, None, &Counters::default())
            .await
            .expect("commit");
    }

    async fn open_store(name: &str) -> (Store, std::path::PathBuf) {
        let path = temp_db(name);
        let store = Store::open(&path).await.expect("open");
        let at = Timestamp::from_second(1000).expect("time");
        let run = RunRow {
            run_id: "r1".into(),
            sync: "billing".into(),
            kind: RunKind::Incremental,
            status: RunStatus::Open,
            lower_bound: None,
            watermark: at,
            started_at: at,
            updated_at: at,
            completed_at: None,
        };
        store.begin_run(&run, &json!({})).await.expect("begin");
        (store, path)
    }

    fn ids(letters: &[DeadLetterSummary]) -> Vec<&str> {
        letters.iter().map(|l| l.source_id.as_str()).collect()
    }

    async fn rows(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(store.sqlite_pool())
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn a_discard_resolves_keeps_the_row_and_no_longer_counts_as_unresolved() {
        let (store, path) = open_store("dlq-discard").await;
        commit(
            &store,
            PageCommit {
                dead_letters: vec![letter("b", DeadLetterStage::Destination, "fb")],
                ..PageCommit::default()
            },
        )
        .await;
        commit(
            &store,
            PageCommit {
                dead_letters: vec![
                    letter("c", DeadLetterStage::Source, "fc"),
                    letter("a", DeadLetterStage::Mapping, "fa"),
                ],
                ..PageCommit::default()
            },
        )
        .await;
        let listed = store
            .unresolved_dead_letters("billing")
            .await
            .expect("list");
        assert_eq!(ids(&listed), ["b", "a", "c"], "oldest first, then by id");
        assert_eq!(listed[1].stage, DeadLetterStage::Mapping);
        assert_eq!(listed[1].reason, "a refused");

        // One id without a dead letter refuses the whole discard.
        let asked = ["a".to_owned(), "zz".to_owned()];
        let refused = store
            .discard_dead_letters("billing", DiscardScope::Ids(&asked), "junk")
            .await
            .expect("discard");
        assert_eq!(refused, Discarded::NotUnresolved(vec!["zz".into()]));
        assert_eq!(
            store.status("billing").await.expect("status").dead_letters,
            3
        );
        assert!(
            store
                .audit_log("billing", 10)
                .await
                .expect("log")
                .is_empty()
        );

        let asked = ["a".to_owned(), "a".to_owned()];
        let Discarded::Done { ids: done, audit } = store
            .discard_dead_letters("billing", DiscardScope::Ids(&asked), "test customer")
            .await
            .expect("discard")
        else {
            panic!("the discard was refused");
        };
        assert_eq!(done, ["a"]);
        let audit = audit.expect("an audit entry");
        assert_eq!(
            store.audit_log("billing", 10).await.expect("log"),
            std::slice::from_ref(&audit)
        );
        assert_eq!(audit.entry.action, AuditAction::DeadLetterDiscard);
        assert_eq!(audit.entry.reason.as_deref(), Some("test customer"));
        assert_eq!(
            audit.entry.scope,
            AuditScope::Records {
                ids: vec!["a".into()]
            }
        );
        assert_eq!(
            audit.entry.details,
            json!({"all": false, "letters": [
                {"source_id": "a", "stage": "mapping", "reason": "a refused", "attempts": 1}
            ]})
        );

        // Not unresolved anywhere: the list, the status, the run's own list.
        let listed = store
            .unresolved_dead_letters("billing")
            .await
            .expect("list");
        assert_eq!(ids(&listed), ["b", "c"]);
        assert_eq!(
            store.status("billing").await.expect("status").dead_letters,
            2
        );
        let unresolved: Vec<String> = store
            .dead_letters("billing")
            .await
            .expect("dlq")
            .into_iter()
            .map(|d| d.source_id)
            .collect();
        assert_eq!(unresolved, ["b", "c"]);
        // Kept whole, with how it was resolved.
        assert_eq!(rows(&store).await, 3);
        let shown = store
            .dead_letter("billing", "a")
            .await
            .expect("show")
            .expect("kept");
        assert_eq!(shown.payload, json!({"id": "a", "fp": "fa"}));
        assert_eq!(shown.summary.attempts, 1);
        let resolved = shown.resolution.expect("resolved");
        assert_eq!(resolved.how, DeadLetterResolution::Discarded);
        assert_eq!(resolved.at, audit.at);
        assert_eq!(resolved.audit, Some(audit.clone()));
        // The run's lookup still knows its fingerprint: that payload is not
        // tried again.
        let known = store
            .known("billing", &["a", "b"], &[])
            .await
            .expect("known");
        assert_eq!(known.dead.get("a").map(String::as_str), Some("fa"));
        assert_eq!(known.dead.get("b").map(String::as_str), Some("fb"));
        // Discarded once is discarded: a second time is bad input.
        let again = store
            .discard_dead_letters("billing", DiscardScope::Ids(&["a".to_owned()]), "again")
            .await
            .expect("discard");
        assert_eq!(again, Discarded::NotUnresolved(vec!["a".into()]));

        // A changed payload that fails again is unresolved again; the audit log
        // keeps the discard.
        commit(
            &store,
            PageCommit {
                dead_letters: vec![letter("a", DeadLetterStage::Mapping, "fa2")],
                ..PageCommit::default()
            },
        )
        .await;
        let shown = store
            .dead_letter("billing", "a")
            .await
            .expect("show")
            .expect("kept");
        assert_eq!((shown.resolution, shown.summary.attempts), (None, 2));
        assert_eq!(
            store.status("billing").await.expect("status").dead_letters,
            3
        );
        assert_eq!(store.audit_log("billing", 10).await.expect("log").len(), 1);

        // --all: every unresolved one, oldest first, in one entry.
        let Discarded::Done { ids: done, audit } = store
            .discard_dead_letters("billing", DiscardScope::All, "bad batch")
            .await
            .expect("discard all")
        else {
            panic!("the discard was refused");
        };
        assert_eq!(done, ["b", "a", "c"]);
        let audit = audit.expect("an audit entry");
        assert_eq!(audit.entry.details["all"], json!(true));
        assert!(
            store
                .unresolved_dead_letters("billing")
                .await
                .expect("list")
                .is_empty()
        );
        assert_eq!(
            store.status("billing").await.expect("status").dead_letters,
            0
        );
        assert_eq!(rows(&store).await, 3);
        // Nothing left: nothing done, nothing recorded.
        let nothing = store
            .discard_dead_letters("billing", DiscardScope::All, "again")
            .await
            .expect("discard all");
        assert_eq!(
            nothing,
            Discarded::Done {
                ids: Vec::new(),
                audit: None
            }
        );
        assert_eq!(store.audit_log("billing", 10).await.expect("log").len(), 2);

        // A changed payload written successfully resolves the discarded letter as
        // written: the record is at the destination now.
        commit(
            &store,
            PageCommit {
                ledger: vec![LedgerEntry {
                    source_id: "b".into(),
                    external_id: "ext-b".into(),
                    dest_id: None,
                    version: Some(2),
                    updated_at: Timestamp::UNIX_EPOCH,
                    payload_hash: "h".into(),
                    run_id: "r1".into(),
                    deleted_at: None,
                }],
                resolved: vec!["b".into()],
                ..PageCommit::default()
            },
        )
        .await;
        let shown = store
            .dead_letter("billing", "b")
            .await
            .expect("show")
            .expect("kept");
        let resolved = shown.resolution.expect("resolved");
        assert_eq!(
            (resolved.how, resolved.audit),
            (DeadLetterResolution::Written, None)
        );
        let known = store
            .known("billing", &["a", "b"], &[])
            .await
            .expect("known");
        assert!(
            !known.dead.contains_key("b"),
            "written: nothing to hold back"
        );
        assert_eq!(known.dead.get("a").map(String::as_str), Some("fa2"));
        assert_eq!(
            store.dead_letter("billing", "zz").await.expect("show"),
            None
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
    }

    /// Dead letters resolved before migration 7 were resolved by a write.
    #[tokio::test]
    async fn dead_letters_resolved_before_the_audit_log_were_written() {
        let (path, pool) = store_before("dlq-migrate", 6).await;
        {
            sqlx::query(
                "INSERT INTO dead_letters (sync, source_id, run_id, stage, error, payload, fingerprint, attempts, first_failed_at, last_failed_at, resolved_at)
                 VALUES ('billing', 'fixed', 'r', 'mapping', 'no email', '{}', 'f', 1, 1, 1, 5),
                        ('billing', 'open', 'r', 'mapping', 'no email', '{}', 'g', 1, 2, 2, NULL)",
            )
            .execute(&pool)
            .await
            .expect("version 6 rows");
            pool.close().await;
        }
        let store = Store::open(&path).await.expect("migrate");
        let fixed = store
            .dead_letter("billing", "fixed")
            .await
            .expect("show")
            .expect("kept");
        let resolved = fixed.resolution.expect("resolved");
        assert_eq!(resolved.how, DeadLetterResolution::Written);
        let open = store
            .unresolved_dead_letters("billing")
            .await
            .expect("list");
        assert_eq!(ids(&open), ["open"]);
        store.close().await;
        let _ = std::fs::remove_dir_all(path.parent().and_then(|p| p.parent()).expect("dir"));
    }
}
