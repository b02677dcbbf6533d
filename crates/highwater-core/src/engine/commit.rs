//! The run's side of the state store's commits: gathers resolved pages, their
//! ledger rows and dead letters, and announcements of writes into one commit, and
//! moves the checkpoint once the store confirms it.

use super::committer::{CommitAck, CommitJob};
use super::*;
use crate::obs::RecordsResolved;
use decide::is_older;

impl Runner<'_> {
    /// Gathers what is ready for the store into one commit: every fully resolved
    /// page (ledger rows and dead letters; the checkpoint only as far as the
    /// frontier allows) and every write waiting to be announced. Announcements
    /// alone make a commit only when `announce_now`: the writes ready to go are
    /// running out.
    pub(super) fn next_commit(&mut self, announce_now: bool, sink: &dyn Sink) -> Option<CommitJob> {
        let complete: Vec<u64> = self
            .pages
            .keys()
            .copied()
            .filter(|seq| self.frontier.is_complete(*seq))
            .collect();
        if complete.is_empty() && (self.held.is_empty() || !announce_now) {
            return None;
        }
        let mut commit = PageCommit::default();
        for seq in &complete {
            let Some(page) = self.pages.remove(seq) else {
                continue;
            };
            commit.ledger.extend(page.commit.ledger);
            commit.dead_letters.extend(page.commit.dead_letters);
            commit.resolved.extend(page.commit.resolved);
            commit.readbacks.extend(page.commit.readbacks);
            commit.events.extend(page.commit.events);
            if let Some(batch) = page.commit.unsettled {
                commit
                    .unsettled
                    .get_or_insert_with(IntentBatch::default)
                    .intents
                    .extend(batch.intents);
            }
        }
        self.staged_rows += commit.ledger.len();
        if self.staged_rows >= self.merge_rows {
            commit.merge = true;
            self.staged_rows = 0;
        }
        // A batch whose pages have all committed announced nothing that is not now
        // in the ledger or the dead letters: it goes in the same transaction.
        for (_, pages) in &mut self.batches {
            pages.retain(|seq| !complete.contains(seq));
        }
        let (retired, open) = std::mem::take(&mut self.batches)
            .into_iter()
            .partition(|(_, pages)| pages.is_empty());
        self.batches = open;
        commit.retire = retired.into_iter().map(|(id, _)| id).collect();
        let checkpoint = self.frontier.advance().map(|(pages, cursor)| {
            self.counters.pages += pages as u64;
            cursor_json(&cursor)
        });
        self.commits_sent += 1;
        let number = self.commits_sent;
        // Every write sent so far lies before the position, and lands with
        // this commit: announced in it, unless its page is committed here.
        commit.sink_position = sink.position();
        let unannounced: Vec<(u64, Intent)> = std::mem::take(&mut self.unannounced)
            .into_iter()
            .filter(|(seq, _)| !complete.contains(seq))
            .collect();
        if !unannounced.is_empty() {
            let id = format!("{}-{number}", self.invocation);
            let (pages, intents): (BTreeSet<u64>, Vec<Intent>) = unannounced.into_iter().unzip();
            self.batches.push((id.clone(), pages));
            commit.announce = Some(IntentBatch { id, intents });
        }
        if let Some(batch) = &mut commit.unsettled {
            batch.id = format!("unsettled-{}-{number}", self.invocation);
        }
        // The next page's writes are about as many: room for them at once.
        let room = self.held.len();
        let held = std::mem::replace(&mut self.held, Vec::with_capacity(room));
        if !held.is_empty() {
            let id = format!("{}-{number}", self.invocation);
            self.batches
                .push((id.clone(), held.iter().map(|job| job.seq).collect()));
            let intents = held.iter().map(|job| job.intent()).collect();
            commit.announce = Some(IntentBatch { id, intents });
            self.announced.push_back((number, held));
        }
        Some(CommitJob {
            number,
            pages: complete,
            commit,
            checkpoint,
            counters: self.counters,
        })
    }

    /// A commit is durable: the store itself now knows what those pages resolved,
    /// and the writes it announced may go — but not those another run holds a
    /// newer version of (stale), and those behind another run's write that may
    /// still land go as over a write of their own that may (read back after it,
    /// and a create waits for it).
    pub(super) fn committed(&mut self, ack: &CommitAck) -> Result<(), FailureCause> {
        let confirmed = self.confirmed.fetch_add(1, Ordering::AcqRel) + 1;
        let pages = &ack.pages;
        self.view.committed(pages, ack.visible, confirmed);
        while self
            .announced
            .front()
            .is_some_and(|(n, _)| *n <= ack.number)
        {
            let Some((number, jobs)) = self.announced.pop_front() else {
                break;
            };
            for mut job in jobs {
                let id = job.record.id();
                if number == ack.number && ack.announced.refused.contains(id) {
                    self.finish_write(job, Err(SinkError::Superseded))?;
                    continue;
                }
                if number == ack.number
                    && let Some(other) = ack.announced.behind.get(id)
                {
                    job.unsettled_until = Some(self.behind(other)).max(job.unsettled_until);
                }
                self.dispatch(job);
            }
        }
        if !pages.is_empty() {
            self.emit_resolved(ack.counters);
            self.progress.send_replace(self.snapshot());
        }
        Ok(())
    }

    /// Another run's write of a record, not newer than the one about to go, may
    /// still land: it is unsettled for this run too. One left by a process that
    /// is gone lands within the late-write window from now, if ever; one of a
    /// run that is running goes out when that run gets to it, so the record is
    /// read back only once that run has settled it (`settle_readbacks` asks the
    /// store), and the late-write window after.
    fn behind(&mut self, other: &Behind) -> Timestamp {
        let now = Timestamp::now();
        if other.live {
            self.behind_live.insert(other.intent.source_id.clone());
        }
        let settles_at = other
            .intent
            .settles_at
            .unwrap_or_else(|| now.saturating_add(signed(self.late_window)).unwrap_or(now));
        let entry = self
            .unsettled
            .entry(other.intent.source_id.clone())
            .or_insert(Unsettled {
                version: other.oldest.0,
                updated_at: other.oldest.1,
                settles_at,
            });
        let (version, updated_at) = other.oldest;
        if is_older(version, updated_at, entry.version, entry.updated_at) {
            entry.version = version;
            entry.updated_at = updated_at;
        }
        entry.settles_at = entry.settles_at.max(settles_at);
        entry.settles_at
    }

    /// Says what was resolved since it was last said: in the logs and metrics.
    /// Counts what `counters` holds beyond what was counted: only what a
    /// commit stored, so that a run stopped between a page's resolution and
    /// its commit does not count the records the next run resolves again.
    pub(super) fn emit_resolved(&mut self, counters: Counters) {
        let since = counters.since(&self.emitted);
        self.emitted = counters;
        RecordsResolved {
            sync: &self.spec.name,
            run_id: &self.run_id,
            kind: self.plan.kind().as_str(),
            pages: counters.pages,
            read: since.read,
            written: since.written,
            unchanged: since.unchanged,
            stale: since.stale,
            dead_lettered: since.dead_lettered,
            deleted: since.deleted,
            newest_written: self.newest_written,
        }
        .emit();
    }
}
