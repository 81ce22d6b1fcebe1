//! Small filesystem helpers that attach the path to every error and apply
//! the fsync policy in one place.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::StorageError;
use crate::options::FsyncPolicy;

/// `fdatasync` under [`FsyncPolicy::Always`]; nothing otherwise.
pub fn sync_data(file: &File, path: &Path, policy: FsyncPolicy) -> Result<(), StorageError> {
    if policy.syncs() {
        file.sync_data().map_err(StorageError::io(path, "fdatasync"))?;
        #[cfg(test)]
        SYNCS.with(|n| n.set(n.get() + 1));
    }
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// This thread's fdatasyncs and directory fsyncs, for tests that check
    /// what is made durable (a crash of the machine cannot be staged here).
    pub static SYNCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Makes the directory's entries (creations, renames, removals) durable:
/// without it a synced file can still vanish after a crash.
pub fn sync_dir(dir: &Path, policy: FsyncPolicy) -> Result<(), StorageError> {
    if policy.syncs() {
        let d = File::open(dir).map_err(StorageError::io(dir, "open directory"))?;
        d.sync_all().map_err(StorageError::io(dir, "fsync directory"))?;
        #[cfg(test)]
        SYNCS.with(|n| n.set(n.get() + 1));
    }
    Ok(())
}

/// Bytes written between two fdatasyncs of a large file (a snapshot). The
/// data directories of a machine's servers often share one disk, and one
/// fsync of a 100 MB snapshot holds the other files' fdatasyncs behind its
/// whole write-back (measured here: a 100-byte fdatasync waited up to 55 ms
/// behind one 100 MB fsync, 25 ms behind the same written 8 MiB at a time).
pub const SYNC_EVERY: usize = 8 << 20;

/// Replaces `dir/name` atomically with the concatenation of `parts` (parts
/// spare copying a large snapshot into one buffer): temp file, fsync, rename,
/// fsync of the directory. After a crash the file holds either the old or
/// the new content, never a mix; on return the new content is durable.
///
/// Each call has a temp file of its own, so two threads may write the same
/// name at once: the last rename wins, and both contents are whole.
pub fn write_atomic(dir: &Path, name: &str, parts: &[&[u8]], policy: FsyncPolicy) -> Result<(), StorageError> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{n}{}", crate::names::TMP_SUFFIX));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(StorageError::io(&tmp, "create"))?;
    let mut unsynced = 0;
    for part in parts {
        for piece in part.chunks(SYNC_EVERY) {
            f.write_all(piece).map_err(StorageError::io(&tmp, "write"))?;
            unsynced += piece.len();
            if unsynced >= SYNC_EVERY {
                sync_data(&f, &tmp, policy)?;
                unsynced = 0;
            }
        }
    }
    if policy.syncs() {
        f.sync_all().map_err(StorageError::io(&tmp, "fsync"))?;
    }
    drop(f);
    fs::rename(&tmp, &dst).map_err(StorageError::io(&dst, "rename"))?;
    sync_dir(dir, policy)
}

/// Removes a file; one that is already gone is not an error (a crash may
/// have interrupted an earlier removal after it reached the disk).
pub fn remove(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::io(path, "remove")(e)),
        _ => Ok(()),
    }
}

/// Reads a whole file; segments are bounded by the segment size, so this
/// costs at most tens of MiB, once per file at open.
pub fn read(path: &Path) -> Result<Vec<u8>, StorageError> {
    fs::read(path).map_err(StorageError::io(path, "read"))
}
