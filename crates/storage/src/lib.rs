//! KVRaft's durable log: everything one server must not forget, in one data
//! directory — the current term, the latest snapshot, and the log entries
//! after it.
//!
//! [`Storage`] is what the server's shell writes each `Ready` to: install
//! the snapshot, set the term, append the entries, then [`Storage::sync`]
//! once before reporting them persisted. It is single-threaded by design:
//! group commit (many entries to one sync) happens a layer up, in the
//! server's disk thread, which batches whole Readies
//! (`crates/server/src/disk.rs`).
//!
//! Crash safety rests on three mechanisms: checksummed records whose torn
//! tail is cut on recovery (`record.rs`, `recovery.rs`), small files
//! replaced atomically (temp + fsync + rename + fsync directory, `fsio.rs`),
//! and an order of operations in which every crash point leaves a state
//! recovery can read (`storage.rs`). Anything else wrong on disk is a typed
//! [`StorageError::Corrupt`]: the server refuses to start rather than serve
//! wrong data.

mod error;
mod fsio;
mod names;
mod options;
mod record;
mod recovery;
mod segment;
mod snapshot_file;
mod storage;
mod term_file;

pub use error::StorageError;
pub use options::{DEFAULT_SEGMENT_BYTES, FsyncPolicy, StorageOptions};
pub use recovery::Recovered;
pub use snapshot_file::StoredSnapshot;
pub use storage::{SnapshotFiles, Storage};
