//! `Ready`: everything the core hands to its shell after a batch of inputs.

use crate::message::Outbound;
use crate::types::{Entry, Index, Snapshot, Term};

/// An opaque id the shell gives each read request.
pub type ReadId = u64;

/// Why a read could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not leader")]
    NotLeader { leader: Option<crate::NodeId> },
    #[error("leader has not heard from a majority recently")]
    NoQuorum,
}

/// The hand-off from the pure core to its shell. The shell must, in order:
/// 1. persist `snapshot` (replacing the whole durable log with it), then
///    `term`, then `entries` (an entry at index i replaces any durable entry
///    at i or after), and report it with [`crate::RaftNode::on_persisted`]
///    using [`Ready::persisted_marker`];
/// 2. send `messages` at any time (they do not depend on this Ready's
///    persistence), and `persisted_messages` only after step 1;
/// 3. apply `committed_entries` in order (after restoring `snapshot`), and
///    only then serve `reads`.
#[derive(Debug, Default)]
pub struct Ready {
    pub snapshot: Option<Snapshot>,
    /// The current term, when it changed since the last Ready.
    pub term: Option<Term>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Outbound>,
    pub persisted_messages: Vec<Outbound>,
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed by ReadIndex: serve them from the state machine once
    /// `committed_entries` are applied.
    pub reads: Vec<ReadId>,
    pub failed_reads: Vec<(ReadId, ReadError)>,
    /// Set when this node's role, term or known leader changed.
    pub role_changed: bool,
    /// `(last index, last term)` of the log when this Ready was taken.
    pub persisted_marker: Option<(Index, Term)>,
}

impl Ready {
    /// True when the Ready asks nothing of the shell.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.term.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
            && !self.role_changed
    }

    /// True when the shell has something to make durable.
    pub fn must_persist(&self) -> bool {
        self.snapshot.is_some() || self.term.is_some() || !self.entries.is_empty()
    }
}
