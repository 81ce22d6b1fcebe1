//! One segment file `wal-<first>-<salt>.log`: its in-memory map, and
//! reading it back.
//!
//! Invariant: the segment holds the consecutive entries `first, first+1, ...`
//! and nothing else, so `offsets[i]` is where entry `first + i` starts. The
//! map is what makes suffix truncation a single `set_len`.

use std::path::{Path, PathBuf};

use kvraft_core::{Entry, Index};

use crate::error::StorageError;
use crate::fsio;
use crate::record::{self, Parsed};

#[derive(Debug)]
pub struct Segment {
    pub first: Index,
    pub path: PathBuf,
    /// Byte offset of each entry's record.
    pub offsets: Vec<u64>,
    /// Bytes in the file (written, not necessarily synced).
    pub len: u64,
    /// What its records' CRCs start from (see record.rs).
    pub seed: u32,
}

impl Segment {
    pub fn empty(first: Index, path: PathBuf, salt: Option<u64>) -> Self {
        Segment { first, path, offsets: Vec::new(), len: 0, seed: record::seed(salt) }
    }

    /// The index the next appended entry must have.
    pub fn next_index(&self) -> Index {
        self.first + self.offsets.len() as u64
    }

    /// Where the record of `index` starts: the file length past the last
    /// entry, 0 before the first.
    pub fn offset_of(&self, index: Index) -> u64 {
        let Some(i) = index.checked_sub(self.first) else {
            return 0;
        };
        usize::try_from(i).ok().and_then(|i| self.offsets.get(i).copied()).unwrap_or(self.len)
    }
}

/// A segment as read from disk.
#[derive(Debug)]
pub struct Scanned {
    pub segment: Segment,
    pub entries: Vec<Entry>,
    /// Where damage starts that a torn write explains, and what it is:
    /// nothing intact after it, or a sector never written before what is
    /// (see [`scan`]). A torn tail if this is the last segment, corruption
    /// otherwise. The segment's `len` stops before it.
    pub torn: Option<(u64, String)>,
    /// The file's length on disk.
    pub file_len: u64,
}

/// The unit a disk writes whole: a write torn by a power loss is torn at a
/// multiple of it, and a sector never written reads as zeros (the log's
/// room is zero-filled ahead of it).
const SECTOR: usize = 512;

/// Reads every record of the segment at `path`, up to the end of the file
/// or the zero-filled room after the last record. Damage followed by an
/// intact record is corruption, unless a whole sector of the damage is
/// zeros: one write of several records, torn by a power loss before its
/// fsync returned, can leave a sector unwritten with later sectors written
/// (the disk orders neither), and nothing in it was acknowledged, since a
/// fsync that returned would have made the earlier sector durable as well.
/// That is etcd's rule too. An invalid record, or an entry out of sequence,
/// is corruption.
pub fn scan(path: &Path, first: Index, salt: Option<u64>) -> Result<Scanned, StorageError> {
    let bytes = fsio::read(path)?;
    let mut segment = Segment::empty(first, path.to_path_buf(), salt);
    let seed = segment.seed;
    let mut entries = Vec::new();
    let mut at = 0usize;
    let torn = loop {
        match record::parse(&bytes, at, seed) {
            Parsed::End => break None,
            Parsed::Record { entry, next } => {
                let expected = segment.next_index();
                if entry.index != expected {
                    let cause = format!("entry index {} where {expected} was expected", entry.index);
                    return Err(StorageError::corrupt(path, at as u64, cause));
                }
                segment.offsets.push(at as u64);
                entries.push(entry);
                at = next;
            }
            Parsed::Invalid(cause) => return Err(StorageError::corrupt(path, at as u64, cause)),
            Parsed::Damaged(_) if bytes[at..].iter().all(|b| *b == 0) => {
                // The zero-filled room ahead of the log (see `storage.rs`),
                // or blocks allocated but never written: no record, no loss.
                break None;
            }
            Parsed::Damaged(damage) => {
                let Some(good) = record::intact_record_after(&bytes, at, seed) else {
                    break Some((at as u64, damage.to_string()));
                };
                let Some(zeros) = zeroed_sector(&bytes, at, good) else {
                    let cause = format!("{damage}, yet an intact record follows at offset {good}");
                    return Err(StorageError::corrupt(path, at as u64, cause));
                };
                let what = format!(
                    "{damage}; the sector at offset {zeros} was never written and intact records follow from \
                     offset {good}: a write torn by a power loss, none of it acknowledged"
                );
                break Some((at as u64, what));
            }
        }
    };
    segment.len = at as u64;
    Ok(Scanned { segment, entries, torn, file_len: bytes.len() as u64 })
}

/// Where `bytes[from..to]` shows a sector that was never written, if it
/// does: the first whole sector that is all zeros, or, when `from` (where a
/// record should start) is inside a sector, that sector's part from `from`
/// on, if it is all zeros and holds at least a whole record header. The
/// sector's part before `from` is the previous write's, synced, so a lost
/// write of that sector leaves it and the zero-filled room after it; had
/// the write landed, a header (whose length is never 0) would be there.
/// Most writes start inside a sector, so that sector is the one a torn
/// write most often lost.
fn zeroed_sector(bytes: &[u8], from: usize, to: usize) -> Option<usize> {
    let first = from.div_ceil(SECTOR) * SECTOR;
    let head = first.saturating_sub(from);
    if head >= record::HEADER_LEN && first <= to && bytes[from..first].iter().all(|b| *b == 0) {
        return Some(from);
    }
    (first..to).step_by(SECTOR).find(|&s| s + SECTOR <= to && bytes[s..s + SECTOR].iter().all(|b| *b == 0))
}

/// Creates the empty segment file for `first`, with a new random salt,
/// and returns it open for writing. Every segment on disk is tracked, and
/// the ones a new segment replaces are removed (and the removal synced)
/// before it is created, so no other segment for `first` remains.
pub fn create(dir: &Path, first: Index) -> Result<(std::fs::File, Segment), StorageError> {
    let salt = rand::random::<u64>();
    let path = dir.join(crate::names::segment(first, Some(salt)));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(StorageError::io(&path, "create"))?;
    Ok((file, Segment::empty(first, path, Some(salt))))
}

/// Opens an existing segment for writing (at explicit offsets: its file may
/// end in zero-filled room past the last record).
pub fn open_write(path: &Path) -> Result<std::fs::File, StorageError> {
    std::fs::OpenOptions::new().write(true).open(path).map_err(StorageError::io(path, "open"))
}
