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
//! written after it; memory holds 16 bytes per line of the logs and nothing
//! per line of the file or the runs.

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
/// merges, more would cost more memory (an id per line, while it is sorted:
/// about 8 MiB at 100,000 lines).
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
            if let Some(at) = uncovered_from(number, committed) {
                log.cut(at).map_err(|e| error(log.path(), e))?;
            }
            if number == committed.log || (number < committed.log && log.lines() > 0) {
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
    pub fn delete(&self, external_id: &str) -> Written {
        self.state().log.append_delete(external_id);
        Written {
            dest_id: Some(external_id.to_owned()),
            unsettled_since: None,
            attempts: 1,
        }
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
            latest = log
                .latest(external_id, field)
                .map_err(|e| error(log.path(), e))?;
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
        Ok(JsonLinesSink::delete(self, delete.external_id))
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
mod tests {
    use super::*;
    use crate::mapping::MappedRecord;
    use serde_json::json;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> (Dir, JsonLinesSpec) {
            let dir = std::env::temp_dir().join(format!("hw-jsonl-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let spec = JsonLinesSpec {
                path: dir.join("out.jsonl"),
                external_id_field: "external_id".into(),
                compact_lines: COMPACT_LINES,
            };
            (Dir(dir), spec)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn put(sink: &JsonLinesSink, id: &str, v: i64) {
        let record = MappedRecord {
            external_id: id.into(),
            payload: json!({"v": v}),
            hash: String::new(),
        };
        let write = Write {
            source_id: id,
            record: &record,
            version: Some(v),
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            known_dest_id: None,
            encoded: None,
            rewrite_over: None,
            unsettled_until: None,
        };
        sink.write(write).expect("write");
    }

    fn text(spec: &JsonLinesSpec) -> String {
        std::fs::read_to_string(&spec.path).unwrap_or_default()
    }

    /// The path of the log numbered `number`.
    fn log_of(spec: &JsonLinesSpec, number: u64) -> PathBuf {
        log_path(&spec.path, number)
    }

    fn held(sink: &JsonLinesSink, id: &str) -> Option<i64> {
        match sink.try_read_back(id).expect("read back") {
            Held::Object { object, .. } => object["v"].as_i64(),
            Held::Nothing => None,
        }
    }

    #[test]
    fn upserts_survive_reopening() {
        let (_dir, spec) = Dir::new("upserts");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        for (id, v) in [("a", 1), ("b", 1), ("a", 2)] {
            put(&sink, id, v);
        }
        sink.flush().expect("flush");
        sink.finish().expect("finish");
        assert_eq!(
            text(&spec),
            "{\"external_id\":\"a\",\"v\":2}\n{\"external_id\":\"b\",\"v\":1}\n"
        );
        let reopened = JsonLinesSink::open(spec).expect("reopen");
        assert_eq!(
            (held(&reopened, "a"), held(&reopened, "b")),
            (Some(2), Some(1))
        );
    }

    #[test]
    fn a_deleted_record_leaves_the_file_and_deleting_it_again_is_fine() {
        let (_dir, spec) = Dir::new("del");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        for id in ["a", "b"] {
            put(&sink, id, 1);
        }
        sink.flush().expect("flush");
        sink.finish().expect("finish");
        sink.delete("a");
        assert_eq!(held(&sink, "a"), None, "deleted before any flush");
        sink.delete("a");
        sink.delete("never-there");
        sink.flush().expect("flush");
        sink.finish().expect("finish");
        assert_eq!(text(&spec), "{\"external_id\":\"b\",\"v\":1}\n");
        assert_eq!(
            JsonLinesSink::open(spec).expect("reopen").read_back("a"),
            Held::Nothing
        );
    }

    /// A SIGKILL after a flush and before any compaction: the file is as it
    /// was, the log holds the writes, and the next process sees them all.
    #[test]
    fn flushed_writes_survive_a_crash_before_compaction() {
        let (_dir, spec) = Dir::new("crash-flushed");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        put(&sink, "a", 1);
        put(&sink, "b", 1);
        sink.finish().expect("finish");
        put(&sink, "a", 2);
        sink.delete("b");
        put(&sink, "c", 1);
        sink.flush().expect("flush");
        // Written and never flushed: the process dies with it in its buffer.
        put(&sink, "d", 1);
        drop(sink);
        assert_eq!(
            text(&spec),
            "{\"external_id\":\"a\",\"v\":1}\n{\"external_id\":\"b\",\"v\":1}\n",
            "a reader still sees the last compacted file"
        );
        let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
        let seen: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| held(&reopened, id))
            .collect();
        assert_eq!(seen, [Some(2), None, Some(1), None]);
        reopened.finish().expect("finish");
        assert_eq!(
            text(&spec),
            "{\"external_id\":\"a\",\"v\":2}\n{\"external_id\":\"c\",\"v\":1}\n"
        );
        assert_eq!(log_numbers(&spec.path).expect("logs"), [] as [u64; 0]);
    }

    /// A crash in the middle of an append leaves a torn last line: it was never
    /// flushed, so it is dropped, and the next append does not run into it.
    #[test]
    fn a_torn_last_line_of_the_log_is_dropped() {
        let (_dir, spec) = Dir::new("torn");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        put(&sink, "a", 1);
        put(&sink, "b", 1);
        sink.flush().expect("flush");
        drop(sink);
        let flushed = std::fs::read(log_of(&spec, 1)).expect("log");
        for tail in [
            &b"{\"external_id\":\"z\",\"v"[..],
            b"\0\0\0\0\n{\"external_id\":\"y\",\"v\":1}\n",
        ] {
            let mut torn = flushed.clone();
            torn.extend_from_slice(tail);
            std::fs::write(log_of(&spec, 1), &torn).expect("tear");
            let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
            assert_eq!(
                ["a", "b", "y", "z"].map(|id| held(&reopened, id)),
                [Some(1), Some(1), None, None]
            );
            put(&reopened, "c", 1);
            reopened.flush().expect("flush");
            drop(reopened);
            let log = std::fs::read_to_string(log_of(&spec, 1)).expect("log");
            assert_eq!(log.lines().count(), 3, "{log}");
            assert!(log.ends_with("{\"external_id\":\"c\",\"v\":1}\n"), "{log}");
            // Back to the flushed log for the next tail.
            std::fs::write(log_of(&spec, 1), &flushed).expect("restore");
        }
    }

    /// A crash after a compaction renamed the file and before the log was
    /// emptied: replaying the log over the new file changes nothing.
    #[test]
    fn a_crash_between_compaction_and_emptying_the_log_changes_nothing() {
        let (_dir, spec) = Dir::new("crash-compact");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        put(&sink, "b", 1);
        sink.finish().expect("finish");
        put(&sink, "a", 1);
        put(&sink, "b", 2);
        sink.delete("b");
        put(&sink, "c", 3);
        sink.flush().expect("flush");
        let log = std::fs::read(log_of(&spec, 2)).expect("log");
        sink.finish().expect("finish");
        drop(sink);
        let compacted = text(&spec);
        std::fs::write(log_of(&spec, 2), log).expect("log left over");
        let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
        assert_eq!(
            ["a", "b", "c"].map(|id| held(&reopened, id)),
            [Some(1), None, Some(3)]
        );
        reopened.finish().expect("finish");
        assert_eq!(text(&spec), compacted);
        assert_eq!(
            compacted,
            "{\"external_id\":\"a\",\"v\":1}\n{\"external_id\":\"c\",\"v\":3}\n"
        );
    }

    /// The log is compacted at a flush once it passes its bound; updates,
    /// inserts and deletions merge into the sorted file, where a binary search
    /// finds each record.
    #[test]
    fn the_log_compacts_into_a_sorted_file_past_its_bound() {
        let (_dir, spec) = Dir::new("compact");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        sink.state().compact_lines = 1_000;
        for i in (0..3_000).rev() {
            put(&sink, &format!("id-{i:05}"), 1);
            if i % 100 == 0 {
                sink.flush().expect("flush");
            }
        }
        assert!(sink.state().log.lines() < 1_000);
        for i in (0..3_000).step_by(3) {
            put(&sink, &format!("id-{i:05}"), 2);
        }
        for i in (1..3_000).step_by(3) {
            sink.delete(&format!("id-{i:05}"));
        }
        sink.finish().expect("finish");
        let lines: Vec<String> = text(&spec).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 2_000);
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "sorted by id");
        let reopened = JsonLinesSink::open(spec).expect("reopen");
        for i in [0, 1, 2, 1_500, 1_501, 2_998, 2_999] {
            let expected = [Some(2), None, Some(1)][i % 3];
            assert_eq!(
                held(&reopened, &format!("id-{i:05}")),
                expected,
                "id-{i:05}"
            );
        }
        assert_eq!(held(&reopened, "id-99999"), None);
        assert_eq!(held(&reopened, "a"), None);
    }

    /// Past its bound the log is set aside and compacted on a thread of its
    /// own; the writes go on into a new log, and a read finds each record's
    /// latest line wherever it is meanwhile.
    #[test]
    fn a_log_past_its_bound_is_compacted_aside_while_writes_go_on() {
        let (_dir, spec) = Dir::new("aside");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        sink.state().compact_lines = 100;
        for i in 0..150 {
            put(&sink, &format!("id-{i:03}"), 1);
        }
        sink.flush().expect("flush");
        assert!(sink.state().compaction.is_some(), "compacting aside");
        assert_eq!(sink.state().log.lines(), 0);
        put(&sink, "id-000", 2);
        sink.delete("id-001");
        put(&sink, "id-150", 2);
        assert_eq!(
            ["id-000", "id-001", "id-002", "id-149", "id-150"].map(|id| held(&sink, id)),
            [Some(2), None, Some(1), Some(1), Some(2)]
        );
        sink.finish().expect("finish");
        assert!(!log_of(&spec, 1).exists(), "removed once compacted");
        let lines: Vec<String> = text(&spec).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 150);
        assert_eq!(lines[0], "{\"external_id\":\"id-000\",\"v\":2}");
        assert_eq!(lines[1], "{\"external_id\":\"id-002\",\"v\":1}");
        assert_eq!(lines[149], "{\"external_id\":\"id-150\",\"v\":2}");
    }

    /// A crash while a log set aside was being compacted leaves it beside the
    /// old file and a newer log: it is read between the two, and compacted
    /// before the newer log, whose lines win.
    #[test]
    fn a_log_set_aside_and_left_by_a_crash_goes_into_the_file_before_the_newer_log() {
        let (_dir, spec) = Dir::new("aside-crash");
        std::fs::create_dir_all(spec.path.parent().expect("dir")).expect("dir");
        let line = |id: &str, v: i64| format!("{{\"external_id\":\"{id}\",\"v\":{v}}}\n");
        std::fs::write(
            &spec.path,
            [line("a", 1), line("b", 1), line("c", 1)].concat(),
        )
        .expect("file");
        let deleted = |id: &str| String::from_utf8(line::delete_line(id)).expect("utf-8");
        std::fs::write(
            log_of(&spec, 1),
            [line("a", 2), deleted("b"), line("c", 2), line("d", 2)].concat(),
        )
        .expect("log set aside");
        std::fs::write(log_of(&spec, 2), [line("a", 3), deleted("d")].concat()).expect("log");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        assert_eq!(
            ["a", "b", "c", "d"].map(|id| held(&sink, id)),
            [Some(3), None, Some(2), None]
        );
        sink.finish().expect("finish");
        assert_eq!(text(&spec), [line("a", 3), line("c", 2)].concat());
        assert!(!log_of(&spec, 1).exists());
        let reopened = JsonLinesSink::open(spec).expect("reopen");
        assert_eq!(
            ["a", "b", "c", "d"].map(|id| held(&reopened, id)),
            [Some(3), None, Some(2), None]
        );
    }

    fn runs_on_disk(spec: &JsonLinesSpec) -> usize {
        let dir = spec.path.parent().expect("dir");
        std::fs::read_dir(dir)
            .expect("dir")
            .filter(|entry| {
                let name = entry.as_ref().expect("entry").file_name();
                name.to_string_lossy().starts_with("out.jsonl.run.")
            })
            .count()
    }

    /// Flushes and waits for the compaction it started, if any.
    fn flush_compacted(sink: &JsonLinesSink) {
        sink.flush().expect("flush");
        let mut state = sink.state();
        sink.collect(&mut state, true).expect("compacted");
    }

    /// Logs past their bound become runs between the file and the log, a few
    /// at a time, merged as a binary counter; a deletion in a run hides the
    /// record's line in the file and in older runs, and the run's end leaves
    /// every record in the file and no run beside it.
    #[test]
    fn logs_become_a_few_runs_over_the_file_whose_deletions_hide_older_lines() {
        let (_dir, spec) = Dir::new("runs");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        sink.state().compact_lines = 100;
        let (mut most_runs, mut file_lines) = (0, Vec::new());
        for i in 0..2_000 {
            put(&sink, &format!("id-{i:04}"), 1);
            if i % 50 == 49 {
                flush_compacted(&sink);
                let state = sink.state();
                most_runs = most_runs.max(state.stack.runs.len());
                file_lines.push(state.stack.file.lines);
                assert_eq!(runs_on_disk(&spec), state.stack.runs.len());
            }
        }
        assert!((2..=5).contains(&most_runs), "{most_runs} runs at most");
        assert!(
            file_lines.windows(2).filter(|w| w[0] != w[1]).count() < 8,
            "the file rewritten a few times, not at every log: {file_lines:?}"
        );
        for i in 0..2_000 {
            match i % 3 {
                0 => sink.delete(&format!("id-{i:04}")),
                1 => {
                    put(&sink, &format!("id-{i:04}"), 2);
                    continue;
                }
                _ => continue,
            };
            if i % 150 == 0 {
                flush_compacted(&sink);
            }
        }
        flush_compacted(&sink);
        assert!(!sink.state().stack.runs.is_empty(), "runs over the file");
        let expect = |i: usize| [None, Some(2), Some(1)][i % 3];
        for i in [0, 1, 2, 999, 1_000, 1_001, 1_998, 1_999] {
            assert_eq!(held(&sink, &format!("id-{i:04}")), expect(i), "id-{i:04}");
        }
        sink.finish().expect("finish");
        assert_eq!(runs_on_disk(&spec), 0);
        let lines: Vec<String> = text(&spec).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 1_333);
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "sorted by id");
        let reopened = JsonLinesSink::open(spec).expect("reopen");
        for i in 0..2_000 {
            assert_eq!(
                held(&reopened, &format!("id-{i:04}")),
                expect(i),
                "id-{i:04}"
            );
        }
    }

    /// A crash in a merge of runs leaves the runs it merged beside the run it
    /// wrote, or beside the file it renamed: the first are removed at open,
    /// the others replay over the file changing nothing; runs are read newest
    /// first, after the log and before the file.
    #[test]
    fn runs_a_crash_left_are_read_in_their_order_and_merged_ones_dropped() {
        let (_dir, spec) = Dir::new("runs-crash");
        std::fs::create_dir_all(spec.path.parent().expect("dir")).expect("dir");
        let line = |id: &str, v: i64| format!("{{\"external_id\":\"{id}\",\"v\":{v}}}\n");
        let deleted = |id: &str| String::from_utf8(line::delete_line(id)).expect("utf-8");
        let run = |numbers: &str| PathBuf::from(format!("{}.run.{numbers}", spec.path.display()));
        std::fs::write(
            &spec.path,
            [line("a", 1), line("b", 1), line("c", 1)].concat(),
        )
        .expect("file");
        // Merged into 1-2 before the crash: its newer lines are there too.
        std::fs::write(run("1-1"), [line("a", 2), deleted("b")].concat()).expect("run");
        std::fs::write(
            run("1-2"),
            [line("a", 2), deleted("b"), line("d", 2)].concat(),
        )
        .expect("run");
        std::fs::write(run("3-3"), [line("c", 3), deleted("d")].concat()).expect("run");
        std::fs::write(log_of(&spec, 1), line("e", 4)).expect("log");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        assert!(!run("1-1").exists(), "merged into 1-2");
        assert_eq!(
            ["a", "b", "c", "d", "e"].map(|id| held(&sink, id)),
            [Some(2), None, Some(3), None, Some(4)]
        );
        sink.finish().expect("finish");
        assert_eq!(
            text(&spec),
            [line("a", 2), line("c", 3), line("e", 4)].concat()
        );
        assert_eq!(runs_on_disk(&spec), 0);
        // The file holding a merge whose runs a crash left: replayed, the same.
        std::fs::write(run("1-1"), [line("a", 2), deleted("b")].concat()).expect("run");
        let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
        reopened.finish().expect("finish");
        assert_eq!(
            text(&spec),
            [line("a", 2), line("c", 3), line("e", 4)].concat()
        );
    }

    /// Flushes and tells the sink that a commit stored where its writes end.
    fn commit(sink: &JsonLinesSink) -> String {
        let position = sink.position().expect("resumed");
        sink.flush().expect("flush");
        sink.committed(&position).expect("committed");
        position
    }

    /// A crash after writes no commit covers, flushed or not: a run resumed
    /// at the last commit's position finds only what that commit covers,
    /// and goes on from there.
    #[test]
    fn a_resumed_run_drops_what_no_commit_covers() {
        let (_dir, spec) = Dir::new("resume");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        assert_eq!(sink.position(), None, "no position before a run resumes it");
        sink.resume(None).expect("resume");
        put(&sink, "a", 1);
        put(&sink, "b", 1);
        let committed = commit(&sink);
        put(&sink, "a", 2);
        sink.delete("b");
        put(&sink, "c", 1);
        sink.flush().expect("flushed, never committed");
        drop(sink);
        let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
        assert_eq!(
            ["a", "b", "c"].map(|id| held(&reopened, id)),
            [Some(2), None, Some(1)],
            "a reader that does not resume sees every line"
        );
        reopened.resume(Some(&committed)).expect("resume");
        assert_eq!(
            ["a", "b", "c"].map(|id| held(&reopened, id)),
            [Some(1), Some(1), None]
        );
        assert_eq!(reopened.position().as_deref(), Some(committed.as_str()));
        put(&reopened, "c", 2);
        commit(&reopened);
        reopened.finish().expect("finish");
        assert_eq!(
            text(&spec),
            [
                r#"{"external_id":"a","v":1}"#,
                r#"{"external_id":"b","v":1}"#,
                r#"{"external_id":"c","v":2}"#,
                ""
            ]
            .join("\n")
        );
        assert!(
            JsonLinesSink::open(spec.clone())
                .expect("reopen")
                .resume(Some("x"))
                .is_err(),
            "a position that is not one is refused"
        );
    }

    /// A log set aside is compacted only once a commit covers all of it: a
    /// crash before leaves it to be cut back, never merged into the file.
    #[test]
    fn a_log_set_aside_waits_for_a_commit_that_covers_it() {
        let (_dir, spec) = Dir::new("covered");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        sink.resume(None).expect("resume");
        sink.state().compact_lines = 100;
        for i in 0..50 {
            put(&sink, &format!("id-{i:03}"), 1);
        }
        let first = commit(&sink);
        for i in 50..149 {
            put(&sink, &format!("id-{i:03}"), 1);
        }
        let before = sink.position().expect("position");
        put(&sink, "id-149", 1);
        sink.flush().expect("flush");
        {
            let state = sink.state();
            assert!(state.aside.is_some(), "set aside");
            assert!(
                state.compaction.is_none(),
                "not compacted before its commit"
            );
        }
        sink.committed(&before).expect("committed");
        assert!(
            sink.state().compaction.is_none(),
            "its last lines are not covered yet"
        );
        drop(sink);
        let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
        reopened.resume(Some(&first)).expect("resume");
        assert_eq!(
            ["id-000", "id-049", "id-050", "id-149"].map(|id| held(&reopened, id)),
            [Some(1), Some(1), None, None]
        );
        assert_eq!(text(&spec), "", "nothing compacted");
        reopened.state().compact_lines = 100;
        for i in 50..150 {
            put(&reopened, &format!("id-{i:03}"), 2);
        }
        reopened.flush().expect("flush");
        commit(&reopened);
        let mut state = reopened.state();
        assert!(state.compaction.is_some(), "compacted once covered");
        reopened.collect(&mut state, true).expect("compacted");
        drop(state);
        assert_eq!(text(&spec).lines().count(), 150);
        reopened.finish().expect("finish");
        assert_eq!(held(&reopened, "id-149"), Some(2));
    }

    /// The end of a run that stopped keeps only what its commits cover; a
    /// log begun after the end is dropped whole by a run resumed at the
    /// position its last commit stored.
    #[test]
    fn the_end_of_a_run_keeps_what_its_commits_cover() {
        let (_dir, spec) = Dir::new("finish-cut");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        sink.resume(None).expect("resume");
        put(&sink, "a", 1);
        let committed = commit(&sink);
        put(&sink, "b", 1);
        sink.flush().expect("flush");
        sink.finish().expect("finish");
        assert_eq!(text(&spec), "{\"external_id\":\"a\",\"v\":1}\n");
        put(&sink, "c", 1);
        sink.flush()
            .expect("flushed by a run killed before its first commit");
        drop(sink);
        let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
        reopened.resume(Some(&committed)).expect("resume");
        assert_eq!(
            ["a", "b", "c"].map(|id| held(&reopened, id)),
            [Some(1), None, None]
        );
        assert_eq!(log_numbers(&spec.path).expect("logs"), [] as [u64; 0]);
        // A log set aside past the last commit's log is dropped whole.
        reopened.state().compact_lines = 100;
        for i in 0..150 {
            put(&reopened, &format!("id-{i:03}"), 1);
        }
        reopened.flush().expect("flush");
        assert!(reopened.state().aside.is_some(), "set aside, never covered");
        reopened.finish().expect("finish");
        assert_eq!(text(&spec), "{\"external_id\":\"a\",\"v\":1}\n");
    }

    /// A file written in another order (by hand) is read whole, once, by its
    /// first compaction, and is sorted from then on.
    #[test]
    fn a_file_not_sorted_by_id_is_sorted_by_its_first_compaction() {
        let (_dir, spec) = Dir::new("unsorted");
        std::fs::create_dir_all(spec.path.parent().expect("dir")).expect("dir");
        std::fs::write(
            &spec.path,
            "{\"external_id\":\"c\",\"v\":1}\n\n{\"external_id\":\"a\",\"v\":1}\n",
        )
        .expect("file");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        assert_eq!((held(&sink, "a"), held(&sink, "c")), (Some(1), Some(1)));
        put(&sink, "b", 1);
        sink.finish().expect("finish");
        assert_eq!(
            text(&spec),
            "{\"external_id\":\"a\",\"v\":1}\n{\"external_id\":\"b\",\"v\":1}\n{\"external_id\":\"c\",\"v\":1}\n"
        );
    }

    #[test]
    fn a_file_with_a_line_that_is_not_a_record_is_refused_with_its_line() {
        let (_dir, spec) = Dir::new("refused");
        std::fs::create_dir_all(spec.path.parent().expect("dir")).expect("dir");
        std::fs::write(&spec.path, "{\"external_id\":\"a\"}\n{\"id\":1}\n").expect("file");
        let e = JsonLinesSink::open(spec).expect_err("refused");
        assert!(
            e.to_string().contains("line 2: no `external_id` string"),
            "{e}"
        );
    }
}
