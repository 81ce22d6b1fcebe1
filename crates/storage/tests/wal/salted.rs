//! Segment salts: a client's value cannot pass for a record, and segments
//! written before salts still load.

use std::fs;

use kvraft_core::kv::{Command, Op};
use kvraft_core::{Entry, Payload};
use kvraft_storage::{FsyncPolicy, StorageOptions};

use crate::support::*;

/// The bytes of a record of `entry` with the plain (unsalted) CRC: what a
/// client can compute without knowing a segment's salt.
fn plain_record(entry: &Entry) -> Vec<u8> {
    let payload = postcard::to_stdvec(entry).unwrap();
    let mut typed = vec![1u8];
    typed.extend_from_slice(&payload);
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32c::crc32c(&typed).to_le_bytes());
    record.extend_from_slice(&typed);
    record
}

/// A No-Op record image that is valid UTF-8, so that a Put can carry it:
/// the terms are tried until the CRC's bytes are.
fn utf8_image() -> String {
    (1..)
        .map(|term| plain_record(&Entry { term, index: 5, payload: Payload::Noop }))
        .find_map(|r| String::from_utf8(r).ok())
        .unwrap()
}

fn put(index: u64, value: String) -> Entry {
    let op = Op::Put { key: "k".into(), value };
    Entry {
        term: 1,
        index,
        payload: Payload::Command(Command {
            client_id: "c".into(),
            session: 1,
            op_id: index,
            first_unacked: index,
            op,
        }),
    }
}

/// A put whose value holds the image of a record, torn by a crash after
/// the image reached the disk: recovery must see a torn tail, not an
/// intact record after damage (corruption, which stops the server).
#[test]
fn a_value_holding_a_records_image_cannot_make_a_torn_tail_look_like_corruption() {
    let opts = options(FsyncPolicy::Always, 1 << 20);
    let dir = tempdir();
    let (mut s, _) = open(dir.path(), opts);
    s.append(&entries(1..=3, 1)).unwrap();
    let image = utf8_image();
    s.append(&[put(4, format!("{image}{}", "x".repeat(600)))]).unwrap();
    s.sync().unwrap();
    drop(s);
    let wal = segment_files(dir.path()).pop().unwrap();
    // The write of entry 4 torn after its image: the rest never landed.
    let bytes = fs::read(&wal).unwrap();
    let at = bytes.windows(image.len()).position(|w| w == image.as_bytes()).unwrap();
    fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len((at + image.len() + 10) as u64).unwrap();

    let (s, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries, entries(1..=3, 1));
    assert!(rec.torn_tail.is_some());
    assert_eq!(s.last_index(), 3);
}

/// A segment named `wal-<first>.log`, with plain CRCs, as servers wrote
/// before salts: it loads, and later entries are appended to it in the
/// same form.
#[test]
fn a_segment_written_before_salts_loads_and_grows() {
    let dir = tempdir();
    let legacy = dir.path().join("wal-00000000000000000001.log");
    let records: Vec<u8> = entries(1..=3, 1).iter().flat_map(plain_record).collect();
    fs::write(&legacy, &records).unwrap();
    let opts = StorageOptions::default();
    let (mut s, rec) = open(dir.path(), opts);
    assert_eq!(rec.entries, entries(1..=3, 1));
    assert_eq!(rec.torn_tail, None);
    s.append(&entries(4..=5, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    assert_eq!(segment_files(dir.path()), std::slice::from_ref(&legacy), "appended to the old segment");
    let (_, rec) = open(dir.path(), opts);
    let mut expected = entries(1..=3, 1);
    expected.extend(entries(4..=5, 2));
    assert_eq!(rec.entries, expected);
    // Entry 4 was written with the plain CRC, as the name says.
    let bytes = fs::read(&legacy).unwrap();
    assert!(bytes.starts_with(&records));
    assert_eq!(
        &bytes[records.len()..records.len() + plain_record(&expected[3]).len()],
        &plain_record(&expected[3])[..]
    );
}
