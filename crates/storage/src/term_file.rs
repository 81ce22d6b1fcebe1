//! The current term, in its own small file `term`: `term:u64 | crc32c:u32`.
//!
//! It is replaced atomically (temp, fsync, rename, fsync directory), so after
//! a crash it holds either the old or the new term: the term never goes
//! backwards past what a `sync` acknowledged. A file in its own right (not a
//! WAL record) because compaction and snapshot installation delete segments,
//! which would otherwise have to carry the term along.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use kvraft_core::Term;

use crate::error::StorageError;
use crate::fsio;
use crate::names::TERM;
use crate::options::FsyncPolicy;

const LEN: usize = 12;

/// The stored term; 0 when the file does not exist yet (a new server).
pub fn read(dir: &Path) -> Result<Term, StorageError> {
    let path = dir.join(TERM);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io(&path, "read")(e)),
    };
    let Some((term, crc)) =
        bytes.split_first_chunk::<8>().and_then(|(t, rest)| Some((t, <[u8; 4]>::try_from(rest).ok()?)))
    else {
        let cause = format!("term file has {} bytes, expected {LEN}", bytes.len());
        return Err(StorageError::corrupt(path, 0, cause));
    };
    if crc32c::crc32c(term) != u32::from_le_bytes(crc) {
        return Err(StorageError::corrupt(path, 8, "term checksum mismatch"));
    }
    Ok(u64::from_le_bytes(*term))
}

/// Durably replaces the stored term (durable on return under
/// [`FsyncPolicy::Always`]).
pub fn write(dir: &Path, term: Term, policy: FsyncPolicy) -> Result<(), StorageError> {
    let t = term.to_le_bytes();
    let crc = crc32c::crc32c(&t).to_le_bytes();
    fsio::write_atomic(dir, TERM, &[&t, &crc], policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_term_round_trips_and_a_damaged_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), 0);
        write(dir.path(), 42, FsyncPolicy::Never).unwrap();
        assert_eq!(read(dir.path()).unwrap(), 42);
        let path = dir.path().join(TERM);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(dir.path()), Err(StorageError::Corrupt { offset: 8, .. })));
        fs::write(&path, &bytes[..5]).unwrap();
        assert!(matches!(read(dir.path()), Err(StorageError::Corrupt { offset: 0, .. })));
    }
}
