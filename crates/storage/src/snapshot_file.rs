//! One snapshot file, `snapshot-<index>.snap`:
//! `magic:8 | index:u64 | term:u64 | data_len:u64 | data | crc32c:u32`,
//! the CRC covering everything before it.
//!
//! Written temp + fsync + rename + fsync directory, so a crash leaves the
//! previous snapshot or the new one, whole. Older snapshots are deleted only
//! once the new one is durable.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kvraft_core::{Index, Snapshot, SnapshotMeta};

use crate::error::StorageError;
use crate::fsio;
use crate::names;
use crate::options::FsyncPolicy;

const MAGIC: &[u8; 8] = b"KVRSNAP1";
const HEADER_LEN: usize = 32;
const TRAILER_LEN: usize = 4;

/// Durably writes `snapshot` under its own name. Its bytes must be in
/// memory.
pub fn write(dir: &Path, snapshot: &Snapshot, policy: FsyncPolicy) -> Result<(), StorageError> {
    let data = snapshot.data.bytes().ok_or(StorageError::SnapshotNotInMemory { index: snapshot.meta.index })?;
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&snapshot.meta.index.to_le_bytes());
    header[16..24].copy_from_slice(&snapshot.meta.term.to_le_bytes());
    header[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), data);
    let name = names::snapshot(snapshot.meta.index);
    fsio::write_atomic(dir, &name, &[&header, data, &crc.to_le_bytes()], policy)
}

/// Reads and verifies the snapshot at `path`, whose name says it ends at
/// `index`.
pub fn read(path: &Path, index: Index) -> Result<Snapshot, StorageError> {
    let bytes = fsio::read(path)?;
    let corrupt = |offset: usize, cause: String| StorageError::corrupt(path, offset as u64, cause);
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(corrupt(0, format!("snapshot file too short ({} bytes)", bytes.len())));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(corrupt(body.len(), "snapshot checksum mismatch".into()));
    }
    let (meta, len) = parse_header(path, &body[..HEADER_LEN], bytes.len() as u64)?;
    if meta.index != index {
        let cause = format!("file name says index {index} but it holds index {}", meta.index);
        return Err(corrupt(8, cause));
    }
    // In place: a 100 MB snapshot is not copied into a second buffer.
    let mut bytes = bytes;
    bytes.truncate(HEADER_LEN + len as usize);
    bytes.drain(..HEADER_LEN);
    Ok(Snapshot::new(meta, bytes))
}

/// A verified snapshot file open for reading its data in pieces: the whole
/// file's checksum is checked when it is opened (streaming, in 1 MiB
/// reads), so no piece of a corrupt file is ever handed out, and no more
/// than a piece is in memory at a time. The pieces read later are not
/// checked again here: [`StoredSnapshot::data_crc`] is what was verified,
/// for the receiver to check them against.
#[derive(Debug)]
pub struct StoredSnapshot {
    file: File,
    path: PathBuf,
    len: u64,
    data_crc: u32,
}

impl StoredSnapshot {
    /// Opens `path`, which must hold the snapshot at `meta`.
    pub fn open(path: &Path, meta: SnapshotMeta) -> Result<StoredSnapshot, StorageError> {
        let file = File::open(path).map_err(StorageError::io(path, "open"))?;
        let size = file.metadata().map_err(StorageError::io(path, "stat"))?.len();
        let corrupt = |offset: u64, cause: String| StorageError::corrupt(path, offset, cause);
        if size < (HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(corrupt(0, format!("snapshot file too short ({size} bytes)")));
        }
        let mut header = [0u8; HEADER_LEN];
        read_exact_at(&file, path, &mut header, 0)?;
        let (found, len) = parse_header(path, &header, size)?;
        if found != meta {
            let cause = format!(
                "holds index {} term {} where {} {} was expected",
                found.index, found.term, meta.index, meta.term
            );
            return Err(corrupt(8, cause));
        }
        let mut crc = crc32c::crc32c(&header);
        let mut data_crc = 0;
        let mut piece = vec![0u8; VERIFY_PIECE.min(len as usize)];
        let mut at = HEADER_LEN as u64;
        while at < size - TRAILER_LEN as u64 {
            let n = piece.len().min((size - TRAILER_LEN as u64 - at) as usize);
            read_exact_at(&file, path, &mut piece[..n], at)?;
            crc = crc32c::crc32c_append(crc, &piece[..n]);
            data_crc = crc32c::crc32c_append(data_crc, &piece[..n]);
            at += n as u64;
        }
        let mut trailer = [0u8; TRAILER_LEN];
        read_exact_at(&file, path, &mut trailer, at)?;
        if u32::from_le_bytes(trailer) != crc {
            return Err(corrupt(at, "snapshot checksum mismatch".into()));
        }
        Ok(StoredSnapshot { file, path: path.to_path_buf(), len, data_crc })
    }

    /// The CRC-32C of the data alone (no header), from the verified file.
    pub fn data_crc(&self) -> u32 {
        self.data_crc
    }

    /// Bytes of data.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` with the data from `offset` on.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len);
        if end.is_none() {
            let cause = format!("{} bytes at {offset} are past the data's {} bytes", buf.len(), self.len);
            return Err(StorageError::corrupt(&self.path, offset, cause));
        }
        read_exact_at(&self.file, &self.path, buf, HEADER_LEN as u64 + offset)
    }
}

/// The meta and the data length a header states, checked against the
/// magic and the size of the file it opens (`file_size` bytes).
fn parse_header(path: &Path, header: &[u8], file_size: u64) -> Result<(SnapshotMeta, u64), StorageError> {
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    if &header[..8] != MAGIC {
        return Err(StorageError::corrupt(path, 0, "not a snapshot file (bad magic)"));
    }
    let len = file_size - (HEADER_LEN + TRAILER_LEN) as u64;
    if word(24) != len {
        return Err(StorageError::corrupt(path, 24, format!("data length {} but {len} bytes present", word(24))));
    }
    Ok((SnapshotMeta { index: word(8), term: word(16) }, len))
}

/// Verification reads the file this much at a time.
const VERIFY_PIECE: usize = 1 << 20;

fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], at: u64) -> Result<(), StorageError> {
    file.read_exact_at(buf, at).map_err(StorageError::io(path, "read"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_any_flipped_byte_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot::new(SnapshotMeta { index: 9, term: 2 }, b"state".to_vec());
        write(dir.path(), &snap, FsyncPolicy::Never).unwrap();
        let path = dir.path().join(names::snapshot(9));
        assert_eq!(read(&path, 9).unwrap(), snap);
        assert!(matches!(read(&path, 8), Err(StorageError::Corrupt { .. })));
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(matches!(read(&path, 9), Err(StorageError::Corrupt { .. })), "byte {i}");
        }
    }

    #[test]
    fn an_opened_snapshot_reads_back_in_pieces_and_any_flipped_byte_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * VERIFY_PIECE + 7).map(|i| (i % 251) as u8).collect();
        let meta = SnapshotMeta { index: 9, term: 2 };
        write(dir.path(), &Snapshot::new(meta, data.clone()), FsyncPolicy::Never).unwrap();
        let path = dir.path().join(names::snapshot(9));
        let opened = StoredSnapshot::open(&path, meta).unwrap();
        assert_eq!(opened.len(), data.len() as u64);
        assert_eq!(opened.data_crc(), crc32c::crc32c(&data), "the data's own CRC, for the receiver");
        let mut back = Vec::new();
        let mut piece = vec![0u8; 1000];
        while (back.len() as u64) < opened.len() {
            let n = piece.len().min(data.len() - back.len());
            opened.read_at(back.len() as u64, &mut piece[..n]).unwrap();
            back.extend_from_slice(&piece[..n]);
        }
        assert_eq!(back, data);
        assert!(opened.read_at(data.len() as u64 - 3, &mut [0u8; 4]).is_err(), "past the end");
        let wrong = SnapshotMeta { index: 9, term: 3 };
        assert!(matches!(StoredSnapshot::open(&path, wrong), Err(StorageError::Corrupt { .. })));
        let good = std::fs::read(&path).unwrap();
        for i in [0, 8, 20, 30, 40, VERIFY_PIECE + 100, good.len() - 10, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(matches!(StoredSnapshot::open(&path, meta), Err(StorageError::Corrupt { .. })), "byte {i}");
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(StoredSnapshot::open(&path, meta), Err(StorageError::Corrupt { .. })), "cut short");
    }

    #[test]
    fn a_stored_snapshot_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot::new(SnapshotMeta { index: 9, term: 2 }, b"state".to_vec()).stored();
        let err = write(dir.path(), &snap, FsyncPolicy::Never).unwrap_err();
        assert!(matches!(err, StorageError::SnapshotNotInMemory { index: 9 }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    }
}
