//! The event loop: the only owner of the core and the state machine. It
//! takes inputs from the network, the disk thread and the clock, and hands
//! each `Ready` out: writes to the disk (the disk thread, or inline on a
//! follower whose disk thread is idle), messages to the transport,
//! committed entries to the state machine, results to clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvraft_core::kv::{ApplyError, Command, KvStore, Reply};
use kvraft_core::{
    Dest, Entry, Index, LogState, Message, NodeId, Outbound, Payload, ProposeError, RaftNode, ReadError, ReadId, Ready,
    Role, Snapshot, SnapshotMeta, Term,
};
use kvraft_proto as pb;
use kvraft_trace::{Trace, Tracer};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::config::ReadMode;
use crate::convert::reply_result;
use crate::disk::{Disk, DiskJob, Durable};
use crate::peer::outbound::Transport;
use crate::poll::{ClientPoll, QuorumPoll, next_input};
use crate::snapshot;

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

fn is_success(r: &pb::Reply) -> bool {
    matches!(
        r.result,
        Some(pb::reply::Result::Done(_)) | Some(pb::reply::Result::Cas(_)) | Some(pb::reply::Result::Value(_))
    )
}

/// Sends a reply carrying a token of the request's trace.
fn send_traced(reply: ReplyTo, mut r: pb::Reply, trace: &Trace) {
    if trace.enabled() {
        r.trace = trace.generate_token();
    }
    reply.send(r);
}

/// Where a log state goes back to the coord's call, with a tracing token.
type LogStateReply = oneshot::Sender<(LogState, Vec<u8>)>;

/// Everything the loop reacts to.
pub enum Input {
    Peer(Message),
    /// An InstallSnapshot, with the state machine its bytes hold, decoded
    /// off the loop (see peer/inbound.rs).
    PeerSnapshot {
        msg: Message,
        store: KvStore,
    },
    /// A client command, with the tracing token it carried.
    Client {
        cmd: Command,
        reply: ReplyTo,
        token: Vec<u8>,
    },
    LogState {
        term: Term,
        reply: oneshot::Sender<(LogState, Vec<u8>)>,
        token: Vec<u8>,
    },
    BecomeLeader {
        term: Term,
        members: Vec<pb::Member>,
        reply: oneshot::Sender<pb::BecomeLeaderReply>,
        token: Vec<u8>,
    },
    Configure(Vec<pb::Member>),
    Notice {
        leader: NodeId,
        term: Term,
        failed: Vec<NodeId>,
        token: Vec<u8>,
    },
    /// `jobs` queued disk jobs completed, in order: each marker in
    /// `durable` is durable; each `then_send` may go.
    Persisted {
        jobs: usize,
        durable: Vec<Durable>,
    },
    /// A local snapshot, encoded and written off the loop (see snapshot.rs).
    SnapshotSaved(Snapshot),
    Status(oneshot::Sender<pb::StatusReply>),
    /// A clone of the state machine (next to free: persistent maps).
    State(oneshot::Sender<KvStore>),
    /// Up to `limit` entries from `from` on, and the snapshot's last index.
    /// They are cloned here and formatted by the caller, off the loop.
    Log {
        from: Index,
        limit: usize,
        reply: oneshot::Sender<(Vec<Entry>, Index)>,
    },
}

pub struct NodeLoop {
    node: RaftNode,
    kv: KvStore,
    read_mode: ReadMode,
    snapshot_entries: u64,
    members: HashMap<NodeId, pb::Member>,
    transport: Transport,
    disk: Disk,
    /// Proposals waiting to commit: index → (the command, who waits, its trace).
    proposals: BTreeMap<Index, (Command, ReplyTo, Trace)>,
    reads: HashMap<ReadId, (Command, ReplyTo, Trace)>,
    next_read: ReadId,
    log_state_waiters: BTreeMap<Term, Vec<(LogStateReply, Trace)>>,
    leader_waiters: BTreeMap<Term, Vec<(oneshot::Sender<pb::BecomeLeaderReply>, Trace)>>,
    tracer: Tracer,
    /// The server's own trace (ServerStart, BecameLeader...).
    trace: Trace,
    /// A leader hint from the coord, used while the core knows none.
    coord_leader: Option<NodeId>,
    /// A local snapshot is being encoded off the loop.
    snapshot_in_flight: bool,
    /// The state machines of the snapshots leaders sent in this batch of
    /// inputs, decoded on their way in, until the Ready that follows says
    /// which one the core adopted; the others are freed after it.
    received: Vec<(SnapshotMeta, KvStore)>,
    /// The commit index as of the last Ready, for the peer connections: a
    /// snapshot at or below it would not be adopted, so it is not decoded.
    /// It only grows, so a stale read of it is only too low (a decode that
    /// was not needed), never too high.
    commit: Arc<AtomicU64>,
    /// The loop's own input queue, for the snapshot thread to answer on.
    inputs: mpsc::UnboundedSender<Input>,
    /// The term in which this server, leading, proposed the marker that
    /// starts the bound on sessions (see `kv/expiry.rs`).
    marker_term: Option<Term>,
}

/// How long a leader's loop may poll before it sleeps (see poll.rs).
pub struct Polls {
    /// While a quorum is awaited: `CommitPollMicros`.
    pub quorum: Duration,
    /// After progress, for the clients' next command: `ClientPollMicros`.
    pub client: Duration,
}

pub struct LoopParts {
    pub node: RaftNode,
    pub kv: KvStore,
    pub read_mode: ReadMode,
    pub snapshot_entries: u64,
    pub transport: Transport,
    pub disk: Disk,
    pub tracer: Tracer,
    pub trace: Trace,
    pub inputs: mpsc::UnboundedSender<Input>,
    /// Where the loop publishes its commit index (see [`NodeLoop::commit`]).
    pub commit: Arc<AtomicU64>,
}

/// The trace record of a client command arriving or committing; none for
/// a registration, which the brief's vocabulary does not name.
fn command_tag(op: &kvraft_core::kv::Op, committed: bool) -> Option<&'static str> {
    use kvraft_core::kv::Op;
    Some(match (op, committed) {
        (Op::Get { .. }, false) => "GetRecvd",
        (Op::Get { .. }, true) => "GetCommitted",
        (Op::Put { .. }, false) => "PutRecvd",
        (Op::Put { .. }, true) => "PutCommitted",
        (Op::Append { .. }, false) => "AppendRecvd",
        (Op::Append { .. }, true) => "AppendCommitted",
        (Op::Delete { .. }, false) => "DeleteRecvd",
        (Op::Delete { .. }, true) => "DeleteCommitted",
        (Op::Cas { .. }, false) => "CasRecvd",
        (Op::Cas { .. }, true) => "CasCommitted",
        (Op::Register, _) => return None,
    })
}

/// Records `cmd`'s arrival or commit on `trace`, if it has a record.
fn record_command(trace: &Trace, cmd: &Command, committed: bool, value: Option<&Option<String>>) {
    if let Some(tag) = command_tag(&cmd.op, committed) {
        trace.record_with(tag, || command_body(cmd, value));
    }
}

fn command_body(cmd: &Command, value: Option<&Option<String>>) -> serde_json::Value {
    use kvraft_core::kv::Op;
    let mut b = json!({"ClientId": cmd.client_id, "OpId": cmd.op_id, "Key": cmd.op.key()});
    match &cmd.op {
        Op::Put { value, .. } | Op::Append { value, .. } => b["Value"] = json!(value),
        Op::Cas { expected, new, .. } => {
            b["Expected"] = json!(expected);
            b["Value"] = json!(new);
        }
        Op::Get { .. } | Op::Delete { .. } | Op::Register => {}
    }
    if let Some(v) = value {
        b["Value"] = json!(v);
    }
    b
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
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            next_read: 0,
            log_state_waiters: BTreeMap::new(),
            leader_waiters: BTreeMap::new(),
            coord_leader: None,
            tracer: p.tracer,
            trace: p.trace,
            snapshot_in_flight: false,
            received: Vec::new(),
            marker_term: None,
            commit: p.commit,
            inputs: p.inputs,
        }
    }

    /// Runs until every input sender is gone. A leader may poll before it
    /// sleeps: for up to `polls.quorum` while a quorum is awaited (see
    /// [`QuorumPoll`]), and for up to `polls.client` after progress, for
    /// its clients' next command (see [`ClientPoll`]). Ticks reach the core
    /// only while it needs them (`RaftNode::needs_ticks`, a leader); a
    /// follower turned leader gets its first one at once.
    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>, tick: Duration, polls: Polls) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quorum_poll = QuorumPoll::new(polls.quorum);
        let mut client_poll = ClientPoll::new(polls.client);
        loop {
            let (now, mark) = (Instant::now(), self.quorum_progress());
            let (leader, awaits) = (self.node.role() == Role::Leader, self.awaits_quorum());
            let awaiting = quorum_poll.until(awaits, mark, now);
            // Not while a quorum is awaited: that poll decides then (and
            // does not poll behind a slow disk).
            let next_command = client_poll.until(leader && !awaits, mark, now);
            let until = awaiting.max(next_command);
            // Only a leader's ticks do anything: a follower's loop sleeps
            // through them (a wake-up each would cost its writes' latency).
            let ticks = self.node.needs_ticks();
            tokio::select! {
                input = next_input(&mut inputs, until) => {
                    let Some(input) = input else { return };
                    let mut command_came = |input: &Input| {
                        if leader && matches!(input, Input::Client { .. }) {
                            client_poll.command_came(Instant::now());
                        }
                    };
                    command_came(&input);
                    self.handle(input);
                    // Batch whatever else is already queued: one Ready for all.
                    for _ in 0..4096 {
                        match inputs.try_recv() {
                            Ok(input) => {
                                command_came(&input);
                                self.handle(input)
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = ticker.tick(), if ticks => self.node.tick(),
            }
            self.start_session_bound();
            self.drain_ready();
            // A received state machine the core did not adopt (a stale
            // snapshot, say) is not kept.
            if !self.received.is_empty() {
                snapshot::free_in_background(std::mem::take(&mut self.received));
            }
        }
    }

    /// A leader whose state machine has not started the bound on sessions
    /// proposes the marker that starts it, once a term: every server
    /// starts it at the same index (see `kv/expiry.rs`). One refused (no
    /// quorum) is proposed again on the next input; a second marker
    /// committed changes nothing.
    fn start_session_bound(&mut self) {
        let term = self.node.term();
        if self.node.role() != Role::Leader || self.kv.sessions_bounded() || self.marker_term == Some(term) {
            return;
        }
        if self.node.propose(kvraft_core::kv::session_bound_marker()).is_ok() {
            self.marker_term = Some(term);
        }
    }

    /// A leader with a write waiting to commit or a read waiting to be
    /// confirmed: the next input is likely a follower's answer, soon.
    fn awaits_quorum(&self) -> bool {
        !(self.proposals.is_empty() && self.reads.is_empty()) && self.node.role() == Role::Leader
    }

    /// Grows with every commit and every read answered (reads started
    /// less those still pending).
    fn quorum_progress(&self) -> u64 {
        self.node.commit_index().wrapping_add(self.next_read.wrapping_sub(self.reads.len() as u64))
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer(m) => self.node.step(m),
            Input::PeerSnapshot { msg, store } => {
                // Kept until the Ready that follows says which one (if any)
                // the core adopted.
                if let Message::InstallSnapshot { snapshot, .. } = &msg {
                    self.received.push((snapshot.meta, store));
                }
                self.node.step(msg);
            }
            Input::Client { cmd, reply, token } => {
                let trace = self.tracer.continue_or_create(&token);
                record_command(&trace, &cmd, false, None);
                self.on_client(cmd, reply, trace)
            }
            Input::LogState { term, reply, token } => {
                let trace = self.tracer.continue_or_create(&token);
                self.log_state_waiters.entry(term).or_default().push((reply, trace));
                self.node.log_state_request(term);
            }
            Input::BecomeLeader { term, members, reply, token } => {
                let trace = self.tracer.continue_or_create(&token);
                self.set_members(members.clone());
                self.leader_waiters.entry(term).or_default().push((reply, trace));
                let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
                self.node.become_leader(term, &ids);
            }
            Input::Configure(members) => self.set_members(members),
            Input::Notice { leader, term, failed, token } => {
                let trace = self.tracer.continue_or_create(&token);
                for f in failed {
                    trace.record("ServerFailRecvd", json!({"FailedServerId": f}));
                }
                if term >= self.node.term() && leader != 0 {
                    self.coord_leader = Some(leader);
                }
            }
            Input::Persisted { jobs, durable } => {
                self.disk.completed(jobs);
                self.on_durable(durable);
            }
            Input::SnapshotSaved(snapshot) => {
                self.snapshot_in_flight = false;
                self.install_local_snapshot(snapshot);
            }
            Input::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Input::State(reply) => {
                let _ = reply.send(self.kv.clone());
            }
            Input::Log { from, limit, reply } => {
                let log = self.node.log();
                let entries = log.entries_from(from).iter().take(limit).cloned().collect();
                let _ = reply.send((entries, log.snapshot_meta().index));
            }
        }
    }

    fn set_members(&mut self, members: Vec<pb::Member>) {
        let me = self.node.id();
        for m in &members {
            // A server that has not joined the coord since it lost its
            // state comes without addresses: counted, not dialled.
            if m.id != me && !m.peer_addr.is_empty() {
                self.transport.set_peer(m.id, m.peer_addr.clone());
            }
        }
        self.members = members.into_iter().map(|m| (m.id, m)).collect();
    }

    fn on_client(&mut self, cmd: Command, reply: ReplyTo, trace: Trace) {
        if self.read_mode == ReadMode::ReadIndex && cmd.op.is_read() {
            self.next_read += 1;
            self.reads.insert(self.next_read, (cmd, reply, trace));
            self.node.read(self.next_read);
            return;
        }
        match self.node.propose(cmd.clone()) {
            Ok(index) => {
                self.proposals.insert(index, (cmd, reply, trace));
            }
            Err(ProposeError::NotLeader { leader }) => {
                let r = self.not_leader(&cmd, leader);
                send_traced(reply, r, &trace);
            }
            Err(ProposeError::NoQuorum) => {
                let r = self.error_reply(&cmd, pb::ErrorCode::NoQuorum, "no quorum heard recently".into(), None);
                send_traced(reply, r, &trace);
            }
        }
    }

    fn error_reply(&self, cmd: &Command, code: pb::ErrorCode, message: String, leader: Option<NodeId>) -> pb::Reply {
        let leader = leader.or(self.coord_leader).filter(|&l| l != self.node.id() || code != pb::ErrorCode::NotLeader);
        let leader_addr = leader.and_then(|l| self.members.get(&l)).map(|m| m.client_addr.clone()).unwrap_or_default();
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
        pb::Reply { session: cmd.session, op_id: cmd.op_id, result: Some(reply_result(r)), trace: Vec::new() }
    }

    /// Sends a message now, or answers a waiting coord call.
    fn route(&mut self, out: Outbound) {
        match out.to {
            Dest::Node(id) => self.transport.send(id, out.msg),
            Dest::Coord => match out.msg {
                Message::LogState(ls) => {
                    for (w, trace) in self.log_state_waiters.remove(&ls.term).unwrap_or_default() {
                        trace.record_with("ServerLogState", || {
                            json!({"ServerId": ls.from, "Term": ls.term, "Granted": ls.granted,
                                   "LastLogTerm": ls.last_log_term, "LogIdx": ls.last_log_index})
                        });
                        let token = if trace.enabled() { trace.generate_token() } else { Vec::new() };
                        let _ = w.send((ls, token));
                    }
                }
                Message::BecomeLeaderResponse { term, accepted, current_term, .. } => {
                    for (w, trace) in self.leader_waiters.remove(&term).unwrap_or_default() {
                        let token = if trace.enabled() { trace.generate_token() } else { Vec::new() };
                        let _ = w.send(pb::BecomeLeaderReply { accepted, current_term, trace: token });
                    }
                }
                _ => {}
            },
        }
    }

    /// Writes made durable: tell the core, send what waited for them.
    fn on_durable(&mut self, durable: Vec<Durable>) {
        for Durable { marker, then_send, installed } in durable {
            if let Some(m) = marker {
                self.node.on_persisted(m);
            }
            if let Some(meta) = installed {
                // The received snapshot is on disk now: the core need not
                // keep its bytes (the transport reads them back to send).
                if let Some(freed) = self.node.snapshot_stored(meta) {
                    snapshot::free_in_background(freed);
                }
            }
            for out in then_send {
                self.route(out);
            }
        }
    }

    /// Hands out every Ready, then puts what they sent on the wire.
    fn drain_ready(&mut self) {
        while self.node.has_ready() {
            let rd = self.node.ready();
            self.handle_ready(rd);
        }
        self.transport.flush();
        self.commit.store(self.node.commit_index(), Ordering::Relaxed);
    }

    fn handle_ready(&mut self, mut rd: Ready) {
        // Messages that need no persistence go first: a write below may
        // block this thread (a follower's inline fsync).
        for out in std::mem::take(&mut rd.messages) {
            self.route(out);
        }
        self.transport.flush();
        if rd.must_persist() || !rd.persisted_messages.is_empty() {
            let job = DiskJob::Write {
                snapshot: rd.snapshot.clone(),
                term: rd.term,
                entries: rd.entries,
                marker: rd.persisted_marker,
                then_send: rd.persisted_messages,
            };
            // A received snapshot (100 MB at a million keys, written and
            // synced) goes to the disk thread even so: the loop would stall
            // for the whole write, hundreds of ms.
            if self.node.role() == Role::Follower && self.disk.idle() && rd.snapshot.is_none() {
                // See disk.rs: a follower's replies wait for this write anyway.
                let durable = self.disk.write_now(job);
                self.on_durable(durable);
            } else if !self.disk.queue(job) {
                return; // the disk thread is gone: the process is stopping
            }
        }
        if let Some(s) = &rd.snapshot {
            // Received from a leader, and decoded on its way in.
            let kv = match self.received.iter().position(|(meta, _)| *meta == s.meta) {
                Some(at) => Ok(self.received.swap_remove(at).1),
                None => {
                    // Not decoded on its way in (not expected: see
                    // Input::PeerSnapshot): decode it here. Its bytes are in memory.
                    tracing::info!(index = s.meta.index, "decoding a received snapshot on the loop");
                    KvStore::restore(s.data.bytes().unwrap_or_default())
                }
            };
            match kv {
                Ok(kv) => {
                    tracing::info!(
                        index = s.meta.index,
                        term = s.meta.term,
                        bytes = s.data.len(),
                        "installed a snapshot from the leader"
                    );
                    snapshot::free_in_background(std::mem::replace(&mut self.kv, kv));
                }
                Err(e) => {
                    // The core adopted a snapshot we cannot read (only one that
                    // decoded on its way in should get here): serving from a
                    // wrong state would be worse than stopping.
                    eprintln!("kvraft server: received snapshot does not decode, stopping: {e}");
                    std::process::exit(1);
                }
            }
            let stale: Vec<Index> = self.proposals.range(..=s.meta.index).map(|(&i, _)| i).collect();
            for i in stale {
                if let Some((cmd, reply, trace)) = self.proposals.remove(&i) {
                    let r = self.not_leader(&cmd, self.node.leader());
                    send_traced(reply, r, &trace);
                }
            }
        }
        for e in &rd.committed_entries {
            let outcome = self.kv.apply(e);
            let Some((cmd, reply, trace)) = self.proposals.remove(&e.index) else {
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
                (true, Some(Err(e @ ApplyError::SessionExpired { .. }))) => {
                    self.error_reply(&cmd, pb::ErrorCode::SessionExpired, e.to_string(), None)
                }
                (true, Some(Err(e @ ApplyError::Unissued { .. }))) => {
                    self.error_reply(&cmd, pb::ErrorCode::BadRequest, e.to_string(), None)
                }
                _ => self.not_leader(&cmd, self.node.leader()),
            };
            if let Some(pb::reply::Result::Value(v)) = &r.result {
                record_command(&trace, &cmd, true, Some(&v.value));
            } else if is_success(&r) {
                record_command(&trace, &cmd, true, None);
            }
            send_traced(reply, r, &trace);
        }
        for id in rd.reads {
            if let Some((cmd, reply, trace)) = self.reads.remove(&id) {
                let value = self.kv.get(cmd.op.key()).map(str::to_owned);
                record_command(&trace, &cmd, true, Some(&value));
                send_traced(reply, Self::ok_reply(&cmd, &Reply::Value(value)), &trace);
            }
        }
        for (id, err) in rd.failed_reads {
            if let Some((cmd, reply, trace)) = self.reads.remove(&id) {
                let r = match err {
                    ReadError::NotLeader { leader } => self.not_leader(&cmd, leader),
                    ReadError::NoQuorum => self.error_reply(
                        &cmd,
                        pb::ErrorCode::NoQuorum,
                        "the leader has not heard from a majority recently".into(),
                        None,
                    ),
                };
                send_traced(reply, r, &trace);
            }
        }
        if rd.role_changed {
            if self.node.leader().is_some() {
                self.coord_leader = None;
            }
            let (id, term) = (self.node.id(), self.node.term());
            match self.node.role() {
                Role::Leader => {
                    self.trace.record("BecameLeader", json!({"ServerId": id, "Term": term}));
                    self.trace.record("NoOpRequest", json!({"Term": term}));
                }
                Role::Follower => {
                    let leader = self.node.leader().unwrap_or(0);
                    self.trace.record("BecameFollower", json!({"ServerId": id, "Term": term, "LeaderId": leader}));
                }
            }
            if self.node.role() == Role::Follower {
                // Proposals of a lost leadership may still commit; clients
                // retry them (same opId) at the new leader, applied once.
                let leader = self.node.leader();
                for (_, (cmd, reply, trace)) in std::mem::take(&mut self.proposals) {
                    let r = self.not_leader(&cmd, leader);
                    send_traced(reply, r, &trace);
                }
            }
        }
        self.maybe_snapshot();
    }

    fn maybe_snapshot(&mut self) {
        let applied = self.kv.applied_index();
        if self.snapshot_in_flight || applied < self.node.snapshot_meta().index + self.snapshot_entries {
            return;
        }
        let files = self.disk.snapshot_files();
        self.snapshot_in_flight = snapshot::save_in_background(self.kv.clone(), files.clone(), self.inputs.clone());
        if !self.snapshot_in_flight {
            let s = snapshot::save(self.kv.clone(), &files);
            self.install_local_snapshot(s);
        }
    }

    /// Hands a saved local snapshot to the core (which compacts its log)
    /// and to the disk thread (which adopts its file). Both ignore it if they
    /// already hold a later one, a snapshot received from the leader while
    /// this one was being saved; the disk thread then deletes its file.
    fn install_local_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        snapshot::free_in_background(self.node.compact(snapshot));
        let _ = self.disk.queue(DiskJob::Compact(meta));
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
            disk_bytes: self.disk.stats.bytes.load(Ordering::Relaxed),
            // Filled in by the Admin service, which holds the port's count.
            client_connections_refused: 0,
            lost_quorum: n.lost_quorum(),
        }
    }
}
