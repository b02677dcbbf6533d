//! Owns the JSON Lines file destination for local use: one object per line, keyed
//! by external id (upsert), a deleted record's line dropped. A write or deletion
//! is appended to the log (`log.rs`, `<file>.log.<n>`) and made durable by
//! `flush` (before the page's checkpoint commits); the file people read
//! (`file.rs`, sorted by external id) takes the logs' lines in compactions —
//! written aside and renamed over it, so a crash leaves the old file or the
//! new one, and the runs and logs to replay over it.
//! A write lands only with a commit of the state store that covers it: each
//! commit stores where the writes end in the logs (`position`), and a run
//! starts by cutting off what lies past the last one stored (`resume`), so
//! that the engine need not announce a write before it goes.
//! Once the log holds [`COMPACT_LINES`] lines or [`COMPACT_BYTES`], a flush
//! sets it aside, a new log numbered one more takes the writes, and once a
//! commit covers the log set aside it is compacted on a thread of its own:
//! into a sorted run between the file and the log, merged with the runs and
//! the file as `runs.rs` plans, so that a compaction rewrites the whole file
//! only when it brings more than half as many records as the file holds. At
//! the run's end (`finish`) what no commit covers is cut off, and the runs and
//! the logs are merged into the file.
//! Invariants: what `flush` returned from and a commit covers is found again
//! after a crash; what a crash left unflushed is found whole or not at all,
//! and what no commit covers is not found by a resumed run; only covered
//! lines are compacted; a read sees the log, then the log set aside, then the
//! runs from the newest, then the file; the log set aside is compacted and
//! removed, durably, before another is set aside or the log is compacted, so
//! that no older line is ever replayed over a newer one; a log is appended to
//! only past the last position stored in it, and the number of one merged
//! into the file is not taken again, so no stored position covers a line
//! written after it; memory holds a line's id and 24 bytes per line of the
//! logs and nothing per line of the file or the runs.

pub mod config;
mod file;
mod line;
mod log;
mod runs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{Delete, Held, Sink, SinkError, Write, Written};
use crate::stop::Stop;
use config::JsonLinesSpec;
use log::{Latest, Log};
use runs::Stack;

/// Lines in the log that make the next flush set it aside to be compacted,
/// unless `compact_lines` says otherwise: fewer would make more runs and more
/// merges, more would cost more memory (each line's id and 24 bytes, and as
/// much again while a compaction sorts them).
pub const COMPACT_LINES: usize = 100_000;
/// Bytes in the log that make the next flush compact it, whatever its lines.
pub const COMPACT_BYTES: u64 = 64 << 20;

#[derive(Debug)]
pub struct JsonLinesSink {
    spec: JsonLinesSpec,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The log taking the writes, and its number (`<file>.log.<n>`).
    log: Log,
    number: u64,
    /// The log set aside for a compaction, older than `log`, with its number.
    aside: Option<(u64, Arc<Log>)>,
    /// The compaction of `aside` under way, and the stack it leaves.
    compaction: Option<JoinHandle<std::io::Result<Stack>>>,
    /// The compacted file and the runs over it.
    stack: Stack,
    /// The spec's `compact_lines`; tests change it.
    compact_lines: usize,
    /// How far the state store's commits cover the logs, once a run resumed
    /// the destination (`None` before: every line counts).
    committed: Option<Position>,
}

/// A place in the logs: a log's number and a byte offset in it. A commit
/// covers every line before the position it stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    log: u64,
    offset: u64,
}

impl Position {
    fn parse(text: &str) -> Option<Position> {
        let (log, offset) = text.split_once(':')?;
        Some(Position {
            log: log.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.log, self.offset)
    }
}

impl State {
    /// Whether a commit covers every line of `log`, numbered `number`.
    fn covers(&self, number: u64, log: &Log) -> bool {
        self.committed.is_none_or(|committed| {
            Position {
                log: number,
                offset: log.bytes(),
            } <= committed
        })
    }
}

impl JsonLinesSink {
    /// Opens the destination: checks the file line by line and reads the logs
    /// left since its last compaction, changing none (a torn tail of the log
    /// is cut off by the first append).
    pub fn open(spec: JsonLinesSpec) -> Result<Self, SinkError> {
        let file =
            file::scan(&spec.path, &spec.external_id_field).map_err(|e| error(&spec.path, e))?;
        let runs = runs::open(&spec.path).map_err(|e| error(&spec.path, e))?;
        let mut logs = Vec::new();
        for number in log_numbers(&spec.path).map_err(|e| error(&spec.path, e))? {
            let path = log_path(&spec.path, number);
            let (log, torn) =
                Log::open(path.clone(), &spec.external_id_field).map_err(|e| error(&path, e))?;
            if torn > 0 {
                tracing::warn!(
                    log = %path.display(),
                    bytes = torn,
                    "the destination's log ends in {torn} bytes a crash left unflushed: they are dropped"
                );
            }
            logs.push((number, log));
        }
        // One log set aside at a time: a third is none this sink left.
        if logs.len() > 2 {
            return Err(error(
                &spec.path,
                std::io::Error::other(format!(
                    "{} logs beside the file, where there are at most two",
                    logs.len()
                )),
            ));
        }
        let (number, log) = match logs.pop() {
            Some(newest) => newest,
            None => (1, Log::empty(log_path(&spec.path, 1))),
        };
        // A log set aside whose compaction a crash stopped is compacted
        // again (replaying it changes nothing).
        let aside = match logs.pop() {
            Some((number, mut aside)) => {
                aside.readable().map_err(|e| error(aside.path(), e))?;
                Some((number, Arc::new(aside)))
            }
            None => None,
        };
        let compact_lines = spec.compact_lines;
        Ok(JsonLinesSink {
            spec,
            state: Mutex::new(State {
                log,
                number,
                aside,
                compaction: None,
                stack: Stack { file, runs },
                compact_lines,
                committed: None,
            }),
        })
    }

    /// Takes the destination up where the state store's last commit left it
    /// (`position`, `None` when no commit stored one): what a crash left past
    /// it is dropped — its records are read again, and those written were
    /// announced in that commit or are not in the ledger — and from now on a
    /// log is compacted only once a commit covers it.
    pub fn resume(&self, position: Option<&str>) -> Result<(), SinkError> {
        let committed = match position {
            Some(text) => Position::parse(text).ok_or_else(|| {
                error(
                    &self.spec.path,
                    std::io::Error::other(format!(
                        "the state store's position in the logs, {text:?}, is not `<log>:<offset>`"
                    )),
                )
            })?,
            None => Position::default(),
        };
        let mut state = self.state();
        // A commit stored a position past the first log's start, so lines
        // were written here, and a run's end leaves the file: with neither
        // the file nor a log or run of its lines left, it was taken away,
        // and the ledger would take every record in it for written.
        let written = committed.log > 1 || committed.offset > 0;
        if written
            && state.log.bytes() == 0
            && state.aside.is_none()
            && state.stack.runs.is_empty()
            && !self.spec.path.exists()
        {
            return Err(error(
                &self.spec.path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not found, though this sync has written to it (the state store holds \
                     its position in the file's logs): put the file back, or run `highwater \
                     reset <sync> --forget-ledger` to write every record again",
                ),
            ));
        }
        let mut logs: Vec<(u64, Log)> = Vec::with_capacity(2);
        if let Some((number, aside)) = state.aside.take() {
            let aside = Arc::try_unwrap(aside)
                .map_err(|_| error(&self.spec.path, std::io::Error::other("a log in use")))?;
            logs.push((number, aside));
        }
        let current = state.number;
        let log = std::mem::replace(&mut state.log, Log::empty(PathBuf::new()));
        logs.push((current, log));
        let mut kept = Vec::with_capacity(2);
        for (number, mut log) in logs {
            // A later log goes whole; an earlier one, every line covered,
            // stays unless empty.
            let keep = match number.cmp(&committed.log) {
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => {
                    log.cut(committed.offset)
                        .map_err(|e| error(log.path(), e))?;
                    true
                }
                std::cmp::Ordering::Less => log.lines() > 0,
            };
            if keep {
                kept.push((number, log));
            } else {
                log.remove().map_err(|e| error(log.path(), e))?;
            }
        }
        // The log the last commit ended in takes the writes on; past a log
        // every line of which is covered, a new one does.
        let (number, log) = match kept.pop() {
            Some((number, log)) if number == committed.log => (number, log),
            older => {
                kept.extend(older);
                let number = committed.log.max(current) + 1;
                (number, Log::empty(log_path(&self.spec.path, number)))
            }
        };
        state.log = log;
        state.number = number;
        state.aside = match kept.pop() {
            Some((number, mut aside)) => {
                aside.readable().map_err(|e| error(aside.path(), e))?;
                Some((number, Arc::new(aside)))
            }
            None => None,
        };
        state.committed = Some(committed);
        Ok(())
    }

    /// Where the writes so far end in the logs, once resumed.
    pub fn position(&self) -> Option<String> {
        let state = self.state();
        state.committed.map(|_| {
            Position {
                log: state.number,
                offset: state.log.bytes(),
            }
            .to_string()
        })
    }

    /// A commit storing `position` is durable: a log set aside that it
    /// covers may be compacted.
    pub fn committed(&self, position: &str) -> Result<(), SinkError> {
        let Some(position) = Position::parse(position) else {
            return Ok(());
        };
        let mut state = self.state();
        if let Some(committed) = &mut state.committed {
            *committed = (*committed).max(position);
        }
        self.start(&mut state)
    }

    pub fn write(&self, write: Write<'_>) -> Result<Written, SinkError> {
        let line = line::record_line(
            &write.record.payload,
            &self.spec.external_id_field,
            &write.record.external_id,
        )
        .map_err(|e| error(&self.spec.path, e.into()))?;
        let mut state = self.state();
        state
            .log
            .append(&write.record.external_id, &line)
            .map_err(|e| error(state.log.path(), e))?;
        Ok(Written {
            dest_id: Some(write.record.external_id.clone()),
            unsettled_since: None,
            attempts: 1,
        })
    }

    /// Removes the record's line (durably at the next flush); a line not there
    /// is deleted already.
    pub fn delete(&self, external_id: &str) -> Result<Written, SinkError> {
        let mut state = self.state();
        state
            .log
            .append_delete(external_id)
            .map_err(|e| error(state.log.path(), e))?;
        Ok(Written {
            dest_id: Some(external_id.to_owned()),
            unsettled_since: None,
            attempts: 1,
        })
    }

    /// What the destination holds for `external_id`; a file that cannot be
    /// read holds nothing it can show (see [`try_read_back`](Self::try_read_back)).
    pub fn read_back(&self, external_id: &str) -> Held {
        self.try_read_back(external_id).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the destination back");
            Held::Nothing
        })
    }

    /// What the destination holds for `external_id`: its latest line in the
    /// log, else in the log set aside, else in the newest run that names it,
    /// else its line in the file (the old one or the one a compaction under
    /// way renames over it: they differ only in lines the runs and the log
    /// set aside still hold).
    pub fn try_read_back(&self, external_id: &str) -> Result<Held, SinkError> {
        let field = &self.spec.external_id_field;
        let state = self.state();
        let mut latest = None;
        let aside = state.aside.as_ref().map(|(_, log)| &**log);
        for log in std::iter::once(&state.log).chain(aside) {
            latest = log.latest(external_id).map_err(|e| error(log.path(), e))?;
            if latest.is_some() {
                break;
            }
        }
        for run in state.stack.runs.iter().rev() {
            if latest.is_some() {
                break;
            }
            latest = run
                .find(field, external_id)
                .map_err(|e| error(run.path(), e))?;
        }
        if latest.is_none() {
            latest = file::find(&self.spec.path, state.stack.file, field, external_id)
                .map_err(|e| error(&self.spec.path, e))?;
        }
        let line = match latest {
            Some(Latest::Record(line)) => line,
            Some(Latest::Deleted) | None => return Ok(Held::Nothing),
        };
        let object = serde_json::from_slice(&line).map_err(|e| error(&self.spec.path, e.into()))?;
        Ok(Held::Object {
            dest_id: Some(external_id.to_owned()),
            object,
            version: None,
        })
    }

    /// Makes every write and deletion so far durable (in the log); once the
    /// log has grown past its bound, sets it aside — a new log takes the
    /// writes — and starts its compaction once a commit covers it.
    pub fn flush(&self) -> Result<(), SinkError> {
        let mut state = self.state();
        state.log.sync().map_err(|e| error(state.log.path(), e))?;
        self.collect(&mut state, false)?;
        if state.log.lines() >= state.compact_lines || state.log.bytes() >= COMPACT_BYTES {
            // One log aside at a time: the one before must be in the file.
            if state.compaction.is_some() {
                self.collect(&mut state, true)?;
            }
            if state.aside.is_none() {
                state.log.seal().map_err(|e| error(state.log.path(), e))?;
                let next = state.number + 1;
                let log =
                    std::mem::replace(&mut state.log, Log::empty(log_path(&self.spec.path, next)));
                state.aside = Some((state.number, Arc::new(log)));
                state.number = next;
            }
        }
        self.start(&mut state)
    }

    /// Called at the end of a run: makes everything durable, drops what no
    /// commit covers (a run that stopped or failed wrote it for records it
    /// reads again), and compacts the logs into the file, which then holds
    /// every record, one line each; the next write starts a new log.
    pub fn finish(&self) -> Result<(), SinkError> {
        let mut state = self.state();
        state.log.sync().map_err(|e| error(state.log.path(), e))?;
        if let Some(committed) = state.committed {
            self.collect(&mut state, true)?;
            if let Some((number, aside)) = state.aside.take() {
                let mut aside = Arc::try_unwrap(aside)
                    .map_err(|_| error(&self.spec.path, std::io::Error::other("a log in use")))?;
                if let Some(at) = uncovered_from(number, committed) {
                    aside.cut(at).map_err(|e| error(aside.path(), e))?;
                }
                state.aside = Some((number, Arc::new(aside)));
            }
            if let Some(at) = uncovered_from(state.number, committed) {
                state.log.cut(at).map_err(|e| error(state.log.path(), e))?;
            }
            let bytes = state.log.bytes();
            state.committed = Some(committed.max(Position {
                log: state.number,
                offset: bytes,
            }));
        }
        self.start(&mut state)?;
        self.collect(&mut state, true)?;
        let stack = &state.stack;
        let compacted = stack.runs.is_empty() && stack.file.sorted;
        if state.log.bytes() > 0 || !compacted {
            let path = &self.spec.path;
            state
                .log
                .readable()
                .map_err(|e| error(state.log.path(), e))?;
            let field = &self.spec.external_id_field;
            let file = runs::compact_all(path, field, &state.stack, &state.log)
                .map_err(|e| error(path, e))?;
            state.stack = Stack {
                file,
                runs: Vec::new(),
            };
        }
        // The file is there once a run has ended, even with no line in it:
        // where it is missing later, `resume` knows it was taken away.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.spec.path)
        {
            Ok(file) => {
                file.sync_all().map_err(|e| error(&self.spec.path, e))?;
                log::sync_dir(&self.spec.path).map_err(|e| error(&self.spec.path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error(&self.spec.path, e)),
        }
        state.log.remove().map_err(|e| error(state.log.path(), e))?;
        let next = state.number + 1;
        state.log = Log::empty(log_path(&self.spec.path, next));
        state.number = next;
        Ok(())
    }

    /// Starts compacting the log set aside, unless that is under way or no
    /// commit covers it yet.
    fn start(&self, state: &mut State) -> Result<(), SinkError> {
        let Some((_, aside)) = state
            .aside
            .as_ref()
            .filter(|(number, aside)| state.compaction.is_none() && state.covers(*number, aside))
        else {
            return Ok(());
        };
        let aside = Arc::clone(aside);
        let (path, field, stack) = (
            self.spec.path.clone(),
            self.spec.external_id_field.clone(),
            state.stack.clone(),
        );
        let compaction = std::thread::Builder::new()
            .name("highwater-compact".into())
            .spawn(move || {
                let stack = runs::compact(&path, &field, &stack, &aside, stack.next_number())?;
                aside.remove()?;
                Ok(stack)
            })
            .map_err(|e| error(&self.spec.path, e))?;
        state.compaction = Some(compaction);
        Ok(())
    }

    /// Takes the result of the compaction under way once it is done, or, with
    /// `wait`, when it is.
    fn collect(&self, state: &mut State, wait: bool) -> Result<(), SinkError> {
        let Some(compaction) = state
            .compaction
            .take_if(|compaction| wait || compaction.is_finished())
        else {
            return Ok(());
        };
        let path = &self.spec.path;
        state.stack = compaction
            .join()
            .map_err(|_| error(path, std::io::Error::other("the compaction panicked")))?
            .map_err(|e| error(path, e))?;
        state.aside = None;
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Sink for JsonLinesSink {
    async fn write(&self, write: Write<'_>, _stop: &Stop) -> Result<Written, SinkError> {
        JsonLinesSink::write(self, write)
    }

    async fn delete(&self, delete: &Delete<'_>, _stop: &Stop) -> Result<Written, SinkError> {
        JsonLinesSink::delete(self, delete.external_id)
    }

    fn can_read_back(&self) -> bool {
        true
    }

    async fn read_back(&self, external_id: &str, _stop: &Stop) -> Result<Held, SinkError> {
        JsonLinesSink::try_read_back(self, external_id)
    }

    /// Its one writer applies every write in order, whole.
    fn refuses_older_writes(&self) -> bool {
        true
    }

    async fn flush(&self) -> Result<(), SinkError> {
        JsonLinesSink::flush(self)
    }

    async fn finish(&self) -> Result<(), SinkError> {
        JsonLinesSink::finish(self)
    }

    fn position(&self) -> Option<String> {
        JsonLinesSink::position(self)
    }

    fn committed(&self, position: &str) -> Result<(), SinkError> {
        JsonLinesSink::committed(self, position)
    }

    async fn resume(&self, position: Option<&str>) -> Result<(), SinkError> {
        JsonLinesSink::resume(self, position)
    }
}

/// Where the lines of the log numbered `number` stop being covered by a
/// commit that stored `committed`: all of a later log, none of an earlier one.
fn uncovered_from(number: u64, committed: Position) -> Option<u64> {
    match number.cmp(&committed.log) {
        std::cmp::Ordering::Less => None,
        std::cmp::Ordering::Equal => Some(committed.offset),
        std::cmp::Ordering::Greater => Some(0),
    }
}

fn log_path(path: &Path, number: u64) -> PathBuf {
    PathBuf::from(format!("{}.log.{number}", path.display()))
}

/// The numbers of the logs beside the file at `path`, oldest first.
fn log_numbers(path: &Path) -> std::io::Result<Vec<u64>> {
    let prefix = format!(
        "{}.log.",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut numbers = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(number) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn error(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::File {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests;
