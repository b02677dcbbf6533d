//! Owns the JSON Lines file destination for local use: one object per line, keyed
//! by external id (upsert), a deleted record's line dropped. A write or deletion
//! is appended to the log (`log.rs`) and made durable by `flush` (before the
//! page's checkpoint commits); the file people read (`file.rs`, sorted by
//! external id) takes the log's lines in a compaction — once the log holds
//! [`COMPACT_LINES`] lines or [`COMPACT_BYTES`], and at the run's end
//! (`finish`) — written aside and renamed over it, so a crash leaves the old
//! file or the new one, and the log to replay over it.
//! Invariants: what `flush` returned from is found again after a crash, what a
//! crash left unflushed is found whole or not at all; memory holds 16 bytes per
//! line of the log and nothing per line of the file.

pub mod config;
mod file;
mod line;
mod log;

use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::Value;

use super::{Delete, Held, Sink, SinkError, Write, Written};
use crate::stop::Stop;
use config::JsonLinesSpec;
use file::Shape;
use log::{Latest, Log};

/// Lines in the log that make the next flush compact it into the file: each
/// compaction rewrites the file, so fewer would cost more passes over a large
/// file, and more would cost more memory (an id per line, during the merge:
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
    file: Shape,
    /// [`COMPACT_LINES`], but for tests.
    compact_lines: usize,
}

impl JsonLinesSink {
    /// Opens the destination: checks the file line by line and reads the log
    /// left since its last compaction, changing neither (a torn tail of the log
    /// is cut off by the first append).
    pub fn open(spec: JsonLinesSpec) -> Result<Self, SinkError> {
        let file =
            file::scan(&spec.path, &spec.external_id_field).map_err(|e| error(&spec.path, e))?;
        let log_path = PathBuf::from(format!("{}.log", spec.path.display()));
        let (log, torn) = Log::open(log_path.clone(), &spec.external_id_field)
            .map_err(|e| error(&log_path, e))?;
        if torn > 0 {
            tracing::warn!(
                log = %log_path.display(),
                bytes = torn,
                "the destination's log ends in {torn} bytes a crash left unflushed: they are dropped"
            );
        }
        Ok(JsonLinesSink {
            spec,
            state: Mutex::new(State {
                log,
                file,
                compact_lines: COMPACT_LINES,
            }),
        })
    }

    pub fn write(&self, write: Write<'_>) -> Result<Written, SinkError> {
        let mut row = write.record.payload.clone();
        if let Some(object) = row.as_object_mut() {
            object.insert(
                self.spec.external_id_field.clone(),
                Value::String(write.record.external_id.clone()),
            );
        }
        let mut line = serde_json::to_vec(&row).map_err(|e| error(&self.spec.path, e.into()))?;
        line.push(b'\n');
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
    /// log, else its line in the file.
    pub fn try_read_back(&self, external_id: &str) -> Result<Held, SinkError> {
        let field = &self.spec.external_id_field;
        let state = self.state();
        let line = match state
            .log
            .latest(external_id, field)
            .map_err(|e| error(state.log.path(), e))?
        {
            Some(Latest::Record(line)) => line,
            Some(Latest::Deleted) => return Ok(Held::Nothing),
            None => match file::find(&self.spec.path, state.file, field, external_id)
                .map_err(|e| error(&self.spec.path, e))?
            {
                Some(line) => line,
                None => return Ok(Held::Nothing),
            },
        };
        let object = serde_json::from_slice(&line).map_err(|e| error(&self.spec.path, e.into()))?;
        Ok(Held::Object {
            dest_id: Some(external_id.to_owned()),
            object,
        })
    }

    /// Makes every write and deletion so far durable (in the log); compacts the
    /// log into the file once it has grown past its bound.
    pub fn flush(&self) -> Result<(), SinkError> {
        let mut state = self.state();
        state.log.sync().map_err(|e| error(state.log.path(), e))?;
        if state.log.lines() >= state.compact_lines || state.log.bytes() >= COMPACT_BYTES {
            self.compact(&mut state)?;
        }
        Ok(())
    }

    /// Called at the end of a run: makes everything durable and compacts the
    /// log into the file, which then holds every record, one line each.
    pub fn finish(&self) -> Result<(), SinkError> {
        let mut state = self.state();
        state.log.sync().map_err(|e| error(state.log.path(), e))?;
        if state.log.bytes() > 0 || !state.file.sorted {
            self.compact(&mut state)?;
        }
        Ok(())
    }

    fn compact(&self, state: &mut State) -> Result<(), SinkError> {
        let path = &self.spec.path;
        state.file = file::compact(
            path,
            state.file,
            &self.spec.external_id_field,
            &mut state.log,
        )
        .map_err(|e| error(path, e))?;
        state.log.clear().map_err(|e| error(state.log.path(), e))
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

fn error(path: &std::path::Path, source: std::io::Error) -> SinkError {
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

    fn log_path(spec: &JsonLinesSpec) -> PathBuf {
        PathBuf::from(format!("{}.log", spec.path.display()))
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
            std::fs::metadata(log_path(&spec)).map(|m| m.len()).ok(),
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
        let flushed = std::fs::read(log_path(&spec)).expect("log");
        for tail in [
            &b"{\"external_id\":\"z\",\"v"[..],
            b"\0\0\0\0\n{\"external_id\":\"y\",\"v\":1}\n",
        ] {
            let mut torn = flushed.clone();
            torn.extend_from_slice(tail);
            std::fs::write(log_path(&spec), &torn).expect("tear");
            let reopened = JsonLinesSink::open(spec.clone()).expect("reopen");
            assert_eq!(
                ["a", "b", "y", "z"].map(|id| held(&reopened, id)),
                [Some(1), Some(1), None, None]
            );
            put(&reopened, "c", 1);
            reopened.flush().expect("flush");
            drop(reopened);
            let log = std::fs::read_to_string(log_path(&spec)).expect("log");
            assert_eq!(log.lines().count(), 3, "{log}");
            assert!(log.ends_with("{\"external_id\":\"c\",\"v\":1}\n"), "{log}");
            // Back to the flushed log for the next tail.
            std::fs::write(log_path(&spec), &flushed).expect("restore");
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
        let log = std::fs::read(log_path(&spec)).expect("log");
        sink.finish().expect("finish");
        drop(sink);
        let compacted = text(&spec);
        std::fs::write(log_path(&spec), log).expect("log left over");
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
