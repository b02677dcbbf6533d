//! Owns one run of a sync: fixes and stores the watermark before the first fetch (or
//! resumes the open run with its watermark and cursor), maps each page, checks every
//! record against the ledger, writes what must be written, and advances the
//! checkpoint through the [`Frontier`] once every record of a page is resolved. The
//! high-water mark moves only when the run completes.
//! Invariants: the checkpoint never passes an unresolved record; a record is never
//! written over a newer version; a failure before any progress leaves nothing to
//! resume (the run history keeps it, failed). Data flows one way: source → engine
//! → sink → state.

// Write jobs are boxed even in vectors: see `WriteJob`.
#![allow(clippy::vec_box)]

mod ahead;
mod commit;
mod committer;
pub mod decide;
mod drive;
mod dry;
mod events;
pub mod frontier;
mod full;
mod holds;
mod invocation;
mod plan;
mod reconcile;
mod report;
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
/// Whether an object read back holds a payload written, for the tests of
/// destinations that give values back in their columns' own forms.
#[cfg(test)]
pub(crate) use holds::contains;
pub use invocation::run;
pub use plan::Plan;
pub use reconcile::{Mismatch, ReconcileReport, Sample, reconcile, reconcile_window};
pub use report::{FailureCause, Progress, RunFailure, RunOptions, RunOutcome, RunReport};
use route::Routed;
use settle::Compare;
use slots::WriteSlots;
use story::Seen;
use view::LedgerView;

/// Pages fetched ahead of those being written: the source keeps reading while the
/// destination works, and a slow destination still pushes back on the source.
const PREFETCH: usize = 2;
/// Pages whose records may be in flight at once. A straggling write holds the
/// checkpoint back, not the writes of the next pages. At least the first
/// number; more, up to the second, while those admitted hold fewer than
/// [`RECORDS_IN_FLIGHT`] records: small pages then keep as much work
/// overlapping as large ones, whose memory stays where it was (at 500 records
/// a page, eight pages in flight instead of four wrote 19% more records a
/// second into a PostgreSQL table; at 1,000 a page, eight took a sync of
/// 1,000,000 records past 100 MiB of peak RSS).
const PAGES_IN_FLIGHT: (usize, usize) = (4, 16);
/// 6,000 took a sync into a PostgreSQL table (pages of 500) from 0.82 to
/// 0.93 of a plain loader's rate, but a sync of 1,000,000 records into JSON
/// Lines (pages of 1,000) from 80 to 93 MiB of peak RSS, too near the bound;
/// since commits run on a thread of their own, 6,000 is no faster there
/// (0.70–0.76 against 0.73–0.77, three alternated runs).
const RECORDS_IN_FLIGHT: usize = 4_000;
/// Maps and sets keyed by record ids, which take a handful of lookups and
/// inserts per record: foldhash hashes a short id several times faster than
/// std's SipHash (which cost about 3% of a sync's CPU into JSON Lines), and
/// its seed is still random per process. Ids come from the user's own source.
type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type IdSet<K> = HashSet<K, foldhash::fast::RandomState>;
/// Finished writes handed back to the reading thread at once, to be freed there.
const SPENT_BATCH: usize = 64;
/// Writes per unit of concurrency that, announced and ready to go, outlast a
/// commit: while at least that many wait, new announcements ride along with the
/// next page's commit instead of costing a commit of their own.
const RUNWAY_PER_SLOT: usize = 128;

struct Runner<'a> {
    spec: &'a SyncSpec,
    store: &'a Store,
    run_id: String,
    counters: Counters,
    frontier: Frontier<Cursor>,
    surge: SurgeGuard,
    /// `source id: reason` of the run's latest dead letter, for a surge's message.
    latest_dead_letter: String,
    progress: &'a watch::Sender<Progress>,
    resumed: bool,
    /// Pages admitted and not yet committed, with what the store knew of their ids.
    pages: BTreeMap<u64, PageState>,
    /// Announced writes, durable and waiting for a free write slot; the slots
    /// take them off in order.
    ready: flume::Sender<Box<WriteJob>>,
    /// The queue's other end, to count and withdraw what no slot took yet.
    unclaimed: flume::Receiver<Box<WriteJob>>,
    /// Writes handed to the slots whose outcome has not come back.
    in_flight: usize,
    /// Ids with a write queued or in flight: a later copy of the same record waits
    /// for it, so versions reach the destination in order.
    busy: IdSet<String>,
    waiting: IdMap<String, VecDeque<(u64, Arrival)>>,
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
    holders: IdMap<String, String>,
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
    resent: Vec<String>,
    unverified: Vec<String>,
    /// Names this invocation's intent batches apart from earlier ones'.
    invocation: String,
    /// When writes are announced: before they go, with the commit that
    /// makes them land, or never.
    announce: Announce,
    /// Writes sent since the last commit, to announce in the next one unless
    /// their page is in it ([`Announce::WithTheCommit`]).
    unannounced: Vec<(u64, Intent)>,
    /// Writes to announce in the next commit; they go out once it is durable.
    held: Vec<Box<WriteJob>>,
    /// Intent batches in the store, with the pages not yet committed that they
    /// cover: once all of those have committed, the batch is retired.
    batches: Vec<(String, BTreeSet<u64>)>,
    /// Writes whose announcement is being committed, by commit number.
    announced: VecDeque<(u64, Vec<Box<WriteJob>>)>,
    commits_sent: u64,
    /// A run that stopped or failed with a commit it sent that failed, or
    /// whose outcome it could not learn: the destination is left as it is,
    /// for the next run to cut off at the position the store holds
    /// (`Sink::resume`), since that commit may have stored a position past
    /// the one the sink knows of.
    commits_in_doubt: bool,
    /// The sink took up where the last commit left it: only then may a run
    /// that did not complete finish it.
    sink_resumed: bool,
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
    /// Records written under another external id than before, this run
    /// (counted as records are prepared, which takes `&self`).
    rekeyed: std::cell::Cell<u64>,
    /// Record events older than this are pruned when the run completes; zero
    /// keeps none, and none are recorded.
    event_retention: Duration,
    /// Finished writes, whose records the reading thread allocated: it frees them
    /// too, in batches, so the write path does not spend its time in `free`.
    spent: Vec<Box<WriteJob>>,
    spent_tx: Option<mpsc::UnboundedSender<Vec<Box<WriteJob>>>>,
    /// A full run: every source id the source listed, and whether the ids it
    /// no longer lists have been swept into deletions yet.
    seen: IdSet<String>,
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
    /// Records the page brought.
    records: usize,
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

/// A record on its way to the destination. Boxed wherever it goes: at about
/// 570 bytes it moves through half a dozen queues and channels between
/// admission and the ledger: memmove was 11% of a sync's CPU into JSON Lines,
/// much of it moving jobs. Boxed, each move is a pointer's.
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

/// When a write is announced: what may hold it after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announce {
    /// Before it goes: once sent it may land at any time.
    First,
    /// With the next commit, while it goes at once: it lands only with a
    /// commit storing the destination's position past it
    /// ([`Sink::position`]), so that commit announces it unless it holds
    /// its ledger row. Only while no other run of the sync has writes
    /// announced: one sent would not wait for the compare-and-set against
    /// them (the destination takes one run at a time).
    WithTheCommit,
    /// Never: it lands only with the store's next commit, which holds its
    /// row ([`Sink::lands_with_the_commit`]).
    Never,
}

impl WriteJob {
    /// The write as announced. A delete is announced as of its deletion
    /// (`updated_at` is when): another run's older copy of the record is
    /// then refused, and a re-creation written meanwhile goes after it.
    fn intent(&self) -> Intent {
        Intent {
            source_id: self.record.id().to_owned(),
            version: self.record.version,
            updated_at: self.record.updated_at(),
            settles_at: None,
        }
    }
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
            latest_dead_letter: String::new(),
            progress,
            resumed,
            pages: BTreeMap::new(),
            ready,
            unclaimed,
            in_flight: 0,
            busy: IdSet::default(),
            waiting: IdMap::default(),
            view: LedgerView::default(),
            staged_rows: 0,
            merge_rows: merge_rows.max(1),
            floors: HashMap::new(),
            held_back: Vec::new(),
            unsettled: HashMap::new(),
            readbacks: HashMap::new(),
            holders: IdMap::default(),
            retiring_holders: VecDeque::new(),
            behind_live: HashSet::new(),
            compare: Compare::for_sync(spec),
            late_window: Duration::ZERO,
            refuses_older: false,
            repaired: Vec::new(),
            resent: Vec::new(),
            unverified: Vec::new(),
            invocation: uuid::Uuid::now_v7().simple().to_string(),
            announce: Announce::First,
            unannounced: Vec::new(),
            held: Vec::new(),
            batches: Vec::new(),
            announced: VecDeque::new(),
            commits_sent: 0,
            commits_in_doubt: false,
            sink_resumed: false,
            wrote: false,
            admitted: 0,
            pages_before: counters.pages,
            source_done: false,
            confirmed: Arc::new(AtomicU64::new(0)),
            released: Vec::new(),
            closing_events: Vec::new(),
            rekeyed: std::cell::Cell::new(0),
            retries: RetryCounts::default(),
            plan: Plan::Incremental,
            emitted: counters,
            newest_written: None,
            event_retention: crate::config::DEFAULT_EVENT_RETENTION,
            spent: Vec::with_capacity(SPENT_BATCH),
            seen: IdSet::default(),
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
        // A write since the last page's commit lands with a commit of its own.
        if let Some(position) = sink.position() {
            let commit = PageCommit {
                sink_position: Some(position.clone()),
                ..PageCommit::default()
            };
            self.store
                .commit_page(&self.spec.name, &self.run_id, &commit, None, &self.counters)
                .await?;
            sink.committed(&position)
                .map_err(FailureCause::Destination)?;
        }
        // The destination holds every write in its final form before the run
        // says so (a file compacts its log).
        sink.finish().await.map_err(FailureCause::Destination)?;
        crate::obs::ExternalIdChanged::summary(&self.spec.name, self.rekeyed.get());
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
        // Counted at once: whoever sees the run completed (the daemon's
        // `/metrics`, `highwater runs`) finds its records counted too.
        self.emit_resolved(self.counters);
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
                records: arrivals.len(),
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

    /// Hands a write to the write slots.
    fn dispatch(&mut self, job: Box<WriteJob>) {
        self.in_flight += 1;
        // The queue's receiving end is this runner's own: never closed.
        let _ = self.ready.send(job);
    }

    /// Decides one record: resolved now, queued for writing, or held back.
    fn route(&mut self, seq: u64, arrival: Arrival) -> Result<(), FailureCause> {
        let seen = Seen::of(&arrival.record);
        match self.prepare(seq, arrival) {
            Routed::Resolved(resolution) => self.resolve(seq, seen, resolution),
            Routed::Write(job) => {
                // The write is announced durably first, so that after a crash
                // nothing older is written over what may have arrived. A write
                // that lands only with a commit cannot have arrived without
                // it: it goes at once.
                self.busy.insert(job.record.id().to_owned());
                self.holders
                    .insert(job.mapped.external_id.clone(), job.record.id().to_owned());
                match self.announce {
                    Announce::First => self.held.push(job),
                    Announce::WithTheCommit => {
                        self.unannounced.push((job.seq, job.intent()));
                        self.dispatch(job);
                    }
                    Announce::Never => self.dispatch(job),
                }
                Ok(())
            }
            Routed::HeldBack(held) => {
                self.held_back.push(*held);
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
