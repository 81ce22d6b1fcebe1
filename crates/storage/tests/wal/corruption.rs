//! Damage that no crash can cause is refused with `Corrupt`, naming the
//! file: the server must not start on a log it cannot trust.

use std::fs;
use std::path::Path;

use kvraft_storage::{FsyncPolicy, Storage, StorageError, StorageOptions};

use crate::support::*;

/// Opens `dir`, expecting `Corrupt` about `file`.
fn assert_corrupt(dir: &Path, opts: StorageOptions, file: &Path) {
    match Storage::open(dir, opts) {
        Err(e @ StorageError::Corrupt { .. }) => {
            let StorageError::Corrupt { file: f, .. } = &e else { unreachable!() };
            assert_eq!(f, file);
            let msg = e.to_string();
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(msg.contains(name) && !msg.contains('\n'), "{msg}");
        }
        Err(e) => panic!("expected Corrupt about {}, got {e}", file.display()),
        Ok((_, rec)) => panic!("expected Corrupt about {}, recovered {} entries", file.display(), rec.entries.len()),
    }
}

#[test]
fn any_flipped_byte_in_an_early_record_is_corruption() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=20, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let wal = segment_files(dir.path()).pop().unwrap();
    let good = fs::read(&wal).unwrap();
    // Every byte of the first two records (20 records of equal size).
    for offset in 0..written_len(&wal) as usize / 10 {
        fs::write(&wal, &good).unwrap();
        flip(&wal, offset);
        assert_corrupt(dir.path(), opts, &wal);
    }
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_corruption() {
    let opts = options(FsyncPolicy::Never, 300);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=30, 1)).unwrap();
    drop(s);
    let first = segment_files(dir.path()).remove(0);
    chop(&first, 3);
    assert_corrupt(dir.path(), opts, &first);
}

/// The zeroed sector that is a torn write at the end of the log (see
/// torn_tail.rs) is corruption in an older segment: that one was synced.
#[test]
fn a_zeroed_sector_in_a_segment_that_is_not_the_last_is_corruption() {
    let opts = options(FsyncPolicy::Never, 4096);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=300, 1)).unwrap();
    drop(s);
    let first = segment_files(dir.path()).remove(0);
    assert!(written_len(&first) >= 2048, "the first segment holds several sectors");
    let mut bytes = fs::read(&first).unwrap();
    bytes[1024..1536].fill(0);
    fs::write(&first, &bytes).unwrap();
    assert_corrupt(dir.path(), opts, &first);
}

#[test]
fn a_missing_segment_is_corruption() {
    let opts = options(FsyncPolicy::Never, 300);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=30, 1)).unwrap();
    drop(s);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();
    assert_corrupt(dir.path(), opts, &files[2]);
}

#[test]
fn a_corrupt_snapshot_is_corruption() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=10, 1)).unwrap();
    s.compact(&snapshot(6, 1)).unwrap();
    drop(s);
    let snap = snapshot_files(dir.path()).pop().unwrap();
    flip(&snap, 40);
    assert_corrupt(dir.path(), opts, &snap);
}

#[test]
fn a_corrupt_term_file_is_corruption() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.set_term(9).unwrap();
    s.sync().unwrap();
    drop(s);
    let term = dir.path().join("term");
    flip(&term, 0);
    assert_corrupt(dir.path(), opts, &term);
}

#[test]
fn an_impossible_index_in_a_file_name_is_corruption() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    for name in ["wal-00000000000000000000.log", "snapshot-18446744073709551615.snap"] {
        let dir = tempdir();
        let path = dir.path().join(name);
        fs::write(&path, b"").unwrap();
        assert_corrupt(dir.path(), opts, &path);
    }
}
