//! The storage, written two ways, one fsync per batch either way:
//!
//! - by the disk thread: the event loop queues jobs and hears back with
//!   `Input::Persisted`, so it goes on serving while the disk syncs. A
//!   leader always writes this way: it replicates while its own fsync runs,
//!   and the jobs queued meanwhile share the next fsync (group commit);
//! - inline, by the loop itself ([`Disk::write_now`]): a follower has
//!   nothing to do until its write is durable (its reply waits for it), so
//!   handing the job to another thread and back only adds two thread
//!   wake-ups, each tens of microseconds on a loaded machine, to every
//!   replicated write.
//!
//! Invariant: jobs reach the storage in the order the loop made them. The
//! loop writes inline only when no queued job is still outstanding (the
//! loop has handled the completion of every job it queued), and the storage
//! sits behind a mutex the disk thread holds for a whole batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use kvraft_core::{Entry, Index, Outbound, Snapshot, SnapshotMeta, Term};
use kvraft_storage::{SnapshotFiles, Storage, StorageError};
use tokio::sync::mpsc::UnboundedSender;

use crate::node_loop::Input;

/// How stale the data directory's size in `status` may be.
const USAGE_EVERY: Duration = Duration::from_secs(1);

/// One Ready's durable part, or a local snapshot.
pub enum DiskJob {
    Write {
        snapshot: Option<Snapshot>,
        term: Option<Term>,
        entries: Vec<Entry>,
        marker: Option<(Index, Term)>,
        /// Sent once this job is durable.
        then_send: Vec<Outbound>,
    },
    /// A local snapshot, already written by the snapshot thread: adopt it,
    /// drop the log before it.
    Compact(SnapshotMeta),
}

/// One write job made durable: `marker` may be reported to the core,
/// `then_send` may go, and the snapshot it installed (if any) can be read
/// back from the disk.
pub struct Durable {
    pub marker: Option<(Index, Term)>,
    pub then_send: Vec<Outbound>,
    pub installed: Option<SnapshotMeta>,
}

/// Bytes the data directory holds (refreshed at most every [`USAGE_EVERY`]
/// and after each compaction), and fsyncs done.
#[derive(Default)]
pub struct DiskStats {
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    usage_at: Mutex<Option<Instant>>,
}

impl DiskStats {
    fn synced(&self, storage: &Storage, compacted: bool) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        // Reading the directory costs a dozen syscalls: not on every batch.
        let mut at = self.usage_at.lock().unwrap_or_else(|p| p.into_inner());
        if compacted || at.is_none_or(|t| t.elapsed() >= USAGE_EVERY) {
            if let Ok(b) = storage.disk_usage() {
                self.bytes.store(b, Ordering::Relaxed);
            }
            *at = Some(Instant::now());
        }
    }
}

/// The loop's handle on the storage.
pub struct Disk {
    tx: mpsc::Sender<DiskJob>,
    storage: Arc<Mutex<Storage>>,
    snapshots: SnapshotFiles,
    pub stats: Arc<DiskStats>,
    /// Jobs queued whose completion the loop has not handled yet.
    outstanding: usize,
}

impl Disk {
    /// Starts the disk thread; `done` is the loop's input queue.
    pub fn start(storage: Storage, done: UnboundedSender<Input>) -> Disk {
        let snapshots = storage.snapshot_files();
        let storage = Arc::new(Mutex::new(storage));
        let stats = Arc::new(DiskStats::default());
        let (tx, rx) = mpsc::channel::<DiskJob>();
        let (s, st) = (storage.clone(), stats.clone());
        std::thread::Builder::new()
            .name("kvraft-disk".into())
            .spawn(move || disk_thread(rx, &s, &st, &done))
            .expect("spawning the disk thread");
        Disk { tx, storage, snapshots, stats, outstanding: 0 }
    }

    /// Writes and reads snapshot files beside the log, from any thread.
    pub fn snapshot_files(&self) -> SnapshotFiles {
        self.snapshots.clone()
    }

    /// Hands `job` to the disk thread. False if the thread is gone (the
    /// process is stopping).
    pub fn queue(&mut self, job: DiskJob) -> bool {
        self.outstanding += 1;
        self.tx.send(job).is_ok()
    }

    /// The loop handled the completion of `jobs` queued jobs.
    pub fn completed(&mut self, jobs: usize) {
        self.outstanding = self.outstanding.saturating_sub(jobs);
    }

    /// True if a job written now lands after every job queued before.
    pub fn idle(&self) -> bool {
        self.outstanding == 0
    }

    /// Writes and syncs `job` on the caller's thread. Only when
    /// [`Disk::idle`]. A storage error stops the process, as on the thread.
    pub fn write_now(&mut self, job: DiskJob) -> Vec<Durable> {
        debug_assert!(self.idle());
        let mut storage = lock(&self.storage);
        let mut durable = Vec::with_capacity(1);
        let compacted = matches!(job, DiskJob::Compact(_));
        if let Err(e) = apply(&mut storage, job, &mut durable).and_then(|()| storage.sync()) {
            fail_stop(&e);
        }
        self.stats.synced(&storage, compacted);
        durable
    }
}

fn lock(storage: &Mutex<Storage>) -> MutexGuard<'_, Storage> {
    // A panic while holding it would already have stopped the process.
    storage.lock().unwrap_or_else(|p| p.into_inner())
}

/// A storage error is fatal: the process could no longer promise what it
/// acknowledged (fail-stop).
pub fn fail_stop(e: &StorageError) -> ! {
    eprintln!("kvraft server: disk failure, stopping: {e}");
    std::process::exit(1);
}

fn disk_thread(
    rx: mpsc::Receiver<DiskJob>,
    storage: &Mutex<Storage>,
    stats: &DiskStats,
    done: &UnboundedSender<Input>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let jobs = batch.len();
        let mut durable = Vec::with_capacity(jobs);
        let mut compacted = false;
        let mut storage = lock(storage);
        for job in batch {
            compacted |= matches!(job, DiskJob::Compact(_));
            if let Err(e) = apply(&mut storage, job, &mut durable) {
                fail_stop(&e);
            }
        }
        if let Err(e) = storage.sync() {
            fail_stop(&e);
        }
        stats.synced(&storage, compacted);
        drop(storage);
        // One message for the whole batch: one wake-up of the loop.
        if done.send(Input::Persisted { jobs, durable }).is_err() {
            return; // the loop is gone: shutting down
        }
    }
}

fn apply(storage: &mut Storage, job: DiskJob, durable: &mut Vec<Durable>) -> Result<(), StorageError> {
    match job {
        DiskJob::Write { snapshot, term, entries, marker, then_send } => {
            let installed = snapshot.as_ref().map(|s| s.meta);
            if let Some(s) = &snapshot {
                storage.install_snapshot(s)?;
            }
            if let Some(t) = term {
                storage.set_term(t)?;
            }
            if !entries.is_empty() {
                storage.append(&entries)?;
            }
            durable.push(Durable { marker, then_send, installed });
        }
        DiskJob::Compact(meta) => storage.compact_written(meta)?,
    }
    Ok(())
}
