//! The JSON Lines destination's tests: upserts, crashes at every step of a
//! compaction, runs over the file, and the cut back to the last commit.

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
    sink.delete("a").expect("delete");
    assert_eq!(held(&sink, "a"), None, "deleted before any flush");
    sink.delete("a").expect("delete");
    sink.delete("never-there").expect("delete");
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
    sink.delete("b").expect("delete");
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
    sink.delete("b").expect("delete");
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
        sink.delete(&format!("id-{i:05}")).expect("delete");
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
    sink.delete("id-001").expect("delete");
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
            0 => sink.delete(&format!("id-{i:04}")).expect("delete"),
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
    sink.delete("b").expect("delete");
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
    let e = JsonLinesSink::open(spec.clone()).expect_err("refused");
    assert!(
        e.to_string().contains("line 2: no `external_id` string"),
        "{e}"
    );
    std::fs::write(&spec.path, "{\"external_id\":\"a\"}\nnot json\n").expect("file");
    let e = JsonLinesSink::open(spec).expect_err("refused");
    assert!(
        e.to_string()
            .ends_with("line 2: not JSON (expected ident at column 2)"),
        "{e}"
    );
}
