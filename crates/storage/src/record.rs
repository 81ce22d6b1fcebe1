//! The framing of one WAL record: `len:u32 | crc32c:u32 | type:u8 | payload`,
//! little-endian, where `len` counts the payload only and the CRC covers
//! the segment's salt, then type and payload.
//!
//! The salt (a random u64 per segment, in its file name) keeps bytes that
//! a client chose from passing for a record: a value holding a record's
//! image would otherwise, after a torn write, be an "intact record after
//! the damage", and the server would take the torn tail for corruption
//! and refuse to start. Segments named without a salt (written before
//! salts) are read with the plain CRC.
//!
//! The CRC is what tells a torn or rotten record from a good one; the length
//! comes first so that a reader can skip to the next record, and a length
//! that runs past the end of the file is itself a sign of a torn write.

use std::fmt;

use kvraft_core::Entry;

use crate::error::StorageError;

/// Bytes before the payload: length, CRC, type.
pub const HEADER_LEN: usize = 9;
/// The only record type so far: one log entry, postcard-encoded. Suffix
/// truncation is physical (see `storage.rs`), so it needs no record.
const TYPE_ENTRY: u8 = 1;

/// What a segment's CRCs start from: 0 (the plain CRC) without a salt.
pub fn seed(salt: Option<u64>) -> u32 {
    salt.map_or(0, |s| crc32c::crc32c(&s.to_le_bytes()))
}

/// Appends the record of `entry` to `buf`, its CRC started from `seed`;
/// on error `buf` is unchanged.
pub fn encode_entry(buf: &mut Vec<u8>, entry: &Entry, seed: u32) -> Result<(), StorageError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN - 1]);
    buf.push(TYPE_ENTRY);
    if let Err(e) = postcard::to_io(entry, &mut *buf) {
        buf.truncate(start);
        return Err(StorageError::Encode { index: entry.index, cause: e.to_string() });
    }
    let len = buf.len() - start - HEADER_LEN;
    let Ok(len32) = u32::try_from(len) else {
        buf.truncate(start);
        return Err(StorageError::EntryTooLarge { index: entry.index, len });
    };
    let crc = crc32c::crc32c_append(seed, &buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Why the bytes at an offset are not a whole, intact record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Fewer than [`HEADER_LEN`] bytes left.
    ShortHeader { have: usize },
    /// The length runs past the end of the file.
    ShortPayload { need: usize, have: usize },
    /// Whole, but the CRC does not match.
    Checksum,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::ShortHeader { have } => {
                write!(f, "short record header ({have} of {HEADER_LEN} bytes)")
            }
            Damage::ShortPayload { need, have } => {
                write!(f, "short record ({have} of {need} bytes)")
            }
            Damage::Checksum => write!(f, "record checksum mismatch"),
        }
    }
}

/// What [`parse`] found at an offset.
#[derive(Debug)]
pub enum Parsed {
    /// An intact record; the next one starts at `next`.
    Record {
        entry: Entry,
        next: usize,
    },
    /// The end of the bytes, exactly at a record boundary.
    End,
    Damaged(Damage),
    /// An intact record (its CRC matches) that is not a valid entry: written
    /// by something else, or a bug. Never a crash artefact.
    Invalid(String),
}

/// Reads the record starting at `at` of a segment whose CRCs start from `seed`.
pub fn parse(bytes: &[u8], at: usize, seed: u32) -> Parsed {
    let rest = bytes.get(at..).unwrap_or_default();
    if rest.is_empty() {
        return Parsed::End;
    }
    let (kind, payload) = match frame(rest, seed) {
        Ok(framed) => framed,
        Err(d) => return Parsed::Damaged(d),
    };
    if kind != TYPE_ENTRY {
        return Parsed::Invalid(format!("unknown record type {kind}"));
    }
    match decode(payload) {
        Ok(entry) => Parsed::Record { entry, next: at + HEADER_LEN + payload.len() },
        Err(cause) => Parsed::Invalid(cause),
    }
}

/// Splits `rest` into the type and payload of its first record, checking
/// lengths and CRC.
fn frame(rest: &[u8], seed: u32) -> Result<(u8, &[u8]), Damage> {
    let Some((header, body)) = rest.split_first_chunk::<HEADER_LEN>() else {
        return Err(Damage::ShortHeader { have: rest.len() });
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let Some(payload) = body.get(..len) else {
        return Err(Damage::ShortPayload { need: HEADER_LEN.saturating_add(len), have: rest.len() });
    };
    let actual = crc32c::crc32c_append(crc32c::crc32c_append(seed, &header[8..]), payload);
    if actual != crc {
        return Err(Damage::Checksum);
    }
    Ok((header[8], payload))
}

fn decode(payload: &[u8]) -> Result<Entry, String> {
    match postcard::take_from_bytes::<Entry>(payload) {
        Ok((entry, [])) => Ok(entry),
        Ok((_, trailing)) => Err(format!("{} stray bytes after the entry", trailing.len())),
        Err(e) => Err(format!("undecodable entry: {e}")),
    }
}

/// The first offset after `from` where an intact entry record starts, if
/// any. This is what separates a torn tail (a crash mid-write leaves only
/// garbage after the damage) from corruption in the middle of the log
/// (good records follow the damage). Every offset is tried because a
/// damaged length field says nothing about where the next record starts;
/// the type byte and the length bound reject almost all of them before a
/// CRC is computed.
pub fn intact_record_after(bytes: &[u8], from: usize, seed: u32) -> Option<usize> {
    let start = from.checked_add(1)?;
    (start..bytes.len()).find(|&p| {
        let rest = &bytes[p..];
        rest.get(8) == Some(&TYPE_ENTRY) && matches!(frame(rest, seed), Ok((_, payload)) if decode(payload).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use kvraft_core::Payload;

    use super::*;

    fn noop(index: u64) -> Entry {
        Entry { term: 3, index, payload: Payload::Noop }
    }

    #[test]
    fn a_record_round_trips_and_every_kind_of_damage_is_told_apart() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &noop(7), 0).unwrap();
        let whole = buf.len();
        match parse(&buf, 0, 0) {
            Parsed::Record { entry, next } => {
                assert_eq!(entry, noop(7));
                assert_eq!(next, whole);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&buf, whole, 0), Parsed::End));
        assert!(matches!(parse(&buf[..4], 0, 0), Parsed::Damaged(Damage::ShortHeader { have: 4 })));
        assert!(matches!(parse(&buf[..whole - 1], 0, 0), Parsed::Damaged(Damage::ShortPayload { .. })));
        buf[whole - 1] ^= 0x40;
        assert!(matches!(parse(&buf, 0, 0), Parsed::Damaged(Damage::Checksum)));
    }

    #[test]
    fn intact_records_are_found_after_damage_but_not_in_garbage() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &noop(1), 0).unwrap();
        let second = buf.len();
        encode_entry(&mut buf, &noop(2), 0).unwrap();
        buf[3] ^= 0x01; // the first record's length
        assert_eq!(intact_record_after(&buf, 0, 0), Some(second));
        assert_eq!(intact_record_after(&[0u8; 64], 0, 0), None);
        assert_eq!(intact_record_after(&buf, buf.len(), 0), None);
    }

    /// A record's image inside a client's value, in a salted segment, is
    /// not an intact record: its CRC would have to know the salt.
    #[test]
    fn a_records_image_is_no_record_in_a_salted_segment() {
        let image = {
            let mut b = Vec::new();
            encode_entry(&mut b, &noop(2), 0).unwrap();
            b
        };
        let mut segment = vec![0xee; 40]; // damage: a torn record
        segment.extend_from_slice(&image);
        assert_eq!(intact_record_after(&segment, 0, 0), Some(40), "the plain CRC takes the image");
        let salted = seed(Some(0x5eed));
        assert_ne!(salted, 0);
        assert_eq!(intact_record_after(&segment, 0, salted), None);
        // Its own records are found with its seed, and only with it.
        let mut own = vec![0xee; 40];
        encode_entry(&mut own, &noop(2), salted).unwrap();
        assert_eq!(intact_record_after(&own, 0, salted), Some(40));
        assert_eq!(intact_record_after(&own, 0, seed(Some(0x5eee))), None);
        assert!(matches!(parse(&own, 40, 0), Parsed::Damaged(Damage::Checksum)));
    }
}
