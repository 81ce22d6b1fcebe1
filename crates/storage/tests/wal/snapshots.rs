//! Snapshots: installation replaces the log, compaction deletes what the
//! snapshot covers, and recovery returns the snapshot plus what follows.

use std::fs;

use kvraft_storage::{FsyncPolicy, StorageError, StorageOptions};

use crate::support::*;

#[test]
fn install_snapshot_replaces_the_whole_log() {
    let opts = options(FsyncPolicy::Always, 400);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=50, 1)).unwrap();
    s.sync().unwrap();
    s.install_snapshot(&snapshot(30, 2)).unwrap();
    assert_eq!(s.last_index(), 30);
    assert_eq!(segment_files(dir.path()).len(), 1);
    s.append(&entries(31..=33, 2)).unwrap();
    s.sync().unwrap();
    drop(s);

    let (mut s, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot, Some(snapshot(30, 2)));
    assert_eq!(rec.entries, entries(31..=33, 2));
    assert!(matches!(s.append(&entries(30..=30, 2)), Err(StorageError::BeforeSnapshot { first: 30, snapshot: 30 })));
    // A snapshot beyond the log works too.
    s.install_snapshot(&snapshot(100, 3)).unwrap();
    assert_eq!(s.last_index(), 100);
    assert!(matches!(
        s.install_snapshot(&snapshot(99, 3)),
        Err(StorageError::SnapshotRegress { new: 99, current: 100 })
    ));
    s.append(&entries(101..=101, 3)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot.unwrap().meta.index, 100);
    assert_eq!(rec.entries, entries(101..=101, 3));
    assert_eq!(snapshot_files(dir.path()).len(), 1);
}

#[test]
fn compact_deletes_covered_segments_and_recovery_returns_only_later_entries() {
    let opts = options(FsyncPolicy::Always, 400);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=100, 1)).unwrap();
    s.sync().unwrap();
    let before = segment_files(dir.path()).len();
    let usage_before = s.disk_usage().unwrap();
    s.compact(&snapshot(60, 1)).unwrap();
    s.compact(&snapshot(70, 1)).unwrap();
    assert!(segment_files(dir.path()).len() < before);
    assert!(s.disk_usage().unwrap() < usage_before);
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    assert_eq!(s.last_index(), 100);
    s.sync().unwrap();
    drop(s);

    let (mut s, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot, Some(snapshot(70, 1)));
    assert_eq!(rec.entries, entries(71..=100, 1));
    // Compacting at the last index leaves an empty log after the snapshot.
    s.compact(&snapshot(100, 1)).unwrap();
    assert_eq!(s.last_index(), 100);
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries, vec![]);
    assert_eq!(segment_files(dir.path()).len(), 1);
}

/// A crash after the leader's snapshot is durable but before the old log is
/// deleted: recovery drops a log that conflicts with the snapshot, and keeps
/// one that agrees with it.
#[test]
fn a_crash_during_installation_keeps_only_a_log_that_agrees_with_the_snapshot() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    for (snapshot_term, kept) in [(2, 0), (1, 10)] {
        let dir = tempdir();
        let (mut s, _) = open(dir.path(), opts);
        s.append(&entries(1..=20, 1)).unwrap();
        drop(s);
        // Make the snapshot file elsewhere and drop it in, as if the crash
        // came right after its rename.
        let other = tempdir();
        let (mut o, _) = open(other.path(), opts);
        o.install_snapshot(&snapshot(10, snapshot_term)).unwrap();
        drop(o);
        let snap = snapshot_files(other.path()).pop().unwrap();
        fs::copy(&snap, dir.path().join(snap.file_name().unwrap())).unwrap();

        let (s, rec) = open(dir.path(), opts);
        assert_eq!(rec.entries.len(), kept, "snapshot term {snapshot_term}");
        assert_eq!(s.last_index(), 10 + kept as u64);
    }
}

#[test]
fn leftovers_of_an_interrupted_snapshot_write_are_cleaned_up() {
    let opts = StorageOptions::default();
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=20, 1)).unwrap();
    s.compact(&snapshot(5, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let old = snapshot_files(dir.path()).pop().unwrap();
    let older = dir.path().join("snapshot-00000000000000000003.snap");
    fs::copy(&old, &older).unwrap(); // its content does not matter: not newest
    fs::write(dir.path().join("snapshot-00000000000000000009.snap.tmp"), b"half").unwrap();
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot.unwrap().meta.index, 5);
    assert_eq!(snapshot_files(dir.path()), vec![old]);
}

/// A snapshot written by a `SnapshotFiles` (on another thread in the
/// server) while the log goes on appending, then adopted: the same result
/// as `compact`, and recovery returns it.
#[test]
fn a_written_snapshot_is_adopted_while_the_log_goes_on() {
    let opts = options(FsyncPolicy::Always, 400);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=100, 1)).unwrap();
    s.sync().unwrap();
    let writer = s.snapshot_files();
    let t = std::thread::spawn(move || writer.write(&snapshot(60, 1)));
    s.append(&entries(101..=120, 1)).unwrap();
    s.sync().unwrap();
    t.join().unwrap().unwrap();
    let before = segment_files(dir.path()).len();
    s.compact_written(snapshot(60, 1).meta).unwrap();
    assert!(segment_files(dir.path()).len() < before);
    assert_eq!(s.snapshot_meta(), snapshot(60, 1).meta);
    assert_eq!(s.last_index(), 120);
    s.sync().unwrap();
    drop(s);

    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot, Some(snapshot(60, 1)));
    assert_eq!(rec.entries, entries(61..=120, 1));
    assert_eq!(snapshot_files(dir.path()).len(), 1);
}

/// Snapshots every few entries: the next one can be written before the disk
/// thread adopts the one before it. Adopting the older must leave the newer
/// file alone (it used to be deleted, and adopting it then failed: a server
/// under a fast write load with a small SnapshotEntries stopped).
#[test]
fn a_snapshot_written_before_the_previous_is_adopted_survives_it() {
    let opts = options(FsyncPolicy::Always, 400);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=100, 1)).unwrap();
    s.sync().unwrap();
    s.snapshot_files().write(&snapshot(40, 1)).unwrap();
    s.snapshot_files().write(&snapshot(80, 1)).unwrap();
    s.compact_written(snapshot(40, 1).meta).unwrap();
    assert_eq!(snapshot_files(dir.path()).len(), 2, "the newer file is still there");
    drop(s);
    // A crash now: the newest snapshot is the authority.
    let (mut s, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot, Some(snapshot(80, 1)));
    assert_eq!(rec.entries, entries(81..=100, 1));
    s.snapshot_files().write(&snapshot(90, 1)).unwrap();
    s.snapshot_files().write(&snapshot(95, 1)).unwrap();
    s.compact_written(snapshot(90, 1).meta).unwrap();
    s.compact_written(snapshot(95, 1).meta).unwrap();
    assert_eq!(s.snapshot_meta(), snapshot(95, 1).meta);
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot, Some(snapshot(95, 1)));
    assert_eq!(rec.entries, entries(96..=100, 1));
}

/// The leader's snapshot was installed while a local one was being written:
/// the older local one is dropped, file and all, and nothing is poisoned.
#[test]
fn a_written_snapshot_behind_the_stored_one_is_dropped() {
    let opts = options(FsyncPolicy::Always, 400);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=50, 1)).unwrap();
    s.sync().unwrap();
    s.snapshot_files().write(&snapshot(40, 1)).unwrap();
    s.install_snapshot(&snapshot(80, 2)).unwrap();
    // The installation removed the written file, or it is removed now.
    s.compact_written(snapshot(40, 1).meta).unwrap();
    assert_eq!(s.snapshot_meta(), snapshot(80, 2).meta);
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    // The same again with the file still there when it is dropped.
    s.snapshot_files().write(&snapshot(70, 2)).unwrap();
    assert_eq!(snapshot_files(dir.path()).len(), 2);
    s.compact_written(snapshot(70, 2).meta).unwrap();
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    s.append(&entries(81..=81, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot, Some(snapshot(80, 2)));
    assert_eq!(rec.entries, entries(81..=81, 2));
}

/// Adopting a snapshot whose file is not there would delete entries that
/// nothing else holds: refused, and the storage is poisoned.
#[test]
fn adopting_a_snapshot_that_was_never_written_is_an_error() {
    let opts = options(FsyncPolicy::Never, 400);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=50, 1)).unwrap();
    assert!(matches!(s.compact_written(snapshot(40, 1).meta), Err(StorageError::Io { .. })));
    assert!(matches!(s.append(&entries(51..=51, 1)), Err(StorageError::Poisoned { .. })));
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.snapshot, None);
    assert_eq!(rec.entries, entries(1..=50, 1));
}

/// Two writers of the same snapshot at once (the leader's and a local one
/// at the same index) each have a temp file of their own: both succeed and
/// the file is whole. (With one shared temp name, the later rename fails.)
#[test]
fn concurrent_writers_of_one_snapshot_leave_it_whole() {
    let dir = tempdir();
    let (s, _) = open(dir.path(), options(FsyncPolicy::Never, 400));
    let big = kvraft_core::Snapshot::new(kvraft_core::SnapshotMeta { index: 9, term: 1 }, vec![7u8; 16 << 20]);
    let start = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (w, b, start) = (s.snapshot_files(), big.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                w.write(&b)
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    drop(s);
    let (_, rec) = open(dir.path(), options(FsyncPolicy::Never, 400));
    assert_eq!(rec.snapshot, Some(big));
}

/// The stored snapshot reads back whole; one that a later snapshot replaced,
/// or a meta the file does not hold, is an error, not a wrong snapshot; one
/// opened before it was replaced stays readable.
#[test]
fn the_stored_snapshot_reads_back_until_replaced() {
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), options(FsyncPolicy::Never, 400));
    let files = s.snapshot_files();
    let read_all = |o: &kvraft_storage::StoredSnapshot| {
        let mut data = vec![0u8; o.len() as usize];
        o.read_at(0, &mut data).unwrap();
        data
    };
    s.append(&entries(1..=50, 1)).unwrap();
    s.compact(&snapshot(40, 1)).unwrap();
    let first = files.open(snapshot(40, 1).meta).unwrap();
    assert_eq!(Some(&read_all(&first)[..]), snapshot(40, 1).data.bytes());
    assert!(matches!(files.open(snapshot(40, 2).meta), Err(StorageError::Corrupt { .. })), "wrong term");
    s.compact(&snapshot(45, 1)).unwrap();
    let second = files.open(snapshot(45, 1).meta).unwrap();
    assert_eq!(Some(&read_all(&second)[..]), snapshot(45, 1).data.bytes());
    assert!(matches!(files.open(snapshot(40, 1).meta), Err(StorageError::Io { .. })), "replaced");
    assert_eq!(Some(&read_all(&first)[..]), snapshot(40, 1).data.bytes(), "open before it was replaced");
}

/// A crash can make a snapshot or entries of a new term durable before the
/// term file that names it (a received snapshot, a local one written ahead
/// of the log, a segment rolled over): recovery never returns a term below
/// what the server holds.
#[test]
fn the_recovered_term_is_never_behind_the_log_or_the_snapshot() {
    let opts = options(FsyncPolicy::Always, 400);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.set_term(1).unwrap();
    s.append(&entries(1..=10, 1)).unwrap();
    s.sync().unwrap();
    // Entries of term 2 durable, the term file still at 1.
    s.append(&entries(11..=12, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (mut s, rec) = open(dir.path(), opts);
    assert_eq!((rec.term, s.term()), (2, 2));
    assert!(matches!(s.set_term(1), Err(StorageError::TermRegress { new: 1, current: 2 })));
    // Recovery wrote the raised term to the term file: with the term-2
    // entries gone from the log, the term stays 2.
    s.append(&entries(11..=12, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, rec) = open(dir.path(), opts);
    assert_eq!(rec.term, 2, "the term file was not brought up");
    // A snapshot of term 3 durable, the term file not yet.
    s.snapshot_files().write(&snapshot(20, 3)).unwrap();
    drop(s);
    let (s, rec) = open(dir.path(), opts);
    assert_eq!((rec.term, s.term()), (3, 3));
    assert_eq!(rec.snapshot, Some(snapshot(20, 3)));
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.term, 3);
}
