//! The one error type of the crate.
//!
//! Every message is one line and names the file (or the directory) and the
//! cause, because an operator reading a server's refusal to start must be
//! able to find the bad file without a debugger.

use std::io;
use std::path::PathBuf;

use kvraft_core::Index;

/// Why a storage operation failed.
///
/// `Io` and `Corrupt` come from the disk; the rest are a caller breaking the
/// contract of [`crate::Storage`] and leave the storage unchanged.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system call failed on `path`.
    #[error("{}: {op} failed: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A file holds bytes that cannot be the result of any crash of this
    /// code: the server must refuse to start rather than serve wrong data.
    #[error("{}: corrupt at offset {offset}: {cause}", file.display())]
    Corrupt { file: PathBuf, offset: u64, cause: String },
    /// Another `Storage` (in this or another process) holds the directory.
    #[error("{}: data directory is locked by another process", dir.display())]
    Locked { dir: PathBuf },
    /// An append whose first index is past `last + 1`.
    #[error("append at index {first} would leave a gap after the last index {last}")]
    Gap { first: Index, last: Index },
    /// An append at or below the snapshot: those entries are compacted away.
    #[error("append at index {first} is at or before the snapshot index {snapshot}")]
    BeforeSnapshot { first: Index, snapshot: Index },
    /// The entries of one append are not consecutive.
    #[error("entries are not consecutive: index {got} follows index {prev}")]
    NotConsecutive { prev: Index, got: Index },
    /// A term lower than the stored one: terms never go backwards.
    #[error("term {new} is lower than the current term {current}")]
    TermRegress { new: u64, current: u64 },
    /// A snapshot to write whose bytes were left on disk (a bug of the
    /// caller: only snapshots in memory are ever written).
    #[error("snapshot at index {index}: its bytes are not in memory, only in storage")]
    SnapshotNotInMemory { index: Index },
    /// A snapshot older than the stored one: installing it would let a crash
    /// resurrect the newer file as the authority.
    #[error("snapshot at index {new} is older than the stored snapshot at index {current}")]
    SnapshotRegress { new: Index, current: Index },
    /// An entry too large for a record (its length field is 32 bits).
    #[error("entry {index} encodes to {len} bytes, more than a record can hold")]
    EntryTooLarge { index: Index, len: usize },
    /// An entry the encoder rejected (never happens for `kvraft_core` types).
    #[error("entry {index} could not be encoded: {cause}")]
    Encode { index: Index, cause: String },
    /// An earlier write or fsync failed: after a failed fsync the kernel may
    /// have dropped dirty pages, so nothing written since can be trusted.
    /// Restart and recover.
    #[error("storage unusable after an earlier failure: {cause}")]
    Poisoned { cause: String },
}

impl StorageError {
    /// Wraps an `io::Error` with the file and the operation that failed.
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StorageError::Io { path, op, source }
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, offset: u64, cause: impl Into<String>) -> Self {
        StorageError::Corrupt { file: file.into(), offset, cause: cause.into() }
    }
}
