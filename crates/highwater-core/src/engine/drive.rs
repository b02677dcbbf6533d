//! The run's loop: reads pages ahead on their own thread and, until the source
//! is exhausted, a budget says stop or something fails, admits each page,
//! sends its writes, takes their results and commits what is resolved.

use super::*;
use crate::state::Floors;

impl Runner<'_> {
    /// Reads pages (ahead, in their own future) and resolves them until the source
    /// is exhausted, a budget says stop, or something fails. Writes from several
    /// pages overlap, so one slow record does not hold up the rest; the frontier
    /// keeps the checkpoint behind the oldest unresolved record.
    pub(super) async fn drive(
        &mut self,
        window: Window,
        cursor: Cursor,
        stop: &Stop,
        max_pages: Option<u64>,
    ) -> Result<RunOutcome, FailureCause> {
        // Lookups read the merged ledger only: what an earlier invocation staged
        // goes in before the first one.
        self.store.merge_staged(&self.spec.name).await?;
        let floors = self
            .store
            .floors(&self.spec.name, Some(&self.run_id))
            .await?;
        for readback in self.store.readbacks(&self.spec.name, &self.run_id).await? {
            self.readbacks.insert(readback.source_id.clone(), readback);
        }
        let source_api = Arc::new(Api::new(
            &self.spec.name,
            "source",
            self.spec.source.http.clone(),
            self.spec.retry,
            1,
        )?);
        let keeper: Arc<dyn crate::auth::TokenKeeper> = Arc::new(self.store.clone());
        source_api.keep_tokens_with(Arc::clone(&keeper));
        let delete_path = self
            .spec
            .deletes
            .as_ref()
            .and_then(|d| d.delete_path.clone());
        let sink = self
            .spec
            .destination
            .open(
                &self.spec.name,
                self.spec.retry,
                delete_path,
                Some(self.store),
            )
            .map_err(FailureCause::Destination)?;
        sink.keep_tokens_with(keeper);
        self.late_window = sink.late_write_window();
        self.refuses_older = sink.refuses_older_writes();
        self.floors_left(floors);
        let outcome = self
            .drive_with(&source_api, &sink, window, cursor, stop, max_pages)
            .await;
        // A completed run finished its sink before completing; after a stop or
        // a failure what was flushed is compacted too, if it can be: not
        // while a commit's outcome is unknown, since the sink drops what no
        // commit it knows of covers, nor before the sink took up where the
        // last commit left it.
        if !matches!(outcome, Ok(RunOutcome::Completed))
            && self.sink_resumed
            && !self.commits_in_doubt
            && let Err(e) = sink.finish().await
        {
            tracing::warn!(sync = %self.spec.name, error = %e, "could not finish writing the destination");
        }
        // Counted however the invocation ended: the reading thread's requests too.
        self.retries = source_api.retries().plus(&sink.retries());
        for unpaced in [source_api.unpaced(), sink.unpaced()].into_iter().flatten() {
            let learned = unpaced
                .learned
                .map(|rate| format!(" (the pace its 429s taught: {rate:.2} requests/s)"))
                .unwrap_or_default();
            tracing::warn!(
                sync = %self.spec.name,
                origin = %unpaced.origin,
                refused = unpaced.refused,
                "the {} answered 429 (too many requests) {} times, and no `rate_limit` is set for {}: set one below what it allows, and its requests are spaced instead of refused{learned}",
                unpaced.api,
                unpaced.refused,
                unpaced.origin,
            );
        }
        outcome
    }

    /// Takes the writes announced before this invocation as floors, and
    /// those that may still land as unsettled: a write announced before a
    /// crash left at the latest when that process died, before this one
    /// started, so it settles within the late-write window from now. Each is
    /// kept at the oldest version announced of its record, so that writing
    /// the newest again still reads the record back after the older lands.
    fn floors_left(&mut self, floors: Floors) {
        let Floors { newest, oldest } = floors;
        let started = Timestamp::now();
        let late = started
            .saturating_add(signed(self.late_window))
            .unwrap_or(started);
        for floor in newest.values() {
            let settles_at = floor.settles_at.unwrap_or(late);
            if settles_at > started {
                let (version, updated_at) = oldest
                    .get(&floor.source_id)
                    .copied()
                    .unwrap_or((floor.version, floor.updated_at));
                self.unsettled.insert(
                    floor.source_id.clone(),
                    Unsettled {
                        version,
                        updated_at,
                        settles_at,
                    },
                );
            }
        }
        self.floors = newest;
    }

    async fn drive_with(
        &mut self,
        source_api: &Arc<Api>,
        sink: &Arc<dyn Sink>,
        window: Window,
        cursor: Cursor,
        stop: &Stop,
        max_pages: Option<u64>,
    ) -> Result<RunOutcome, FailureCause> {
        // What a crash left past the last commit's position goes first.
        let position = self.store.sink_position(&self.spec.name).await?;
        sink.resume(position.as_deref())
            .await
            .map_err(FailureCause::Destination)?;
        self.sink_resumed = true;
        self.announce = if sink.lands_with_the_commit() {
            Announce::Never
        } else if sink.position().is_some()
            && !self
                .store
                .announced_elsewhere(&self.spec.name, &self.run_id)
                .await?
        {
            Announce::WithTheCommit
        } else {
            Announce::First
        };
        let (pages_tx, pages_rx) = mpsc::channel::<Delivery>(PREFETCH);
        // The reading thread stops when this loop is done with it, however it ends.
        let (reading_stop, reading_guard) = stop.child();
        let (spent_tx, spent_rx) = mpsc::unbounded_channel();
        self.spent_tx = Some(spent_tx);
        self.reading_since = Timestamp::now();
        let mut window = window;
        let source = match (&self.plan, &self.spec.deletes) {
            // A full run must see every id the source has: no upper bound is
            // sent, and nothing is dropped past the watermark.
            (Plan::Full { .. }, _) => {
                window.watermark = Timestamp::MAX;
                crate::config::SourceSpec {
                    upper_bound_param: None,
                    sorted: false,
                    ..self.spec.source.clone()
                }
            }
            (Plan::Deletes, Some(deletes)) => match &deletes.feed {
                crate::config::DeleteFeed::Endpoint(feed) => (**feed).clone(),
                crate::config::DeleteFeed::Marker { .. } | crate::config::DeleteFeed::Absent => {
                    return Err(FailureCause::NoDeletesFeed(self.spec.name.clone()));
                }
            },
            (Plan::Deletes, None) => {
                return Err(FailureCause::NoDeletesFeed(self.spec.name.clone()));
            }
            _ => self.spec.source.clone(),
        };
        ReadAhead {
            api: Arc::clone(source_api),
            sink: Arc::clone(sink),
            source,
            plan: self.plan.clone(),
            mapping: self.spec.mapping.clone(),
            window,
            cursor,
            store: self.store.clone(),
            sync: self.spec.name.clone(),
            stop: reading_stop,
            confirmed: Arc::clone(&self.confirmed),
        }
        .spawn(pages_tx, spent_rx)
        .map_err(FailureCause::Thread)?;
        let concurrency = sink.concurrency();
        // Every write carries its request's timeout timer, and tokio wakes its own
        // driver (a system call) whenever a new timer is due before all those it
        // holds, as each write's would be. A timer kept due earlier than any of
        // them saves that call on every write. (Below 100 ms of timeout the timer
        // would wake the loop too often to be worth it.)
        let lead = sink.timer_lead();
        let mut inputs = Inputs {
            pages: pages_rx,
            slots: WriteSlots::spawn(sink, stop, self.store, &self.unclaimed, concurrency),
            committer: Committer::spawn(
                self.store.clone(),
                self.spec.name.clone(),
                self.run_id.clone(),
                Arc::clone(sink),
            )
            .map_err(FailureCause::Thread)?,
            stop: stop.clone(),
            fired: Box::pin({
                let stop = stop.clone();
                async move { stop.fired().await }
            }),
            leading: Box::pin(tokio::time::sleep(lead)),
            lead,
        };
        let outcome = loop {
            // Group commit: whatever accumulated while the last commits ran goes in one.
            let runway =
                self.unclaimed.len() + self.announced.iter().map(|(_, j)| j.len()).sum::<usize>();
            let announce_now = runway < RUNWAY_PER_SLOT * concurrency;
            if inputs.committer.has_room()
                && let Some(job) = self.next_commit(announce_now, sink.as_ref())
                && let Err(e) = inputs.committer.send(job)
            {
                break Err(e);
            }
            let committing = inputs.committer.pending() > 0;
            // Records held back below a floor wait until everything else is
            // done; then the destination says whether the floor's write arrived.
            if self.source_done && !committing && self.only_held_back_left() {
                if let Err(e) = self.settle_held_back(sink.as_ref(), stop).await {
                    break Err(e);
                }
                continue;
            }
            if self.source_done
                && self.pages.is_empty()
                && !committing
                && self.sweeps()
                && !self.swept
            {
                self.swept = true;
                if let Err(e) = self.sweep().await {
                    break Err(e);
                }
                continue;
            }
            if self.source_done && self.pages.is_empty() && !committing {
                if let Some(surge) = self.short_run_surge() {
                    break Err(surge);
                }
                break self.complete(sink.as_ref(), stop).await;
            }
            if let Some(reason) = stop.reason() {
                break Ok(RunOutcome::Stopped(reason));
            }
            let budget_left = max_pages.is_none_or(|max| self.admitted < max);
            if !budget_left && self.pages.is_empty() {
                break Ok(RunOutcome::Stopped(StopReason::MaxPages));
            }
            let admit = !self.source_done && budget_left && self.room_for_a_page();
            let event = inputs.next(admit).await;
            match self.handle(event) {
                Ok(None) => {}
                Ok(Some(outcome)) => break Ok(outcome),
                Err(e) => break Err(e),
            }
            if let Err(e) = self.release_waiting().await {
                break Err(e);
            }
        };
        // Writes no slot has taken are not sent.
        self.in_flight -= self.unclaimed.drain().count();
        // A stop keeps what is already resolved: the commits in hand finish first.
        if matches!(outcome, Ok(RunOutcome::Stopped(_))) {
            // Announcements are dropped: those writes are not sent.
            self.held.clear();
            if let Some(job) = self.next_commit(true, sink.as_ref()) {
                inputs.committer.send(job)?;
            }
            let acks = inputs.committer.finish().await;
            self.commits_in_doubt = inputs.committer.in_doubt();
            for ack in acks? {
                self.committed(&ack)?;
            }
        }
        // A failure may leave writes out: wait a little for their answers, since
        // whether anything reached the destination decides if the run is kept.
        if outcome.is_err() {
            let mut grace = std::pin::pin!(tokio::time::sleep(Duration::from_secs(5)));
            while self.in_flight > 0 {
                tokio::select! {
                    answer = inputs.slots.answer() => match answer {
                        Some((_, result)) => {
                            self.in_flight -= 1;
                            self.note_outcome(&result);
                        }
                        None => {
                            self.wrote = true;
                            break;
                        }
                    },
                    () = &mut grace => {
                        self.wrote = true;
                        break;
                    }
                }
            }
        }
        // Commits already sent land or fail before the sink is finished: one
        // on its way into the store when the run failed, dropped unanswered,
        // still lands on the store's own thread, and the sink would cut off
        // the writes it covers. Their announced writes are not sent.
        if outcome.is_err() {
            let drained = tokio::time::timeout(Duration::from_secs(10), inputs.committer.finish());
            let _ = drained.await;
            self.commits_in_doubt = inputs.committer.in_doubt();
        }
        // The reading thread lets go of the store before the run returns.
        drop(reading_guard);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while inputs.pages.recv().await.is_some() {}
        })
        .await;
        outcome
    }

    fn room_for_a_page(&self) -> bool {
        room_for_a_page(
            self.pages.len(),
            self.pages.values().map(|p| p.records).sum(),
        )
    }
}

/// Whether another page may join `pages` admitted pages holding `records`
/// records: by [`PAGES_IN_FLIGHT`] and [`RECORDS_IN_FLIGHT`].
fn room_for_a_page(pages: usize, records: usize) -> bool {
    let (least, most) = PAGES_IN_FLIGHT;
    pages < least || (pages < most && records < RECORDS_IN_FLIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages admitted one after another, each of `size` records, until there
    /// is no room: how many are in flight at most.
    fn in_flight(size: usize) -> usize {
        let mut pages = 0;
        while room_for_a_page(pages, pages * size) {
            pages += 1;
        }
        pages
    }

    #[test]
    fn large_pages_stay_four_and_small_ones_overlap_up_to_sixteen() {
        assert_eq!(in_flight(1000), 4);
        assert_eq!(in_flight(5000), 4);
        assert_eq!(in_flight(500), 8);
        assert_eq!(in_flight(100), 16);
        assert_eq!(in_flight(1), 16);
        assert_eq!(in_flight(0), 16);
    }
}
