//! Owns one run of a sync: fixes and stores the watermark before the first fetch (or
//! resumes the open run with its watermark and cursor), maps each page, checks every
//! record against the ledger, writes what must be written, and advances the
//! checkpoint through the [`Frontier`] once every record of a page is resolved. The
//! high-water mark moves only when the run completes.
//! Invariants: the checkpoint never passes an unresolved record; a record is never
//! written over a newer version; a failure before any progress leaves nothing to
//! resume (the run history keeps it, failed). Data flows one way: source → engine
//! → sink → state.

mod ahead;
mod commit;
mod committer;
pub mod decide;
mod dry;
mod events;
pub mod frontier;
mod full;
mod invocation;
mod plan;
mod reconcile;
mod resolve;
mod route;
mod settle;
mod slots;
mod story;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::SyncSpec;
use crate::http::{Api, HttpError};
use crate::mapping::{MappedRecord, map_record};
use crate::obs::{RetryCounts, RunEnd, RunEnded};
use crate::record::SourceRecord;
use crate::sink::{Encoded, Sink, SinkError};
use crate::source::{Cursor, Extracted, SourceError, Window};
use crate::state::{
    Behind, Counters, DeadLetter, DeadLetterStage, Intent, IntentBatch, InvocationEnd,
    InvocationOutcome, Known, LedgerEntry, PageCommit, Readback, RecordAction, RecordEvent,
    RunKind, RunRow, RunStatus, StateError, Store,
};
use crate::stop::{Stop, StopReason};
use ahead::{Arrival, Delivery, ReadAhead, ReadPage};
use committer::Committer;
use decide::{Decision, DeleteDecision, SurgeGuard, decide, decide_delete};
pub use dry::{DryRunReport, DrySamples, UpdateSample, dry_run};
use events::{Event, Inputs};
pub use frontier::Frontier;
pub use invocation::run;
pub use plan::Plan;
pub use reconcile::{Mismatch, ReconcileReport, Sample, reconcile, reconcile_window};
use route::Routed;
use settle::Compare;
use slots::WriteSlots;
use story::Seen;
use view::LedgerView;

/// Pages fetched ahead of those being written: the source keeps reading while the
/// destination works, and a slow destination still pushes back on the source.
const PREFETCH: usize = 2;
/// Pages whose records may be in flight at once. A straggling write holds the
/// checkpoint back, not the writes of the next pages.
const PAGES_IN_FLIGHT: usize = 4;
/// Finished writes handed back to the reading thread at once, to be freed there.
const SPENT_BATCH: usize = 64;
/// Writes per unit of concurrency that, announced and ready to go, outlast a
/// commit: while at least that many wait, new announcements ride along with the
/// next page's commit instead of costing a commit of their own.
const RUNWAY_PER_SLOT: usize = 128;

/// Limits for one invocation; `None` falls back to the sync's `[budgets]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub max_runtime: Option<Duration>,
    pub max_pages: Option<u64>,
    /// Ledger rows staged between merges; `None` is
    /// [`DEFAULT_MERGE_ROWS`](crate::config::DEFAULT_MERGE_ROWS).
    pub merge_rows: Option<usize>,
    /// How long record events are kept; `None` is
    /// [`DEFAULT_EVENT_RETENTION`](crate::config::DEFAULT_EVENT_RETENTION).
    pub event_retention: Option<Duration>,
}

/// What a run did, as far as it got.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub sync: String,
    pub run_id: String,
    pub resumed: bool,
    pub window: Window,
    pub outcome: RunOutcome,
    /// Totals over every invocation of this run.
    pub counters: Counters,
    /// This invocation's share of the totals.
    pub session: Counters,
    pub retries: u64,
    pub elapsed: Duration,
    /// Records a late write had set back, written again after reading them back.
    pub repaired: Vec<String>,
    /// Records written again while an older write of theirs could still land,
    /// which the destination could not be read back to check (no read path).
    pub unverified: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    /// Stopped at a checkpoint; the run stays open and the next invocation resumes it.
    Stopped(StopReason),
}

/// Live progress for a progress bar.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub run_id: String,
    pub resumed: bool,
    pub counters: Counters,
}

/// A run that could not go on. The run stays open at its last checkpoint when it
/// had made progress (`resumable`); otherwise it is kept, failed, for the history
/// only. `run_id` is `None` when the run could not even be opened.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct RunFailure {
    pub cause: FailureCause,
    pub run_id: Option<String>,
    pub counters: Counters,
    pub resumable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FailureCause {
    #[error("source: {0}")]
    Source(SourceError),
    #[error("destination: {0}")]
    Destination(SinkError),
    #[error(
        "halted: {dead} of the last {window} records were dead-lettered, more than {limit:.0}% of them; the mapping or the destination rejects nearly everything. Latest reason: {reason}"
    )]
    Surge {
        dead: usize,
        window: usize,
        limit: f64,
        reason: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot build an HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot start the reading thread: {0}")]
    Thread(std::io::Error),
    #[error("the reading thread stopped before the source was exhausted")]
    ReaderGone,
    #[error(
        "{} record(s) cannot be confirmed, so the run stops before completing (the next attempt reads them again): {}",
        .0.len(),
        .0.join("; ")
    )]
    Unconfirmed(Vec<String>),
    #[error(
        "a {kind} run over {} → {watermark} is open: finish it with the same range, or reset it, before another",
        .lower.map_or_else(|| "the start".to_owned(), |t| t.to_string())
    )]
    OtherRunOpen {
        kind: RunKind,
        lower: Option<Timestamp>,
        watermark: Timestamp,
    },
    #[error("a {0} run does not read the source: there is no dry run of it")]
    NotForDryRun(RunKind),
    #[error("sync {0:?} has no deletes endpoint: set `path` in its [sync.deletes]")]
    NoDeletesFeed(String),
    #[error(
        "refusing to delete {count} of the {total} records the ledger holds ({:.1}%), more than full_delete_limit ({:.1}%): nothing was deleted. If the source really no longer has them, run again with --allow-mass-delete",
        *.count as f64 * 100.0 / (*.total).max(1) as f64,
        .limit * 100.0
    )]
    MassDelete {
        count: usize,
        total: usize,
        limit: f64,
    },
}

impl FailureCause {
    /// Whether the run's failure comes from a stop request rather than a fault.
    fn stopped(&self) -> Option<StopReason> {
        match self {
            FailureCause::Source(SourceError::Http(HttpError::Stopped(r)))
            | FailureCause::Destination(SinkError::Http(HttpError::Stopped(r))) => Some(*r),
            FailureCause::Source(SourceError::Http(HttpError::Auth(
                crate::auth::AuthError::Stopped(r),
                _,
            )))
            | FailureCause::Destination(SinkError::Http(HttpError::Auth(
                crate::auth::AuthError::Stopped(r),
                _,
            ))) => Some(*r),
            _ => None,
        }
    }
}

struct Runner<'a> {
    spec: &'a SyncSpec,
    store: &'a Store,
    run_id: String,
    counters: Counters,
    frontier: Frontier<Cursor>,
    surge: SurgeGuard,
    progress: &'a watch::Sender<Progress>,
    resumed: bool,
    /// Pages admitted and not yet committed, with what the store knew of their ids.
    pages: BTreeMap<u64, PageState>,
    /// Announced writes, durable and waiting for a free write slot; the slots
    /// take them off in order.
    ready: flume::Sender<WriteJob>,
    /// The queue's other end, to count and withdraw what no slot took yet.
    unclaimed: flume::Receiver<WriteJob>,
    /// Writes handed to the slots whose outcome has not come back.
    in_flight: usize,
    /// Ids with a write queued or in flight: a later copy of the same record waits
    /// for it, so versions reach the destination in order.
    busy: HashSet<String>,
    waiting: HashMap<String, VecDeque<(u64, Arrival)>>,
    /// What this invocation resolved that the store's lookups may not show yet.
    view: LedgerView,
    /// Ledger rows sent to be staged since the last merge was asked for.
    staged_rows: usize,
    /// Staged rows that make the next commit merge them.
    merge_rows: usize,
    /// Writes announced by earlier invocations and never known to have settled:
    /// the destination may hold those versions, so nothing older goes over them.
    floors: HashMap<String, Intent>,
    /// Records below a floor the ledger does not confirm, held back (unresolved)
    /// until the destination is read to see whether the floor's write arrived.
    held_back: Vec<HeldBack>,
    /// Per source id, the oldest write that may still land (a floor, or a write
    /// of this invocation that got no clear answer) and when all such will have
    /// landed or never will.
    unsettled: HashMap<String, Unsettled>,
    /// Records written again while an older write of theirs may still land, to
    /// read back before the run completes; the newest write per source id.
    readbacks: HashMap<String, Readback>,
    /// Records written behind another run's write that was still to go out:
    /// read back only once that run has settled it.
    behind_live: HashSet<String>,
    /// External id → the source id whose write holds it in this invocation,
    /// until lookups find it in the ledger (`let_go_holders`).
    holders: HashMap<String, String>,
    /// Holders the view let go, each batch with the newest page admitted
    /// before: forgotten once that page and every older one are committed.
    retiring_holders: VecDeque<(u64, Vec<(String, String)>)>,
    /// How a destination object says which version it holds.
    compare: Compare,
    /// How long a write without a clear answer may still land.
    late_window: Duration,
    /// The destination refuses older writes itself: nothing needs reading back.
    refuses_older: bool,
    repaired: Vec<String>,
    unverified: Vec<String>,
    /// Names this invocation's intent batches apart from earlier ones'.
    invocation: String,
    /// Writes to announce in the next commit; they go out once it is durable.
    held: Vec<WriteJob>,
    /// Intent batches in the store, with the pages not yet committed that they
    /// cover: once all of those have committed, the batch is retired.
    batches: Vec<(String, BTreeSet<u64>)>,
    /// Writes whose announcement is being committed, by commit number.
    announced: VecDeque<(u64, Vec<WriteJob>)>,
    commits_sent: u64,
    /// Whether anything may have reached the destination in this invocation.
    wrote: bool,
    /// Pages admitted by this invocation.
    admitted: u64,
    /// Pages of the run committed before this invocation: page numbers in
    /// events count from the run's first.
    pages_before: u64,
    /// The reading thread said the source has no more pages.
    source_done: bool,
    /// Commits the store confirmed; the reading thread reads it with each lookup.
    confirmed: Arc<AtomicU64>,
    /// Ids whose write just ended while later copies wait.
    released: Vec<String>,
    /// Requests this invocation retried, by class.
    retries: RetryCounts,
    /// What the run is for: its kind, and where its records come from.
    plan: Plan,
    /// The counters as the logs and metrics were last told them.
    emitted: Counters,
    /// The newest `updated_at` this invocation wrote: how far behind the source
    /// the destination is.
    newest_written: Option<Timestamp>,
    /// Events of what the run does at its end, past its last page.
    closing_events: Vec<RecordEvent>,
    /// Record events older than this are pruned when the run completes; zero
    /// keeps none, and none are recorded.
    event_retention: Duration,
    /// Finished writes, whose records the reading thread allocated: it frees them
    /// too, in batches, so the write path does not spend its time in `free`.
    spent: Vec<WriteJob>,
    spent_tx: Option<mpsc::UnboundedSender<Vec<WriteJob>>>,
    /// A full run: every source id the source listed, and whether the ids it
    /// no longer lists have been swept into deletions yet.
    seen: HashSet<String>,
    swept: bool,
    /// Ids a full run deletes because the source no longer lists them.
    vanished: HashSet<String>,
    /// When this invocation began reading: a record a full run did not find
    /// anywhere in the source is gone as of then (a copy written later, of a
    /// record re-created since, is newer than the deletion).
    reading_since: Timestamp,
}

struct PageState {
    commit: PageCommit,
    known: Known,
}

/// A record held back below an unconfirmed floor.
struct HeldBack {
    seq: u64,
    arrival: Arrival,
    floor: Intent,
}

/// The oldest write of a record that may still land, and when it settles.
#[derive(Debug, Clone, Copy)]
struct Unsettled {
    version: Option<i64>,
    updated_at: Timestamp,
    settles_at: Timestamp,
}

/// A record on its way to the destination.
pub(super) struct WriteJob {
    seq: u64,
    record: SourceRecord,
    mapped: MappedRecord,
    known_dest_id: Option<String>,
    encoded: Option<Encoded>,
    /// The record has an unresolved dead letter, which a successful write resolves.
    dead_lettered: bool,
    /// An earlier write of the record may still land until then.
    unsettled_until: Option<Timestamp>,
    /// A delete instead of a write: the tombstone the ledger keeps once the
    /// destination has let go of the record.
    delete: Option<LedgerEntry>,
    /// The delete is a soft delete: the record is written, with the sync's
    /// `soft_delete` fields set, and then tombstoned.
    soft: bool,
}

/// What became of one record.
enum Resolution {
    Written {
        ledger: LedgerEntry,
        resolves_dead_letter: bool,
        /// Requests the write took.
        attempts: u32,
    },
    Unchanged {
        ledger: Option<LedgerEntry>,
    },
    /// Older than what the destination holds; with a ledger row when reading the
    /// destination is what showed it.
    Stale {
        ledger: Option<LedgerEntry>,
    },
    DeadLettered(DeadLetter),
    StillDeadLettered,
    /// Deleted at the destination (`attempts` requests), or never there: the
    /// ledger keeps the tombstone.
    Deleted {
        ledger: LedgerEntry,
        attempts: u32,
    },
}

impl<'a> Runner<'a> {
    fn new(
        spec: &'a SyncSpec,
        store: &'a Store,
        run_id: String,
        counters: Counters,
        resumed: bool,
        merge_rows: usize,
        progress: &'a watch::Sender<Progress>,
    ) -> Self {
        let (ready, unclaimed) = flume::unbounded();
        Runner {
            spec,
            store,
            run_id,
            counters,
            frontier: Frontier::default(),
            surge: SurgeGuard::new(
                spec.budgets.dead_letter_ratio,
                spec.budgets.dead_letter_window,
            ),
            progress,
            resumed,
            pages: BTreeMap::new(),
            ready,
            unclaimed,
            in_flight: 0,
            busy: HashSet::new(),
            waiting: HashMap::new(),
            view: LedgerView::default(),
            staged_rows: 0,
            merge_rows: merge_rows.max(1),
            floors: HashMap::new(),
            held_back: Vec::new(),
            unsettled: HashMap::new(),
            readbacks: HashMap::new(),
            holders: HashMap::new(),
            retiring_holders: VecDeque::new(),
            behind_live: HashSet::new(),
            compare: Compare::for_sync(spec),
            late_window: Duration::ZERO,
            refuses_older: false,
            repaired: Vec::new(),
            unverified: Vec::new(),
            invocation: uuid::Uuid::now_v7().simple().to_string(),
            held: Vec::new(),
            batches: Vec::new(),
            announced: VecDeque::new(),
            commits_sent: 0,
            wrote: false,
            admitted: 0,
            pages_before: counters.pages,
            source_done: false,
            confirmed: Arc::new(AtomicU64::new(0)),
            released: Vec::new(),
            closing_events: Vec::new(),
            retries: RetryCounts::default(),
            plan: Plan::Incremental,
            emitted: counters,
            newest_written: None,
            event_retention: crate::config::DEFAULT_EVENT_RETENTION,
            spent: Vec::with_capacity(SPENT_BATCH),
            seen: HashSet::new(),
            swept: false,
            vanished: HashSet::new(),
            reading_since: Timestamp::UNIX_EPOCH,
            spent_tx: None,
        }
    }

    fn snapshot(&self) -> Progress {
        Progress {
            run_id: self.run_id.clone(),
            resumed: self.resumed,
            counters: self.counters,
        }
    }

    /// Reads pages (ahead, in their own future) and resolves them until the source
    /// is exhausted, a budget says stop, or something fails. Writes from several
    /// pages overlap, so one slow record does not hold up the rest; the frontier
    /// keeps the checkpoint behind the oldest unresolved record.
    async fn drive(
        &mut self,
        window: Window,
        cursor: Cursor,
        stop: &Stop,
        max_pages: Option<u64>,
    ) -> Result<RunOutcome, FailureCause> {
        // Lookups read the merged ledger only: what an earlier invocation staged
        // goes in before the first one.
        self.store.merge_staged(&self.spec.name).await?;
        self.floors = self
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
        let outcome = self
            .drive_with(&source_api, &sink, window, cursor, stop, max_pages)
            .await;
        // A completed run finished its sink before completing; after a stop or
        // a failure what was flushed is compacted too, if it can be.
        if !matches!(outcome, Ok(RunOutcome::Completed))
            && let Err(e) = sink.finish().await
        {
            tracing::warn!(sync = %self.spec.name, error = %e, "could not finish writing the destination");
        }
        // Counted however the invocation ended: the reading thread's requests too.
        self.retries = source_api.retries().plus(&sink.retries());
        outcome
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
        // A write announced before a crash left at the latest when that process
        // died, before this one started: it settles within the window from now.
        self.late_window = sink.late_write_window();
        self.refuses_older = sink.refuses_older_writes();
        let late = signed(self.late_window);
        let started = Timestamp::now();
        for floor in self.floors.values() {
            let settles_at = floor
                .settles_at
                .unwrap_or_else(|| started.saturating_add(late).unwrap_or(started));
            if settles_at > started {
                self.unsettled.insert(
                    floor.source_id.clone(),
                    Unsettled {
                        version: floor.version,
                        updated_at: floor.updated_at,
                        settles_at,
                    },
                );
            }
        }
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
            slots: WriteSlots::spawn(sink, stop, &self.unclaimed, concurrency),
            committer: Committer::spawn(
                self.store.clone(),
                self.spec.name.clone(),
                self.run_id.clone(),
                Arc::clone(sink),
            ),
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
                && let Some(job) = self.next_commit(announce_now)
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
                break self.complete(sink.as_ref(), stop).await;
            }
            if let Some(reason) = stop.reason() {
                break Ok(RunOutcome::Stopped(reason));
            }
            let budget_left = max_pages.is_none_or(|max| self.admitted < max);
            if !budget_left && self.pages.is_empty() {
                break Ok(RunOutcome::Stopped(StopReason::MaxPages));
            }
            let admit = !self.source_done && budget_left && self.pages.len() < PAGES_IN_FLIGHT;
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
            if let Some(job) = self.next_commit(true) {
                inputs.committer.send(job)?;
            }
            for ack in inputs.committer.finish().await? {
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
        // The reading thread lets go of the store before the run returns.
        drop(reading_guard);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while inputs.pages.recv().await.is_some() {}
        })
        .await;
        outcome
    }

    /// Reacts to one event. Plain synchronous bookkeeping: what needs the store
    /// or the network is left for the loop (`release_waiting`, the settle phases).
    fn handle(&mut self, event: Event) -> Result<Option<RunOutcome>, FailureCause> {
        match event {
            Event::Page(read) => {
                self.admitted += 1;
                self.admit(read)?;
            }
            Event::SourceDone => self.source_done = true,
            Event::Answer((job, result)) => {
                self.in_flight -= 1;
                self.finish_write(job, result)?;
            }
            Event::Committed(ack) => self.committed(&ack)?,
            Event::Stop(reason) => return Ok(Some(RunOutcome::Stopped(reason))),
            Event::Failed(cause) => return Err(cause),
        }
        Ok(None)
    }

    /// Ends the run once every page is committed: reads back what must be, then
    /// completes the run with the writes that may still land.
    async fn complete(&mut self, sink: &dyn Sink, stop: &Stop) -> Result<RunOutcome, FailureCause> {
        self.settle_readbacks(sink, stop).await?;
        // The destination holds every write in its final form before the run
        // says so (a file compacts its log).
        sink.finish().await.map_err(FailureCause::Destination)?;
        if !self.closing_events.is_empty() {
            let commit = PageCommit {
                events: std::mem::take(&mut self.closing_events),
                ..PageCommit::default()
            };
            self.store
                .commit_page(&self.spec.name, &self.run_id, &commit, None, &self.counters)
                .await?;
        }
        let now = Timestamp::now();
        let unsettled: Vec<Intent> = self
            .unsettled
            .iter()
            .filter(|(_, u)| u.settles_at > now)
            .map(|(id, u)| Intent {
                source_id: id.clone(),
                version: u.version,
                updated_at: u.updated_at,
                settles_at: Some(u.settles_at),
            })
            .collect();
        self.store
            .complete_run(
                &self.run_id,
                &cursor_json(&Cursor::End),
                &self.counters,
                &unsettled,
            )
            .await?;
        // The run is complete whatever pruning does: a failure only keeps
        // events longer.
        let cutoff = now
            .checked_sub(signed(self.event_retention))
            .unwrap_or(Timestamp::MIN);
        if let Err(e) = self.store.prune_events(&self.spec.name, cutoff).await {
            tracing::warn!(sync = %self.spec.name, error = %e, "could not prune old record events");
        }
        Ok(RunOutcome::Completed)
    }

    /// Later copies of records whose write just ended may go now — in order, each
    /// decided against what the store and this run know at this moment.
    async fn release_waiting(&mut self) -> Result<(), FailureCause> {
        while let Some(id) = self.released.pop() {
            while !self.busy.contains(&id) {
                let Some(queue) = self.waiting.get_mut(&id) else {
                    break;
                };
                let next = queue.pop_front();
                if queue.is_empty() {
                    self.waiting.remove(&id);
                }
                let Some((seq, arrival)) = next else { break };
                self.refresh_known(seq, &id).await?;
                self.route(seq, arrival)?;
            }
        }
        Ok(())
    }

    /// Re-reads one id for a page whose snapshot was taken before later commits.
    async fn refresh_known(&mut self, seq: u64, id: &str) -> Result<(), FailureCause> {
        let fresh = self.store.known(&self.spec.name, &[id], &[]).await?;
        if let Some(page) = self.pages.get_mut(&seq) {
            match fresh.ledger.get(id) {
                Some(entry) => page.known.ledger.insert(id.to_owned(), entry.clone()),
                None => page.known.ledger.remove(id),
            };
            match fresh.dead.get(id) {
                Some(fp) => page.known.dead.insert(id.to_owned(), fp.clone()),
                None => page.known.dead.remove(id),
            };
        }
        Ok(())
    }

    /// Takes a page in: decides every record that needs no write, queues the rest.
    fn admit(&mut self, read: ReadPage) -> Result<(), FailureCause> {
        let ReadPage {
            page,
            arrivals,
            known,
            confirmed,
        } = read;
        // This page's snapshot, and those of every page read after it, hold what
        // had committed before it was looked up.
        let let_go = self.view.admitted(confirmed);
        self.let_go_holders(let_go);
        if self.sweeps() && !self.swept {
            self.seen
                .extend(arrivals.iter().map(|a| a.record.id().to_owned()));
        }
        self.counters.read += arrivals.len() as u64;
        self.counters.beyond_watermark += page.beyond_watermark;
        self.counters.requests += u64::from(page.requests);
        let seq = self.frontier.open_page(arrivals.len(), page.cursor_after);
        self.pages.insert(
            seq,
            PageState {
                commit: PageCommit {
                    ledger: Vec::with_capacity(arrivals.len()),
                    ..PageCommit::default()
                },
                known,
            },
        );
        for arrival in arrivals {
            if arrival.superseded {
                let seen = Seen::of(&arrival.record);
                self.resolve(seq, seen, Resolution::Stale { ledger: None })?;
            } else if self.busy.contains(arrival.record.id()) {
                self.waiting
                    .entry(arrival.record.id().to_owned())
                    .or_default()
                    .push_back((seq, arrival));
            } else {
                self.route(seq, arrival)?;
            }
        }
        Ok(())
    }

    /// The view let these (external id, source id) rows go: pages admitted
    /// from now on find their holders in their lookups. Pages admitted before
    /// hold older lookups, so the holders are forgotten only once all of those
    /// are committed: `holders` stays as large as a merge's rows, not the run's.
    fn let_go_holders(&mut self, let_go: Vec<(String, String)>) {
        if !let_go.is_empty() {
            // The newest page admitted before this one (with none, nothing
            // waits: the loop below lets the batch go at once).
            let newest = self.pages.last_key_value().map_or(0, |(seq, _)| *seq);
            self.retiring_holders.push_back((newest, let_go));
        }
        let oldest = self.pages.first_key_value().map(|(seq, _)| *seq);
        while let Some((newest, _)) = self.retiring_holders.front()
            && oldest.is_none_or(|oldest| oldest > *newest)
        {
            self.forget_holders();
        }
    }

    /// Forgets the oldest batch of holders let go.
    fn forget_holders(&mut self) {
        let Some((_, pairs)) = self.retiring_holders.pop_front() else {
            return;
        };
        for (external_id, source_id) in pairs {
            if self.holders.get(&external_id) == Some(&source_id) {
                self.holders.remove(&external_id);
            }
        }
        view::shrink(&mut self.holders);
    }

    /// Decides one record: resolved now, queued for writing, or held back.
    fn route(&mut self, seq: u64, arrival: Arrival) -> Result<(), FailureCause> {
        let seen = Seen::of(&arrival.record);
        match self.prepare(seq, arrival) {
            Routed::Resolved(resolution) => self.resolve(seq, seen, resolution),
            Routed::Write(job) => {
                // The write is announced durably first, so that after a crash
                // nothing older is written over what may have arrived.
                self.busy.insert(job.record.id().to_owned());
                self.holders
                    .insert(job.mapped.external_id.clone(), job.record.id().to_owned());
                self.held.push(job);
                Ok(())
            }
            Routed::HeldBack(held) => {
                self.held_back.push(held);
                Ok(())
            }
        }
    }
}

/// How a held-back record was served, for messages.
fn arrival_version(arrival: &Arrival) -> String {
    match &arrival.record {
        Extracted::Record(r) => match r.version {
            Some(v) => format!("version {v}"),
            None => format!("the version stamped {}", r.updated_at()),
        },
        Extracted::Invalid { .. } => "an invalid copy".into(),
    }
}

fn signed(duration: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX)
}

fn cursor_json(cursor: &Cursor) -> Value {
    serde_json::to_value(cursor).unwrap_or(Value::Null)
}
