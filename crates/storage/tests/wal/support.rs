//! Helpers shared by the storage tests.

use std::fs;
use std::path::{Path, PathBuf};

use kvraft_core::kv::{Command, Op};
use kvraft_core::{Entry, Index, Payload, Snapshot, SnapshotMeta, Term};
use kvraft_storage::{FsyncPolicy, Recovered, Storage, StorageOptions};
use tempfile::TempDir;

/// A fresh directory on the build's disk (not a tmpfs), removed on drop.
pub fn tempdir() -> TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// An entry whose value has `size` bytes.
pub fn entry_sized(index: Index, term: Term, size: usize) -> Entry {
    let fill = char::from(b'a' + (index % 26) as u8);
    Entry {
        term,
        index,
        payload: Payload::Command(Command {
            client_id: "c1".into(),
            session: 1,
            op_id: index,
            first_unacked: index,
            op: Op::Put { key: format!("k{index}"), value: std::iter::repeat_n(fill, size).collect() },
        }),
    }
}

pub fn entry(index: Index, term: Term) -> Entry {
    entry_sized(index, term, 16)
}

pub fn entries(indexes: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
    indexes.map(|i| entry(i, term)).collect()
}

pub fn snapshot(index: Index, term: Term) -> Snapshot {
    Snapshot::new(SnapshotMeta { index, term }, format!("state up to {index}").into_bytes())
}

pub fn options(fsync: FsyncPolicy, segment_bytes: u64) -> StorageOptions {
    StorageOptions { fsync, segment_bytes }
}

pub fn open(dir: &Path, opts: StorageOptions) -> (Storage, Recovered) {
    Storage::open(dir, opts).unwrap()
}

/// The data directory's segment files, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, "wal-")
}

pub fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, "snapshot-")
}

fn files_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    files.sort();
    files
}

/// Where a segment's records end: its length without the zero-filled room
/// after them (record framing: `len:u32 | crc:u32 | type:u8 | payload`).
pub fn written_len(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut at = 0usize;
    while at + 9 <= bytes.len() && bytes[at..at + 9] != [0u8; 9] {
        at += 9 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    at.min(bytes.len()) as u64
}

/// Cuts a segment `n` bytes before the end of its records (the zero-filled
/// room after them goes too): a crash mid-write.
pub fn chop(path: &Path, n: u64) {
    let end = written_len(path);
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(end - n).unwrap();
}

/// Flips one bit of the byte at `offset`.
pub fn flip(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x08;
    fs::write(path, bytes).unwrap();
}
