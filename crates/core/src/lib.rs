//! KVRaft's replication core: a deterministic state machine with no I/O, no
//! clock, no randomness and no async inside.
//!
//! The shell (the server process, or the simulation) feeds it inputs —
//! messages from peers, the coord's requests, client proposals and reads,
//! ticks, and "this is durable now" — and takes a [`Ready`] of outputs:
//! what to persist, what to send (and what to send only after persisting),
//! what to apply, and which reads may be served. The shape follows
//! etcd-io/raft and tikv/raft-rs, with one difference of protocol: leaders
//! are designated by the coord instead of elected (see `docs/protocol.md`).
//!
//! The key-value state machine the log drives lives in [`kv`].

mod config;
pub mod kv;
mod log;
mod message;
mod node;
mod progress;
mod read_index;
mod ready;
mod types;

pub use config::Config;
pub use log::RaftLog;
pub use message::{AppendResult, Dest, LogState, Message, Outbound};
pub use node::{LOST_QUORUM_WINDOWS, ProposeError, RaftNode, Released, Restored, Role, WRITE_QUORUM_WINDOWS};
pub use ready::{ReadError, ReadId, Ready};
pub use types::{Entry, Index, NodeId, Payload, Snapshot, SnapshotData, SnapshotMeta, Term};
