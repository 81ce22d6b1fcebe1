//! The event loop: the only owner of the core and the state machine. It
//! takes inputs from the network, the disk thread and the clock, and hands
//! each `Ready` out: writes to the disk thread, messages to the transport,
//! committed entries to the state machine, results to clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kvraft_core::kv::{ApplyError, Command, KvStore, Reply};
use kvraft_core::{
    Dest, Index, LogState, Message, NodeId, Outbound, Payload, ProposeError, RaftNode, ReadError,
    ReadId, Ready, Role, Snapshot, SnapshotMeta, Term,
};
use kvraft_proto as pb;
use tokio::sync::{mpsc, oneshot};

use crate::config::ReadMode;
use crate::convert::reply_result;
use crate::disk::{DiskJob, DiskStats};
use crate::transport::Transport;

/// Where a client's result goes: a unary call's reply, or its session stream.
pub enum ReplyTo {
    Once(oneshot::Sender<pb::Reply>),
    Stream(mpsc::UnboundedSender<Result<pb::Reply, tonic::Status>>),
}

impl ReplyTo {
    fn send(self, r: pb::Reply) {
        match self {
            ReplyTo::Once(tx) => {
                let _ = tx.send(r);
            }
            ReplyTo::Stream(tx) => {
                let _ = tx.send(Ok(r));
            }
        }
    }
}

/// Everything the loop reacts to.
pub enum Input {
    Peer(Message),
    Client {
        cmd: Command,
        reply: ReplyTo,
    },
    LogState {
        term: Term,
        reply: oneshot::Sender<LogState>,
    },
    BecomeLeader {
        term: Term,
        members: Vec<pb::Member>,
        reply: oneshot::Sender<pb::BecomeLeaderReply>,
    },
    Configure(Vec<pb::Member>),
    Notice {
        leader: NodeId,
        term: Term,
    },
    /// A disk job completed: `marker` is durable; `then_send` may go.
    Persisted {
        marker: Option<(Index, Term)>,
        then_send: Vec<Outbound>,
    },
    Status(oneshot::Sender<pb::StatusReply>),
    Log {
        from: Index,
        limit: usize,
        reply: oneshot::Sender<pb::LogReply>,
    },
}

pub struct NodeLoop {
    node: RaftNode,
    kv: KvStore,
    read_mode: ReadMode,
    snapshot_entries: u64,
    members: HashMap<NodeId, pb::Member>,
    transport: Transport,
    disk: std::sync::mpsc::Sender<DiskJob>,
    disk_stats: Arc<DiskStats>,
    /// Proposals waiting to commit: index → (the command, who waits).
    proposals: BTreeMap<Index, (Command, ReplyTo)>,
    reads: HashMap<ReadId, (Command, ReplyTo)>,
    next_read: ReadId,
    log_state_waiters: BTreeMap<Term, Vec<oneshot::Sender<LogState>>>,
    leader_waiters: BTreeMap<Term, Vec<oneshot::Sender<pb::BecomeLeaderReply>>>,
    /// A leader hint from the coord, used while the core knows none.
    coord_leader: Option<NodeId>,
}

pub struct LoopParts {
    pub node: RaftNode,
    pub kv: KvStore,
    pub read_mode: ReadMode,
    pub snapshot_entries: u64,
    pub transport: Transport,
    pub disk: std::sync::mpsc::Sender<DiskJob>,
    pub disk_stats: Arc<DiskStats>,
}

impl NodeLoop {
    pub fn new(p: LoopParts) -> Self {
        NodeLoop {
            node: p.node,
            kv: p.kv,
            read_mode: p.read_mode,
            snapshot_entries: p.snapshot_entries,
            members: HashMap::new(),
            transport: p.transport,
            disk: p.disk,
            disk_stats: p.disk_stats,
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            next_read: 0,
            log_state_waiters: BTreeMap::new(),
            leader_waiters: BTreeMap::new(),
            coord_leader: None,
        }
    }

    /// Runs until every input sender is gone.
    pub async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        tick: std::time::Duration,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = inputs.recv() => {
                    let Some(input) = input else { return };
                    self.handle(input);
                    // Batch whatever else is already queued: one Ready for all.
                    for _ in 0..4096 {
                        match inputs.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                _ = ticker.tick() => self.node.tick(),
            }
            self.drain_ready();
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer(m) => self.node.step(m),
            Input::Client { cmd, reply } => self.on_client(cmd, reply),
            Input::LogState { term, reply } => {
                self.log_state_waiters.entry(term).or_default().push(reply);
                self.node.log_state_request(term);
            }
            Input::BecomeLeader {
                term,
                members,
                reply,
            } => {
                self.set_members(members.clone());
                self.leader_waiters.entry(term).or_default().push(reply);
                let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
                self.node.become_leader(term, &ids);
            }
            Input::Configure(members) => self.set_members(members),
            Input::Notice { leader, term } => {
                if term >= self.node.term() && leader != 0 {
                    self.coord_leader = Some(leader);
                }
            }
            Input::Persisted { marker, then_send } => {
                if let Some(m) = marker {
                    self.node.on_persisted(m);
                }
                for out in then_send {
                    self.route(out);
                }
            }
            Input::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Input::Log { from, limit, reply } => {
                let log = self.node.log();
                let lines = log
                    .iter()
                    .filter(|e| e.index >= from)
                    .take(limit)
                    .map(|e| pb::LogLine {
                        index: e.index,
                        term: e.term,
                        entry: e.to_string(),
                    })
                    .collect();
                let _ = reply.send(pb::LogReply {
                    lines,
                    snapshot_index: log.snapshot_meta().index,
                });
            }
        }
    }

    fn set_members(&mut self, members: Vec<pb::Member>) {
        let me = self.node.id();
        for m in &members {
            if m.id != me {
                self.transport.set_peer(m.id, m.peer_addr.clone());
            }
        }
        self.members = members.into_iter().map(|m| (m.id, m)).collect();
    }

    fn on_client(&mut self, cmd: Command, reply: ReplyTo) {
        if self.read_mode == ReadMode::ReadIndex && cmd.op.is_read() {
            self.next_read += 1;
            self.reads.insert(self.next_read, (cmd, reply));
            self.node.read(self.next_read);
            return;
        }
        match self.node.propose(cmd.clone()) {
            Ok(index) => {
                self.proposals.insert(index, (cmd, reply));
            }
            Err(ProposeError::NotLeader { leader }) => reply.send(self.not_leader(&cmd, leader)),
        }
    }

    fn error_reply(
        &self,
        cmd: &Command,
        code: pb::ErrorCode,
        message: String,
        leader: Option<NodeId>,
    ) -> pb::Reply {
        let leader = leader
            .or(self.coord_leader)
            .filter(|&l| l != self.node.id() || code != pb::ErrorCode::NotLeader);
        let leader_addr = leader
            .and_then(|l| self.members.get(&l))
            .map(|m| m.client_addr.clone())
            .unwrap_or_default();
        pb::Reply {
            session: cmd.session,
            op_id: cmd.op_id,
            result: Some(pb::reply::Result::Error(pb::Error {
                code: code as i32,
                message,
                leader_id: leader.unwrap_or(0),
                leader_addr,
            })),
            trace: Vec::new(),
        }
    }

    fn not_leader(&self, cmd: &Command, leader: Option<NodeId>) -> pb::Reply {
        self.error_reply(cmd, pb::ErrorCode::NotLeader, "not leader".into(), leader)
    }

    fn ok_reply(cmd: &Command, r: &Reply) -> pb::Reply {
        pb::Reply {
            session: cmd.session,
            op_id: cmd.op_id,
            result: Some(reply_result(r)),
            trace: Vec::new(),
        }
    }

    /// Sends a message now, or answers a waiting coord call.
    fn route(&mut self, out: Outbound) {
        match out.to {
            Dest::Node(id) => self.transport.send(id, out.msg),
            Dest::Coord => match out.msg {
                Message::LogState(ls) => {
                    for w in self.log_state_waiters.remove(&ls.term).unwrap_or_default() {
                        let _ = w.send(ls);
                    }
                }
                Message::BecomeLeaderResponse {
                    term,
                    accepted,
                    current_term,
                    ..
                } => {
                    for w in self.leader_waiters.remove(&term).unwrap_or_default() {
                        let _ = w.send(pb::BecomeLeaderReply {
                            accepted,
                            current_term,
                            trace: Vec::new(),
                        });
                    }
                }
                _ => {}
            },
        }
    }

    fn drain_ready(&mut self) {
        while self.node.has_ready() {
            let rd = self.node.ready();
            self.handle_ready(rd);
        }
    }

    fn handle_ready(&mut self, rd: Ready) {
        if rd.must_persist() || !rd.persisted_messages.is_empty() {
            let job = DiskJob::Write {
                snapshot: rd.snapshot.clone(),
                term: rd.term,
                entries: rd.entries,
                marker: rd.persisted_marker,
                then_send: rd.persisted_messages,
            };
            if self.disk.send(job).is_err() {
                return; // the disk thread is gone: the process is stopping
            }
        }
        for out in rd.messages {
            self.route(out);
        }
        if let Some(s) = &rd.snapshot {
            match KvStore::restore(&s.data) {
                Ok(kv) => self.kv = kv,
                Err(e) => {
                    // The leader sent a snapshot we cannot read: serving from a
                    // wrong state would be worse than stopping.
                    eprintln!("kvraft server: received snapshot does not decode, stopping: {e}");
                    std::process::exit(1);
                }
            }
            let stale: Vec<Index> = self
                .proposals
                .range(..=s.meta.index)
                .map(|(&i, _)| i)
                .collect();
            for i in stale {
                if let Some((cmd, reply)) = self.proposals.remove(&i) {
                    let r = self.not_leader(&cmd, self.node.leader());
                    reply.send(r);
                }
            }
        }
        for e in &rd.committed_entries {
            let outcome = self.kv.apply(e);
            let Some((cmd, reply)) = self.proposals.remove(&e.index) else {
                continue;
            };
            let same = matches!(&e.payload, Payload::Command(c) if c.client_id == cmd.client_id
                && c.session == cmd.session && c.op_id == cmd.op_id);
            let r = match (same, outcome) {
                (true, Some(Ok(r))) => Self::ok_reply(&cmd, &r),
                (true, Some(Err(ApplyError::Stale { .. }))) => self.error_reply(
                    &cmd,
                    pb::ErrorCode::StaleRequest,
                    "stale request: older than what the client acknowledged".into(),
                    None,
                ),
                _ => self.not_leader(&cmd, self.node.leader()),
            };
            reply.send(r);
        }
        for id in rd.reads {
            if let Some((cmd, reply)) = self.reads.remove(&id) {
                let value = self.kv.get(cmd.op.key()).map(str::to_owned);
                reply.send(Self::ok_reply(&cmd, &Reply::Value(value)));
            }
        }
        for (id, err) in rd.failed_reads {
            if let Some((cmd, reply)) = self.reads.remove(&id) {
                let r = match err {
                    ReadError::NotLeader { leader } => self.not_leader(&cmd, leader),
                    ReadError::NoQuorum => self.error_reply(
                        &cmd,
                        pb::ErrorCode::NoQuorum,
                        "the leader has not heard from a majority recently".into(),
                        None,
                    ),
                };
                reply.send(r);
            }
        }
        if rd.role_changed {
            if self.node.leader().is_some() {
                self.coord_leader = None;
            }
            if self.node.role() == Role::Follower {
                // Proposals of a lost leadership may still commit; clients
                // retry them (same opId) at the new leader, applied once.
                let leader = self.node.leader();
                for (_, (cmd, reply)) in std::mem::take(&mut self.proposals) {
                    let r = self.not_leader(&cmd, leader);
                    reply.send(r);
                }
            }
        }
        self.maybe_snapshot();
    }

    fn maybe_snapshot(&mut self) {
        let applied = self.kv.applied_index();
        if applied < self.node.snapshot_meta().index + self.snapshot_entries {
            return;
        }
        let meta = SnapshotMeta {
            index: applied,
            term: self.kv.applied_term(),
        };
        let snapshot = Snapshot {
            meta,
            data: Arc::new(self.kv.snapshot()),
        };
        self.node.compact(snapshot.clone());
        let _ = self.disk.send(DiskJob::Compact(snapshot));
    }

    fn status(&self) -> pb::StatusReply {
        let n = &self.node;
        let matches: HashMap<NodeId, Index> = n.match_indexes().into_iter().collect();
        let mut peers: Vec<pb::PeerStatus> = self
            .members
            .values()
            .filter(|m| m.id != n.id())
            .map(|m| pb::PeerStatus {
                id: m.id,
                addr: m.peer_addr.clone(),
                match_index: matches.get(&m.id).copied().unwrap_or(0),
            })
            .collect();
        peers.sort_by_key(|p| p.id);
        pb::StatusReply {
            id: n.id(),
            role: match n.role() {
                Role::Leader => "leader".into(),
                Role::Follower => "follower".into(),
            },
            term: n.term(),
            leader_id: n.leader().or(self.coord_leader).unwrap_or(0),
            commit_index: n.commit_index(),
            applied_index: self.kv.applied_index(),
            last_log_index: n.log().last_index(),
            snapshot_index: n.snapshot_meta().index,
            peers,
            disk_bytes: self.disk_stats.bytes.load(Ordering::Relaxed),
        }
    }
}
