//! Local snapshots, encoded off the event loop.
//!
//! Every `SnapshotEntries` applied entries the loop clones the state
//! machine at its applied index (next to free: its maps are persistent
//! B-trees) and a short-lived thread encodes the clone while the loop goes
//! on applying; the loop hears back with `Input::SnapshotEncoded` and then
//! hands the snapshot to the core and the disk. At a million keys the
//! encoding takes a few hundred milliseconds of CPU that no longer stall
//! the loop. The loop keeps at most one in flight.

use std::sync::Arc;

use kvraft_core::kv::KvStore;
use kvraft_core::{Snapshot, SnapshotMeta};
use tokio::sync::mpsc::UnboundedSender;

use crate::node_loop::Input;

/// The snapshot of `kv` at its applied index.
pub fn encode(kv: &KvStore) -> Snapshot {
    let meta = SnapshotMeta { index: kv.applied_index(), term: kv.applied_term() };
    Snapshot { meta, data: Arc::new(kv.snapshot()) }
}

/// Encodes `kv` on a thread of its own and sends the result to `done`.
/// False if no thread could be started (then nothing is sent).
pub fn encode_in_background(kv: KvStore, done: UnboundedSender<Input>) -> bool {
    let job = move || {
        let _ = done.send(Input::SnapshotEncoded(encode(&kv)));
    };
    match std::thread::Builder::new().name("kvraft-snapshot".into()).spawn(job) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("cannot start a snapshot thread ({e}); encoding on the event loop");
            false
        }
    }
}
