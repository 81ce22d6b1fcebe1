//! How durable and how large the log's files are.

use std::fmt;

/// When the storage calls `fdatasync`/`fsync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every `sync`, snapshot and directory change reaches the disk before
    /// the call returns. The only policy under which Raft is safe.
    #[default]
    Always,
    /// UNSAFE, for tests only: never syncs, so a machine crash (not a process
    /// crash) can lose or tear anything, acknowledged entries included.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Never => write!(f, "never (UNSAFE: no fsync, tests only)"),
        }
    }
}

impl FsyncPolicy {
    pub(crate) fn syncs(self) -> bool {
        self == FsyncPolicy::Always
    }
}

/// Options of [`crate::Storage::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    pub fsync: FsyncPolicy,
    /// A new segment file is started once the active one has reached this
    /// size (so a segment exceeds it by at most one record). Smaller segments
    /// let compaction free space sooner; larger ones mean fewer files.
    pub segment_bytes: u64,
}

/// 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions { fsync: FsyncPolicy::Always, segment_bytes: DEFAULT_SEGMENT_BYTES }
    }
}
