//! Owns one run of a sync: fixes and stores the watermark before the first fetch (or
//! resumes the open run with its watermark and cursor), maps each page, checks every
//! record against the ledger, writes what must be written, and advances the
//! checkpoint through the [`Frontier`] once every record of a page is resolved. The
//! high-water mark moves only when the run completes.
//! Invariants: the checkpoint never passes an unresolved record; a record is never
//! written over a newer version; a failure before any progress leaves the state
//! store as it was. Data flows one way: source → engine → sink → state.

pub mod decide;
pub mod frontier;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::config::SyncSpec;
use crate::http::{Api, HttpError};
use crate::mapping::{MappedRecord, map_record};
use crate::record::SourceRecord;
use crate::sink::{Sink, SinkError, Write};
use crate::source::{Cursor, Extracted, Page, Reader, SourceError, Window};
use crate::state::{
    Counters, DeadLetter, Intent, IntentBatch, Known, LedgerEntry, PageCommit, RunRow, StateError,
    Store,
};
use crate::stop::{Stop, StopReason};
use decide::{Decision, SurgeGuard, decide, plan_window};
pub use frontier::Frontier;

/// Pages fetched ahead of those being written: the source keeps reading while the
/// destination works, and a slow destination still pushes back on the source.
const PREFETCH: usize = 2;
/// Pages whose records may be in flight at once. A straggling write holds the
/// checkpoint back, not the writes of the next pages.
const PAGES_IN_FLIGHT: usize = 4;
/// Writes per unit of concurrency that, announced and ready to go, outlast a
/// commit: while at least that many wait, new announcements ride along with the
/// next page's commit instead of costing a commit of their own.
const RUNWAY_PER_SLOT: usize = 128;
pub const KIND_INCREMENTAL: &str = "incremental";

/// Limits for one invocation; `None` falls back to the sync's `[budgets]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub max_runtime: Option<Duration>,
    pub max_pages: Option<u64>,
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
/// had made progress (`resumable`); otherwise it was never recorded.
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
        "halted: {dead} of the last {window} records were dead-lettered (limit {limit:.0}%); the mapping or the destination rejects nearly everything. Latest reason: {reason}"
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

/// Runs (or resumes) the incremental run of `spec`. The caller holds the sync's lock.
pub async fn run(
    spec: &SyncSpec,
    store: &Store,
    options: RunOptions,
    shutdown: CancellationToken,
    progress: &watch::Sender<Progress>,
) -> Result<RunReport, RunFailure> {
    let started = Instant::now();
    let fail = |cause: FailureCause| RunFailure {
        cause,
        run_id: None,
        counters: Counters::default(),
        resumable: false,
    };
    let (run, cursor, counters, resumed) = open_or_resume(spec, store).await.map_err(fail)?;
    let window = Window {
        lower: run.lower_bound,
        watermark: run.watermark,
    };
    tracing::info!(
        event = if resumed { crate::obs::RUN_RESUMED } else { crate::obs::RUN_STARTED },
        sync = %spec.name,
        run_id = %run.run_id,
        watermark = %run.watermark,
        lower_bound = %run.lower_bound.map_or("none".to_owned(), |t| t.to_string()),
        "run {}", if resumed { "resumed" } else { "started" }
    );
    let mut runner = Runner::new(spec, store, run.run_id.clone(), counters, resumed, progress);
    progress.send_replace(runner.snapshot());
    let stop = Stop::new(options.max_runtime.or(spec.budgets.max_runtime), shutdown);
    let max_pages = options.max_pages.or(spec.budgets.max_pages);
    let outcome = runner.drive(window, cursor, &stop, max_pages).await;
    let report = |outcome, retries| RunReport {
        sync: spec.name.clone(),
        run_id: run.run_id.clone(),
        resumed,
        window,
        outcome,
        counters: runner.counters,
        session: runner.counters.since(&counters),
        retries,
        elapsed: started.elapsed(),
    };
    match outcome {
        Ok((outcome, retries)) => {
            tracing::info!(
                event = match outcome { RunOutcome::Completed => crate::obs::RUN_COMPLETED, RunOutcome::Stopped(_) => crate::obs::RUN_STOPPED },
                sync = %spec.name,
                run_id = %run.run_id,
                pages = runner.counters.pages,
                written = runner.counters.written,
                "run {}", match outcome { RunOutcome::Completed => "completed".to_owned(), RunOutcome::Stopped(r) => format!("stopped: {}", r.as_str()) }
            );
            Ok(report(outcome, retries))
        }
        Err(cause) => {
            if let Some(reason) = cause.stopped() {
                return Ok(report(RunOutcome::Stopped(reason), 0));
            }
            // A run that never got past its first page is forgotten, so that a bad
            // config or an unreachable API leaves no trace in the state store.
            let progressed = resumed || runner.counters.pages > 0 || runner.wrote;
            if !progressed {
                store
                    .abandon_run(&run.run_id)
                    .await
                    .map_err(|e| fail(e.into()))?;
            }
            tracing::error!(event = crate::obs::RUN_FAILED, sync = %spec.name, run_id = %run.run_id, error = %cause, "run failed");
            Err(RunFailure {
                cause,
                run_id: progressed.then(|| run.run_id.clone()),
                counters: runner.counters,
                resumable: progressed,
            })
        }
    }
}

async fn open_or_resume(
    spec: &SyncSpec,
    store: &Store,
) -> Result<(RunRow, Cursor, Counters, bool), FailureCause> {
    if let Some((run, checkpoint)) = store.open_run(&spec.name, KIND_INCREMENTAL).await? {
        let cursor: Cursor = serde_json::from_value(checkpoint.cursor)
            .map_err(|e| StateError::Corrupt(format!("run {}: cursor: {e}", run.run_id)))?;
        return Ok((run, cursor, checkpoint.counters, true));
    }
    let high_water_mark = store
        .last_completed(&spec.name, KIND_INCREMENTAL)
        .await?
        .map(|(run, _)| run.watermark);
    // Microseconds are what the store keeps; the report shows the same instant.
    let now = Timestamp::now()
        .round(jiff::Unit::Microsecond)
        .unwrap_or_else(|_| Timestamp::now());
    let window = plan_window(
        now,
        spec.source.lag,
        spec.source.lookback,
        spec.source.start,
        high_water_mark,
    );
    let run = RunRow {
        run_id: uuid::Uuid::now_v7().to_string(),
        sync: spec.name.clone(),
        kind: KIND_INCREMENTAL.into(),
        status: "open".into(),
        lower_bound: window.lower,
        watermark: window.watermark,
        started_at: now,
        updated_at: now,
        completed_at: None,
    };
    store.begin_run(&run, &cursor_json(&Cursor::Start)).await?;
    Ok((run, Cursor::Start, Counters::default(), false))
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
    /// Writes prepared and waiting for a free slot.
    queue: VecDeque<WriteJob>,
    /// Ids with a write queued or in flight: a later copy of the same record waits
    /// for it, so versions reach the destination in order.
    busy: HashSet<String>,
    waiting: HashMap<String, VecDeque<(u64, Extracted)>>,
    /// What this invocation resolved that the store's snapshots may not hold yet,
    /// newest first: the ledger as it will be once those pages commit.
    written: HashMap<String, Remembered<LedgerEntry>>,
    /// Fingerprints of dead letters, likewise.
    dead: HashMap<String, Remembered<String>>,
    /// Writes announced by earlier invocations and never known to have settled:
    /// the destination may hold those versions, so nothing older goes over them.
    floors: HashMap<String, Intent>,
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
}

struct PageState {
    commit: PageCommit,
    known: Known,
}

/// A page read ahead, with what the store knew of its ids when it was read: the
/// lookup runs beside the writes of earlier pages instead of between them.
struct ReadPage {
    page: Page,
    known: Known,
    /// Commits confirmed before the lookup began: the snapshot holds all of them.
    confirmed: u64,
}

/// Something this invocation resolved, kept in memory until every page still to
/// be admitted was looked up after it committed.
struct Remembered<T> {
    page: u64,
    /// The count of confirmed commits once the one holding it was confirmed.
    committed: Option<u64>,
    value: T,
}

impl<T> Remembered<T> {
    fn new(page: u64, value: T) -> Self {
        Remembered {
            page,
            committed: None,
            value,
        }
    }
}

/// Resolved pages and announced writes on their way into the state store.
struct CommitJob {
    number: u64,
    pages: Vec<u64>,
    commit: PageCommit,
    checkpoint: Option<Value>,
    counters: Counters,
}

/// A commit the store confirmed.
struct CommitAck {
    number: u64,
    pages: Vec<u64>,
}

/// A record on its way to the destination.
struct WriteJob {
    seq: u64,
    record: SourceRecord,
    mapped: MappedRecord,
    known_dest_id: Option<String>,
    /// The record has an unresolved dead letter, which a successful write resolves.
    dead_lettered: bool,
}

/// What became of one record.
enum Resolution {
    Written {
        ledger: LedgerEntry,
        resolves_dead_letter: bool,
    },
    Unchanged {
        ledger: Option<LedgerEntry>,
    },
    Stale,
    DeadLettered(DeadLetter),
    StillDeadLettered,
}

impl<'a> Runner<'a> {
    fn new(
        spec: &'a SyncSpec,
        store: &'a Store,
        run_id: String,
        counters: Counters,
        resumed: bool,
        progress: &'a watch::Sender<Progress>,
    ) -> Self {
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
            queue: VecDeque::new(),
            busy: HashSet::new(),
            waiting: HashMap::new(),
            written: HashMap::new(),
            dead: HashMap::new(),
            floors: HashMap::new(),
            invocation: uuid::Uuid::now_v7().simple().to_string(),
            held: Vec::new(),
            batches: Vec::new(),
            announced: VecDeque::new(),
            commits_sent: 0,
            wrote: false,
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
    ) -> Result<(RunOutcome, u64), FailureCause> {
        self.floors = self.store.floors(&self.spec.name).await?;
        let source_api = Api::new("source", self.spec.source.http.clone(), self.spec.retry, 1)?;
        let sink = Arc::new(
            Sink::open(&self.spec.name, &self.spec.destination, self.spec.retry)
                .map_err(FailureCause::Destination)?,
        );
        let mut reader = Reader::new(&source_api, &self.spec.source, window, cursor);
        let (pages_tx, mut pages_rx) =
            mpsc::channel::<Result<Option<ReadPage>, FailureCause>>(PREFETCH);
        let confirmed = std::cell::Cell::new(0u64);
        let (store, sync) = (self.store, self.spec.name.as_str());
        let read = async {
            loop {
                let next = match reader.next_page(stop).await {
                    Ok(Some(page)) => {
                        let seen = confirmed.get();
                        let ids: Vec<&str> = page.records.iter().map(Extracted::id).collect();
                        match store.known(sync, &ids).await {
                            Ok(known) => Ok(Some(ReadPage {
                                page,
                                known,
                                confirmed: seen,
                            })),
                            Err(e) => Err(FailureCause::State(e)),
                        }
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(FailureCause::Source(e)),
                };
                let more = matches!(next, Ok(Some(_)));
                if pages_tx.send(next).await.is_err() || !more {
                    break;
                }
            }
        };
        let mut read = std::pin::pin!(read);
        let mut reading = true;
        // Commits run beside the writes: a page's fsync does not stall the next
        // page's writes. What is being committed stays in the run's own view of the
        // ledger until the commit is confirmed.
        let (commit_tx, mut commit_rx) = mpsc::channel::<CommitJob>(2);
        let (done_tx, mut done_rx) = mpsc::channel::<(CommitAck, Result<(), FailureCause>)>(4);
        let (store, sync, run_id) = (
            self.store.clone(),
            self.spec.name.clone(),
            self.run_id.clone(),
        );
        let sink_for_commits = Arc::clone(&sink);
        // Its own task, so that the loop below goes on admitting pages and handling
        // answers while a commit waits on SQLite's worker thread and its fsync.
        let committer = tokio::spawn(async move {
            while let Some(job) = commit_rx.recv().await {
                let result = match sink_for_commits.flush().await {
                    Ok(()) => store
                        .commit_page(
                            &sync,
                            &run_id,
                            &job.commit,
                            job.checkpoint.as_ref(),
                            &job.counters,
                        )
                        .await
                        .map_err(FailureCause::from),
                    Err(e) => Err(FailureCause::Destination(e)),
                };
                let ack = CommitAck {
                    number: job.number,
                    pages: job.pages,
                };
                if done_tx.send((ack, result)).await.is_err() {
                    break;
                }
            }
        });
        let mut committer = AbortOnDropHandle::new(committer);
        let mut committing = true;
        let mut commits_pending = 0usize;
        let mut source_done = false;
        let mut admitted = 0u64;
        let mut writes = FuturesUnordered::new();
        let concurrency = sink.concurrency();
        let mut fired = std::pin::pin!(stop.fired());
        // The reader may be mid-backoff when the run ends; it is dropped then.
        let outcome = loop {
            while writes.len() < concurrency {
                let Some(job) = self.queue.pop_front() else {
                    break;
                };
                writes.push(write(&sink, stop, job));
            }
            // Group commit: whatever accumulated while the last commits ran goes in one.
            let runway =
                self.queue.len() + self.announced.iter().map(|(_, j)| j.len()).sum::<usize>();
            let announce_now = runway < RUNWAY_PER_SLOT * concurrency;
            if commits_pending < 2
                && let Some(job) = self.next_commit(announce_now)
            {
                commits_pending += 1;
                if commit_tx.send(job).await.is_err() {
                    break Err(FailureCause::State(StateError::Corrupt(
                        "the committer stopped".into(),
                    )));
                }
            }
            if source_done && self.pages.is_empty() && commits_pending == 0 {
                break self
                    .store
                    .complete_run(&self.run_id, &cursor_json(&Cursor::End), &self.counters)
                    .await
                    .map(|()| RunOutcome::Completed)
                    .map_err(FailureCause::from);
            }
            if let Some(reason) = stop.reason() {
                break Ok(RunOutcome::Stopped(reason));
            }
            let budget_left = max_pages.is_none_or(|max| admitted < max);
            if !budget_left && self.pages.is_empty() {
                break Ok(RunOutcome::Stopped(StopReason::MaxPages));
            }
            let admit = !source_done && budget_left && self.pages.len() < PAGES_IN_FLIGHT;
            tokio::select! {
                biased;
                Some((ack, result)) = done_rx.recv(), if commits_pending > 0 => {
                    commits_pending -= 1;
                    if let Err(e) = result {
                        break Err(e);
                    }
                    self.committed(&ack, &confirmed);
                }
                Some((job, result)) = writes.next(), if !writes.is_empty() => {
                    if let Err(e) = self.finish_write(job, result).await {
                        break Err(e);
                    }
                }
                page = pages_rx.recv(), if admit => match page {
                    Some(Ok(Some(read))) => {
                        admitted += 1;
                        if let Err(e) = self.admit(read) {
                            break Err(e);
                        }
                    }
                    Some(Ok(None)) | None => source_done = true,
                    Some(Err(e)) => break Err(e),
                },
                () = &mut read, if reading => reading = false,
                _ = &mut committer, if committing => committing = false,
                reason = &mut fired => break Ok(RunOutcome::Stopped(reason)),
            }
        };
        // A stop keeps what is already resolved: the commits in hand finish first.
        if matches!(outcome, Ok(RunOutcome::Stopped(_))) {
            // Announcements are dropped: those writes are not sent.
            self.held.clear();
            if let Some(job) = self.next_commit(true) {
                commits_pending += 1;
                let _ = commit_tx.send(job).await;
            }
            drop(commit_tx);
            if committing {
                let _ = (&mut committer).await;
            }
            while commits_pending > 0 {
                let Some((ack, result)) = done_rx.recv().await else {
                    break;
                };
                commits_pending -= 1;
                result?;
                self.committed(&ack, &confirmed);
            }
        }
        // A failure may leave writes out: wait a little for their answers, since
        // whether anything reached the destination decides if the run is kept.
        if outcome.is_err() {
            let mut grace = std::pin::pin!(tokio::time::sleep(Duration::from_secs(5)));
            loop {
                tokio::select! {
                    Some((_, result)) = writes.next() => self.note_outcome(&result),
                    () = &mut grace => {
                        self.wrote |= !writes.is_empty();
                        break;
                    }
                    else => break,
                }
            }
        }
        let retries = source_api.retries() + sink.retries();
        outcome.map(|o| (o, retries))
    }

    /// Takes a page in: decides every record that needs no write, queues the rest.
    fn admit(&mut self, read: ReadPage) -> Result<(), FailureCause> {
        let ReadPage {
            page,
            known,
            confirmed,
        } = read;
        // This page's snapshot, and those of every page read after it, hold what
        // had committed before it was looked up.
        let stale = |r: &Option<u64>| r.is_some_and(|c| c <= confirmed);
        self.written.retain(|_, r| !stale(&r.committed));
        self.dead.retain(|_, r| !stale(&r.committed));
        self.counters.read += page.records.len() as u64;
        self.counters.beyond_watermark += page.beyond_watermark;
        self.counters.requests += u64::from(page.requests);
        let superseded = superseded(&page.records);
        let seq = self
            .frontier
            .open_page(page.records.len(), page.cursor_after);
        self.pages.insert(
            seq,
            PageState {
                commit: PageCommit {
                    ledger: Vec::with_capacity(page.records.len()),
                    ..PageCommit::default()
                },
                known,
            },
        );
        for (record, superseded) in page.records.into_iter().zip(superseded) {
            if superseded {
                self.resolve(seq, Resolution::Stale)?;
            } else if self.busy.contains(record.id()) {
                self.waiting
                    .entry(record.id().to_owned())
                    .or_default()
                    .push_back((seq, record));
            } else {
                self.route(seq, record)?;
            }
        }
        Ok(())
    }

    /// Decides one record: resolved now, or queued for writing.
    fn route(&mut self, seq: u64, record: Extracted) -> Result<(), FailureCause> {
        match self.prepare(seq, record) {
            Routed::Resolved(resolution) => self.resolve(seq, resolution),
            Routed::Write(job) => {
                // The write is announced durably first, so that after a crash
                // nothing older is written over what may have arrived.
                self.busy.insert(job.record.id().to_owned());
                self.held.push(job);
                Ok(())
            }
        }
    }

    async fn finish_write(
        &mut self,
        job: WriteJob,
        result: Result<crate::sink::Written, SinkError>,
    ) -> Result<(), FailureCause> {
        let id = job.record.id().to_owned();
        self.busy.remove(&id);
        self.note_outcome(&result);
        let resolution = match result {
            Ok(written) => {
                let ledger = LedgerEntry {
                    source_id: id.clone(),
                    external_id: job.mapped.external_id.clone(),
                    dest_id: written.dest_id.or(job.known_dest_id),
                    version: job.record.version,
                    updated_at: job.record.updated_at(),
                    payload_hash: job.mapped.hash.clone(),
                    run_id: self.run_id.clone(),
                };
                self.written
                    .insert(id.clone(), Remembered::new(job.seq, ledger.clone()));
                Resolution::Written {
                    ledger,
                    resolves_dead_letter: job.dead_lettered,
                }
            }
            Err(SinkError::Rejected { status, reason }) => {
                let letter = self.dead_letter(
                    &id,
                    "destination",
                    format!("destination answered HTTP {status}: {reason}"),
                    &job.record.body,
                );
                self.dead.insert(
                    id.clone(),
                    Remembered::new(job.seq, letter.fingerprint.clone()),
                );
                Resolution::DeadLettered(letter)
            }
            Err(SinkError::Unwritable(reason)) => {
                let letter = self.dead_letter(&id, "destination", reason, &job.record.body);
                self.dead.insert(
                    id.clone(),
                    Remembered::new(job.seq, letter.fingerprint.clone()),
                );
                Resolution::DeadLettered(letter)
            }
            Err(e) => return Err(FailureCause::Destination(e)),
        };
        self.resolve(job.seq, resolution)?;
        // Later copies of this record, from later pages, may go now — in order, each
        // decided against what the store and this run know at this moment.
        while !self.busy.contains(&id) {
            let Some(queue) = self.waiting.get_mut(&id) else {
                break;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&id);
            }
            let Some((seq, record)) = next else { break };
            self.refresh_known(seq, &id).await?;
            self.route(seq, record)?;
        }
        Ok(())
    }

    /// Whether a write's outcome means it may have reached the destination.
    fn note_outcome(&mut self, result: &Result<crate::sink::Written, SinkError>) {
        let refused = matches!(
            result,
            Err(SinkError::Rejected { .. }
                | SinkError::Unwritable(_)
                | SinkError::Http(HttpError::Unauthorized { .. } | HttpError::Auth(..)))
        );
        if !refused {
            self.wrote = true;
        }
    }

    /// Re-reads one id for a page whose snapshot was taken before later commits.
    async fn refresh_known(&mut self, seq: u64, id: &str) -> Result<(), FailureCause> {
        let fresh = self.store.known(&self.spec.name, &[id]).await?;
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

    fn resolve(&mut self, seq: u64, resolution: Resolution) -> Result<(), FailureCause> {
        self.frontier.resolve(seq);
        let dead = matches!(resolution, Resolution::DeadLettered(_));
        let mut reason = String::new();
        let Some(page) = self.pages.get_mut(&seq) else {
            return Ok(());
        };
        match resolution {
            Resolution::Written {
                ledger,
                resolves_dead_letter,
            } => {
                self.counters.written += 1;
                if resolves_dead_letter {
                    page.commit.resolved.push(ledger.source_id.clone());
                }
                page.commit.ledger.push(ledger);
            }
            Resolution::Unchanged { ledger } => {
                self.counters.unchanged += 1;
                page.commit.ledger.extend(ledger);
            }
            Resolution::Stale => self.counters.stale += 1,
            Resolution::StillDeadLettered => self.counters.dead_lettered += 1,
            Resolution::DeadLettered(letter) => {
                self.counters.dead_lettered += 1;
                tracing::info!(
                    event = crate::obs::RECORD_DEAD_LETTERED,
                    sync = %self.spec.name,
                    source_id = %letter.source_id,
                    stage = %letter.stage,
                    reason = %letter.error,
                    "record dead-lettered"
                );
                reason = format!("{}: {}", letter.source_id, letter.error);
                page.commit.dead_letters.push(letter);
            }
        }
        match self.surge.observe(dead) {
            Some((dead, window)) => Err(FailureCause::Surge {
                dead,
                window,
                limit: self.spec.budgets.dead_letter_ratio * 100.0,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Gathers what is ready for the store into one commit: every fully resolved
    /// page (ledger rows and dead letters; the checkpoint only as far as the
    /// frontier allows) and every write waiting to be announced. Announcements
    /// alone make a commit only when `announce_now`: the writes ready to go are
    /// running out.
    fn next_commit(&mut self, announce_now: bool) -> Option<CommitJob> {
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
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            let id = format!("{}-{number}", self.invocation);
            self.batches
                .push((id.clone(), held.iter().map(|job| job.seq).collect()));
            let intents = held
                .iter()
                .map(|job| Intent {
                    source_id: job.record.id().to_owned(),
                    version: job.record.version,
                    updated_at: job.record.updated_at(),
                })
                .collect();
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
    /// and the writes it announced may go. `confirmed` counts confirmed commits.
    fn committed(&mut self, ack: &CommitAck, confirmed: &std::cell::Cell<u64>) {
        confirmed.set(confirmed.get() + 1);
        let confirmed = confirmed.get();
        let pages = &ack.pages;
        let now_durable = |r: &mut Option<u64>, page: u64| {
            if r.is_none() && pages.contains(&page) {
                *r = Some(confirmed);
            }
        };
        self.written
            .values_mut()
            .for_each(|r| now_durable(&mut r.committed, r.page));
        self.dead
            .values_mut()
            .for_each(|r| now_durable(&mut r.committed, r.page));
        while self
            .announced
            .front()
            .is_some_and(|(n, _)| *n <= ack.number)
        {
            if let Some((_, jobs)) = self.announced.pop_front() {
                self.queue.extend(jobs);
            }
        }
        if !pages.is_empty() {
            tracing::debug!(
                event = crate::obs::PAGE_COMMITTED,
                sync = %self.spec.name,
                run_id = %self.run_id,
                pages = self.counters.pages,
                "pages committed"
            );
            self.progress.send_replace(self.snapshot());
        }
    }

    /// Decides a record before any write: dead-letter, skip, or write. What this
    /// invocation has resolved but not committed yet counts as known.
    fn prepare(&self, seq: u64, record: Extracted) -> Routed {
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
            return Routed::Resolved(Resolution::Stale);
        };
        let mapped = match map_record(&self.spec.mapping, &record) {
            Ok(mapped) => mapped,
            Err(e) => {
                let letter = self.dead_letter(record.id(), "mapping", e.0, &record.body);
                return Routed::Resolved(Resolution::DeadLettered(letter));
            }
        };
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
                dead_lettered: dead_fingerprint.is_some(),
                record,
                mapped,
            }),
            Decision::Stale => Routed::Resolved(Resolution::Stale),
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

    fn fingerprint(&self, body: &Value) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.spec.fingerprint.as_bytes());
        hasher.update(body.to_string().as_bytes());
        hasher.finalize().to_hex()[..32].to_owned()
    }

    fn dead_letter(&self, id: &str, stage: &str, error: String, body: &Value) -> DeadLetter {
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

enum Routed {
    Resolved(Resolution),
    Write(WriteJob),
}

/// One write, as a future the run loop polls alongside everything else.
async fn write(
    sink: &Sink,
    stop: &Stop,
    job: WriteJob,
) -> (WriteJob, Result<crate::sink::Written, SinkError>) {
    let write = Write {
        source_id: job.record.id(),
        record: &job.mapped,
        version_key: version_key(&job.record),
        known_dest_id: job.known_dest_id.as_deref(),
    };
    let result = sink.write(write, stop).await;
    (job, result)
}

/// Which records of a page are superseded by a newer copy of the same id in it (a
/// page that overlaps itself, a lagging replica): only the newest copy counts.
fn superseded(records: &[Extracted]) -> Vec<bool> {
    let mut newest: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let Extracted::Record(r) = record else {
            continue;
        };
        let newer = match newest.get(r.id()) {
            Some(&current) => match &records[current] {
                Extracted::Record(c) => (r.version, r.updated_at()) >= (c.version, c.updated_at()),
                Extracted::Invalid { .. } => true,
            },
            None => true,
        };
        if newer {
            newest.insert(r.id(), index);
        }
    }
    records
        .iter()
        .enumerate()
        .map(|(index, record)| match record {
            Extracted::Record(r) => newest.get(r.id()) != Some(&index),
            Extracted::Invalid { .. } => false,
        })
        .collect()
}

fn version_key(record: &SourceRecord) -> String {
    match record.version {
        Some(v) => format!("v{v}"),
        None => format!("t{}", record.updated_at().as_microsecond()),
    }
}

fn cursor_json(cursor: &Cursor) -> Value {
    serde_json::to_value(cursor).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordKey;

    fn record(id: &str, version: Option<i64>, second: i64) -> Extracted {
        Extracted::Record(SourceRecord {
            key: RecordKey {
                updated_at: Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH),
                id: id.into(),
                id_is_number: false,
            },
            updated_at_raw: Value::from(second),
            version,
            body: Value::Null,
        })
    }

    #[test]
    fn only_the_newest_copy_of_an_id_in_a_page_counts() {
        let page = [
            record("a", Some(2), 10),
            record("b", None, 10),
            record("a", Some(1), 20),
            Extracted::Invalid {
                id: "a".into(),
                body: Value::Null,
                reason: "no updated_at".into(),
            },
            record("b", None, 11),
            record("c", Some(1), 5),
            record("c", Some(1), 5),
        ];
        assert_eq!(
            superseded(&page),
            [false, true, true, false, false, true, false],
            "a newer version wins over a later position; an exact repeat keeps the last copy"
        );
    }
}
