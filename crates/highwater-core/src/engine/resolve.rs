//! What becomes of each record once it is decided: a write's (or deletion's)
//! answer turned into its resolution, and each resolution put into its page's
//! commit, the counters and the dead-letter surge guard.

use super::*;

impl Runner<'_> {
    pub(super) fn finish_write(
        &mut self,
        mut job: Box<WriteJob>,
        result: Result<crate::sink::Written, SinkError>,
    ) -> Result<(), FailureCause> {
        let id = job.record.id().to_owned();
        self.busy.remove(&id);
        self.note_outcome(&result);
        let resolution = match result {
            Ok(written) if job.delete.is_some() => {
                let mut ledger = job
                    .delete
                    .take()
                    .unwrap_or_else(|| unreachable_tombstone(&id));
                ledger.dest_id = written.dest_id.or(ledger.dest_id);
                if job.soft {
                    // The destination holds this payload, marked.
                    ledger.payload_hash = job.mapped.hash.clone();
                }
                Resolution::Deleted {
                    ledger,
                    attempts: written.attempts,
                }
            }
            Ok(written) => {
                let ledger = LedgerEntry {
                    source_id: id.clone(),
                    external_id: job.mapped.external_id.clone(),
                    dest_id: written.dest_id.or(job.known_dest_id.take()),
                    version: job.record.version,
                    updated_at: job.record.updated_at(),
                    payload_hash: job.mapped.hash.clone(),
                    run_id: self.run_id.clone(),
                    deleted_at: None,
                };
                self.note_late_writes(&job, &ledger, written.unsettled_since);
                self.view.remember_written(job.seq, ledger.clone());
                Resolution::Written {
                    ledger,
                    resolves_dead_letter: job.dead_lettered,
                    attempts: written.attempts,
                }
            }
            // The destination's version precondition: it holds something newer.
            Err(SinkError::Superseded) => Resolution::Stale { ledger: None },
            Err(SinkError::Rejected { status, reason }) => {
                let letter = self.dead_letter(
                    &id,
                    DeadLetterStage::Destination,
                    match status {
                        crate::sink::http::REFUSED_IN_ANSWER => {
                            format!("destination refused it in its answer to the batch: {reason}")
                        }
                        status => format!("destination answered HTTP {status}: {reason}"),
                    },
                    &job.record.body,
                );
                Resolution::DeadLettered(letter)
            }
            Err(SinkError::Unwritable(reason) | SinkError::Refused(reason)) => {
                let letter =
                    self.dead_letter(&id, DeadLetterStage::Destination, reason, &job.record.body);
                Resolution::DeadLettered(letter)
            }
            Err(e) => return Err(FailureCause::Destination(e)),
        };
        self.resolve(job.seq, Seen::of_record(&job.record), resolution)?;
        self.spent.push(job);
        if self.spent.len() >= SPENT_BATCH
            && let Some(spent_tx) = &self.spent_tx
        {
            // Once the reading thread is gone, the batch comes back and is freed here.
            let batch = std::mem::replace(&mut self.spent, Vec::with_capacity(SPENT_BATCH));
            let _ = spent_tx.send(batch);
        }
        if self.waiting.contains_key(&id) {
            self.released.push(id);
        }
        Ok(())
    }

    /// Whether a write's outcome means it may have reached the destination.
    pub(super) fn note_outcome(&mut self, result: &Result<crate::sink::Written, SinkError>) {
        if !result.as_ref().is_err_and(SinkError::sent_nothing) {
            self.wrote = true;
        }
    }

    pub(super) fn resolve(
        &mut self,
        seq: u64,
        seen: Seen,
        resolution: Resolution,
    ) -> Result<(), FailureCause> {
        self.frontier.resolve(seq);
        let dead = matches!(resolution, Resolution::DeadLettered(_));
        let mut reason = String::new();
        let Some(page) = self.pages.get_mut(&seq) else {
            return Ok(());
        };
        // A replayed record the ledger already holds (or holds newer) has a
        // letter that is moot: it is resolved.
        let replayed = matches!(self.plan, Plan::Replay { .. }).then(|| seen.id.clone());
        if !self.event_retention.is_zero() {
            page.commit
                .events
                .push(seen.event(Some(self.pages_before + seq + 1), &resolution));
        }
        match resolution {
            Resolution::Written {
                ledger,
                resolves_dead_letter,
                ..
            } => {
                self.counters.written += 1;
                self.newest_written = self.newest_written.max(Some(ledger.updated_at));
                if resolves_dead_letter {
                    page.commit.resolved.push(ledger.source_id.clone());
                }
                page.commit.ledger.push(ledger);
            }
            Resolution::Unchanged { ledger } => {
                self.counters.unchanged += 1;
                page.commit.resolved.extend(replayed);
                // A newer version with the same payload moves the ledger on; a
                // later copy must be judged against it, not against the older row.
                if let Some(entry) = &ledger {
                    self.view.remember_written(seq, entry.clone());
                }
                page.commit.ledger.extend(ledger);
            }
            Resolution::Stale { ledger } => {
                self.counters.stale += 1;
                page.commit.resolved.extend(replayed);
                if let Some(entry) = &ledger {
                    self.view.remember_written(seq, entry.clone());
                }
                page.commit.ledger.extend(ledger);
            }
            Resolution::StillDeadLettered => self.counters.dead_lettered += 1,
            Resolution::Deleted { ledger, .. } => {
                self.counters.deleted += 1;
                // A later copy in this run is judged against the tombstone.
                self.view.remember_written(seq, ledger.clone());
                page.commit.ledger.push(ledger);
            }
            Resolution::DeadLettered(letter) => {
                self.counters.dead_lettered += 1;
                crate::obs::RecordDeadLettered {
                    sync: &self.spec.name,
                    source_id: &letter.source_id,
                    stage: letter.stage.as_str(),
                    reason: &letter.error,
                }
                .emit();
                reason = format!("{}: {}", letter.source_id, letter.error);
                // A copy read again before this commit is seen by lookups is
                // not tried again, whatever stage it failed at.
                self.view
                    .remember_dead(seq, &letter.source_id, letter.fingerprint.clone());
                page.commit.dead_letters.push(letter);
            }
        }
        if dead {
            self.latest_dead_letter.clone_from(&reason);
        }
        match self.surge.observe(dead) {
            Some((dead, window)) => Err(self.surge_failure(dead, window)),
            None => Ok(()),
        }
    }

    fn surge_failure(&self, dead: usize, window: usize) -> FailureCause {
        FailureCause::Surge {
            dead,
            window,
            limit: self.spec.budgets.dead_letter_ratio * 100.0,
            reason: self.latest_dead_letter.clone(),
        }
    }

    /// At the end of an invocation that read the source and resolved too few
    /// records to fill the dead-letter window: a surge among all of them.
    /// A replay is not judged so: its records failed before.
    pub(super) fn short_run_surge(&self) -> Option<FailureCause> {
        if matches!(self.plan, Plan::Replay { .. }) {
            return None;
        }
        let (dead, seen) = self.surge.short_run()?;
        Some(self.surge_failure(dead, seen))
    }
}

/// A delete job always carries its tombstone; this stands in should one not.
fn unreachable_tombstone(id: &str) -> LedgerEntry {
    LedgerEntry {
        source_id: id.to_owned(),
        external_id: id.to_owned(),
        dest_id: None,
        version: None,
        updated_at: Timestamp::now(),
        payload_hash: String::new(),
        run_id: String::new(),
        deleted_at: Some(Timestamp::now()),
    }
}
