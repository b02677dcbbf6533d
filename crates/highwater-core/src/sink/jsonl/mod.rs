//! Owns the JSON Lines file destination for local use: one object per line, keyed
//! by external id (upsert), a deleted record's line dropped. A write or deletion
//! is appended to the log (`log.rs`) and made durable by `flush` (before the
//! page's checkpoint commits); the file people read (`file.rs`, sorted by
//! external id) takes the log's lines in compactions — written aside and
//! renamed over it, so a crash leaves the old file or the new one, and the
//! runs and logs to replay over it.
//! Once the log holds [`COMPACT_LINES`] lines or [`COMPACT_BYTES`], a flush
//! sets it aside (`<file>.log.1`) and compacts it on a thread of its own while
//! a new log takes the writes: into a sorted run between the file and the log,
//! merged with the runs and the file as `runs.rs` plans, so that a compaction
//! rewrites the whole file only when it brings more than half as many records
//! as the file holds. At the run's end (`finish`) the runs and the log are
//! merged into the file.
//! Invariants: what `flush` returned from is found again after a crash, what a
//! crash left unflushed is found whole or not at all; a read sees the log, then
//! the log set aside, then the runs from the newest, then the file; the log set
//! aside is compacted and removed, durably, before another is set aside or the
//! log is compacted, so that no older line is ever replayed over a newer one;
//! memory holds 16 bytes per line of the logs and nothing per line of the file
//! or the runs.

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
    log: Log,
    /// The log set aside for a compaction, older than `log`.
    aside: Option<Arc<Log>>,
    /// The compaction of `aside` under way, and the stack it leaves.
    compaction: Option<JoinHandle<std::io::Result<Stack>>>,
    /// The compacted file and the runs over it.
    stack: Stack,
    /// The spec's `compact_lines`; tests change it.
    compact_lines: usize,
}

impl JsonLinesSink {
    /// Opens the destination: checks the file line by line and reads the log
    /// left since its last compaction, changing neither (a torn tail of the log
    /// is cut off by the first append).
    pub fn open(spec: JsonLinesSpec) -> Result<Self, SinkError> {
        let file =
            file::scan(&spec.path, &spec.external_id_field).map_err(|e| error(&spec.path, e))?;
        let runs = runs::open(&spec.path).map_err(|e| error(&spec.path, e))?;
        // A log set aside and not yet compacted, when a crash stopped its
        // compaction: it is compacted again (replaying it changes nothing).
        let aside_path = aside_path(&spec.path);
        let (mut aside, _) = Log::open(aside_path.clone(), &spec.external_id_field)
            .map_err(|e| error(&aside_path, e))?;
        aside.readable().map_err(|e| error(&aside_path, e))?;
        let log_path = log_path(&spec.path);
        let (log, torn) = Log::open(log_path.clone(), &spec.external_id_field)
            .map_err(|e| error(&log_path, e))?;
        if torn > 0 {
            tracing::warn!(
                log = %log_path.display(),
                bytes = torn,
                "the destination's log ends in {torn} bytes a crash left unflushed: they are dropped"
            );
        }
        let compact_lines = spec.compact_lines;
        Ok(JsonLinesSink {
            spec,
            state: Mutex::new(State {
                log,
                aside: (aside.lines() > 0).then(|| Arc::new(aside)),
                compaction: None,
                stack: Stack { file, runs },
                compact_lines,
            }),
        })
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
        for log in std::iter::once(&state.log).chain(state.aside.as_deref()) {
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
    /// log has grown past its bound, sets it aside and starts its compaction.
    pub fn flush(&self) -> Result<(), SinkError> {
        let mut state = self.state();
        state.log.sync().map_err(|e| error(state.log.path(), e))?;
        self.collect(&mut state, false)?;
        if state.log.lines() >= state.compact_lines || state.log.bytes() >= COMPACT_BYTES {
            // One log aside at a time: the one before must be in the file.
            self.collect(&mut state, true)?;
            if state.aside.is_none() {
                let aside = aside_path(&self.spec.path);
                state
                    .log
                    .set_aside(aside.clone())
                    .map_err(|e| error(&aside, e))?;
                let log = std::mem::replace(&mut state.log, Log::empty(log_path(&self.spec.path)));
                state.aside = Some(Arc::new(log));
            }
        }
        self.start(&mut state)
    }

    /// Called at the end of a run: makes everything durable and compacts the
    /// logs into the file, which then holds every record, one line each.
    pub fn finish(&self) -> Result<(), SinkError> {
        let mut state = self.state();
        state.log.sync().map_err(|e| error(state.log.path(), e))?;
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
            state.log.clear().map_err(|e| error(state.log.path(), e))?;
        }
        Ok(())
    }

    /// Starts compacting the log set aside, unless that is under way.
    fn start(&self, state: &mut State) -> Result<(), SinkError> {
        let Some(aside) = state.aside.clone().filter(|_| state.compaction.is_none()) else {
            return Ok(());
        };
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
}

fn log_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.log", path.display()))
}

fn aside_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.log.1", path.display()))
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

    fn log_of(spec: &JsonLinesSpec) -> PathBuf {
        log_path(&spec.path)
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
        assert_eq!(
            std::fs::metadata(log_of(&spec)).map(|m| m.len()).ok(),
            Some(0)
        );
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
        let flushed = std::fs::read(log_of(&spec)).expect("log");
        for tail in [
            &b"{\"external_id\":\"z\",\"v"[..],
            b"\0\0\0\0\n{\"external_id\":\"y\",\"v\":1}\n",
        ] {
            let mut torn = flushed.clone();
            torn.extend_from_slice(tail);
            std::fs::write(log_of(&spec), &torn).expect("tear");
            let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
            assert_eq!(
                ["a", "b", "y", "z"].map(|id| held(&reopened, id)),
                [Some(1), Some(1), None, None]
            );
            put(&reopened, "c", 1);
            reopened.flush().expect("flush");
            drop(reopened);
            let log = std::fs::read_to_string(log_of(&spec)).expect("log");
            assert_eq!(log.lines().count(), 3, "{log}");
            assert!(log.ends_with("{\"external_id\":\"c\",\"v\":1}\n"), "{log}");
            // Back to the flushed log for the next tail.
            std::fs::write(log_of(&spec), &flushed).expect("restore");
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
        let log = std::fs::read(log_of(&spec)).expect("log");
        sink.finish().expect("finish");
        drop(sink);
        let compacted = text(&spec);
        std::fs::write(log_of(&spec), log).expect("log left over");
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
        assert!(!aside_path(&spec.path).exists(), "removed once compacted");
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
            aside_path(&spec.path),
            [line("a", 2), deleted("b"), line("c", 2), line("d", 2)].concat(),
        )
        .expect("log set aside");
        std::fs::write(log_path(&spec.path), [line("a", 3), deleted("d")].concat()).expect("log");
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        assert_eq!(
            ["a", "b", "c", "d"].map(|id| held(&sink, id)),
            [Some(3), None, Some(2), None]
        );
        sink.finish().expect("finish");
        assert_eq!(text(&spec), [line("a", 3), line("c", 2)].concat());
        assert!(!aside_path(&spec.path).exists());
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
        std::fs::write(log_path(&spec.path), line("e", 4)).expect("log");
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
