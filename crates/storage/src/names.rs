//! The names of the files in a data directory.
//!
//! Indexes are zero-padded to 20 digits (the width of `u64::MAX`) so that
//! lexical order is numeric order in `ls`, although the code sorts by the
//! parsed number and never relies on it.

use kvraft_core::Index;

/// Held locked (advisory `flock`) while a `Storage` is open.
pub const LOCK: &str = "LOCK";
/// The current term.
pub const TERM: &str = "term";

const WAL_PREFIX: &str = "wal-";
const WAL_SUFFIX: &str = ".log";
const SNAP_PREFIX: &str = "snapshot-";
const SNAP_SUFFIX: &str = ".snap";
/// Suffix of a file being written before its atomic rename.
pub const TMP_SUFFIX: &str = ".tmp";

/// `wal-<first index>-<salt, 16 hex digits>.log`, or without the salt
/// `wal-<first index>.log` (segments written before salts; see record.rs).
pub fn segment(first: Index, salt: Option<u64>) -> String {
    match salt {
        Some(salt) => format!("{WAL_PREFIX}{first:020}-{salt:016x}{WAL_SUFFIX}"),
        None => format!("{WAL_PREFIX}{first:020}{WAL_SUFFIX}"),
    }
}

/// `snapshot-<index>.snap`.
pub fn snapshot(index: Index) -> String {
    format!("{SNAP_PREFIX}{index:020}{SNAP_SUFFIX}")
}

/// What a directory entry is, by its name.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// The first index and the salt, if the name has one.
    Segment(Index, Option<u64>),
    Snapshot(Index),
    /// A leftover of a write interrupted before its rename: garbage.
    Temp,
    /// Anything else (the lock, the term file, files we do not own).
    Other,
}

pub fn classify(name: &str) -> Kind {
    if name.ends_with(TMP_SUFFIX) {
        return Kind::Temp;
    }
    if let Some(i) = number_between(name, WAL_PREFIX, WAL_SUFFIX) {
        return Kind::Segment(i, None);
    }
    if let Some((i, salt)) = salted_segment(name) {
        return Kind::Segment(i, Some(salt));
    }
    if let Some(i) = number_between(name, SNAP_PREFIX, SNAP_SUFFIX) {
        return Kind::Snapshot(i);
    }
    Kind::Other
}

/// `wal-<digits>-<16 hex digits>.log`.
fn salted_segment(name: &str) -> Option<(Index, u64)> {
    let middle = name.strip_prefix(WAL_PREFIX)?.strip_suffix(WAL_SUFFIX)?;
    let (digits, hex) = middle.split_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    Some((digits.parse().ok()?, u64::from_str_radix(hex, 16).ok()?))
}

fn number_between(name: &str, prefix: &str, suffix: &str) -> Option<Index> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_other() {
        assert_eq!(classify(&segment(42, None)), Kind::Segment(42, None));
        assert_eq!(classify(&segment(42, Some(0xabc))), Kind::Segment(42, Some(0xabc)));
        assert_eq!(segment(7, Some(u64::MAX)), "wal-00000000000000000007-ffffffffffffffff.log");
        assert_eq!(classify("wal-00000000000000000007-fff.log"), Kind::Other);
        assert_eq!(classify("wal-00000000000000000007-FFFFFFFFFFFFFFFF.log"), Kind::Other);
        assert_eq!(classify("wal--ffffffffffffffff.log"), Kind::Other);
        assert_eq!(classify(&snapshot(u64::MAX)), Kind::Snapshot(u64::MAX));
        assert_eq!(classify("snapshot-00000000000000000001.snap.tmp"), Kind::Temp);
        assert_eq!(classify("wal-+1.log"), Kind::Other);
        assert_eq!(classify("wal-.log"), Kind::Other);
        assert_eq!(classify(TERM), Kind::Other);
    }
}
