//! The end of a run that deletes what it did not see: for a full run, the
//! records the ledger holds, not deleted, that the whole source no longer
//! listed — unless they are more than the sync's `full_delete_limit` share of
//! the ledger, when the run stops with nothing deleted; for a repair, the
//! extras a reconciliation found that its re-read did not find again. They
//! become deletions, admitted as one more page and resolved as any deletion is.

use super::*;
use crate::record::RecordKey;
use crate::source::Page;

impl Runner<'_> {
    /// Once every page of the source is committed: what the source no longer
    /// has, as deletions stamped with when this invocation began reading.
    pub(super) async fn sweep(&mut self) -> Result<(), FailureCause> {
        // Everything this run resolved is committed; merged, the store's
        // lookups see all of it.
        self.store.merge_staged(&self.spec.name).await?;
        let vanished = match &self.plan {
            Plan::Full { allow_mass_delete } => {
                self.vanished_from_source(*allow_mass_delete).await?
            }
            // What a reconciliation found gone, unless the repair read it again.
            Plan::Repair { delete, .. } => delete
                .iter()
                .filter(|id| !self.seen.contains(*id))
                .cloned()
                .collect(),
            _ => return Ok(()),
        };
        if vanished.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = vanished.iter().map(String::as_str).collect();
        let known = self.store.known(&self.spec.name, &ids, &[]).await?;
        let arrivals = vanished
            .iter()
            .map(|id| Arrival {
                record: Extracted::Record(SourceRecord {
                    key: RecordKey {
                        updated_at: self.reading_since,
                        id: id.clone(),
                        id_is_number: false,
                    },
                    updated_at_raw: Value::Null,
                    version: None,
                    body: Value::Null,
                }),
                mapped: None,
                encoded: None,
                superseded: false,
            })
            .collect::<Vec<_>>();
        let count = arrivals.len() as u64;
        self.vanished = vanished.into_iter().collect();
        self.admit(ReadPage {
            page: Page {
                records: Vec::new(),
                beyond_watermark: 0,
                cursor_after: Cursor::End,
                requests: 0,
            },
            arrivals,
            known,
            confirmed: self.confirmed.load(Ordering::Acquire),
        })?;
        // They were not read from the source.
        self.counters.read -= count;
        Ok(())
    }

    /// Whether the run ends by deleting what it did not see: a full run, or a
    /// repair with records to delete.
    pub(super) fn sweeps(&self) -> bool {
        match &self.plan {
            Plan::Full { .. } => true,
            Plan::Repair { delete, .. } => !delete.is_empty(),
            _ => false,
        }
    }

    /// The ledger's live records the whole source did not list; refused above
    /// the sync's share unless `allow_mass_delete`. Records from before the
    /// sync's `start` (a `start` moved later) are outside what was listed, and
    /// stay; so does one stamped at `start` itself, which an API's bound may
    /// leave out.
    async fn vanished_from_source(
        &self,
        allow_mass_delete: bool,
    ) -> Result<Vec<String>, FailureCause> {
        let ledger = self.store.ledger(&self.spec.name).await?;
        let start = self.spec.source.start;
        let listed = |e: &LedgerEntry| {
            e.deleted_at.is_none() && start.is_none_or(|start| e.updated_at > start)
        };
        let live = ledger.iter().filter(|e| listed(e)).count();
        let vanished: Vec<String> = ledger
            .into_iter()
            .filter(|e| listed(e) && !self.seen.contains(&e.source_id))
            .map(|e| e.source_id)
            .collect();
        let limit = self
            .spec
            .deletes
            .as_ref()
            .map_or(crate::config::DEFAULT_FULL_DELETE_LIMIT, |d| {
                d.full_delete_limit
            });
        if !allow_mass_delete && vanished.len() as f64 > limit * live as f64 {
            return Err(FailureCause::MassDelete {
                count: vanished.len(),
                total: live,
                limit,
            });
        }
        Ok(vanished)
    }
}
