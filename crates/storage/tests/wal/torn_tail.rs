//! A crash mid-write leaves a torn record at the end of the last segment:
//! recovery cuts it off, says so, and the log goes on.

use std::fs;

use kvraft_storage::{FsyncPolicy, Storage, StorageOptions};

use crate::support::*;

fn log_of_twenty(opts: StorageOptions) -> tempfile::TempDir {
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=20, 1)).unwrap();
    s.sync().unwrap();
    dir
}

#[test]
fn a_record_cut_mid_write_is_cut_off_and_reported_and_the_log_goes_on() {
    let opts = StorageOptions::default();
    let dir = log_of_twenty(opts);
    let wal = segment_files(dir.path()).pop().unwrap();
    chop(&wal, 3);

    let (mut s, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries, entries(1..=19, 1));
    let torn = rec.torn_tail.expect("the torn record is reported");
    assert!(torn.contains("wal-00000000000000000001-"), "{torn}");
    assert!(!torn.contains('\n'));
    assert_eq!(s.last_index(), 19);

    s.append(&entries(20..=21, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    let mut expected = entries(1..=19, 1);
    expected.extend(entries(20..=21, 2));
    assert_eq!(rec.entries, expected);
    assert_eq!(rec.torn_tail, None);
}

#[test]
fn a_torn_header_is_a_torn_tail_and_a_zero_filled_tail_is_room() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    let dir = log_of_twenty(opts);
    let wal = segment_files(dir.path()).pop().unwrap();
    let whole = written_len(&wal) as usize;
    // The log keeps zero-filled room after its last record.
    assert!(fs::metadata(&wal).unwrap().len() as usize > whole);
    let mut bytes = fs::read(&wal).unwrap();
    bytes.truncate(whole);
    bytes.extend_from_slice(&[7, 0, 0]); // the start of a header
    fs::write(&wal, &bytes).unwrap();
    let (s, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries.len(), 20);
    assert!(rec.torn_tail.is_some());
    assert_eq!(fs::metadata(&wal).unwrap().len(), whole as u64);
    drop(s);

    // A torn header inside the room: garbage, then zeros.
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&wal, &bytes).unwrap();
    let (s, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries.len(), 20);
    assert!(rec.torn_tail.is_some());
    drop(s);

    // Zeros alone (the room, or blocks allocated but never written) hold
    // no record: nothing is cut, nothing reported, and the log goes on.
    bytes.truncate(whole);
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&wal, &bytes).unwrap();
    let (mut s, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries.len(), 20);
    assert_eq!(rec.torn_tail, None);
    s.append(&entries(21..=22, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries, entries(1..=22, 1));
    assert_eq!(rec.torn_tail, None);
}

#[test]
fn a_damaged_last_record_is_a_torn_tail() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    let dir = log_of_twenty(opts);
    let wal = segment_files(dir.path()).pop().unwrap();
    let len = written_len(&wal) as usize;
    flip(&wal, len - 5);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries, entries(1..=19, 1));
    assert!(rec.torn_tail.is_some());
}

/// A power loss during one write of many records: a sector in the middle
/// never reached the disk (it reads as the zero-filled room it was), while
/// later sectors did. Nothing of that write was acknowledged, so recovery
/// cuts from the first damaged record, intact records after it included,
/// and says so. The same zeros in a segment that is not the last, or a
/// damaged byte that is not a whole zeroed sector, are still corruption.
#[test]
fn a_sector_never_written_before_written_ones_is_a_torn_write() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=200, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let wal = segment_files(dir.path()).pop().unwrap();
    let good = fs::read(&wal).unwrap();
    let end = written_len(&wal) as usize;
    assert!(end > 4 * 512, "the test needs records over several sectors ({end} bytes)");
    let sector = (end / 2).div_ceil(512) * 512;

    // A stray byte in that sector: corruption, as ever.
    flip(&wal, sector + 100);
    assert!(Storage::open(dir.path(), opts).is_err(), "a flipped byte with intact records after it was accepted");

    // The whole sector zeros: a torn write, cut at the first damaged record.
    let mut bytes = good.clone();
    bytes[sector..sector + 512].fill(0);
    fs::write(&wal, &bytes).unwrap();
    let (mut s, rec) = open(dir.path(), opts);
    let kept = rec.entries.len() as u64;
    assert!(kept > 0 && kept < 200, "kept {kept}");
    assert_eq!(rec.entries, entries(1..=kept, 1));
    let torn = rec.torn_tail.expect("the cut is reported");
    assert!(torn.contains("never written") && !torn.contains('\n'), "{torn}");
    // The entries kept end before the zeroed sector, and the log goes on.
    s.append(&entries(kept + 1..=kept + 3, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries.len() as u64, kept + 3);
    assert_eq!(rec.torn_tail, None);
}

/// The same when the sector lost is the one the torn write started in:
/// it keeps the previous, synced write's bytes and the zero-filled room
/// after them, while the write's later sectors landed. Zeros from where a
/// record should start that stop short of the sector's end are corruption:
/// a sector is written whole, so the record after them would be gone too.
#[test]
fn a_torn_write_that_lost_its_first_sector_is_a_torn_write() {
    let opts = options(FsyncPolicy::Never, 1 << 20);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    // A synced first write that ends inside a sector, with room in it.
    let mut kept = 0;
    let wal = loop {
        kept += 1;
        s.append(&entries(kept..=kept, 1)).unwrap();
        s.sync().unwrap();
        let wal = segment_files(dir.path()).pop().unwrap();
        let end = written_len(&wal) as usize % 512;
        if (100..=400).contains(&end) {
            break wal;
        }
    };
    let start = written_len(&wal) as usize;
    // The second write: many records, over several sectors.
    s.append(&entries(kept + 1..=kept + 60, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    assert!(written_len(&wal) as usize > start + 3 * 512);
    let good = fs::read(&wal).unwrap();
    let boundary = start.div_ceil(512) * 512;

    // Zeros short of the sector's end, an intact record after them: corruption.
    let mut bytes = good.clone();
    bytes[start..boundary - 1].fill(0);
    fs::write(&wal, &bytes).unwrap();
    assert!(Storage::open(dir.path(), opts).is_err(), "zeros inside a written sector were taken for a torn write");

    // The sector's part after the first write lost: a torn write, cut where
    // the second write began.
    let mut bytes = good.clone();
    bytes[start..boundary].fill(0);
    fs::write(&wal, &bytes).unwrap();
    let (_, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries, entries(1..=kept, 1));
    let torn = rec.torn_tail.expect("the cut is reported");
    assert!(torn.contains("never written"), "{torn}");
}
