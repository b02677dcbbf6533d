//! The format of the ledger's sorted runs: a run is a sync's ledger rows
//! folded to one per source id, in source id order, packed into blocks of
//! about [`BLOCK_BYTES`], with an index — a filter of its ids and the first id
//! of each block — that tells which block may hold an id. Encoding, decoding,
//! building and folding only; `ledger.rs` keeps runs in SQLite.
//!
//! Why runs and not a table of rows: ids arrive in `updated_at` order, so
//! every merge into a B-tree keyed by id inserts each row on its own, at a
//! place of its own, once per level it passes through. At 1,000,000 records
//! those inserts took 5.2 s of a 13.8 s sync into JSON Lines, about 2.8 us a
//! row, whatever the rows' length or the levels' number. A merge of runs
//! reads and writes whole blocks in key order instead, a few hundred
//! nanoseconds a row in Rust, and a lookup of an id no run holds (every id,
//! in a first sync) is answered by the filters without reading a block.

use serde::{Deserialize, Serialize};

use super::supersede;
use crate::state::{LedgerEntry, StateError, micros};

/// A block is cut once its rows are about this long: a lookup reads and
/// decodes one block for each run that may hold the id.
pub(super) const BLOCK_BYTES: usize = 4096;

/// Filter bits per id: about one id in a thousand that a run does not hold
/// passes its filter. An id passes a lookup's filters once for each run
/// whose filter it passes, and each pass costs a block read: with ten runs
/// and 10 bits an id (one in a hundred), a tenth of a first sync's ids did.
const FILTER_BITS_PER_ID: usize = 16;

/// A ledger row as a run holds it: the entry, and when the commit that staged
/// it was made.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunRow {
    pub entry: LedgerEntry,
    pub written_at: i64,
}

/// `later` folded over `earlier` as [`supersede`] folds entries; the row that
/// wins keeps its own `written_at`.
pub(super) fn fold(earlier: Option<RunRow>, later: RunRow) -> RunRow {
    match earlier {
        None => later,
        Some(earlier) => {
            let written_at = if crate::record::is_older(
                later.entry.version,
                later.entry.updated_at,
                earlier.entry.version,
                earlier.entry.updated_at,
            ) {
                earlier.written_at
            } else {
                later.written_at
            };
            RunRow {
                entry: supersede(Some(earlier.entry), later.entry),
                written_at,
            }
        }
    }
}

/// One row in a block. The external id is left out where it is the source id
/// (most syncs key the destination by the source's id), and the run id is an
/// index into the block's list of them (a block's rows come from few runs).
#[derive(Serialize, Deserialize)]
struct StoredRow<'a> {
    source_id: &'a str,
    external_id: Option<&'a str>,
    dest_id: Option<&'a str>,
    version: Option<i64>,
    updated_at: i64,
    payload_hash: &'a str,
    run: u32,
    written_at: i64,
    deleted_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct StoredBlock<'a> {
    #[serde(borrow)]
    run_ids: Vec<&'a str>,
    #[serde(borrow)]
    rows: Vec<StoredRow<'a>>,
}

fn corrupt(what: impl std::fmt::Display) -> StateError {
    StateError::Corrupt(format!("ledger run: {what}"))
}

fn encode_block(rows: &[RunRow]) -> Result<Vec<u8>, StateError> {
    let mut run_ids: Vec<&str> = Vec::new();
    let stored = rows
        .iter()
        .map(|row| {
            let e = &row.entry;
            let run = match run_ids.iter().position(|r| *r == e.run_id) {
                Some(at) => at,
                None => {
                    run_ids.push(&e.run_id);
                    run_ids.len() - 1
                }
            };
            StoredRow {
                source_id: &e.source_id,
                external_id: (e.external_id != e.source_id).then_some(e.external_id.as_str()),
                dest_id: e.dest_id.as_deref(),
                version: e.version,
                updated_at: e.updated_at.as_microsecond(),
                payload_hash: &e.payload_hash,
                run: u32::try_from(run).unwrap_or(u32::MAX),
                written_at: row.written_at,
                deleted_at: e.deleted_at.map(jiff::Timestamp::as_microsecond),
            }
        })
        .collect();
    postcard::to_allocvec(&StoredBlock {
        run_ids,
        rows: stored,
    })
    .map_err(corrupt)
}

/// A block's rows, still borrowed from its bytes.
pub(super) struct Block<'a>(StoredBlock<'a>);

impl<'a> Block<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Block<'a>, StateError> {
        postcard::from_bytes(bytes).map(Block).map_err(corrupt)
    }

    pub fn len(&self) -> usize {
        self.0.rows.len()
    }

    /// The row at `at`.
    pub fn row(&self, at: usize) -> Result<RunRow, StateError> {
        let row = self
            .0
            .rows
            .get(at)
            .ok_or_else(|| corrupt("row out of range"))?;
        let run_id = usize::try_from(row.run)
            .ok()
            .and_then(|run| self.0.run_ids.get(run))
            .ok_or_else(|| corrupt("run id out of range"))?;
        Ok(RunRow {
            entry: LedgerEntry {
                source_id: row.source_id.to_owned(),
                external_id: row.external_id.unwrap_or(row.source_id).to_owned(),
                dest_id: row.dest_id.map(str::to_owned),
                version: row.version,
                updated_at: micros(row.updated_at)?,
                payload_hash: row.payload_hash.to_owned(),
                run_id: (*run_id).to_owned(),
                deleted_at: row.deleted_at.map(micros).transpose()?,
            },
            written_at: row.written_at,
        })
    }

    /// The row of `source_id`, if the block holds one.
    pub fn find(&self, source_id: &str) -> Result<Option<RunRow>, StateError> {
        match self.0.rows.binary_search_by(|r| r.source_id.cmp(source_id)) {
            Ok(at) => self.row(at).map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// The hash an id is filtered by, computed once per lookup for every run.
pub(super) fn id_hash(source_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(source_id.as_bytes())
}

/// Ids held by a run, as a blocked Bloom filter: each id sets seven bits of
/// one 512-bit block, so a test reads one cache line. Written here because
/// the filter is stored with the run and must hash the same in every build;
/// the filter crates' hashers make no such promise.
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    words: Vec<u64>,
}

const FILTER_BLOCK_WORDS: usize = 8;
const FILTER_PROBES: u32 = 7;

impl Filter {
    fn new(ids: usize) -> Filter {
        let blocks = (ids.max(1) * FILTER_BITS_PER_ID).div_ceil(64 * FILTER_BLOCK_WORDS);
        Filter {
            words: vec![0; blocks * FILTER_BLOCK_WORDS],
        }
    }

    /// The block an id's bits are in, and their places in it.
    fn bits(&self, hash: u128) -> impl Iterator<Item = (usize, u64)> + use<> {
        let blocks = (self.words.len() / FILTER_BLOCK_WORDS) as u128;
        // The low half picks the block (multiply-shift: no division), nine bits
        // of the high half at a time each bit in it.
        let block =
            usize::try_from(((hash & u128::from(u64::MAX)) * blocks) >> 64).unwrap_or_default();
        let high = (hash >> 64) as u64;
        (0..FILTER_PROBES).map(move |probe| {
            let bit = (high >> (probe * 9)) & 511;
            (
                block * FILTER_BLOCK_WORDS + (bit / 64) as usize,
                1u64 << (bit % 64),
            )
        })
    }

    fn insert(&mut self, hash: u128) {
        for (word, mask) in self.bits(hash) {
            self.words[word] |= mask;
        }
    }

    fn may_hold(&self, hash: u128) -> bool {
        self.bits(hash)
            .all(|(word, mask)| self.words.get(word).is_some_and(|w| w & mask != 0))
    }
}

/// A run's index as stored: the filter's words as little-endian bytes, then
/// the fences. Read borrowing the filter's bytes from the stored value.
#[derive(Deserialize)]
struct StoredIndex<'a> {
    filter: &'a [u8],
    #[serde(borrow)]
    fences: Vec<&'a str>,
}

/// [`StoredIndex`] as written: the filter serialized straight from its words,
/// and into a buffer of the exact size. At 10,000,000 records a merge's index
/// is about 20 MB, and a copy of the filter as bytes plus a buffer grown by
/// doubling made 50 MB of the binary's 162 MB peak heap.
#[derive(Serialize)]
struct IndexOut<'a> {
    filter: FilterBytes<'a>,
    fences: Vec<&'a str>,
}

/// Serialized as the sequence of bytes the words are stored as.
struct FilterBytes<'a>(&'a [u64]);

impl Serialize for FilterBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = serializer.serialize_seq(Some(self.0.len() * 8))?;
        for byte in self.0.iter().flat_map(|word| word.to_le_bytes()) {
            seq.serialize_element(&byte)?;
        }
        seq.end()
    }
}

/// What tells which block of a run may hold an id: the run's filter and the
/// first source id of each of its blocks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunIndex {
    filter: Filter,
    fences: Vec<String>,
}

impl RunIndex {
    /// The block that holds `source_id` if the run holds it; `None` when the
    /// run surely does not.
    pub fn block_for(&self, hash: u128, source_id: &str) -> Option<usize> {
        if !self.filter.may_hold(hash) {
            return None;
        }
        self.fences
            .partition_point(|first| first.as_str() <= source_id)
            .checked_sub(1)
    }

    #[cfg(test)]
    pub fn blocks(&self) -> usize {
        self.fences.len()
    }

    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        let stored = IndexOut {
            filter: FilterBytes(&self.filter.words),
            fences: self.fences.iter().map(String::as_str).collect(),
        };
        let size = postcard::experimental::serialized_size(&stored).map_err(corrupt)?;
        postcard::to_extend(&stored, Vec::with_capacity(size)).map_err(corrupt)
    }

    /// The first piece of the index as stored in pieces: the filter's
    /// length in words, and the fences. [`RunIndex::filter_pieces`] follow.
    pub fn head_piece(&self) -> Result<Vec<u8>, StateError> {
        let fences: Vec<&str> = self.fences.iter().map(String::as_str).collect();
        postcard::to_allocvec(&(self.filter.words.len(), fences)).map_err(corrupt)
    }

    /// The filter's words as little-endian bytes, at most `piece_bytes` a
    /// piece, each made when it is taken: the whole is never copied at once
    /// (at 10,000,000 records the filter is 20 MB).
    pub fn filter_pieces(&self, piece_bytes: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.filter
            .words
            .chunks((piece_bytes / 8).max(1))
            .map(|words| words.iter().flat_map(|w| w.to_le_bytes()).collect())
    }

    pub fn decode(bytes: &[u8]) -> Result<RunIndex, StateError> {
        let stored: StoredIndex = postcard::from_bytes(bytes).map_err(corrupt)?;
        if stored.filter.is_empty() || !stored.filter.len().is_multiple_of(8 * FILTER_BLOCK_WORDS) {
            return Err(corrupt("filter length"));
        }
        let words = stored
            .filter
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(RunIndex {
            filter: Filter { words },
            fences: stored.fences.into_iter().map(str::to_owned).collect(),
        })
    }
}

/// A run's index read from its pieces ([`RunIndex::head_piece`], then
/// [`RunIndex::filter_pieces`]) one at a time, into the filter's words
/// directly.
#[derive(Debug, Default)]
pub(super) struct IndexFromPieces {
    fences: Option<Vec<String>>,
    words: Vec<u64>,
    expected: usize,
}

impl IndexFromPieces {
    pub fn push(&mut self, piece: &[u8]) -> Result<(), StateError> {
        if self.fences.is_none() {
            let (words, fences): (usize, Vec<&str>) =
                postcard::from_bytes(piece).map_err(corrupt)?;
            if words == 0 || !words.is_multiple_of(FILTER_BLOCK_WORDS) {
                return Err(corrupt("filter length"));
            }
            self.expected = words;
            self.words = Vec::with_capacity(words);
            self.fences = Some(fences.into_iter().map(str::to_owned).collect());
            return Ok(());
        }
        if !piece.len().is_multiple_of(8) || self.words.len() + piece.len() / 8 > self.expected {
            return Err(corrupt("filter piece"));
        }
        self.words.extend(
            piece
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
        );
        Ok(())
    }

    /// The index; `None` when no piece came.
    pub fn finish(self) -> Result<Option<RunIndex>, StateError> {
        let Some(fences) = self.fences else {
            return Ok(None);
        };
        if self.words.len() != self.expected {
            return Err(corrupt("filter pieces missing"));
        }
        Ok(Some(RunIndex {
            filter: Filter { words: self.words },
            fences,
        }))
    }
}

/// Builds a run from rows given in strictly increasing source id order:
/// blocks come out as they fill, to be stored while the rest is built.
pub(super) struct RunBuilder {
    filter: Filter,
    fences: Vec<String>,
    block: Vec<RunRow>,
    block_bytes: usize,
    rows: usize,
    ready: Vec<Vec<u8>>,
}

impl RunBuilder {
    /// A builder for at most `ids` rows (the filter is sized for them).
    pub fn new(ids: usize) -> RunBuilder {
        RunBuilder {
            filter: Filter::new(ids),
            fences: Vec::new(),
            block: Vec::new(),
            block_bytes: 0,
            rows: 0,
            ready: Vec::new(),
        }
    }

    pub fn push(&mut self, row: RunRow) -> Result<(), StateError> {
        if let Some(last) = self.block.last()
            && last.entry.source_id >= row.entry.source_id
        {
            return Err(corrupt("rows out of order"));
        }
        let e = &row.entry;
        self.block_bytes += 40
            + e.source_id.len()
            + e.payload_hash.len()
            + e.dest_id.as_ref().map_or(0, String::len)
            + if e.external_id == e.source_id {
                0
            } else {
                e.external_id.len()
            };
        self.filter.insert(id_hash(&e.source_id));
        self.rows += 1;
        self.block.push(row);
        if self.block_bytes >= BLOCK_BYTES {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<(), StateError> {
        if let Some(first) = self.block.first() {
            self.fences.push(first.entry.source_id.clone());
            self.ready.push(encode_block(&self.block)?);
            self.block.clear();
            self.block_bytes = 0;
        }
        Ok(())
    }

    /// How many blocks are cut and not yet taken.
    pub fn ready(&self) -> usize {
        self.ready.len()
    }

    /// The blocks cut since the last call, in order.
    pub fn take_ready(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.ready)
    }

    /// The last block (to store with [`take_ready`](Self::take_ready)'s), the
    /// run's rows and its index.
    pub fn finish(mut self) -> Result<(Vec<Vec<u8>>, usize, RunIndex), StateError> {
        self.cut()?;
        Ok((
            self.ready,
            self.rows,
            RunIndex {
                filter: self.filter,
                fences: self.fences,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use proptest::prelude::*;

    fn row(id: &str, version: i64, external: &str, deleted: bool) -> RunRow {
        RunRow {
            entry: LedgerEntry {
                source_id: id.into(),
                external_id: external.into(),
                dest_id: (version % 2 == 0).then(|| format!("d-{id}")),
                version: Some(version),
                updated_at: Timestamp::from_second(1_700_000_000 + version).expect("time"),
                payload_hash: format!("{version:032x}"),
                run_id: format!("run-{}", version % 3),
                deleted_at: deleted.then_some(Timestamp::UNIX_EPOCH),
            },
            written_at: version * 10,
        }
    }

    /// An index is stored in the bytes earlier builds stored it in (the filter
    /// copied into a `Vec<u8>` first), so each reads the other's.
    #[test]
    fn an_index_is_stored_as_it_always_was() {
        #[derive(Serialize)]
        struct Before<'a> {
            filter: Vec<u8>,
            fences: Vec<&'a str>,
        }
        let rows: Vec<RunRow> = (0..2_000)
            .map(|i| row(&format!("s{i:05}"), i, &format!("s{i:05}"), false))
            .collect();
        let (_, index) = round_trip(&rows);
        let before = postcard::to_allocvec(&Before {
            filter: index
                .filter
                .words
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect(),
            fences: index.fences.iter().map(String::as_str).collect(),
        })
        .expect("encode");
        let now = index.encode().expect("encode");
        assert_eq!(now, before);
        assert_eq!(
            now.capacity(),
            now.len(),
            "written into a buffer of its size"
        );
        assert_eq!(RunIndex::decode(&before).expect("decode"), index);
    }

    /// An index cut into pieces of any size reads back the same, and a
    /// piece missing or out of place is corruption, not a smaller index.
    #[test]
    fn an_index_read_from_its_pieces_is_the_index() {
        let rows: Vec<RunRow> = (0..3_000)
            .map(|i| row(&format!("s{i:05}"), i, &format!("s{i:05}"), false))
            .collect();
        let (_, index) = round_trip(&rows);
        for piece_bytes in [8, 64, 1000, 1 << 20] {
            let pieces: Vec<Vec<u8>> = std::iter::once(index.head_piece().expect("head"))
                .chain(index.filter_pieces(piece_bytes))
                .collect();
            assert!(pieces[1..].iter().all(|p| p.len() <= piece_bytes.max(8)));
            let mut read = IndexFromPieces::default();
            for piece in &pieces {
                read.push(piece).expect("push");
            }
            assert_eq!(read.finish().expect("finish"), Some(index.clone()));
            if pieces.len() > 2 {
                let mut short = IndexFromPieces::default();
                for piece in &pieces[..pieces.len() - 1] {
                    short.push(piece).expect("push");
                }
                assert!(short.finish().is_err(), "{piece_bytes}: a piece missing");
            }
        }
        assert_eq!(IndexFromPieces::default().finish().expect("none"), None);
        let mut headless = IndexFromPieces::default();
        assert!(headless.push(&[0; 64]).is_err(), "a filter piece first");
    }

    /// Builds a run of `rows` and reads every row back through its index.
    fn round_trip(rows: &[RunRow]) -> (Vec<Vec<u8>>, RunIndex) {
        let mut builder = RunBuilder::new(rows.len());
        let mut blocks = Vec::new();
        for r in rows {
            builder.push(r.clone()).expect("push");
            blocks.extend(builder.take_ready());
        }
        let (last, count, index) = builder.finish().expect("finish");
        blocks.extend(last);
        assert_eq!(count, rows.len());
        assert_eq!(index.blocks(), blocks.len());
        let index = RunIndex::decode(&index.encode().expect("encode")).expect("decode");
        (blocks, index)
    }

    proptest! {
        /// Every row comes back whole from the block its index names, ids the
        /// run does not hold are found in no block, and the blocks in order
        /// give back the rows in order.
        #[test]
        fn a_run_gives_back_exactly_its_rows(
            ids in proptest::collection::btree_set("[a-z0-9]{1,12}", 0..400),
            absent in proptest::collection::vec("[A-Z]{1,8}", 0..50),
            seed in 0i64..1000,
        ) {
            let rows: Vec<RunRow> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let v = seed + i as i64;
                    let external = if v % 5 == 0 { format!("x-{id}") } else { id.clone() };
                    row(id, v, &external, v % 7 == 0)
                })
                .collect();
            let (blocks, index) = round_trip(&rows);
            let mut read = Vec::new();
            for bytes in &blocks {
                let block = Block::decode(bytes).expect("block");
                for at in 0..block.len() {
                    read.push(block.row(at).expect("row"));
                }
            }
            prop_assert_eq!(&read, &rows);
            for r in &rows {
                let id = &r.entry.source_id;
                let at = index.block_for(id_hash(id), id).expect("held ids pass the filter");
                let block = Block::decode(&blocks[at]).expect("block");
                let found = block.find(id).expect("find");
                prop_assert_eq!(found.as_ref(), Some(r));
            }
            for id in &absent {
                if let Some(at) = index.block_for(id_hash(id), id) {
                    let block = Block::decode(&blocks[at]).expect("block");
                    prop_assert_eq!(block.find(id).expect("find"), None);
                }
            }
        }

        /// Folding keeps the newer row whatever order the two come in, with
        /// its own `written_at`, and a destination id known before.
        #[test]
        fn a_fold_keeps_the_newer_row(a in 0i64..50, b in 0i64..50) {
            let older = row("k", a, "k", false);
            let newer = RunRow { entry: LedgerEntry { dest_id: None, ..row("k", b, "k", false).entry }, written_at: 7 };
            let folded = fold(Some(older.clone()), newer.clone());
            if b < a {
                prop_assert_eq!(folded, older);
            } else {
                prop_assert_eq!(folded.entry.version, Some(b));
                prop_assert_eq!(folded.written_at, 7);
                prop_assert_eq!(folded.entry.dest_id, older.entry.dest_id);
            }
        }
    }

    #[test]
    fn rows_out_of_order_are_refused() {
        let mut builder = RunBuilder::new(2);
        builder.push(row("b", 1, "b", false)).expect("push");
        assert!(builder.push(row("a", 1, "a", false)).is_err());
        assert!(builder.push(row("b", 2, "b", false)).is_err());
    }

    #[test]
    fn the_filter_passes_about_one_absent_id_in_a_thousand() {
        let mut filter = Filter::new(10_000);
        for i in 0..10_000 {
            filter.insert(id_hash(&format!("held-{i}")));
        }
        let passed = (0..100_000)
            .filter(|i| filter.may_hold(id_hash(&format!("absent-{i}"))))
            .count();
        assert!(passed < 250, "{passed} of 100,000 absent ids passed");
        assert!((0..10_000).all(|i| filter.may_hold(id_hash(&format!("held-{i}")))));
    }
}
