//! The vocabulary every layer shares: ids, terms, indexes and log entries.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kv::Command;

/// A server's id, `1..=NumServers` as in the seed's configs.
pub type NodeId = u64;
/// A Raft term. Only the coord creates new terms (one per leader selection).
pub type Term = u64;
/// A 1-based log index; 0 means "before the first entry".
pub type Index = u64;

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by a new leader at the start of its term, so that entries of
    /// earlier terms become committed by the rule of Raft section 5.4.2.
    Noop,
    /// A client's key-value command.
    Command(Command),
}

/// One log entry. `(index, term)` identifies an entry across all servers:
/// one leader per term never writes two different entries at one index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
}

impl Entry {
    /// A cheap estimate of the entry's encoded size, used for the byte
    /// budgets of batching and flow control.
    pub fn approx_size(&self) -> usize {
        24 + match &self.payload {
            Payload::Noop => 0,
            Payload::Command(c) => c.approx_size(),
        }
    }
}

/// The prototype's log line: `Term=1, Index=27, Entry=Put(k13,val13)`.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Term={}, Index={}, Entry=", self.term, self.index)?;
        match &self.payload {
            Payload::Noop => write!(f, "No-Op"),
            Payload::Command(c) if crate::kv::is_session_bound_marker(c) => write!(f, "SessionBound"),
            Payload::Command(c) => write!(f, "{}", c.op),
        }
    }
}

/// Where a snapshot ends: every entry up to `index` (of term `term`) is
/// folded into it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
}

/// A snapshot of the state machine, opaque to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: SnapshotData,
}

impl Snapshot {
    /// A snapshot whose bytes are in memory.
    pub fn new(meta: SnapshotMeta, bytes: Vec<u8>) -> Snapshot {
        Snapshot { meta, data: SnapshotData::Bytes(std::sync::Arc::new(bytes)) }
    }

    /// The same snapshot, its bytes left to the shell's storage.
    pub fn stored(&self) -> Snapshot {
        Snapshot { meta: self.meta, data: SnapshotData::Stored { len: self.data.len() } }
    }
}

/// A snapshot's bytes. The core never reads them: it hands them on, and
/// sizes its patience with a follower by their length. So they need not
/// stay in memory: a server keeps its latest snapshot on disk and reads it
/// back only to send it (at a million keys, 110 MB less per server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotData {
    /// The bytes, shared: the same snapshot may be in flight to several
    /// followers. Snapshots received from a leader are always these.
    Bytes(std::sync::Arc<Vec<u8>>),
    /// `len` bytes durable in the shell's storage under the snapshot's
    /// meta, read back by the shell when it sends them.
    Stored { len: usize },
}

impl SnapshotData {
    pub fn len(&self) -> usize {
        match self {
            SnapshotData::Bytes(b) => b.len(),
            SnapshotData::Stored { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if they are in memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            SnapshotData::Bytes(b) => Some(b),
            SnapshotData::Stored { .. } => None,
        }
    }
}
