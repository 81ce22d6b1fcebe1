//! Append, sync, reopen: what was synced comes back, suffix truncation
//! sticks, and contract violations are refused without harm.

use kvraft_storage::{FsyncPolicy, Storage, StorageError, StorageOptions};

use crate::support::*;

#[test]
fn entries_and_term_survive_reopen() {
    let dir = tempdir();
    let (mut s, rec) = open(dir.path(), StorageOptions::default());
    assert_eq!((rec.term, rec.snapshot, rec.entries.len()), (0, None, 0));
    assert_eq!(s.last_index(), 0);
    s.set_term(3).unwrap();
    s.append(&entries(1..=5, 3)).unwrap();
    s.append(&entries(6..=10, 3)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.last_index(), 10);
    drop(s);

    let (s, rec) = open(dir.path(), StorageOptions::default());
    assert_eq!(rec.term, 3);
    assert_eq!(rec.entries, entries(1..=10, 3));
    assert_eq!(rec.torn_tail, None);
    assert_eq!(s.last_index(), 10);
}

#[test]
fn suffix_truncation_survives_reopen_and_the_old_suffix_is_gone() {
    let dir = tempdir();
    // Small segments, so that the truncation also removes whole files.
    let opts = options(FsyncPolicy::Always, 300);
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=30, 1)).unwrap();
    s.sync().unwrap();
    let before = segment_files(dir.path()).len();
    s.append(&entries(6..=8, 2)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.last_index(), 8);
    assert!(segment_files(dir.path()).len() < before);
    drop(s);

    let (mut s, rec) = open(dir.path(), opts);
    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=8, 2));
    assert_eq!(rec.entries, expected);
    // Truncating at the very first entry empties the log.
    s.append(&entries(1..=2, 3)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries, entries(1..=2, 3));
}

#[test]
fn contract_violations_are_refused_and_change_nothing() {
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), options(FsyncPolicy::Never, 1 << 20));
    s.set_term(2).unwrap();
    s.append(&entries(1..=3, 2)).unwrap();
    assert!(matches!(s.append(&entries(5..=6, 2)), Err(StorageError::Gap { first: 5, last: 3 })));
    let mut holey = entries(4..=5, 2);
    holey.push(entry(7, 2));
    assert!(matches!(s.append(&holey), Err(StorageError::NotConsecutive { prev: 5, got: 7 })));
    assert!(matches!(s.set_term(1), Err(StorageError::TermRegress { new: 1, current: 2 })));
    // None of that poisoned the storage.
    s.append(&entries(4..=4, 2)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.last_index(), 4);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempdir();
    let (s, _) = open(dir.path(), StorageOptions::default());
    let second = Storage::open(dir.path(), StorageOptions::default());
    assert!(matches!(second, Err(StorageError::Locked { .. })));
    drop(s);
    Storage::open(dir.path(), StorageOptions::default()).unwrap();
}

#[test]
fn a_term_set_without_sync_is_not_yet_durable() {
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), StorageOptions::default());
    s.set_term(4).unwrap();
    s.sync().unwrap();
    s.set_term(5).unwrap();
    drop(s);
    let (_, rec) = open(dir.path(), StorageOptions::default());
    assert_eq!(rec.term, 4);
}
