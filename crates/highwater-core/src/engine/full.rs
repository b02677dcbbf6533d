//! A full run's end: the records the ledger holds, not deleted, that the whole
//! source no longer listed become deletions — admitted as one more page and
//! resolved as any deletion is — unless they are more than the sync's
//! `full_delete_limit` share of the ledger, when the run stops with nothing
//! deleted.

use super::*;
use crate::record::RecordKey;
use crate::source::Page;

impl Runner<'_> {
    /// Once every page of the source is committed: what the source no longer
    /// has, as deletions stamped with when this invocation began reading.
    pub(super) async fn sweep(&mut self) -> Result<(), FailureCause> {
        let Plan::Full { allow_mass_delete } = self.plan else {
            return Ok(());
        };
        // Everything this run resolved is committed; merged, the store's
        // lookups see all of it.
        self.store.merge_staged(&self.spec.name).await?;
        let ledger = self.store.ledger(&self.spec.name).await?;
        let live = ledger.iter().filter(|e| e.deleted_at.is_none()).count();
        let vanished: Vec<String> = ledger
            .into_iter()
            .filter(|e| e.deleted_at.is_none() && !self.seen.contains(&e.source_id))
            .map(|e| e.source_id)
            .collect();
        if vanished.is_empty() {
            return Ok(());
        }
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
}
