//! The disk thread: owns the storage, and makes each batch of writes durable
//! with one fsync (group commit). The event loop never waits on the disk:
//! it queues jobs here and hears back with `Input::Persisted`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use kvraft_core::{Entry, Index, Outbound, Snapshot, Term};
use kvraft_storage::Storage;
use tokio::sync::mpsc::UnboundedSender;

use crate::node_loop::Input;

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
    /// A local snapshot: save it, drop the log before it.
    Compact(Snapshot),
}

/// Bytes the data directory holds, refreshed after each batch.
#[derive(Default)]
pub struct DiskStats {
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
}

/// Starts the disk thread. A storage error is fatal: the process stops
/// (fail-stop), since it could no longer promise what it acknowledged.
pub fn spawn(mut storage: Storage, done: UnboundedSender<Input>, stats: Arc<DiskStats>) -> mpsc::Sender<DiskJob> {
    let (tx, rx) = mpsc::channel::<DiskJob>();
    std::thread::Builder::new()
        .name("kvraft-disk".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let mut completed = Vec::with_capacity(batch.len());
                for job in batch {
                    if let Err(e) = apply(&mut storage, job, &mut completed) {
                        eprintln!("kvraft server: disk failure, stopping: {e}");
                        std::process::exit(1);
                    }
                }
                if let Err(e) = storage.sync() {
                    eprintln!("kvraft server: disk failure, stopping: {e}");
                    std::process::exit(1);
                }
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                if let Ok(b) = storage.disk_usage() {
                    stats.bytes.store(b, Ordering::Relaxed);
                }
                for input in completed {
                    if done.send(input).is_err() {
                        return; // the loop is gone: shutting down
                    }
                }
            }
        })
        .expect("spawning the disk thread");
    tx
}

fn apply(storage: &mut Storage, job: DiskJob, completed: &mut Vec<Input>) -> Result<(), kvraft_storage::StorageError> {
    match job {
        DiskJob::Write { snapshot, term, entries, marker, then_send } => {
            if let Some(s) = &snapshot {
                storage.install_snapshot(s)?;
            }
            if let Some(t) = term {
                storage.set_term(t)?;
            }
            if !entries.is_empty() {
                storage.append(&entries)?;
            }
            completed.push(Input::Persisted { marker, then_send });
        }
        DiskJob::Compact(snapshot) => storage.compact(&snapshot)?,
    }
    Ok(())
}
