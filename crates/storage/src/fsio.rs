//! Small filesystem helpers that attach the path to every error and apply
//! the fsync policy in one place.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::StorageError;
use crate::options::FsyncPolicy;

/// `fdatasync` under [`FsyncPolicy::Always`]; nothing otherwise.
pub fn sync_data(file: &File, path: &Path, policy: FsyncPolicy) -> Result<(), StorageError> {
    if policy.syncs() {
        file.sync_data().map_err(StorageError::io(path, "fdatasync"))?;
    }
    Ok(())
}

/// Makes the directory's entries (creations, renames, removals) durable:
/// without it a synced file can still vanish after a crash.
pub fn sync_dir(dir: &Path, policy: FsyncPolicy) -> Result<(), StorageError> {
    if policy.syncs() {
        let d = File::open(dir).map_err(StorageError::io(dir, "open directory"))?;
        d.sync_all().map_err(StorageError::io(dir, "fsync directory"))?;
    }
    Ok(())
}

/// Replaces `dir/name` atomically with the concatenation of `parts` (parts
/// spare copying a large snapshot into one buffer): temp file, fsync, rename,
/// fsync of the directory. After a crash the file holds either the old or
/// the new content, never a mix; on return the new content is durable.
pub fn write_atomic(dir: &Path, name: &str, parts: &[&[u8]], policy: FsyncPolicy) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}{}", crate::names::TMP_SUFFIX));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(StorageError::io(&tmp, "create"))?;
    for part in parts {
        f.write_all(part).map_err(StorageError::io(&tmp, "write"))?;
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
