//! Group commit: one thread owns the `Storage`; writers queue jobs, and the
//! thread drains every queued job, writes them all, does one sync, then
//! completes them all.
//!
//! An fdatasync costs the same for one entry as for a hundred, so under
//! contention the syncs per second stay at the disk's rate while appends per
//! second grow with the number of writers. No writer waits for a timer:
//! a lone writer gets its sync at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::{self, JoinHandle};

use kvraft_core::{Entry, Term};

use crate::error::StorageError;
use crate::storage::Storage;

/// One writer's request: an optional new term, then entries to append
/// (with [`Storage::append`]'s rules, applied in submission order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Job {
    pub term: Option<Term>,
    pub entries: Vec<Entry>,
}

/// Completes when the job is durable (or failed).
#[derive(Debug)]
pub struct Pending {
    done: Receiver<Result<(), StorageError>>,
}

impl Pending {
    /// Blocks until the job's term and entries are durable.
    pub fn wait(self) -> Result<(), StorageError> {
        self.done.recv().unwrap_or(Err(StorageError::Stopped))
    }
}

/// Counters since the group commit started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Jobs completed (successfully or not).
    pub jobs: u64,
    /// Entries in completed jobs.
    pub entries: u64,
    /// Calls of [`Storage::sync`], one per drained batch.
    pub syncs: u64,
}

#[derive(Default)]
struct Counters {
    jobs: AtomicU64,
    entries: AtomicU64,
    syncs: AtomicU64,
}

struct Request {
    job: Job,
    done: SyncSender<Result<(), StorageError>>,
}

/// A `Storage` on its own thread, shared by many writers. Dropping it stops
/// the thread after the queued jobs; [`GroupCommit::shutdown`] also returns
/// the `Storage`.
pub struct GroupCommit {
    queue: Option<Sender<Request>>,
    worker: Option<JoinHandle<Storage>>,
    counters: Arc<Counters>,
}

impl GroupCommit {
    /// Moves `storage` to a new thread.
    pub fn new(storage: Storage) -> Result<Self, StorageError> {
        let (queue, requests) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let dir = storage.dir().to_path_buf();
        let c = Arc::clone(&counters);
        let worker = thread::Builder::new()
            .name("kvraft-wal".into())
            .spawn(move || run(storage, &requests, &c))
            .map_err(StorageError::io(dir, "spawn group-commit thread"))?;
        Ok(GroupCommit { queue: Some(queue), worker: Some(worker), counters })
    }

    /// Queues a job; jobs are applied in the order they are submitted.
    pub fn submit(&self, job: Job) -> Pending {
        let (done, pending) = mpsc::sync_channel(1);
        if let Some(queue) = &self.queue {
            // A send error means the thread is gone: `pending` then reports
            // `Stopped`, since its sender is dropped with the request.
            let _ = queue.send(Request { job, done });
        }
        Pending { done: pending }
    }

    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            jobs: self.counters.jobs.load(Ordering::Relaxed),
            entries: self.counters.entries.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
        }
    }

    /// Completes the queued jobs, stops the thread and returns the storage.
    pub fn shutdown(mut self) -> Result<Storage, StorageError> {
        self.stop().ok_or(StorageError::Stopped)
    }

    fn stop(&mut self) -> Option<Storage> {
        drop(self.queue.take());
        self.worker.take().and_then(|w| w.join().ok())
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(mut storage: Storage, requests: &Receiver<Request>, counters: &Counters) -> Storage {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter());
        let mut results: Vec<_> = batch.iter().map(|r| apply(&mut storage, &r.job)).collect();
        if results.iter().any(Result::is_ok) {
            counters.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = storage.sync() {
                // The first waiter gets the error itself, the others its text.
                let cause = e.to_string();
                let mut error = Some(e);
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(error.take().unwrap_or_else(|| StorageError::Poisoned { cause: cause.clone() }));
                }
            }
        }
        let entries: usize = batch.iter().map(|r| r.job.entries.len()).sum();
        counters.entries.fetch_add(entries as u64, Ordering::Relaxed);
        counters.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (request, result) in batch.into_iter().zip(results) {
            // A writer that stopped waiting is no error.
            let _ = request.done.send(result);
        }
    }
    storage
}

fn apply(storage: &mut Storage, job: &Job) -> Result<(), StorageError> {
    if let Some(term) = job.term {
        storage.set_term(term)?;
    }
    storage.append(&job.entries)
}
