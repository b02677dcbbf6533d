//! Owns reading ahead: on a thread of its own, fetches the source's pages, maps
//! their records, builds their destination requests and looks up what the state
//! store knows of their ids, and hands each page to the run loop ready to decide.
//! Why a thread: a sequential sync spends its time in a ping-pong of requests with
//! the destination; parsing, mapping, hashing and the ledger lookup done on the
//! same thread would sit between one answer and the next request. On a thread of
//! their own they run while the destination works.
//! Invariant: decides nothing. Whether a record is written, skipped or
//! dead-lettered is the run loop's call, made against its own view of the ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

use super::{FailureCause, Plan, WriteJob};
use crate::config::{MappingSpec, SourceSpec};
use crate::http::Api;
use crate::mapping::{MappedRecord, MappingError, map_record};
use crate::sink::{Encoded, Sink};
use crate::source::extract::extract;
use crate::source::{Cursor, Extracted, Page, Reader, Window};
use crate::state::{Known, Store};
use crate::stop::Stop;

/// A record as read, with its mapping worked out ahead (none for a record the
/// source already made invalid).
pub(super) struct Arrival {
    pub record: Extracted,
    pub mapped: Option<Result<MappedRecord, MappingError>>,
    /// The destination request, built ahead from the mapping.
    pub encoded: Option<Encoded>,
    /// A newer copy of the same id follows in the same page.
    pub superseded: bool,
}

/// A page read ahead, with what the store knew of its ids when it was read.
pub(super) struct ReadPage {
    pub page: Page,
    pub arrivals: Vec<Arrival>,
    pub known: Known,
    /// Commits confirmed before the lookup began: the snapshot holds all of them.
    pub confirmed: u64,
}

pub(super) type Delivery = Result<Option<ReadPage>, FailureCause>;

/// What the reading thread needs, all of it owned.
pub(super) struct ReadAhead {
    pub api: Arc<Api>,
    pub sink: Arc<dyn Sink>,
    pub source: SourceSpec,
    /// A replay reads the dead letters instead of the source.
    pub plan: Plan,
    pub mapping: MappingSpec,
    pub window: Window,
    pub cursor: Cursor,
    pub store: Store,
    pub sync: String,
    /// Fires with the run's stop, and when the run loop is done with the pages.
    pub stop: Stop,
    /// Commits the run loop has seen confirmed.
    pub confirmed: Arc<AtomicU64>,
}

impl ReadAhead {
    /// Starts the thread. Reading ends after the last page, after a failure (which
    /// it delivers), or once its stop fires or the receiver is gone; the thread
    /// ends once the run loop also stops handing back spent writes to free.
    pub fn spawn(
        self,
        pages: mpsc::Sender<Delivery>,
        mut spent: mpsc::UnboundedReceiver<Vec<Box<WriteJob>>>,
    ) -> std::io::Result<()> {
        // The run's span (sync, run id) follows its reading onto this thread.
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("highwater-read".into())
            .spawn(move || {
                let _entered = span.enter();
                // The source's requests go on a runtime of their own (see
                // `source/fetching.rs`), built before this thread is lowered:
                // its thread keeps the priority it was started at.
                let runtimes = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("highwater-fetch")
                    .enable_all()
                    .build()
                    .and_then(|fetching| {
                        give_way();
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        Ok((runtime, fetching))
                    });
                match runtimes {
                    Ok((runtime, fetching)) => {
                        let fetch = fetching.handle().clone();
                        runtime.block_on(async move {
                            // Freed where they were allocated. On a thread of
                            // their own they took nothing off the reading: a sync
                            // of 100,000 records into JSON Lines ran at 115,500
                            // against 116,100 records/s (medians of five
                            // alternated runs).
                            let freeing = tokio::spawn(async move {
                                while let Some(batch) = spent.recv().await {
                                    drop(batch);
                                }
                            });
                            let store = self.store.for_thread();
                            let own = store.clone();
                            ReadAhead { store, ..self }.run(pages, fetch).await;
                            own.close_thread().await;
                            let _ = freeing.await;
                        });
                        // Requests still out are the reading's, which is over.
                        fetching.shutdown_background();
                    }
                    Err(e) => {
                        let _ = pages.blocking_send(Err(FailureCause::Thread(e)));
                    }
                }
            })
            .map(drop)
    }

    async fn run(self, pages: mpsc::Sender<Delivery>, fetch: tokio::runtime::Handle) {
        let mut reader = Reader::new(&self.api, &self.source, self.window, self.cursor.clone())
            .reading_ahead(Arc::clone(&self.api), fetch);
        let mut replayed = match &self.cursor {
            Cursor::Token { token } => Some(token.clone()),
            _ => None,
        };
        // The next page is asked for as soon as this one says where it is
        // (the reader sends it ahead, before this page's records are read),
        // and arrives while this one is prepared and handed over (the one
        // overlap a cursor allows): against a source taking 20 ms a page,
        // preparing a page of 500 records (about 1 ms) sat between one answer
        // and the next request. Where the process is short of CPU instead (a
        // local file written as fast as the source serves), the overlap
        // neither gains nor costs.
        let mut read = self.read(&mut reader, &mut replayed).await;
        loop {
            let page = match read {
                Ok(Some(page)) => page,
                done => {
                    let done = done.map(|_| None);
                    tokio::select! {
                        _ = pages.send(done) => {}
                        _ = self.stop.fired() => {}
                    }
                    break;
                }
            };
            let hand_over = async {
                let prepared = self.prepare(page).await;
                let failed = prepared.is_err();
                let sent = tokio::select! {
                    sent = pages.send(prepared.map(Some)) => sent.is_ok(),
                    _ = self.stop.fired() => false,
                };
                sent && !failed
            };
            let (next, handed_over) =
                tokio::join!(self.read(&mut reader, &mut replayed), hand_over);
            if !handed_over {
                break;
            }
            read = next;
        }
    }

    /// The next page the plan reads.
    async fn read(
        &self,
        reader: &mut Reader<'_>,
        replayed: &mut Option<String>,
    ) -> Result<Option<Page>, FailureCause> {
        match &self.plan {
            Plan::Replay { ids } => self.dead_letters(ids.as_deref(), replayed).await,
            // A repair reads the window, and keeps only the records it repairs.
            Plan::Repair { ids, delete, .. } => reader
                .next_page(&self.stop)
                .await
                .map(|page| {
                    page.map(|mut page| {
                        page.records
                            .retain(|r| ids.iter().chain(delete).any(|id| id == r.id()));
                        page
                    })
                })
                .map_err(FailureCause::Source),
            _ => reader
                .next_page(&self.stop)
                .await
                .map_err(FailureCause::Source),
        }
    }

    /// The next page of a replay: dead letters after the last source id read,
    /// each record as it was read, extracted again with the current config.
    async fn dead_letters(
        &self,
        ids: Option<&[String]>,
        after: &mut Option<String>,
    ) -> Result<Option<Page>, FailureCause> {
        let letters = self
            .store
            .dead_letters_to_replay(&self.sync, after.as_deref(), ids, self.source.page_size)
            .await?;
        let Some((last, _)) = letters.last() else {
            return Ok(None);
        };
        *after = Some(last.clone());
        let cursor_after = Cursor::Token {
            token: last.clone(),
        };
        let records = letters
            .into_iter()
            .map(|(_, payload)| extract(payload, &self.source))
            .collect();
        Ok(Some(Page {
            records,
            beyond_watermark: 0,
            cursor_after,
            requests: 0,
        }))
    }

    async fn prepare(&self, mut page: Page) -> Result<ReadPage, FailureCause> {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        let (superseded, mapped) = if self.plan == Plan::Deletes {
            // Deletions are not mapped: the ledger names their records.
            let none = page.records.iter().map(|_| None).collect();
            (superseded(&page.records), none)
        } else {
            map_page(&self.mapping, &page.records)
        };
        let (ids, external_ids) = lookup_keys(&page.records, &mapped);
        let known = self.store.known(&self.sync, &ids, &external_ids).await?;
        let arrivals = std::mem::take(&mut page.records)
            .into_iter()
            .zip(superseded)
            .zip(mapped)
            .map(|((record, superseded), mapped)| {
                // A record the ledger holds with the same payload is skipped or
                // stale, never written on the store's word alone: its request is
                // not built here (if the run's own view says otherwise, the write
                // path builds it).
                let unchanged = |m: &MappedRecord| {
                    known
                        .ledger
                        .get(record.id())
                        .is_some_and(|entry| entry.payload_hash == m.hash)
                };
                let encoded = match &mapped {
                    Some(Ok(mapped)) if !unchanged(mapped) => self.sink.encode(mapped),
                    _ => None,
                };
                Arrival {
                    record,
                    mapped,
                    encoded,
                    superseded,
                }
            })
            .collect();
        Ok(ReadPage {
            page,
            arrivals,
            known,
            confirmed,
        })
    }
}

/// Which copies of a page are superseded within it, and the mapping of every
/// other record (none for a superseded or invalid copy): what the run judges.
pub(super) fn map_page(
    mapping: &MappingSpec,
    records: &[Extracted],
) -> (Vec<bool>, Vec<Option<Result<MappedRecord, MappingError>>>) {
    let superseded = superseded(records);
    let mapped = records
        .iter()
        .zip(&superseded)
        .map(|(record, superseded)| match record {
            Extracted::Record(r) if !superseded => Some(map_record(mapping, r)),
            _ => None,
        })
        .collect();
    (superseded, mapped)
}

/// What a page's ledger lookup asks for: its source ids, and the external ids
/// its mapped records would take.
pub(super) fn lookup_keys<'a>(
    records: &'a [Extracted],
    mapped: &'a [Option<Result<MappedRecord, MappingError>>],
) -> (Vec<&'a str>, Vec<&'a str>) {
    let ids = records.iter().map(Extracted::id).collect();
    let external_ids = mapped
        .iter()
        .filter_map(|m| m.as_ref()?.as_ref().ok())
        .map(|m| m.external_id.as_str())
        .collect();
    (ids, external_ids)
}

/// How much lower than the rest of the process the reading thread runs.
#[cfg(target_os = "linux")]
const NICER: i32 = 10;

/// Lowers the calling thread's priority. The reading thread's work is all ahead of
/// need (the source's requests leave from a thread of their own, see
/// `source/fetching.rs`); when it shares a core with the write path (or the API it
/// talks to), the scheduler then lets a woken write run at once instead of after
/// the rest of the reading thread's time slice: at the process's priority, a sync
/// into a SQLite table in the store's file lost 10–15% of its rate. Linux keeps a
/// nice value per thread.
#[cfg(target_os = "linux")]
fn give_way() {
    let thread = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(thread)).and_then(|nice| {
        rustix::process::setpriority_process(Some(thread), (nice + NICER).min(19))
    });
    if let Err(e) = lowered {
        tracing::debug!(error = %e, "the reading thread keeps its priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn give_way() {}

/// Which records of a page are superseded by a newer copy of the same id in it (a
/// page that overlaps itself, a lagging replica): only the newest copy counts.
fn superseded(records: &[Extracted]) -> Vec<bool> {
    let mut newest: super::IdMap<&str, usize> =
        super::IdMap::with_capacity_and_hasher(records.len(), Default::default());
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

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::Value;

    use super::*;
    use crate::record::{RecordKey, SourceRecord};

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
