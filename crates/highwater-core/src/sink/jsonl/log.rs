//! Owns one of the JSON Lines destination's append-only logs (`<file>.log.<n>`):
//! writes (the record's line) and deletions (`["delete","<id>"]`), oldest
//! first, so that a write costs an append, not a rewrite of the file. What
//! `sync` returned from is durable; a crash may leave more after it, whole
//! lines (which `cut` drops when no commit covers them) and at most one torn
//! or garbled tail, which `open` finds and the next append cuts off: the log
//! is read up to its first line that is not whole and valid.
//! Invariant: holds per line only its external id, where it starts and
//! whether it deletes, never the record.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::line::{self, Line};

/// Appended bytes kept in memory before they are written to the file.
const BUFFER: usize = 1 << 20;

#[derive(Debug)]
pub(super) struct Log {
    path: PathBuf,
    /// Bytes of the file holding whole lines: read at open, or written since.
    file_len: u64,
    /// Lines appended and not yet written to the file; they follow `file_len`.
    buffer: Vec<u8>,
    /// Per line, oldest first. Kept as appended, so that a compaction sorts
    /// the ids without reading the log back: reading each line's id again
    /// was 4% of a sync's work into JSON Lines.
    lines: Vec<Entry>,
    /// The lines' external ids, back to back.
    ids: String,
    /// Open for appending once this process appends; a torn tail is cut off then.
    file: Option<File>,
    /// Open for reading while a compaction reads lines, when `file` is not.
    reader: Option<File>,
    /// This process created the file and has not yet synced its directory.
    created: bool,
    /// Bytes written to the file since the last sync.
    unsynced: bool,
}

/// The latest a log says of one record.
#[derive(Debug, PartialEq)]
pub(super) enum Latest {
    Record(Vec<u8>),
    Deleted,
}

/// Every record a log names, once, by external id, with where its latest
/// line is: what a compaction merges into the file. The ids are kept back to
/// back in one text: a string each cost a compaction of 100,000 lines
/// another 24 bytes and an allocation a line.
#[derive(Debug, Default)]
pub(super) struct Ops {
    ids: String,
    ops: Vec<Op>,
}

/// One line of a log.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the line starts.
    at: u64,
    /// Its external id's place in [`Log::ids`].
    id: (u32, u32),
    deletes: bool,
}

#[derive(Debug)]
struct Op {
    /// The id's place in [`Ops::ids`].
    id: (u32, u32),
    /// Where its line starts in the log: the later line of an id wins.
    at: u64,
    /// The line's length with its newline; 0: the record is deleted.
    len: u32,
}

impl Ops {
    pub(super) fn len(&self) -> usize {
        self.ops.len()
    }

    pub(super) fn id(&self, index: usize) -> &str {
        let (start, len) = self.ops[index].id;
        &self.ids[start as usize..(start + len) as usize]
    }

    /// Whether the op at `index` deletes its record.
    pub(super) fn deletes(&self, index: usize) -> bool {
        self.ops[index].len == 0
    }
}

/// Bytes of lines a compaction reads per pass over the log. Its lines are
/// wanted in id order and lie in the log in the order they came: read one by
/// one, they cost a system call each. A pass reads the lines of the next ops
/// that fit in this many bytes, in the log's order, through one buffer.
const PASS_BYTES: usize = 4 << 20;

/// The lines of a compaction's ops, read in passes over the log as the ops
/// are taken in order.
pub(super) struct OpLines<'a> {
    log: &'a Log,
    ops: &'a Ops,
    /// Bytes of lines per pass: [`PASS_BYTES`].
    pass_bytes: usize,
    /// The ops whose lines are read: `first..first + places.len()`.
    first: usize,
    /// Per op read, where its line is in `bytes`.
    places: Vec<usize>,
    bytes: Vec<u8>,
}

impl<'a> OpLines<'a> {
    pub(super) fn new(log: &'a Log, ops: &'a Ops) -> OpLines<'a> {
        OpLines {
            log,
            ops,
            pass_bytes: PASS_BYTES,
            first: 0,
            places: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// The line of the op at `index` (not a deletion); ops are taken in
    /// increasing order.
    pub(super) fn line(&mut self, index: usize) -> io::Result<&[u8]> {
        if index < self.first || index >= self.first + self.places.len() {
            self.pass(index)?;
        }
        let op = &self.ops.ops[index];
        let start = self.places[index - self.first];
        self.bytes
            .get(start..start + op.len as usize)
            .ok_or_else(|| io::Error::other("a compaction's line was not read"))
    }

    /// Reads the lines of the ops from `first` on that fit in a pass's bytes
    /// (one at least), in one forward pass over the log.
    fn pass(&mut self, first: usize) -> io::Result<()> {
        let ops = &self.ops.ops[first..];
        let (mut count, mut bytes) = (0, 0usize);
        for op in ops {
            if count > 0 && bytes + op.len as usize > self.pass_bytes {
                break;
            }
            bytes += op.len as usize;
            count += 1;
        }
        let mut order: Vec<usize> = (0..count).filter(|&i| ops[i].len > 0).collect();
        order.sort_unstable_by_key(|&i| ops[i].at);
        self.first = first;
        self.places.clear();
        self.places.resize(count, 0);
        self.bytes.clear();
        self.bytes.reserve(bytes);
        let mut reader = BufReader::with_capacity(1 << 16, File::open(&self.log.path)?);
        let mut position = 0u64;
        for i in order {
            let op = &ops[i];
            if op.at + u64::from(op.len) > self.log.file_len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "past the log's end",
                ));
            }
            // Forward within the buffer costs no read.
            let ahead = op
                .at
                .checked_sub(position)
                .and_then(|ahead| i64::try_from(ahead).ok())
                .ok_or_else(|| io::Error::other("a compaction's lines out of order"))?;
            reader.seek_relative(ahead)?;
            self.places[i] = self.bytes.len();
            let end = self.bytes.len() + op.len as usize;
            self.bytes.resize(end, 0);
            let start = self.places[i];
            reader.read_exact(&mut self.bytes[start..end])?;
            position = op.at + u64::from(op.len);
        }
        Ok(())
    }
}

impl Log {
    /// A log at `path` holding nothing, its file not created yet.
    pub(super) fn empty(path: PathBuf) -> Log {
        Log {
            path,
            file_len: 0,
            buffer: Vec::new(),
            lines: Vec::new(),
            ids: String::new(),
            file: None,
            reader: None,
            created: false,
            unsynced: false,
        }
    }

    /// Reads what the log at `path` holds, up to its first line that is not
    /// whole and valid (what a crash left unflushed); nothing is changed.
    /// Returns the log and the bytes past that line.
    pub(super) fn open(path: PathBuf, field: &str) -> io::Result<(Log, u64)> {
        let mut log = Log::empty(path);
        let file = match File::open(&log.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((log, 0)),
            Err(e) => return Err(e),
        };
        let total = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        let mut text = Vec::new();
        loop {
            text.clear();
            let read = reader.read_until(b'\n', &mut text)?;
            if read == 0 || text.last() != Some(&b'\n') {
                break;
            }
            let Ok(line) = line::parse(&text[..text.len() - 1], field) else {
                break;
            };
            let at = log.file_len;
            log.note(line.id(), at, matches!(line, Line::Delete(_)))?;
            log.file_len += read as u64;
        }
        let torn = total - log.file_len;
        Ok((log, torn))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Lines in the log.
    pub(super) fn lines(&self) -> usize {
        self.lines.len()
    }

    /// Bytes in the log, appended or written.
    pub(super) fn bytes(&self) -> u64 {
        self.file_len + self.buffer.len() as u64
    }

    /// Appends a record's line (ending in a newline) under `id`.
    pub(super) fn append(&mut self, id: &str, line: &[u8]) -> io::Result<()> {
        self.note(id, self.bytes(), false)?;
        self.buffer.extend_from_slice(line);
        if self.buffer.len() >= BUFFER {
            self.write_out()?;
        }
        Ok(())
    }

    /// Appends a deletion; it reaches the file with the next append or sync.
    pub(super) fn append_delete(&mut self, id: &str) -> io::Result<()> {
        self.note(id, self.bytes(), true)?;
        self.buffer.extend_from_slice(&line::delete_line(id));
        Ok(())
    }

    /// Keeps a line's id and place.
    fn note(&mut self, id: &str, at: u64, deletes: bool) -> io::Result<()> {
        let too_long = || io::Error::other("a log's ids past 4 GiB");
        let start = u32::try_from(self.ids.len()).map_err(|_| too_long())?;
        let len = u32::try_from(id.len()).map_err(|_| too_long())?;
        start.checked_add(len).ok_or_else(too_long)?;
        self.ids.push_str(id);
        self.lines.push(Entry {
            at,
            id: (start, len),
            deletes,
        });
        Ok(())
    }

    fn id(&self, entry: &Entry) -> &str {
        let (start, len) = entry.id;
        &self.ids[start as usize..(start + len) as usize]
    }

    /// Where the line at `index` ends.
    fn end(&self, index: usize) -> u64 {
        self.lines
            .get(index + 1)
            .map_or_else(|| self.bytes(), |next| next.at)
    }

    /// Makes every line appended so far durable.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        self.write_out()?;
        if let Some(file) = &self.file
            && self.unsynced
        {
            file.sync_data()?;
            self.unsynced = false;
        }
        if self.created {
            sync_dir(&self.path)?;
            self.created = false;
        }
        Ok(())
    }

    /// The latest line of `id` in the log, if it has one.
    pub(super) fn latest(&self, id: &str) -> io::Result<Option<Latest>> {
        let Some(index) = self.lines.iter().rposition(|entry| self.id(entry) == id) else {
            return Ok(None);
        };
        let entry = &self.lines[index];
        if entry.deletes {
            return Ok(Some(Latest::Deleted));
        }
        let mut text = self.read(entry.at, (self.end(index) - entry.at) as usize)?;
        text.pop();
        Ok(Some(Latest::Record(text)))
    }

    /// Writes out what was appended and keeps the file open for reading: what
    /// a compaction needs first.
    pub(super) fn readable(&mut self) -> io::Result<()> {
        self.write_out()?;
        if self.file.is_none() && self.reader.is_none() && self.file_len > 0 {
            self.reader = Some(File::open(&self.path)?);
        }
        Ok(())
    }

    /// Syncs the log and keeps it open for reading: a compaction reads it
    /// while a new log takes the appends.
    pub(super) fn seal(&mut self) -> io::Result<()> {
        self.sync()?;
        self.readable()
    }

    /// Drops every line from byte `at` on, durably: lines a crash left past
    /// what the state store's last commit covers. A log shorter than `at`
    /// keeps what it has.
    pub(super) fn cut(&mut self, at: u64) -> io::Result<()> {
        if at >= self.bytes() {
            return Ok(());
        }
        self.write_out()?;
        let kept = self.lines.partition_point(|entry| entry.at < at);
        if let Some(first_cut) = self.lines.get(kept) {
            self.ids.truncate(first_cut.id.0 as usize);
        }
        self.lines.truncate(kept);
        self.file_len = at;
        self.reader = None;
        let mut file = match self.file.take() {
            Some(file) => file,
            None => OpenOptions::new().read(true).write(true).open(&self.path)?,
        };
        file.set_len(at)?;
        file.seek(SeekFrom::Start(at))?;
        file.sync_data()?;
        self.file = Some(file);
        Ok(())
    }

    /// Removes the log's file, durably: its lines are in the compacted file,
    /// and the next compaction may write newer ones there, which this log
    /// replayed after a crash would set back.
    pub(super) fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => sync_dir(&self.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every record the log names, once, with where its latest line is, by
    /// external id: of the lines [`readable`](Self::readable) wrote out.
    pub(super) fn ops(&self) -> io::Result<Ops> {
        let too_long =
            || io::Error::new(io::ErrorKind::InvalidData, "a line of the log is too long");
        let written = self.lines.partition_point(|entry| entry.at < self.file_len);
        let mut list = Vec::with_capacity(written);
        for (index, entry) in self.lines[..written].iter().enumerate() {
            let len = match entry.deletes {
                true => 0,
                false => u32::try_from(self.end(index) - entry.at).map_err(|_| too_long())?,
            };
            list.push(Op {
                id: entry.id,
                at: entry.at,
                len,
            });
        }
        // The latest line of each id wins: sorted by id, then by place in the
        // log (an unstable sort: no second buffer of the ops), the last of
        // each id is kept.
        let ids = &self.ids;
        let id = |op: &Op| &ids[op.id.0 as usize..(op.id.0 + op.id.1) as usize];
        list.sort_unstable_by(|a, b| id(a).cmp(id(b)).then(a.at.cmp(&b.at)));
        let mut kept = 0;
        for index in 0..list.len() {
            if list
                .get(index + 1)
                .is_some_and(|next| id(next) == id(&list[index]))
            {
                continue;
            }
            list.swap(kept, index);
            kept += 1;
        }
        list.truncate(kept);
        Ok(Ops {
            ids: self.ids.clone(),
            ops: list,
        })
    }

    /// Reads `len` bytes from `offset` of the log (appended or written).
    pub(super) fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset >= self.file_len {
            let start = (offset - self.file_len) as usize;
            return self
                .buffer
                .get(start..start + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "past the log's end"));
        }
        let mut bytes = vec![0; len];
        match self.file.as_ref().or(self.reader.as_ref()) {
            Some(file) => file.read_exact_at(&mut bytes, offset)?,
            None => File::open(&self.path)?.read_exact_at(&mut bytes, offset)?,
        }
        Ok(bytes)
    }

    /// Writes the appended lines to the file, opening it (and cutting off what
    /// a crash left past its last whole line) on first use.
    fn write_out(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let existed = self.path.exists();
                let mut file = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .write(true)
                    .truncate(false)
                    .open(&self.path)?;
                file.set_len(self.file_len)?;
                file.seek(SeekFrom::Start(self.file_len))?;
                self.created = !existed;
                self.file.insert(file)
            }
        };
        file.write_all(&self.buffer)?;
        self.file_len += self.buffer.len() as u64;
        self.buffer.clear();
        if self.buffer.capacity() > 2 * BUFFER {
            self.buffer.shrink_to(BUFFER);
        }
        self.unsynced = true;
        Ok(())
    }
}

/// Makes a file's creation, or a rename into its directory, durable.
pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines read in passes of a few lines each are the latest line of each
    /// id, as reading each on its own finds it, and a deleted record has none.
    #[test]
    fn a_compaction_reads_each_id_s_latest_line_in_passes() {
        let dir = std::env::temp_dir().join(format!("hw-log-passes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut log = Log::empty(dir.join("out.jsonl.log"));
        for round in 0..3 {
            for i in (0..200).rev() {
                let id = format!("k{:03}", (i * 7) % 200);
                if round == 2 && i % 10 == 0 {
                    log.append_delete(&id).expect("append");
                } else {
                    let line = format!(
                        "{{\"id\":\"{id}\",\"round\":{round},\"pad\":\"{}\"}}\n",
                        "x".repeat(i)
                    );
                    log.append(&id, line.as_bytes()).expect("append");
                }
            }
        }
        log.readable().expect("readable");
        let ops = log.ops().expect("ops");
        assert_eq!(ops.len(), 200);
        let mut lines = OpLines::new(&log, &ops);
        lines.pass_bytes = 1024;
        let mut deleted = 0;
        for index in 0..ops.len() {
            let id = ops.id(index);
            if index > 0 {
                assert!(ops.id(index - 1) < id, "ops in id order");
            }
            match log.latest(id).expect("latest") {
                Some(Latest::Record(line)) => {
                    assert!(!ops.deletes(index), "{id}");
                    let read = lines.line(index).expect("line");
                    assert_eq!(read.strip_suffix(b"\n"), Some(line.as_slice()), "{id}");
                }
                Some(Latest::Deleted) => {
                    assert!(ops.deletes(index), "{id}");
                    deleted += 1;
                }
                None => panic!("{id} is in the log"),
            }
        }
        assert_eq!(deleted, 20);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
