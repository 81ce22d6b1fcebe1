//! Compaction keeps the disk use bounded however long the log runs.

use kvraft_storage::FsyncPolicy;

use crate::support::*;

#[test]
fn disk_use_stays_bounded_with_regular_compaction() {
    const ENTRIES: u64 = 200_000;
    const SEGMENT: u64 = 256 << 10;
    // The entries after the snapshot (at most 1,300 of about 130 bytes) fit
    // in two segments, plus the snapshot and term files: far below what
    // 200,000 entries would take (about 26 MB) without compaction.
    const BOUND: u64 = 2 * SEGMENT + (64 << 10);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), options(FsyncPolicy::Never, SEGMENT));
    s.set_term(1).unwrap();
    let mut peak = 0;
    for batch in 0..ENTRIES / 100 {
        let first = batch * 100 + 1;
        let batch: Vec<_> = (first..first + 100).map(|i| entry_sized(i, 1, 100)).collect();
        s.append(&batch).unwrap();
        s.sync().unwrap();
        peak = peak.max(s.disk_usage().unwrap());
        let last = s.last_index();
        if last % 1000 == 0 {
            // Like a shell, snapshot what was applied a little while ago.
            s.compact(&snapshot(last - 300, 1)).unwrap();
        }
    }
    assert_eq!(s.last_index(), ENTRIES);
    assert!(peak > SEGMENT, "the test must cross segments: peak {peak}");
    assert!(peak < BOUND, "disk use {peak} exceeds {BOUND}");
}
