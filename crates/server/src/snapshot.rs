//! Local snapshots, made off the event loop.
//!
//! Every `SnapshotEntries` applied entries the loop clones the state
//! machine at its applied index (next to free: its maps are persistent
//! B-trees) and a short-lived thread encodes the clone and writes it to the
//! data directory while the loop goes on applying and the disk thread goes
//! on appending; the loop hears back with `Input::SnapshotSaved` and then
//! hands the snapshot to the core and has the disk thread adopt the file.
//! At a million keys the encoding takes a few hundred milliseconds of CPU
//! and the file (about 100 MB) as long again to reach the disk: neither
//! stalls the loop or the log. The loop keeps at most one in flight.

use kvraft_core::kv::{KvStore, SnapshotError};
use kvraft_core::{Snapshot, SnapshotMeta};
use kvraft_storage::SnapshotFiles;
use tokio::sync::mpsc::UnboundedSender;

use crate::disk::fail_stop;
use crate::node_loop::Input;

/// Why the snapshot found at recovery cannot be the state.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the snapshot's checksum holds but its state does not decode: {0}")]
    Decode(#[from] SnapshotError),
    #[error("the snapshot says index {} term {} but holds the state at index {} term {}", .meta.index, .meta.term, .held.index, .held.term)]
    Misplaced { meta: SnapshotMeta, held: SnapshotMeta },
}

/// The state the snapshot found at recovery holds. A state at another
/// index than the snapshot claims would put the log and the state out of
/// step (the log is replayed from the claimed index): refused, as a
/// snapshot received from a leader is (peer/inbound.rs).
pub fn restore(snapshot: &Snapshot) -> Result<KvStore, RestoreError> {
    let kv = KvStore::restore(snapshot.data.bytes().unwrap_or_default())?;
    let held = SnapshotMeta { index: kv.applied_index(), term: kv.applied_term() };
    if held != snapshot.meta {
        return Err(RestoreError::Misplaced { meta: snapshot.meta, held });
    }
    Ok(kv)
}

/// The snapshot of `kv` at its applied index.
pub fn encode(kv: &KvStore) -> Snapshot {
    let meta = SnapshotMeta { index: kv.applied_index(), term: kv.applied_term() };
    Snapshot::new(meta, kv.snapshot())
}

/// Encodes `kv` and durably writes it with `files`; a failed write stops
/// the process, as any storage error does. `kv` is dropped before the
/// write: while a clone lives, every node the loop writes to is copied.
/// Returns the snapshot stored: its bytes are freed here, off the loop, and
/// read back from the file only to be sent.
pub fn save(kv: KvStore, files: &SnapshotFiles) -> Snapshot {
    let snapshot = encode(&kv);
    drop(kv);
    if let Err(e) = files.write(&snapshot) {
        fail_stop(&e);
    }
    snapshot.stored()
}

/// The snapshot thread's nice value. All servers of a cluster snapshot at
/// about the same index, so on a small machine their threads arrive
/// together; at the default priority they took the cores from the event
/// loops for the whole encoding. At 10 a loop that wakes up preempts them
/// and gets about ten times their share, and they still finish.
const NICE: libc::c_int = 10;

/// [`save`] on a thread of its own, at a lower priority, the result sent to
/// `done`. False if no thread could be started (then nothing is sent).
pub fn save_in_background(kv: KvStore, files: SnapshotFiles, done: UnboundedSender<Input>) -> bool {
    let job = move || {
        lower_priority();
        let _ = done.send(Input::SnapshotSaved(save(kv, &files)));
    };
    match std::thread::Builder::new().name("kvraft-snapshot".into()).spawn(job) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("cannot start a snapshot thread ({e}); saving on the event loop");
            false
        }
    }
}

/// Frees on a lower-priority thread of its own what the loop lets go of in
/// bulk: what the core released at compaction (at a million keys, 100,000
/// entries and the previous snapshot took the loop 13-38 ms to free, and
/// the disk thread would hold the leader's next fsync back as long), or the
/// state machine a received snapshot replaces (about 100 ms at a million
/// keys: `cargo bench -p kvraft-core --bench kv_snapshot`).
pub fn free_in_background<T: Send + 'static>(what: T) {
    let spawned = std::thread::Builder::new().name("kvraft-free".into()).spawn(move || {
        lower_priority();
        drop(what);
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread to free memory ({e}); freeing it on the event loop");
    }
}

/// Lowers the calling thread's priority to [`NICE`] (on Linux a nice value
/// belongs to a thread). A failure only costs latency: warned, not fatal.
fn lower_priority() {
    // SAFETY: gettid and setpriority read no memory of ours.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
    };
    if rc != 0 {
        tracing::warn!("cannot lower the snapshot thread's priority: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovered_snapshot_must_hold_the_state_it_claims() {
        let empty = KvStore::new().snapshot();
        let at = |index, term| Snapshot::new(SnapshotMeta { index, term }, empty.clone());
        assert!(restore(&at(0, 0)).is_ok());
        let err = restore(&at(5, 1)).unwrap_err().to_string();
        assert!(err.contains("index 5 term 1") && err.contains("index 0 term 0"), "{err}");
        let garbage = Snapshot::new(SnapshotMeta { index: 5, term: 1 }, b"not a state".to_vec());
        assert!(matches!(restore(&garbage), Err(RestoreError::Decode(_))));
    }
}
