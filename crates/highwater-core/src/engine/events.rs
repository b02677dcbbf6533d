//! What the run loop reacts to: one closed set of events, gathered from the
//! reading thread, the write slots, the committer and the stop signal, so that
//! the loop's handler is plain synchronous code and each source of events has
//! one place.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::FailureCause;
use super::ahead::{Delivery, ReadPage};
use super::committer::{CommitAck, Committer};
use super::slots::{WriteOutcome, WriteSlots};
use crate::stop::{Stop, StopReason};

// An event lives from the select to the handler; boxing the write's outcome
// would cost an allocation per write for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Event {
    /// A page from the reading thread, looked up in the ledger.
    Page(ReadPage),
    /// The source has no more pages in the window.
    SourceDone,
    /// A write's outcome, from a write slot.
    Answer(WriteOutcome),
    /// The store made a commit durable.
    Committed(CommitAck),
    /// A signal, or the runtime budget: stop at a checkpoint.
    Stop(StopReason),
    /// Something the run cannot go on from: the reading thread, a commit, a slot.
    Failed(FailureCause),
}

/// The run loop's inputs.
pub(super) struct Inputs {
    pub(super) pages: mpsc::Receiver<Delivery>,
    pub(super) slots: WriteSlots,
    pub(super) committer: Committer,
    pub(super) stop: Stop,
    pub(super) fired: Pin<Box<dyn Future<Output = StopReason>>>,
    /// A timer kept due before any write's timeout (see where the run sets it).
    pub(super) leading: Pin<Box<Sleep>>,
    pub(super) lead: Duration,
}

impl Inputs {
    /// The next event; pages only when `admit`.
    pub(super) async fn next(&mut self, admit: bool) -> Event {
        loop {
            let committing = self.committer.pending() > 0;
            tokio::select! {
                biased;
                ack = self.committer.next(), if committing => {
                    return match ack {
                        Ok(ack) => Event::Committed(ack),
                        Err(cause) => Event::Failed(cause),
                    };
                }
                answer = self.slots.next() => {
                    return match answer {
                        Ok(answer) => Event::Answer(answer),
                        Err(cause) => Event::Failed(cause),
                    };
                }
                page = self.pages.recv(), if admit => return self.delivered(page),
                reason = &mut self.fired => return Event::Stop(reason),
                () = &mut self.leading => {
                    self.leading.as_mut().reset(Instant::now() + self.lead);
                }
            }
        }
    }

    fn delivered(&self, page: Option<Delivery>) -> Event {
        match page {
            Some(Ok(Some(read))) => Event::Page(read),
            Some(Ok(None)) => Event::SourceDone,
            // The thread says when the source is exhausted; gone without a word,
            // it was stopped or it failed — never the end of the source.
            None => match self.stop.reason() {
                Some(reason) => Event::Stop(reason),
                None => Event::Failed(FailureCause::ReaderGone),
            },
            // The reading thread may see the stop before the loop does.
            Some(Err(e)) => match e.stopped() {
                Some(reason) => Event::Stop(reason),
                None => Event::Failed(e),
            },
        }
    }
}
