//! Messages into and out of the core. The server's wire protocol carries
//! these; the simulation passes them as they are.

use crate::types::{Entry, Index, NodeId, Snapshot, Term};

/// Where an outgoing message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dest {
    Node(NodeId),
    Coord,
}

/// A message the core wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    pub to: Dest,
    pub msg: Message,
}

/// Everything that travels between the cores of servers, and from a core to
/// the coord. (The coord's requests to a core are method calls:
/// [`crate::RaftNode::log_state_request`] and [`crate::RaftNode::become_leader`].)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Leader to follower. With no entries it is a heartbeat. `read_ctx`
    /// numbers the leader's latest ReadIndex round; the response echoes it.
    AppendEntries {
        term: Term,
        leader: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        read_ctx: u64,
    },
    /// Follower to leader, sent only once what it reports is durable.
    AppendEntriesResponse { term: Term, from: NodeId, result: AppendResult, read_ctx: u64 },
    /// Leader to a follower that needs entries the leader has compacted.
    InstallSnapshot { term: Term, leader: NodeId, snapshot: Snapshot, read_ctx: u64 },
    /// Server to coord: its answer to a log-state request for `term`.
    LogState(LogState),
    /// Server to coord: whether it took the leadership of `term`.
    BecomeLeaderResponse { term: Term, from: NodeId, accepted: bool, current_term: Term },
}

/// The outcome of an AppendEntries (or InstallSnapshot) at a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The follower's log matches the leader's through `match_index`.
    Success { match_index: Index },
    /// The term is stale; the response's `term` tells the leader the newer one.
    StaleTerm,
    /// The consistency check failed at `rejected_prev`. The hint lets the
    /// leader skip a whole conflicting term at once: `hint_term` is the
    /// follower's term at `rejected_prev` (None if its log is shorter) and
    /// `hint_index` the first index of that term in its log (or its last
    /// index + 1 when shorter).
    Conflict { rejected_prev: Index, hint_term: Option<Term>, hint_index: Index },
}

/// A server's answer to the coord's log-state request for `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogState {
    pub from: NodeId,
    /// The term the coord asked about.
    pub term: Term,
    /// True if the server adopted `term` (durably, since the answer is sent
    /// only after persistence): from now on it refuses any lower term.
    pub granted: bool,
    /// The server's own term (greater than `term` when not granted).
    pub current_term: Term,
    pub last_log_term: Term,
    pub last_log_index: Index,
}

impl LogState {
    /// Raft's "at least as up-to-date" order: last term, then last index.
    pub fn up_to_date_key(&self) -> (Term, Index) {
        (self.last_log_term, self.last_log_index)
    }
}
