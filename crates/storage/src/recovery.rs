//! Recovery at open: reads the newest snapshot, the term and the segments,
//! cuts a torn tail, refuses corruption, and finishes whatever a crash
//! interrupted (removes temp files, older snapshots and segments the
//! snapshot covers) so that `Storage` starts from its invariants.
//!
//! The rules, and why each is safe:
//! - The snapshot with the highest index is the authority, and it must be
//!   intact. Falling back to an older one could silently drop entries this
//!   server acknowledged (compaction deleted them once the newer one was
//!   durable), so a bad newest snapshot is an error.
//! - Segments must chain: each starts where the previous ends, except that a
//!   gap wholly inside the snapshot is harmless (an interrupted compaction).
//! - Damage with nothing intact after it, in the last segment, is a write
//!   torn by a crash: it was never acknowledged, so it is cut off. So is
//!   damage with a whole sector of zeros in it, even with intact records
//!   after: a power loss can keep later sectors of one write and lose an
//!   earlier one (see `segment::scan`). Anywhere else it is corruption.
//! - If the log holds the snapshot's index with another term, the snapshot
//!   came from a leader and replaced a conflicting log whose deletion a crash
//!   interrupted: the whole log is dropped, as installation would have done.
//! - The current term is at least the term of the snapshot and of the last
//!   entry (a crash can leave the term file behind them), and the term file
//!   is brought up to it.
//! - Everything kept is made durable before it is reported: a process killed
//!   between a write and its sync leaves the bytes in the page cache, where
//!   recovery reads them, and the restarted server would vouch for them
//!   (a leader's probe that finds them all in place asks for no new write,
//!   so no later sync would cover them) although a power loss could still
//!   take them.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use kvraft_core::{Entry, Index, Snapshot, SnapshotMeta, Term};

use crate::error::StorageError;
use crate::fsio;
use crate::names::{self, Kind};
use crate::options::FsyncPolicy;
use crate::segment::{self, Segment};
use crate::{snapshot_file, term_file};

/// What [`crate::Storage::open`] found in the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The durable current term (0 for a new server).
    pub term: Term,
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, consecutive from its index + 1.
    pub entries: Vec<Entry>,
    /// One line describing the torn record cut off the end of the log, if a
    /// crash interrupted a write.
    pub torn_tail: Option<String>,
}

/// The recovered state plus the segment map `Storage` continues from
/// (non-empty, the last one being the segment to append to).
pub(crate) struct Recovery {
    pub recovered: Recovered,
    pub segments: Vec<Segment>,
    pub active: fs::File,
}

/// The data directory's files by kind, each list sorted by index.
#[derive(Default)]
struct Listing {
    /// First index, salt, path.
    segments: Vec<(Index, Option<u64>, PathBuf)>,
    snapshots: Vec<(Index, PathBuf)>,
    temps: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing, StorageError> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(StorageError::io(dir, "list directory"))?;
    for entry in entries {
        let entry = entry.map_err(StorageError::io(dir, "list directory"))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        match names::classify(&name) {
            Kind::Segment(i, salt) => listing.segments.push((in_range(i, 1, &path)?, salt, path)),
            Kind::Snapshot(i) => listing.snapshots.push((in_range(i, 0, &path)?, path)),
            Kind::Temp => listing.temps.push(path),
            Kind::Other => {}
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// The largest index a file name may carry: far beyond any real log, and
/// low enough that index arithmetic on it cannot overflow.
const MAX_INDEX: Index = u64::MAX / 2;

fn in_range(index: Index, min: Index, path: &Path) -> Result<Index, StorageError> {
    if (min..=MAX_INDEX).contains(&index) {
        Ok(index)
    } else {
        let cause = format!("index {index} in the file name is out of range");
        Err(StorageError::corrupt(path, 0, cause))
    }
}

pub(crate) fn recover(dir: &Path, policy: FsyncPolicy) -> Result<Recovery, StorageError> {
    let mut listing = list(dir)?;
    let mut dir_changed = false;
    for tmp in &listing.temps {
        fsio::remove(tmp)?;
        dir_changed = true;
    }
    let term = term_file::read(dir)?;
    let newest = listing.snapshots.pop();
    let snapshot = match &newest {
        Some((index, path)) => Some(snapshot_file::read(path, *index)?),
        None => None,
    };
    if let Some((_, path)) = &newest {
        // A crash may have come between its rename and the directory's
        // fsync: it is made durable before anything it replaces goes (older
        // snapshots here, the segments it covers in `settle`), for
        // filesystems that do not keep directory changes in order.
        make_durable(dir, std::iter::once(path.clone()), policy)?;
    }
    for (_, older) in &listing.snapshots {
        fsio::remove(older)?;
        dir_changed = true;
    }
    let meta = snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
    let log = read_log(&listing.segments, meta.index, policy)?;

    let conflict =
        log.entries.iter().find(|e| e.index == meta.index && meta.index > 0).is_some_and(|e| e.term != meta.term);
    let entries: Vec<Entry> =
        if conflict { Vec::new() } else { log.entries.into_iter().filter(|e| e.index > meta.index).collect() };
    let (segments, active, changed) = settle(dir, log.segments, &entries, meta, policy)?;
    if dir_changed || changed {
        fsio::sync_dir(dir, policy)?;
    }
    // Holding a snapshot or an entry of term T means this server had
    // adopted T, but a crash can leave the term file behind them: a
    // snapshot received from a leader, or a local one written ahead of the
    // log, is durable before the term of the same batch; so are entries
    // when a segment rolls over. The term is never below what is held.
    let held = entries.last().map_or(meta.term, |e| e.term).max(meta.term);
    let term = if held > term {
        term_file::write(dir, held, policy)?;
        held
    } else {
        term
    };
    let files = segments.iter().map(|s| s.path.clone()).chain(newest.map(|(_, p)| p));
    make_durable(dir, files, policy)?;
    Ok(Recovery { recovered: Recovered { term, snapshot, entries, torn_tail: log.torn_tail }, segments, active })
}

struct Log {
    segments: Vec<Segment>,
    entries: Vec<Entry>,
    torn_tail: Option<String>,
}

/// Reads the segments in order, checking that they chain after `snap`.
fn read_log(list: &[(Index, Option<u64>, PathBuf)], snap: Index, policy: FsyncPolicy) -> Result<Log, StorageError> {
    let mut log = Log { segments: Vec::with_capacity(list.len()), entries: Vec::new(), torn_tail: None };
    for (k, (first, salt, path)) in list.iter().enumerate() {
        let first = *first;
        if let Some(cause) = chain_error(log.segments.last(), first, snap) {
            return Err(StorageError::corrupt(path, 0, cause));
        }
        let scanned = segment::scan(path, first, *salt)?;
        if let Some((offset, damage)) = scanned.torn {
            if k + 1 < list.len() {
                let cause = format!("{damage} in a segment that is not the last");
                return Err(StorageError::corrupt(path, offset, cause));
            }
            cut(path, offset, policy)?;
            log.torn_tail = Some(format!(
                "{}: cut {} bytes at offset {offset}: {damage}",
                path.display(),
                scanned.file_len - offset
            ));
        }
        log.entries.extend(scanned.entries);
        log.segments.push(scanned.segment);
    }
    Ok(log)
}

/// Why a segment starting at `first` cannot follow `prev` (`None`: it
/// can). A gap is harmless only when the snapshot covers every missing index.
fn chain_error(prev: Option<&Segment>, first: Index, snap: Index) -> Option<String> {
    match prev {
        None if first > snap + 1 => {
            Some(format!("the log starts at index {first} but the snapshot ends at index {snap}"))
        }
        None => None,
        Some(prev) => {
            let next = prev.next_index();
            let covered_gap = first > next && first <= snap + 1;
            (first != next && !covered_gap)
                .then(|| format!("segment starts at index {first} but the previous one ends at index {}", next - 1))
        }
    }
}

/// Syncs `files` (what recovery kept), the term file if there is one, and
/// the directory: see the module docs for why what was read must be.
fn make_durable(dir: &Path, files: impl Iterator<Item = PathBuf>, policy: FsyncPolicy) -> Result<(), StorageError> {
    if !policy.syncs() {
        return Ok(());
    }
    let term = dir.join(names::TERM);
    for path in files.chain(term.exists().then_some(term)) {
        let file = fs::File::open(&path).map_err(StorageError::io(&path, "open"))?;
        fsio::sync_data(&file, &path, policy)?;
    }
    fsio::sync_dir(dir, policy)
}

/// Truncates a torn tail away, durably, before anything is appended after
/// it (otherwise new records would follow garbage, which reads as
/// corruption).
fn cut(path: &Path, offset: u64, policy: FsyncPolicy) -> Result<(), StorageError> {
    let file = OpenOptions::new().write(true).open(path).map_err(StorageError::io(path, "open"))?;
    file.set_len(offset).map_err(StorageError::io(path, "truncate"))?;
    fsio::sync_data(&file, path, policy)
}

/// Removes the segments that hold nothing after the snapshot and makes sure
/// an active segment exists. Returns the segments, the active file, and
/// whether the directory changed.
fn settle(
    dir: &Path,
    mut segments: Vec<Segment>,
    kept: &[Entry],
    meta: SnapshotMeta,
    policy: FsyncPolicy,
) -> Result<(Vec<Segment>, fs::File, bool), StorageError> {
    let next = meta.index + 1;
    let fresh_exists = segments.last().is_some_and(|l| l.offsets.is_empty() && l.first == next);
    if kept.is_empty() && !fresh_exists {
        // Newest first: a crash part-way leaves a prefix of the old log,
        // which the conflict check above still recognises.
        for seg in segments.iter().rev() {
            fsio::remove(&seg.path)?;
        }
        if !segments.is_empty() {
            fsio::sync_dir(dir, policy)?;
        }
        let (file, seg) = segment::create(dir, next)?;
        return Ok((vec![seg], file, true));
    }
    // Oldest first, so a crash part-way leaves the segments still chained.
    let last = segments.len().saturating_sub(1);
    let covered = segments[..last].iter().take_while(|seg| seg.next_index() <= next).count();
    for seg in segments.drain(..covered) {
        fsio::remove(&seg.path)?;
    }
    let Some(active) = segments.last() else {
        // Unreachable: `kept` non-empty or `fresh_exists` means a segment.
        let (file, seg) = segment::create(dir, next)?;
        return Ok((vec![seg], file, true));
    };
    let file = segment::open_write(&active.path)?;
    Ok((segments, file, covered > 0))
}

#[cfg(test)]
mod tests {
    use kvraft_core::Payload;

    use super::*;
    use crate::{Storage, StorageOptions};

    /// Entries written but never synced (the process was killed before its
    /// sync) are read back from the page cache, and recovery syncs them
    /// before it reports them: the server will vouch for them.
    #[test]
    fn what_recovery_reads_it_makes_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let entries: Vec<Entry> = (1..=3).map(|index| Entry { term: 1, index, payload: Payload::Noop }).collect();
        s.set_term(1).unwrap();
        s.append(&entries).unwrap();
        drop(s); // no sync
        let before = fsio::SYNCS.with(|n| n.get());
        let (_, recovered) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let syncs = fsio::SYNCS.with(|n| n.get()) - before;
        assert_eq!(recovered.entries, entries);
        // The segment, the term file and the directory.
        assert!(syncs >= 3, "{syncs} syncs: what was read is not durable");
    }
}
