//! Owns the JSON Lines destination's append-only log (`<file>.log`): every
//! write (the record's line) and deletion (`["delete","<id>"]`) made since the
//! file was last compacted, oldest first, so that a write costs an append, not
//! a rewrite of the file. What `sync` returned from is durable; a crash may
//! leave more after it, whole lines (writes already announced, which the
//! destination may hold) and at most one torn or garbled tail, which `open`
//! finds and the next append cuts off: the log is read up to its first line
//! that is not whole and valid.
//! Invariant: holds per line only a hash of its external id and its offset,
//! never the record.

use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
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
    /// Per line, oldest first: a hash of its external id, and where it starts.
    lines: Vec<(u64, u64)>,
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

/// Where one record's latest line is, for a compaction.
#[derive(Debug)]
pub(super) struct Op {
    pub(super) id: String,
    /// Where its line starts in the log: the later line of an id wins.
    pub(super) at: u64,
    /// The record's line (offset and length with its newline); `None`: deleted.
    pub(super) line: Option<(u64, usize)>,
}

impl Log {
    /// A log at `path` holding nothing, its file not created yet.
    pub(super) fn empty(path: PathBuf) -> Log {
        Log {
            path,
            file_len: 0,
            buffer: Vec::new(),
            lines: Vec::new(),
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
            log.lines.push((hash(line.id()), log.file_len));
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
        self.lines.push((hash(id), self.bytes()));
        self.buffer.extend_from_slice(line);
        if self.buffer.len() >= BUFFER {
            self.write_out()?;
        }
        Ok(())
    }

    /// Appends a deletion; it reaches the file with the next append or sync.
    pub(super) fn append_delete(&mut self, id: &str) {
        self.lines.push((hash(id), self.bytes()));
        self.buffer.extend_from_slice(&line::delete_line(id));
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
    pub(super) fn latest(&self, id: &str, field: &str) -> io::Result<Option<Latest>> {
        let wanted = hash(id);
        for (index, &(h, start)) in self.lines.iter().enumerate().rev() {
            if h != wanted {
                continue;
            }
            let end = self
                .lines
                .get(index + 1)
                .map_or_else(|| self.bytes(), |&(_, next)| next);
            let text = self.read(start, (end - start) as usize)?;
            let text = &text[..text.len().saturating_sub(1)];
            match line::parse(text, field) {
                Ok(Line::Record(found)) if found == id => {
                    return Ok(Some(Latest::Record(text.into())));
                }
                Ok(Line::Delete(found)) if found == id => return Ok(Some(Latest::Deleted)),
                Ok(_) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        Ok(None)
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

    /// Syncs the log and moves it, durably, to `to`, where a compaction reads
    /// it while a new log takes the appends.
    pub(super) fn set_aside(&mut self, to: PathBuf) -> io::Result<()> {
        self.sync()?;
        std::fs::rename(&self.path, &to)?;
        sync_dir(&to)?;
        self.path = to;
        self.readable()
    }

    /// Removes the log's file, durably: its lines are in the compacted file,
    /// and the next compaction may write newer ones there, which this log
    /// replayed after a crash would set back.
    pub(super) fn remove(&self) -> io::Result<()> {
        std::fs::remove_file(&self.path)?;
        sync_dir(&self.path)
    }

    /// Every record the log names, once, with its latest line, by external id:
    /// what a compaction merges into the file. Holds the ids only, not the
    /// lines. Reads what [`readable`](Self::readable) wrote out.
    pub(super) fn ops(&self, field: &str) -> io::Result<Vec<Op>> {
        let mut ops = Vec::with_capacity(self.lines.len());
        if self.file_len == 0 {
            return Ok(ops);
        }
        let file = File::open(&self.path)?;
        let mut reader = BufReader::new(file).take(self.file_len);
        let (mut offset, mut text) = (0u64, Vec::new());
        loop {
            text.clear();
            let read = reader.read_until(b'\n', &mut text)?;
            if read == 0 {
                break;
            }
            let parsed = line::parse(&text[..text.len().saturating_sub(1)], field)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            ops.push(match parsed {
                Line::Record(id) => Op {
                    id,
                    at: offset,
                    line: Some((offset, read)),
                },
                Line::Delete(id) => Op {
                    id,
                    at: offset,
                    line: None,
                },
            });
            offset += read as u64;
        }
        // The latest line of each id wins: sorted by id, then by place in the
        // log (an unstable sort: no second buffer of the ops), the last of
        // each id is kept.
        ops.sort_unstable_by(|a, b| a.id.cmp(&b.id).then(a.at.cmp(&b.at)));
        let mut kept = 0;
        for index in 0..ops.len() {
            if ops
                .get(index + 1)
                .is_some_and(|next| next.id == ops[index].id)
            {
                continue;
            }
            ops.swap(kept, index);
            kept += 1;
        }
        ops.truncate(kept);
        Ok(ops)
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

    /// Empties the log, durably: its lines are in the compacted file now.
    pub(super) fn clear(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.reader = None;
        if self.file.is_none() && self.file_len > 0 {
            // Left by an earlier process and not appended to by this one.
            self.file = Some(OpenOptions::new().read(true).write(true).open(&self.path)?);
        }
        if let Some(file) = &mut self.file {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.sync_data()?;
        }
        self.unsynced = false;
        self.file_len = 0;
        self.lines.clear();
        Ok(())
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

fn hash(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// Makes a file's creation, or a rename into its directory, durable.
pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}
