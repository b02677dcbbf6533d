//! Owns the JSON Lines destination's runs (`<file>.run.<lo>-<hi>`): sorted
//! files between the compacted file and the log, each the latest line of
//! every record the logs numbered `lo..=hi` name, a deletion's line kept (the
//! file or an older run may hold the record). A log set aside is merged with
//! the newest runs less than twice as large as what it merges so far, and
//! into the file as well if that is too; otherwise it becomes a run of its
//! own. Like a binary counter, a line is rewritten about log2(records / log
//! lines) times in a sync, where compacting each log into the file rewrote the
//! whole file every time (quadratic in the records), and the runs stay fewer
//! than log2 of the lines they hold.
//! Invariants: runs' numbers are nested or disjoint, and one whose numbers
//! another's cover was merged into it (`open` removes it); a later number is
//! newer, every run newer than the file and older than the logs; a merge
//! takes the file only with every run, so what a crash leaves of the runs it
//! merged replays over the file changing nothing; runs hold nothing in memory
//! but an open file each.

use std::fs::File;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{self, Shape, Source};
use super::log::{Latest, Log, sync_dir};

/// One run: its numbers, its lines (deletions too), and its file.
#[derive(Debug)]
pub(super) struct Run {
    lo: u64,
    hi: u64,
    lines: u64,
    path: PathBuf,
    /// Opened when the run was written or found: a read still finds it once
    /// the compaction that merged it removed its name, until the sink takes
    /// that compaction's result.
    file: File,
}

impl Run {
    /// What the run holds for `id`.
    pub(super) fn find(&self, field: &str, id: &str) -> io::Result<Option<Latest>> {
        file::find_in(&self.file, true, field, id)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// The compacted file and the runs over it, oldest first.
#[derive(Debug, Clone)]
pub(super) struct Stack {
    pub(super) file: Shape,
    pub(super) runs: Vec<Arc<Run>>,
}

impl Stack {
    /// The number the next log compacted takes.
    pub(super) fn next_number(&self) -> u64 {
        self.runs.last().map_or(1, |run| run.hi + 1)
    }
}

/// Finds the runs beside the file at `path`, removing those merged into
/// another before a crash.
pub(super) fn open(path: &Path) -> io::Result<Vec<Arc<Run>>> {
    let dir = parent(path);
    let prefix = run_prefix(path);
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(numbers) = name.to_str().and_then(|name| name.strip_prefix(&prefix)) else {
            continue;
        };
        if let Some((lo, hi)) = numbers
            .split_once('-')
            .and_then(|(lo, hi)| Some((lo.parse::<u64>().ok()?, hi.parse::<u64>().ok()?)))
        {
            found.push((lo, hi, entry.path()));
        }
    }
    // A covering run comes before the runs it covers.
    found.sort_by_key(|&(lo, hi, _)| (lo, std::cmp::Reverse(hi)));
    let (mut runs, mut removed) = (Vec::<Arc<Run>>::new(), false);
    for (lo, hi, path) in found {
        if runs.last().is_some_and(|run| run.lo <= lo && hi <= run.hi) {
            std::fs::remove_file(&path)?;
            removed = true;
            continue;
        }
        let file = File::open(&path)?;
        let lines = count_lines(&file)?;
        runs.push(Arc::new(Run {
            lo,
            hi,
            lines,
            path,
            file,
        }));
    }
    if removed {
        sync_dir(path)?;
    }
    Ok(runs)
}

/// Which of the stack a compaction of a log with `log_lines` records merges:
/// the runs from `from` on, and the file too when `into_file`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) from: usize,
    pub(super) into_file: bool,
}

pub(super) fn plan(file_lines: u64, runs: &[u64], log_lines: u64) -> Plan {
    let (mut from, mut lines) = (runs.len(), log_lines);
    // Merged while the one below is less than twice as large, a run is less
    // than half the one below it, and a line is rewritten only into a run at
    // least half as large again as the one it was in.
    while from > 0 && lines * 2 > runs[from - 1] {
        from -= 1;
        lines += runs[from];
    }
    Plan {
        from,
        into_file: from == 0 && lines * 2 > file_lines,
    }
}

/// Compacts `log`, numbered `number`, into the stack as [`plan`] says; the
/// runs it merged are removed, durably, once their merge is. The log is left
/// as it is.
pub(super) fn compact(
    path: &Path,
    field: &str,
    stack: &Stack,
    log: &Log,
    number: u64,
) -> io::Result<Stack> {
    let ops = log.ops()?;
    let run_lines: Vec<u64> = stack.runs.iter().map(|run| run.lines).collect();
    let Plan { from, into_file } = plan(stack.file.lines, &run_lines, ops.len() as u64);
    let merged = &stack.runs[from..];
    let mut sources: Vec<Source<'_>> = Vec::with_capacity(merged.len() + 2);
    if into_file {
        if !stack.file.sorted {
            file::sort_whole(path, field, &file::tmp_path(path))?;
        }
        sources.push(Source::Sorted(path));
    }
    sources.extend(merged.iter().map(|run| Source::Sorted(&run.path)));
    sources.push(Source::Log(log, &ops));
    let mut runs = stack.runs[..from].to_vec();
    let file = if into_file {
        let lines = file::merge(&sources, field, false, path, &file::tmp_path(path))?;
        Shape {
            lines,
            sorted: true,
        }
    } else {
        let lo = merged.first().map_or(number, |run| run.lo);
        let target = run_path(path, lo, number);
        let lines = file::merge(&sources, field, true, &target, &tmp_run_path(path))?;
        runs.push(Arc::new(Run {
            lo,
            hi: number,
            lines,
            file: File::open(&target)?,
            path: target,
        }));
        stack.file
    };
    remove(path, merged)?;
    Ok(Stack { file, runs })
}

/// Merges every run and `log` into the file, then removes the runs, durably;
/// the log is left as it is. Returns the file's shape.
pub(super) fn compact_all(path: &Path, field: &str, stack: &Stack, log: &Log) -> io::Result<Shape> {
    if !stack.file.sorted {
        file::sort_whole(path, field, &file::tmp_path(path))?;
    }
    let ops = log.ops()?;
    let mut sources = vec![Source::Sorted(path)];
    sources.extend(stack.runs.iter().map(|run| Source::Sorted(&run.path)));
    sources.push(Source::Log(log, &ops));
    let lines = file::merge(&sources, field, false, path, &file::tmp_path(path))?;
    remove(path, &stack.runs)?;
    Ok(Shape {
        lines,
        sorted: true,
    })
}

fn remove(path: &Path, runs: &[Arc<Run>]) -> io::Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    for run in runs {
        std::fs::remove_file(&run.path)?;
    }
    sync_dir(path)
}

fn count_lines(mut file: &File) -> io::Result<u64> {
    let (mut lines, mut buffer) = (0u64, vec![0u8; 1 << 16]);
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(lines);
        }
        lines += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_owned(),
        None => PathBuf::from("."),
    }
}

fn run_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    format!("{name}.run.")
}

fn run_path(path: &Path, lo: u64, hi: u64) -> PathBuf {
    parent(path).join(format!("{}{lo}-{hi}", run_prefix(path)))
}

fn tmp_run_path(path: &Path) -> PathBuf {
    parent(path).join(format!("{}tmp", run_prefix(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The sizes `compact` would leave, and the lines it would write, for
    /// logs of new records compacted into an empty file.
    #[derive(Default)]
    struct Simulated {
        file: u64,
        runs: Vec<u64>,
        written: u64,
    }

    impl Simulated {
        fn compact(&mut self, log: u64) {
            let Plan { from, into_file } = plan(self.file, &self.runs, log);
            let lines = log + self.runs.drain(from..).sum::<u64>();
            if into_file {
                self.file += lines;
                self.written += self.file;
            } else {
                self.runs.push(lines);
                self.written += lines;
            }
        }

        fn held(&self) -> u64 {
            self.file + self.runs.iter().sum::<u64>()
        }
    }

    /// Lines written by compacting `logs` logs of one record each, then
    /// everything at the end, as `compact` and `compact_all` would.
    fn written(logs: u64) -> u64 {
        let mut simulated = Simulated::default();
        for _ in 0..logs {
            simulated.compact(1);
        }
        simulated.written + simulated.held()
    }

    #[test]
    fn a_log_merges_with_the_runs_less_than_twice_what_it_merges() {
        assert_eq!(
            plan(0, &[], 10),
            Plan {
                from: 0,
                into_file: true
            }
        );
        assert_eq!(
            plan(19, &[], 10),
            Plan {
                from: 0,
                into_file: true
            }
        );
        assert_eq!(
            plan(20, &[], 10),
            Plan {
                from: 0,
                into_file: false
            }
        );
        assert_eq!(
            plan(39, &[10], 10),
            Plan {
                from: 0,
                into_file: true
            }
        );
        assert_eq!(
            plan(40, &[10], 10),
            Plan {
                from: 0,
                into_file: false
            }
        );
        assert_eq!(
            plan(80, &[40, 20, 10], 10),
            Plan {
                from: 0,
                into_file: true
            }
        );
        assert_eq!(
            plan(80, &[40, 10], 10),
            Plan {
                from: 1,
                into_file: false
            }
        );
        assert_eq!(
            plan(80, &[40, 20], 10),
            Plan {
                from: 2,
                into_file: false
            }
        );
    }

    /// Where each compaction rewrote the file, a sync of 10,000 logs wrote
    /// 50 million logs' worth of lines; here each line about log2(10,000) times.
    #[test]
    fn compactions_rewrite_a_line_about_log2_times() {
        for logs in [1u64, 10, 100, 1_000, 10_000] {
            let bound = logs * (u64::from(logs.ilog2()) + 2);
            assert!(written(logs) <= bound, "{logs} logs: {}", written(logs));
        }
    }

    proptest! {
        /// Whatever the logs' sizes, fewer runs are left than log2 of the
        /// lines they hold, plus one, and each line is rewritten at most
        /// log1.5 of the lines held times, plus two.
        #[test]
        fn runs_and_rewrites_stay_logarithmic(sizes in prop::collection::vec(1u64..1_000, 1..300)) {
            let mut simulated = Simulated::default();
            for size in sizes {
                simulated.compact(size);
                let (held, runs) = (simulated.held(), &simulated.runs);
                prop_assert!(
                    runs.len() as u64 <= u64::from(held.ilog2()) + 1,
                    "{runs:?} over {}",
                    simulated.file
                );
                let bound = held as f64 * ((held as f64).log(1.5) + 2.0);
                prop_assert!(
                    (simulated.written as f64) <= bound,
                    "{} lines written for {held}",
                    simulated.written
                );
            }
        }
    }
}
