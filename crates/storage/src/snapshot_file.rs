//! One snapshot file, `snapshot-<index>.snap`:
//! `magic:8 | index:u64 | term:u64 | data_len:u64 | data | crc32c:u32`,
//! the CRC covering everything before it.
//!
//! Written temp + fsync + rename + fsync directory, so a crash leaves the
//! previous snapshot or the new one, whole. Older snapshots are deleted only
//! once the new one is durable.

use std::path::Path;

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
    let (header, data) = body.split_at(HEADER_LEN);
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(w)
    };
    if &header[..8] != MAGIC {
        return Err(corrupt(0, "not a snapshot file (bad magic)".into()));
    }
    let meta = SnapshotMeta { index: word(8), term: word(16) };
    if word(24) != data.len() as u64 {
        let cause = format!("data length {} but {} bytes present", word(24), data.len());
        return Err(corrupt(24, cause));
    }
    if meta.index != index {
        let cause = format!("file name says index {index} but it holds index {}", meta.index);
        return Err(corrupt(8, cause));
    }
    let len = data.len();
    // In place: a 100 MB snapshot is not copied into a second buffer.
    let mut bytes = bytes;
    bytes.truncate(HEADER_LEN + len);
    bytes.drain(..HEADER_LEN);
    Ok(Snapshot::new(meta, bytes))
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
    fn a_stored_snapshot_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot::new(SnapshotMeta { index: 9, term: 2 }, b"state".to_vec()).stored();
        let err = write(dir.path(), &snap, FsyncPolicy::Never).unwrap_err();
        assert!(matches!(err, StorageError::SnapshotNotInMemory { index: 9 }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    }
}
