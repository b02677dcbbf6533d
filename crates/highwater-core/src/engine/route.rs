//! Where each record goes before any write — resolved at once (unchanged, stale,
//! dead-lettered), written, or held back — and the write slots that carry writes
//! to the sink.

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
        let dead_fingerprint = match self.dead.get(id) {
            Some(r) => Some(&r.value),
            None => known.and_then(|k| k.dead.get(id)),
        };
        // Hashing the body costs; only a record with a dead letter needs it.
        if dead_fingerprint.is_some_and(|fp| *fp == self.fingerprint(body)) {
            return Routed::Resolved(Resolution::StillDeadLettered);
        }
        if let Some(reason) = invalid {
            let letter = self.dead_letter(id, "source", reason.clone(), body);
            return Routed::Resolved(Resolution::DeadLettered(letter));
        }
        let Extracted::Record(record) = record else {
            return Routed::Resolved(Resolution::Stale { ledger: None });
        };
        // The reading thread maps every copy it does not mark superseded; this
        // maps a record that reached here some other way.
        let mapped = mapped.unwrap_or_else(|| map_record(&self.spec.mapping, &record));
        let mapped = match mapped {
            Ok(mapped) => mapped,
            Err(e) => {
                let letter = self.dead_letter(record.id(), "mapping", e.0, &record.body);
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
            let letter = self.dead_letter(record.id(), "mapping", reason, &record.body);
            return Routed::Resolved(Resolution::DeadLettered(letter));
        }
        let written = match self.written.get(record.id()) {
            Some(r) => Some(&r.value),
            None => known.and_then(|k| k.ledger.get(record.id())),
        };
        let pending = self.floors.get(record.id());
        match decide(
            record.version,
            record.updated_at(),
            &mapped.hash,
            written,
            pending,
        ) {
            Decision::Write => Routed::Write(WriteJob {
                seq,
                known_dest_id: written.and_then(|e| e.dest_id.clone()),
                encoded,
                dead_lettered: dead_fingerprint.is_some(),
                unsettled_until: self.unsettled.get(record.id()).map(|u| u.settles_at),
                record,
                mapped,
            }),
            Decision::Stale => Routed::Resolved(Resolution::Stale { ledger: None }),
            Decision::BelowFloor => Routed::HeldBack(HeldBack {
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
            }),
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

    /// The source id holding an external id: by a write of this invocation, or
    /// by a ledger row the page's lookup found (unless this invocation has since
    /// given that source record another external id).
    fn holder_of<'k>(&'k self, external_id: &str, known: Option<&'k Known>) -> Option<&'k str> {
        if let Some(holder) = self.holders.get(external_id) {
            return Some(holder);
        }
        let holder = known?.holders.get(external_id)?;
        let moved = self
            .written
            .get(holder)
            .is_some_and(|r| r.value.external_id != external_id);
        (!moved).then_some(holder.as_str())
    }

    fn fingerprint(&self, body: &Value) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.spec.fingerprint.as_bytes());
        hasher.update(body.to_string().as_bytes());
        hasher.finalize().to_hex()[..32].to_owned()
    }

    pub(super) fn dead_letter(
        &self,
        id: &str,
        stage: &str,
        error: String,
        body: &Value,
    ) -> DeadLetter {
        DeadLetter {
            source_id: id.to_owned(),
            run_id: self.run_id.clone(),
            stage: stage.to_owned(),
            error,
            payload: body.clone(),
            fingerprint: self.fingerprint(body),
            attempts: 1,
            last_failed_at: Timestamp::now(),
        }
    }
}

pub(super) enum Routed {
    Resolved(Resolution),
    Write(WriteJob),
    HeldBack(HeldBack),
}

type WriteOutcome = (WriteJob, Result<crate::sink::Written, SinkError>);

/// One write slot, for the whole run: it takes announced writes off the queue,
/// one at a time, and hands each outcome back to the run loop. When the next write
/// is already waiting, its request goes on the wire before the last answer reaches
/// the loop, so that the loop's bookkeeping runs while the destination works
/// instead of between an answer and the next request.
pub(super) async fn write_slot(
    sink: Arc<Sink>,
    stop: Stop,
    queue: flume::Receiver<WriteJob>,
    answers: mpsc::UnboundedSender<WriteOutcome>,
) {
    let mut answered: Option<WriteOutcome> = None;
    loop {
        // An answer that ends the run goes back before anything else is sent.
        let ends_run = answered
            .as_ref()
            .is_some_and(|(_, result)| result.as_ref().is_err_and(|e| !e.is_record_level()));
        let next = if ends_run {
            None
        } else {
            queue.try_recv().ok()
        };
        let job = match next {
            Some(job) => job,
            None => {
                if let Some(outcome) = answered.take()
                    && answers.send(outcome).is_err()
                {
                    return;
                }
                match queue.recv_async().await {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        let outcome = match answered.take() {
            // `join` polls the write first: its request is handed over before the
            // loop is woken with the last answer.
            Some(last) => {
                let (outcome, sent) = futures_util::future::join(write(&sink, &stop, job), async {
                    answers.send(last)
                })
                .await;
                if sent.is_err() {
                    return;
                }
                outcome
            }
            None => write(&sink, &stop, job).await,
        };
        answered = Some(outcome);
    }
}

async fn write(sink: &Sink, stop: &Stop, mut job: WriteJob) -> WriteOutcome {
    let encoded = job.encoded.take();
    let write = Write {
        source_id: job.record.id(),
        record: &job.mapped,
        version: job.record.version,
        updated_at: job.record.updated_at(),
        known_dest_id: job.known_dest_id.as_deref(),
        encoded,
        rewrite_over: None,
        unsettled_until: job.unsettled_until,
    };
    let result = sink.write(write, stop).await;
    (job, result)
}

/// Why the run loop cannot go on when a write slot ended under it: a panic in a
/// slot is the run's panic; a slot cancelled means the runtime is shutting down.
pub(super) fn slot_ended(ended: Result<(), tokio::task::JoinError>) -> FailureCause {
    match ended {
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        _ => {
            FailureCause::Destination(SinkError::Http(HttpError::Stopped(StopReason::Interrupted)))
        }
    }
}
