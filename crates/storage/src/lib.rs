//! KVRaft's durable log: everything one server must not forget, in one data
//! directory — the current term, the latest snapshot, and the log entries
//! after it.
//!
//! [`Storage`] is what the server's shell writes each `Ready` to: install
//! the snapshot, set the term, append the entries, then [`Storage::sync`]
//! once before reporting them persisted. [`GroupCommit`] shares one
//! `Storage` among many writers with one sync per batch; the server does
//! not use it (its disk thread batches whole Readies itself, see
//! `crates/server/src/disk.rs`): it serves the WAL benchmark and tests.
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
mod group_commit;
mod names;
mod options;
mod record;
mod recovery;
mod segment;
mod snapshot_file;
mod storage;
mod term_file;

pub use error::StorageError;
pub use group_commit::{GroupCommit, GroupCommitStats, Job, Pending};
pub use options::{DEFAULT_SEGMENT_BYTES, FsyncPolicy, StorageOptions};
pub use recovery::Recovered;
pub use snapshot_file::StoredSnapshot;
pub use storage::{SnapshotFiles, Storage};
