//! Owns the JSON Lines destination's sorted files: the compacted file people
//! read (one line per record) and the runs between it and the log (the same,
//! with a deletion's line kept, see `runs.rs`). Sorted by external id, a
//! record is found by a binary search and a compaction is one pass merging
//! sorted inputs, written to a temporary file, synced and renamed over its
//! target.
//! Invariant: a reader of a sorted file sees the old one or the new one,
//! whole; a pass holds one line of each input at a time, never a file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader, BufWriter, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use super::line::{self, Line, record_id};
use super::log::{Latest, Log, OpLines, Ops, sync_dir};

/// Below this many bytes, a search reads the lines in between one by one.
const SCAN_WINDOW: u64 = 16 * 1024;

/// What a pass over the compacted file found.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Shape {
    pub(super) lines: u64,
    /// Every id is greater than the one before it, as compactions write them.
    /// A file written otherwise (by hand) is sorted whole at the first
    /// compaction into it.
    pub(super) sorted: bool,
}

/// Reads the file through once: every line a record with its external id.
pub(super) fn scan(path: &Path, field: &str) -> io::Result<Shape> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Shape {
                lines: 0,
                sorted: true,
            });
        }
        Err(e) => return Err(e),
    };
    let mut shape = Shape {
        lines: 0,
        sorted: true,
    };
    let (mut reader, mut text) = (BufReader::with_capacity(1 << 16, file), Vec::new());
    let (mut previous, mut number) = (None::<String>, 0u64);
    loop {
        text.clear();
        if reader.read_until(b'\n', &mut text)? == 0 {
            break;
        }
        number += 1;
        let Some(id) = line_id(&text, field, number)? else {
            continue;
        };
        if previous.as_ref().is_some_and(|p| *p >= id) {
            shape.sorted = false;
        }
        previous = Some(id);
        shape.lines += 1;
    }
    Ok(shape)
}

/// What the compacted file at `path` holds for `id`.
pub(super) fn find(path: &Path, shape: Shape, field: &str, id: &str) -> io::Result<Option<Latest>> {
    match File::open(path) {
        Ok(file) => find_in(&file, shape.sorted, field, id),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a sorted file (or, not `sorted`, one written by hand) holds for `id`:
/// its line, or its deletion in a run.
pub(super) fn find_in(
    file: &File,
    sorted: bool,
    field: &str,
    id: &str,
) -> io::Result<Option<Latest>> {
    let len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(8 * 1024, file);
    let mut text = Vec::new();
    // Every line starting before `low` holds a smaller id, every line starting
    // at or after `high` a greater one; `low` is where a line starts.
    let (mut low, mut high) = (0u64, len);
    while sorted && high - low > SCAN_WINDOW {
        let middle = low + (high - low) / 2;
        reader.seek(SeekFrom::Start(middle))?;
        text.clear();
        let start = middle + reader.read_until(b'\n', &mut text)? as u64;
        if start >= high {
            high = middle + 1;
            continue;
        }
        text.clear();
        let read = reader.read_until(b'\n', &mut text)? as u64;
        match parsed(&text, field, 0)? {
            Some(found) if found.id() < id => low = start + read,
            Some(found) if found.id() > id => high = start,
            Some(found) => return Ok(Some(latest(found, text))),
            None => low = start + read,
        }
    }
    reader.seek(SeekFrom::Start(low))?;
    let (mut at, mut found) = (low, None);
    while at < high {
        text.clear();
        let read = reader.read_until(b'\n', &mut text)?;
        if read == 0 {
            break;
        }
        at += read as u64;
        if let Some(line) = parsed(&text, field, 0)?.filter(|line| line.id() == id) {
            // In an unsorted file written by hand the last line of an id wins.
            found = Some(latest(line, std::mem::take(&mut text)));
            if sorted {
                break;
            }
        }
    }
    Ok(found)
}

fn latest(line: Line, text: Vec<u8>) -> Latest {
    match line {
        Line::Record(_) => Latest::Record(trimmed(text)),
        Line::Delete(_) => Latest::Deleted,
    }
}

/// One input of a merge, oldest first: its lines are read in id order.
pub(super) enum Source<'a> {
    /// A sorted file: the compacted file or a run.
    Sorted(&'a Path),
    /// A log's latest lines.
    Log(&'a Log, &'a Ops),
}

/// Merges `sources` (oldest first: a later one's line of an id wins) into one
/// sorted file at `target`, written to `tmp`, synced, renamed over `target`
/// and the rename synced; a deletion's line is written only `with_deletes`
/// (into a run, over which an older file may hold the record). Returns the
/// lines written.
pub(super) fn merge(
    sources: &[Source<'_>],
    field: &str,
    with_deletes: bool,
    target: &Path,
    tmp: &Path,
) -> io::Result<u64> {
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut cursors = Vec::with_capacity(sources.len());
    for source in sources {
        if let Some(cursor) = Cursor::open(source, field)? {
            cursors.push(cursor);
        }
    }
    let mut out = BufWriter::with_capacity(1 << 16, File::create(tmp)?);
    let (mut lines, mut id) = (0u64, String::new());
    loop {
        // The smallest id; of its lines, the newest source's.
        let mut newest: Option<(usize, &str)> = None;
        for (index, cursor) in cursors.iter().enumerate() {
            if let Some(at) = cursor.id()
                && newest.is_none_or(|(_, smallest)| at <= smallest)
            {
                newest = Some((index, at));
            }
        }
        let Some((index, smallest)) = newest else {
            break;
        };
        id.clear();
        id.push_str(smallest);
        let wrote = match cursors[index].line()? {
            Some(text) => out.write_all(text).map(|()| true)?,
            None if with_deletes => out.write_all(&line::delete_line(&id)).map(|()| true)?,
            None => false,
        };
        lines += u64::from(wrote);
        for cursor in cursors.iter_mut().filter(|c| c.id() == Some(&id)) {
            cursor.advance(field)?;
        }
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, target)?;
    sync_dir(target)?;
    Ok(lines)
}

/// A merge's place in one of its sources.
enum Cursor<'a> {
    Sorted {
        path: &'a Path,
        reader: BufReader<File>,
        /// The current line (newline-terminated) and its number, from 1.
        text: Vec<u8>,
        number: u64,
        /// The current line's id, and whether it deletes its record; `None`
        /// past the end.
        at: Option<(String, bool)>,
    },
    Log {
        ops: &'a Ops,
        lines: OpLines<'a>,
        next: usize,
    },
}

impl<'a> Cursor<'a> {
    /// At the source's first line, or `None` for a file that is not there.
    fn open(source: &Source<'a>, field: &str) -> io::Result<Option<Cursor<'a>>> {
        let mut cursor = match *source {
            Source::Sorted(path) => match File::open(path) {
                Ok(file) => Cursor::Sorted {
                    path,
                    reader: BufReader::with_capacity(1 << 16, file),
                    text: Vec::new(),
                    number: 0,
                    at: None,
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            },
            Source::Log(log, ops) => {
                return Ok(Some(Cursor::Log {
                    ops,
                    lines: OpLines::new(log, ops),
                    next: 0,
                }));
            }
        };
        cursor.advance(field)?;
        Ok(Some(cursor))
    }

    fn id(&self) -> Option<&str> {
        match self {
            Cursor::Sorted { at, .. } => at.as_ref().map(|(id, _)| id.as_str()),
            Cursor::Log { ops, next, .. } => (*next < ops.len()).then(|| ops.id(*next)),
        }
    }

    /// The current line, newline-terminated; `None` for a deletion.
    fn line(&mut self) -> io::Result<Option<&[u8]>> {
        match self {
            Cursor::Sorted { text, at, .. } => Ok(match at {
                Some((_, false)) => Some(text.as_slice()),
                _ => None,
            }),
            Cursor::Log { ops, lines, next } => match ops.deletes(*next) {
                true => Ok(None),
                false => lines.line(*next).map(Some),
            },
        }
    }

    fn advance(&mut self, field: &str) -> io::Result<()> {
        match self {
            Cursor::Log { next, .. } => *next += 1,
            Cursor::Sorted {
                path,
                reader,
                text,
                number,
                at,
            } => loop {
                text.clear();
                if reader.read_until(b'\n', text)? == 0 {
                    *at = None;
                    return Ok(());
                }
                *number += 1;
                let Some(line) = parsed(text, field, *number)? else {
                    continue;
                };
                if text.last() != Some(&b'\n') {
                    text.push(b'\n');
                }
                if at
                    .as_ref()
                    .is_some_and(|(before, _)| before.as_str() >= line.id())
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: line {number}: not sorted by id", path.display()),
                    ));
                }
                *at = Some(match line {
                    Line::Record(id) => (id, false),
                    Line::Delete(id) => (id, true),
                });
                return Ok(());
            },
        }
        Ok(())
    }
}

/// Sorts a file not sorted by id (written by hand) by reading it whole, once:
/// what a merge into it needs first.
pub(super) fn sort_whole(path: &Path, field: &str, tmp: &Path) -> io::Result<()> {
    let mut rows: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let reader = BufReader::new(File::open(path)?);
    for (number, text) in reader.split(b'\n').enumerate() {
        let mut text = text?;
        if let Some(id) = line_id(&text, field, number as u64 + 1)? {
            text.push(b'\n');
            rows.insert(id, text);
        }
    }
    let mut out = BufWriter::new(File::create(tmp)?);
    for text in rows.values() {
        out.write_all(text)?;
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)?;
    sync_dir(path)
}

/// The temporary file a merge into `target` is written to.
pub(super) fn tmp_path(target: &Path) -> PathBuf {
    PathBuf::from(format!("{}.tmp", target.display()))
}

/// The external id of one line of the compacted file (`number` counts from
/// 1, for messages); `None` for a blank line.
fn line_id(text: &[u8], field: &str, number: u64) -> io::Result<Option<String>> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    record_id(text, field)
        .map(Some)
        .map_err(|e| invalid(number, e))
}

/// One line of a sorted file, a record's or (in a run) a deletion's; `None`
/// for a blank line. A sorted file is one a compaction wrote, or the
/// compacted file read through by [`scan`] as the sink opened.
fn parsed(text: &[u8], field: &str, number: u64) -> io::Result<Option<Line>> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    line::parse_valid(text, field)
        .map(Some)
        .map_err(|e| invalid(number, e))
}

fn invalid(number: u64, e: String) -> io::Error {
    let at = if number > 0 {
        format!("line {number}: ")
    } else {
        String::new()
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("{at}{e}"))
}

fn trimmed(mut text: Vec<u8>) -> Vec<u8> {
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    text
}
