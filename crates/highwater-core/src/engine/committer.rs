//! The committer: a thread of its own, with its own runtime, that takes the
//! run's commits, flushes the sink and makes each durable in the state store,
//! so that a page's fsync does not stall the next page's writes. What is being
//! committed stays in the run's own view of the ledger until the commit is
//! confirmed. A commit is several trips to the store's own thread (SQLite's)
//! or server, and on the run loop's thread each trip's answer waited for the
//! loop to finish what it was handling — a page's thousand records, say —
//! before the next trip left; on a thread of its own the committer takes each
//! answer at once (a sync of 100,000 records into JSON Lines: 103,000 instead
//! of 97,000 records/s, medians of three alternated runs).

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::FailureCause;
use crate::sink::Sink;
use crate::state::{Announced, Committed, Counters, PageCommit, StateError, Store};

/// Commits sent and not confirmed at once: one being written, one gathering.
const MAX_PENDING: usize = 2;

type Ack = (CommitAck, Result<Committed, FailureCause>);

pub(super) struct Committer {
    /// `None` once closed: the task finishes what it holds, then ends.
    jobs: Option<mpsc::Sender<CommitJob>>,
    acks: mpsc::Receiver<Ack>,
    pending: usize,
    /// A commit failed: where a store's failure leaves the outcome unknown
    /// (a connection lost during `COMMIT`), it may have landed all the same.
    failed: bool,
    _task: AbortOnDrop,
}

impl Committer {
    pub(super) fn spawn(
        store: Store,
        sync: String,
        run_id: String,
        sink: Arc<dyn Sink>,
    ) -> std::io::Result<Self> {
        let (jobs, mut queue) = mpsc::channel::<CommitJob>(MAX_PENDING);
        let (acks_tx, acks) = mpsc::channel::<Ack>(MAX_PENDING * 2);
        let commits = async move {
            let store = store.for_thread();
            // A commit's checkpoint counts on the commits before it: after
            // one failed, a later one would move the checkpoint past pages
            // whose ledger rows were never stored.
            let mut failed = false;
            while let Some(job) = queue.recv().await {
                let result = if failed {
                    Err(gone())
                } else {
                    match sink.flush().await {
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
                    }
                };
                failed |= result.is_err();
                let result = match (result, &job.commit.sink_position) {
                    (Ok(committed), Some(position)) => sink
                        .committed(position)
                        .map(|()| committed)
                        .map_err(FailureCause::Destination),
                    (result, _) => result,
                };
                let ack = CommitAck {
                    number: job.number,
                    pages: job.pages,
                    visible: false,
                    counters: job.counters,
                    announced: Announced::default(),
                };
                if acks_tx.send((ack, result)).await.is_err() {
                    break;
                }
            }
            store.close_thread().await;
        }
        .in_current_span();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let task = runtime.spawn(commits);
        let abort = task.abort_handle();
        std::thread::Builder::new()
            .name("highwater-commit".into())
            .spawn(move || {
                // Ends once the commits do: the queue closed, or the task aborted.
                let _ = runtime.block_on(task);
            })?;
        Ok(Committer {
            jobs: Some(jobs),
            acks,
            pending: 0,
            failed: false,
            _task: AbortOnDrop(abort),
        })
    }

    /// Commits sent and not yet confirmed.
    pub(super) fn pending(&self) -> usize {
        self.pending
    }

    /// Whether another commit may be sent now.
    pub(super) fn has_room(&self) -> bool {
        self.pending < MAX_PENDING
    }

    pub(super) fn send(&mut self, job: CommitJob) -> Result<(), FailureCause> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.try_send(job).is_ok());
        if !sent {
            return Err(gone());
        }
        self.pending += 1;
        Ok(())
    }

    /// The next confirmation; call only with commits pending.
    pub(super) async fn next(&mut self) -> Result<CommitAck, FailureCause> {
        let Some((ack, result)) = self.acks.recv().await else {
            self.failed = true;
            return Err(gone());
        };
        self.pending -= 1;
        self.failed |= result.is_err();
        result.map(|committed| CommitAck {
            announced: committed.announced,
            visible: committed.visible,
            ..ack
        })
    }

    /// Whether a commit sent may have landed unconfirmed: one failed, or is
    /// still unanswered.
    pub(super) fn in_doubt(&self) -> bool {
        self.failed || self.pending > 0
    }

    /// Takes no more commits and waits for those sent, in order.
    pub(super) async fn finish(&mut self) -> Result<Vec<CommitAck>, FailureCause> {
        self.jobs = None;
        let mut acks = Vec::with_capacity(self.pending);
        while self.pending > 0 {
            acks.push(self.next().await?);
        }
        Ok(acks)
    }
}

/// Dropped with the committer (a run that failed), it stops the commit under
/// way at its next step, as a task of the run loop's own would be.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn gone() -> FailureCause {
    FailureCause::State(StateError::Corrupt("the committer stopped".into()))
}

/// Resolved pages and announced writes on their way into the state store.
pub(super) struct CommitJob {
    pub(super) number: u64,
    pub(super) pages: Vec<u64>,
    pub(super) commit: PageCommit,
    pub(super) checkpoint: Option<Value>,
    pub(super) counters: Counters,
}

/// A commit the store confirmed.
pub(super) struct CommitAck {
    pub(super) number: u64,
    pub(super) pages: Vec<u64>,
    /// Its ledger rows, and every earlier commit's, are what lookups read now.
    pub(super) visible: bool,
    /// The run's counters as the commit stored them.
    pub(super) counters: Counters,
    /// Which of its announced writes another run's newer version refused, and
    /// which went behind another run's write that may still land.
    pub(super) announced: Announced,
}
