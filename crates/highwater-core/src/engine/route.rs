//! Where each record goes before any write: resolved at once (unchanged, stale,
//! dead-lettered), written, or held back.

use super::*;

impl Runner<'_> {
    /// Decides a record before any write: dead-letter, skip, or write. What this
    /// invocation has resolved but not committed yet counts as known.
    pub(super) fn prepare(&self, seq: u64, arrival: Arrival) -> Routed {
        let Arrival {
            record,
            mapped,
            encoded,
            ..
        } = arrival;
        let known = self.pages.get(&seq).map(|p| &p.known);
        let (id, body, invalid) = match &record {
            Extracted::Record(r) => (r.id(), &r.body, None),
            Extracted::Invalid { id, body, reason } => (id.as_str(), body, Some(reason)),
        };
        let dead_fingerprint = self
            .view
            .dead(id)
            .or_else(|| known.and_then(|k| k.dead.get(id)));
        // Hashing the body costs; only a record with a dead letter needs it. A
        // replay tries again what failed, whatever failed before.
        let replay = matches!(self.plan, Plan::Replay { .. });
        if !replay && dead_fingerprint.is_some_and(|fp| *fp == self.fingerprint(body)) {
            return Routed::Resolved(Resolution::StillDeadLettered);
        }
        if let Some(reason) = invalid {
            let letter = self.dead_letter(id, DeadLetterStage::Source, reason.clone(), body);
            return Routed::Resolved(Resolution::DeadLettered(letter));
        }
        let Extracted::Record(record) = record else {
            return Routed::Resolved(Resolution::Stale { ledger: None });
        };
        if let Some((version, deleted_at)) = self.deletion(&record) {
            let mapped = mapped.and_then(Result::ok);
            return self.prepare_delete(seq, record, mapped, version, deleted_at);
        }
        // The reading thread maps every copy it does not mark superseded; this
        // maps a record that reached here some other way.
        let mapped = mapped.unwrap_or_else(|| map_record(&self.spec.mapping, &record));
        let mapped = match mapped {
            Ok(mapped) => mapped,
            Err(e) => {
                let letter =
                    self.dead_letter(record.id(), DeadLetterStage::Mapping, e.0, &record.body);
                return Routed::Resolved(Resolution::DeadLettered(letter));
            }
        };
        if let Some(holder) = self.holder_of(&mapped.external_id, known)
            && holder != record.id()
        {
            let reason = format!(
                "external id {:?} is already held by source record {holder:?}: two source records cannot share one destination record (check the external_id template)",
                mapped.external_id
            );
            let letter =
                self.dead_letter(record.id(), DeadLetterStage::Mapping, reason, &record.body);
            return Routed::Resolved(Resolution::DeadLettered(letter));
        }
        let written = self
            .view
            .written(record.id())
            .or_else(|| known.and_then(|k| k.ledger.get(record.id())));
        let pending = self.floors.get(record.id());
        let decision = match decide(
            record.version,
            record.updated_at(),
            &mapped.hash,
            written,
            pending,
        ) {
            // A repair writes what the destination lost, whatever the ledger
            // says: over a deletion too, which the source, serving the record
            // live, no longer stands by (a full run's listing left it out).
            Decision::Unchanged if matches!(self.plan, Plan::Repair { .. }) => Decision::Write,
            Decision::Stale
                if matches!(self.plan, Plan::Repair { .. })
                    && written.is_some_and(|e| e.deleted_at.is_some()) =>
            {
                Decision::Write
            }
            decision => decision,
        };
        if decision == Decision::Write
            && let Some(was) =
                written.filter(|e| e.deleted_at.is_none() && e.external_id != mapped.external_id)
        {
            self.rekeyed.set(self.rekeyed.get() + 1);
            crate::obs::ExternalIdChanged {
                sync: &self.spec.name,
                source_id: record.id(),
                was: &was.external_id,
                now: &mapped.external_id,
                records: self.rekeyed.get(),
            }
            .emit();
        }
        match decision {
            Decision::Write => Routed::Write(Box::new(WriteJob {
                seq,
                // A repaired object may be gone: found again by its external id.
                // A deleted record's object is gone: a re-creation creates anew.
                known_dest_id: written
                    .filter(|_| !matches!(self.plan, Plan::Repair { .. }))
                    .filter(|e| e.deleted_at.is_none())
                    .and_then(|e| e.dest_id.clone()),
                encoded,
                dead_lettered: dead_fingerprint.is_some(),
                unsettled_until: self.unsettled.get(record.id()).map(|u| u.settles_at),
                record,
                mapped,
                delete: None,
                soft: false,
            })),
            Decision::Stale => Routed::Resolved(Resolution::Stale { ledger: None }),
            Decision::BelowFloor => Routed::HeldBack(Box::new(HeldBack {
                seq,
                floor: pending.cloned().unwrap_or_else(|| Intent {
                    source_id: record.id().to_owned(),
                    version: record.version,
                    updated_at: record.updated_at(),
                    settles_at: None,
                }),
                arrival: Arrival {
                    record: Extracted::Record(record),
                    mapped: Some(Ok(mapped)),
                    encoded,
                    superseded: false,
                },
            })),
            Decision::Unchanged => match written {
                // The ledger moves only when the source's version or time did.
                Some(written)
                    if record.version > written.version
                        || record.updated_at() > written.updated_at =>
                {
                    Routed::Resolved(Resolution::Unchanged {
                        ledger: Some(LedgerEntry {
                            version: record.version.max(written.version),
                            updated_at: record.updated_at().max(written.updated_at),
                            run_id: self.run_id.clone(),
                            ..written.clone()
                        }),
                    })
                }
                _ => Routed::Resolved(Resolution::Unchanged { ledger: None }),
            },
        }
    }

    /// Whether this copy is a deletion, and with which version and time: every
    /// entry of the deletes feed; a record of any other run carrying the
    /// soft-delete marker (deleted as of its own version and `updated_at`).
    fn deletion(&self, record: &SourceRecord) -> Option<(Option<i64>, Timestamp)> {
        if self.plan == Plan::Deletes || self.vanished.contains(record.id()) {
            return Some((None, record.updated_at()));
        }
        let feed = &self.spec.deletes.as_ref()?.feed;
        feed.marks(&record.body)
            .then(|| (record.version, record.updated_at()))
    }

    /// Decides a deletion: applied at the destination after what was written
    /// before it, a tombstone only when nothing was, and never over a copy
    /// written after it.
    fn prepare_delete(
        &self,
        seq: u64,
        record: SourceRecord,
        mapped: Option<MappedRecord>,
        version: Option<i64>,
        deleted_at: Timestamp,
    ) -> Routed {
        let known = self.pages.get(&seq).map(|p| &p.known);
        let id = record.id();
        let written = self
            .view
            .written(id)
            .or_else(|| known.and_then(|k| k.ledger.get(id)));
        let pending = self.floors.get(id);
        // The destination knows the record by the external id it was written
        // under; a feed entry that was never written names it through the
        // mapping's template, if the entry holds what the template needs.
        // A soft delete writes the record, mapped, with the fields set.
        let soft = self
            .spec
            .deletes
            .as_ref()
            .and_then(|d| d.soft_delete.as_ref());
        let soft_mapped = soft.zip(mapped.clone()).map(|(fields, mut m)| {
            for (field, value) in fields {
                field.set(&mut m.payload, value.clone());
            }
            m.hash = crate::mapping::payload_hash(&m.external_id, &m.payload);
            m
        });
        let external_id = written
            .map(|w| w.external_id.clone())
            .or_else(|| mapped.map(|m| m.external_id))
            .or_else(|| crate::mapping::external_id_of(&self.spec.mapping, &record.body).ok());
        let tombstone = |dest_id: Option<String>| LedgerEntry {
            source_id: id.to_owned(),
            external_id: external_id.clone().unwrap_or_else(|| id.to_owned()),
            dest_id,
            version: written.and_then(|w| w.version).max(version),
            updated_at: written.map_or(deleted_at, |w| w.updated_at.max(deleted_at)),
            payload_hash: String::new(),
            run_id: self.run_id.clone(),
            deleted_at: Some(deleted_at),
        };
        let dest_id = written
            .filter(|w| w.deleted_at.is_none())
            .and_then(|w| w.dest_id.clone());
        match decide_delete(version, deleted_at, written, pending) {
            DeleteDecision::AlreadyDeleted => {
                Routed::Resolved(Resolution::Unchanged { ledger: None })
            }
            DeleteDecision::Stale => Routed::Resolved(Resolution::Stale { ledger: None }),
            // Nothing to mark: a soft delete of a record never written is a
            // tombstone alone.
            DeleteDecision::Tombstone if soft.is_some() => Routed::Resolved(Resolution::Deleted {
                ledger: tombstone(None),
                attempts: 0,
            }),
            DeleteDecision::Delete if soft.is_some() => match soft_mapped {
                Some(mapped) => Routed::Write(Box::new(WriteJob {
                    seq,
                    known_dest_id: dest_id.clone(),
                    encoded: None,
                    dead_lettered: false,
                    unsettled_until: self.unsettled.get(id).map(|u| u.settles_at),
                    delete: Some(tombstone(dest_id)),
                    soft: true,
                    mapped,
                    record,
                })),
                // The marked record does not map: dead-lettered as any would be.
                None => {
                    let reason = match crate::mapping::map_record(&self.spec.mapping, &record) {
                        Err(e) => e.0,
                        Ok(_) => "the soft-deleted record cannot be mapped".to_owned(),
                    };
                    let letter =
                        self.dead_letter(id, DeadLetterStage::Mapping, reason, &record.body);
                    Routed::Resolved(Resolution::DeadLettered(letter))
                }
            },
            // Never in the ledger is not never at the destination: another run
            // (or a process killed before its commit) may have written it.
            // The DELETE is sent whenever the record can be named; a 404 says
            // it was not there.
            DeleteDecision::Delete | DeleteDecision::Tombstone => match &external_id {
                Some(external_id) => Routed::Write(Box::new(WriteJob {
                    seq,
                    mapped: MappedRecord {
                        external_id: external_id.clone(),
                        payload: Value::Null,
                        hash: String::new(),
                    },
                    known_dest_id: dest_id.clone(),
                    encoded: None,
                    dead_lettered: false,
                    unsettled_until: self.unsettled.get(id).map(|u| u.settles_at),
                    delete: Some(tombstone(dest_id)),
                    soft: false,
                    record,
                })),
                // Only an announced write, of a record the ledger never held
                // and the feed cannot name: nothing to address.
                None => Routed::Resolved(Resolution::Deleted {
                    ledger: tombstone(None),
                    attempts: 0,
                }),
            },
        }
    }

    /// The source id holding an external id: by a write of this invocation, or
    /// by a ledger row the page's lookup found (unless this invocation has since
    /// given that source record another external id).
    fn holder_of<'k>(&'k self, external_id: &str, known: Option<&'k Known>) -> Option<&'k str> {
        if let Some(holder) = self.holders.get(external_id) {
            return Some(holder);
        }
        let holder = known?.holders.get(external_id)?;
        let moved = self
            .view
            .written(holder)
            .is_some_and(|e| e.external_id != external_id);
        (!moved).then_some(holder.as_str())
    }

    fn fingerprint(&self, body: &Value) -> String {
        fingerprint(&self.spec.fingerprint, body)
    }

    pub(super) fn dead_letter(
        &self,
        id: &str,
        stage: DeadLetterStage,
        error: String,
        body: &Value,
    ) -> DeadLetter {
        DeadLetter {
            source_id: id.to_owned(),
            run_id: self.run_id.clone(),
            stage,
            error,
            payload: body.clone(),
            fingerprint: self.fingerprint(body),
            attempts: 1,
            last_failed_at: Timestamp::now(),
        }
    }
}

/// What a dead letter is known by: the record's body under the sync's config,
/// so the same payload under the same config is not tried again.
pub(super) fn fingerprint(config: &str, body: &Value) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(config.as_bytes());
    hasher.update(body.to_string().as_bytes());
    hasher.finalize().to_hex()[..32].to_owned()
}

pub(super) enum Routed {
    Resolved(Resolution),
    Write(Box<WriteJob>),
    HeldBack(Box<HeldBack>),
}
