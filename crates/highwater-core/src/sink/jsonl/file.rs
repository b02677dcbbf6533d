//! Owns the JSON Lines destination's compacted file, the one people read: one
//! line per record, sorted by external id, so that one record is found by a
//! binary search and a compaction is one pass merging the file with the log's
//! latest lines, written to a temporary file, synced and renamed over it.
//! Invariant: a reader of the file sees the old one or the new one, whole; a
//! pass holds one line at a time, never the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader, BufWriter, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::line::record_id;
use super::log::{Log, OpLines, Ops, sync_dir};

/// Below this many bytes, a search reads the lines in between one by one.
const SCAN_WINDOW: u64 = 16 * 1024;

/// What a pass over the compacted file found.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Shape {
    pub(super) lines: u64,
    /// Every id is greater than the one before it, as compactions write them.
    /// A file written otherwise (by hand) is read whole at its first compaction.
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

/// The line of `id` in the file, if it holds one.
pub(super) fn find(
    path: &Path,
    shape: Shape,
    field: &str,
    id: &str,
) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(8 * 1024, file);
    let mut text = Vec::new();
    // Every line starting before `low` holds a smaller id, every line starting
    // at or after `high` a greater one; `low` is where a line starts.
    let (mut low, mut high) = (0u64, len);
    while shape.sorted && high - low > SCAN_WINDOW {
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
        match line_id(&text, field, 0)? {
            Some(found) if found.as_str() < id => low = start + read,
            Some(found) if found.as_str() > id => high = start,
            Some(_) => return Ok(Some(trimmed(text))),
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
        if line_id(&text, field, 0)?.is_some_and(|found| found == id) {
            // In an unsorted file written by hand the last line of an id wins.
            found = Some(trimmed(std::mem::take(&mut text)));
            if shape.sorted {
                break;
            }
        }
    }
    Ok(found)
}

/// Merges the log's latest lines into the file: a record written replaces its
/// line or is inserted in order, a record deleted loses its line. Written to
/// `<file>.tmp`, synced, renamed over the file and the rename synced; the log
/// is left as it is (replaying it again changes nothing).
pub(super) fn compact(path: &Path, shape: Shape, field: &str, log: &Log) -> io::Result<Shape> {
    let ops = log.ops(field)?;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
    let lines = if shape.sorted {
        merge(path, field, &ops, log, &mut out)?
    } else {
        rewrite_whole(path, field, &ops, log, &mut out)?
    };
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(Shape {
        lines,
        sorted: true,
    })
}

/// The sorted file and the sorted ops, merged in one pass.
fn merge(
    path: &Path,
    field: &str,
    ops: &Ops,
    log: &Log,
    out: &mut impl io::Write,
) -> io::Result<u64> {
    let mut reader = match File::open(path) {
        Ok(file) => Some(BufReader::with_capacity(1 << 16, file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut op_lines = OpLines::new(log, ops);
    let (mut next, mut lines, mut number) = (0, 0u64, 0u64);
    let mut text = Vec::new();
    while let Some(reader) = &mut reader {
        text.clear();
        if reader.read_until(b'\n', &mut text)? == 0 {
            break;
        }
        number += 1;
        let Some(id) = line_id(&text, field, number)? else {
            continue;
        };
        // The log's records before this one, then this one's latest line.
        while next < ops.len() && ops.id(next) < id.as_str() {
            lines += write_op(ops, &mut op_lines, next, out)?;
            next += 1;
        }
        if next < ops.len() && ops.id(next) == id {
            lines += write_op(ops, &mut op_lines, next, out)?;
            next += 1;
        } else {
            if text.last() != Some(&b'\n') {
                text.push(b'\n');
            }
            out.write_all(&text)?;
            lines += 1;
        }
    }
    for index in next..ops.len() {
        lines += write_op(ops, &mut op_lines, index, out)?;
    }
    Ok(lines)
}

/// A file not sorted by id (written by hand) read whole, once, into order.
fn rewrite_whole(
    path: &Path,
    field: &str,
    ops: &Ops,
    log: &Log,
    out: &mut impl io::Write,
) -> io::Result<u64> {
    let mut rows: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let reader = BufReader::new(File::open(path)?);
    for (number, text) in reader.split(b'\n').enumerate() {
        let mut text = text?;
        if let Some(id) = line_id(&text, field, number as u64 + 1)? {
            text.push(b'\n');
            rows.insert(id, text);
        }
    }
    let mut op_lines = OpLines::new(log, ops);
    for index in 0..ops.len() {
        if ops.deletes(index) {
            rows.remove(ops.id(index));
        } else {
            rows.insert(ops.id(index).to_owned(), op_lines.line(index)?.to_vec());
        }
    }
    for text in rows.values() {
        out.write_all(text)?;
    }
    Ok(rows.len() as u64)
}

/// Writes the op at `index`'s line; the lines written (none for a deletion).
fn write_op(
    ops: &Ops,
    lines: &mut OpLines<'_>,
    index: usize,
    out: &mut impl io::Write,
) -> io::Result<u64> {
    if ops.deletes(index) {
        return Ok(0);
    }
    out.write_all(lines.line(index)?)?;
    Ok(1)
}

/// The external id of one line of the file (`number` counts from 1, for
/// messages); `None` for a blank line.
fn line_id(text: &[u8], field: &str, number: u64) -> io::Result<Option<String>> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    record_id(text, field).map(Some).map_err(|e| {
        let at = if number > 0 {
            format!("line {number}: ")
        } else {
            String::new()
        };
        io::Error::new(io::ErrorKind::InvalidData, format!("{at}{e}"))
    })
}

fn trimmed(mut text: Vec<u8>) -> Vec<u8> {
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    text
}
