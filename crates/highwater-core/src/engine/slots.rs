//! The write slots: as many tasks as the destination's concurrency, each for the
//! whole run, taking announced writes off one queue (one at a time, or as many
//! as are waiting up to the destination's batch size) and handing each outcome
//! back to the run loop.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{FailureCause, WriteJob};
use crate::http::HttpError;
use crate::sink::{Delete, Sink, SinkError, Write};
use crate::state::Store;
use crate::stop::{Stop, StopReason};

pub(super) struct WriteSlots {
    /// Dropping the set aborts the slots.
    slots: JoinSet<()>,
    answers: mpsc::UnboundedReceiver<WriteOutcome>,
}

impl WriteSlots {
    pub(super) fn spawn(
        sink: &Arc<dyn Sink>,
        stop: &Stop,
        fence: &Store,
        queue: &flume::Receiver<Box<WriteJob>>,
        count: usize,
    ) -> Self {
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let mut slots = JoinSet::new();
        for _ in 0..count {
            slots.spawn(
                write_slot(
                    Arc::clone(sink),
                    stop.clone(),
                    fence.clone(),
                    queue.clone(),
                    answers_tx.clone(),
                )
                .in_current_span(),
            );
        }
        WriteSlots { slots, answers }
    }

    /// The next write's outcome; an error when a slot ended under the loop.
    pub(super) async fn next(&mut self) -> Result<WriteOutcome, FailureCause> {
        tokio::select! {
            biased;
            Some(outcome) = self.answers.recv() => Ok(outcome),
            Some(ended) = self.slots.join_next() => Err(slot_ended(ended)),
            else => Err(slot_ended(Ok(()))),
        }
    }

    /// The next outcome, or `None` once every slot is gone.
    pub(super) async fn answer(&mut self) -> Option<WriteOutcome> {
        self.answers.recv().await
    }
}

pub(super) type WriteOutcome = (Box<WriteJob>, Result<crate::sink::Written, SinkError>);

/// One write slot, for the whole run: it takes announced writes off the queue,
/// one at a time, and hands each outcome back to the run loop. When the next write
/// is already waiting, its request goes on the wire before the last answer reaches
/// the loop, so that the loop's bookkeeping runs while the destination works
/// instead of between an answer and the next request.
async fn write_slot(
    sink: Arc<dyn Sink>,
    stop: Stop,
    fence: Store,
    queue: flume::Receiver<Box<WriteJob>>,
    answers: mpsc::UnboundedSender<WriteOutcome>,
) {
    if sink.batch_size() > 1 {
        return batch_slot(sink, stop, fence, queue, answers).await;
    }
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
                let (outcome, sent) =
                    futures_util::future::join(write(sink.as_ref(), &stop, &fence, job), async {
                        answers.send(last)
                    })
                    .await;
                if sent.is_err() {
                    return;
                }
                outcome
            }
            None => write(sink.as_ref(), &stop, &fence, job).await,
        };
        answered = Some(outcome);
    }
}

/// A write slot of a destination that takes batches: it sends what is waiting,
/// up to the batch size, as one batch (a deletion on its own), and hands back
/// each record's outcome.
async fn batch_slot(
    sink: Arc<dyn Sink>,
    stop: Stop,
    fence: Store,
    queue: flume::Receiver<Box<WriteJob>>,
    answers: mpsc::UnboundedSender<WriteOutcome>,
) {
    let size = sink.batch_size();
    loop {
        let Ok(first) = queue.recv_async().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < size {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (deletes, writes): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .partition(|job| job.delete.is_some() && !job.soft);
        for job in deletes {
            if answers
                .send(write(sink.as_ref(), &stop, &fence, job).await)
                .is_err()
            {
                return;
            }
        }
        for outcome in write_batch(sink.as_ref(), &stop, &fence, writes).await {
            if answers.send(outcome).is_err() {
                return;
            }
        }
    }
}

async fn write_batch(
    sink: &dyn Sink,
    stop: &Stop,
    fence: &Store,
    mut jobs: Vec<Box<WriteJob>>,
) -> Vec<WriteOutcome> {
    if jobs.is_empty() {
        return Vec::new();
    }
    if let Err(lost) = fence.check_lease() {
        let lost = lost.to_string();
        return jobs
            .into_iter()
            .map(|job| (job, Err(SinkError::Fenced(lost.clone()))))
            .collect();
    }
    let encoded: Vec<_> = jobs.iter_mut().map(|job| job.encoded.take()).collect();
    let writes = jobs
        .iter()
        .zip(encoded)
        .map(|(job, encoded)| job_write(job, encoded))
        .collect();
    let mut results = sink.write_batch(writes, stop).await;
    // A sink answers for every write; one that did not leaves the rest unsent.
    results.resize_with(jobs.len(), || Err(SinkError::NotSent));
    jobs.into_iter().zip(results).collect()
}

fn job_write(job: &WriteJob, encoded: Option<crate::sink::Encoded>) -> Write<'_> {
    Write {
        source_id: job.record.id(),
        record: &job.mapped,
        version: job.record.version,
        updated_at: job.record.updated_at(),
        known_dest_id: job.known_dest_id.as_deref(),
        encoded,
        rewrite_over: None,
        unsettled_until: job.unsettled_until,
    }
}

/// Sends one write or deletion — unless this worker's lease of the sync is no
/// longer surely its own, by its own clock: a worker woken after a pause past
/// its lease sends nothing.
async fn write(
    sink: &dyn Sink,
    stop: &Stop,
    fence: &Store,
    mut job: Box<WriteJob>,
) -> WriteOutcome {
    if let Err(lost) = fence.check_lease() {
        return (job, Err(SinkError::Fenced(lost.to_string())));
    }
    if job.delete.is_some() && !job.soft {
        let delete = Delete {
            external_id: &job.mapped.external_id,
            known_dest_id: job.known_dest_id.as_deref(),
            unsettled_until: job.unsettled_until,
        };
        let result = crate::sink::delete(sink, delete, stop).await;
        return (job, result);
    }
    let encoded = job.encoded.take();
    let result = sink.write(job_write(&job, encoded), stop).await;
    (job, result)
}

/// Why the run loop cannot go on when a write slot ended under it: a panic in a
/// slot is the run's panic; a slot cancelled means the runtime is shutting down.
fn slot_ended(ended: Result<(), tokio::task::JoinError>) -> FailureCause {
    match ended {
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        _ => {
            FailureCause::Destination(SinkError::Http(HttpError::Stopped(StopReason::Interrupted)))
        }
    }
}
