//! A simulated server: a core, its key-value state machine, a disk that
//! keeps only what was persisted, and the shell logic between them.

use std::collections::{BTreeMap, VecDeque};

use kvraft_core::kv::{Command, KvStore, Reply};
use kvraft_core::{
    Config, Dest, Entry, Message, NodeId, Outbound, ProposeError, RaftNode, ReadError, ReadId, Ready, Restored,
    Snapshot, SnapshotMeta, Term,
};
use rand::Rng;

use crate::config::SimConfig;
use crate::invariants::Invariants;
use crate::net::{ClientError, Event, Msg, Net, Proc};

/// Milliseconds between ticks of a server's core.
pub const TICK_MS: u64 = 10;

/// What survives a crash.
#[derive(Clone, Debug, Default)]
struct Disk {
    term: Term,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

/// A Ready's durable part, waiting for its (simulated) write to finish.
struct PendingWrite {
    snapshot: Option<Snapshot>,
    term: Option<Term>,
    entries: Vec<Entry>,
    marker: Option<(u64, Term)>,
    then_send: Vec<Outbound>,
}

pub struct SimServer {
    pub id: NodeId,
    pub node: RaftNode,
    pub kv: KvStore,
    pub alive: bool,
    /// Bumped at each crash, so events of a dead incarnation are ignored.
    pub incarnation: u64,
    disk: Disk,
    writes: VecDeque<PendingWrite>,
    /// When the last queued write completes (writes complete in order).
    write_done_at: u64,
    /// Client writes waiting to commit: index → (client, the command).
    pending_writes: BTreeMap<u64, (Proc, Command)>,
    /// Client reads waiting on ReadIndex.
    pending_reads: BTreeMap<ReadId, (Proc, Command)>,
    next_read: ReadId,
    snapshot_every: u64,
    config: Config,
    /// Set when the core became leader; the world takes it.
    pub became_leader: bool,
    /// A failpoint armed by the world: crash once the next write lands.
    pub crash_after_next_write: bool,
}

fn core_config(id: NodeId, sim: &SimConfig) -> Config {
    Config { max_entries_per_msg: sim.max_entries_per_msg, max_inflight_msgs: sim.max_inflight_msgs, ..Config::new(id) }
}

impl SimServer {
    pub fn new(id: NodeId, sim: &SimConfig) -> Self {
        let config = core_config(id, sim);
        SimServer {
            id,
            node: RaftNode::new(config.clone()),
            kv: KvStore::new(),
            alive: true,
            incarnation: 0,
            disk: Disk::default(),
            writes: VecDeque::new(),
            write_done_at: 0,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            next_read: 0,
            snapshot_every: sim.snapshot_every,
            config,
            became_leader: false,
            crash_after_next_write: false,
        }
    }

    /// Fail-stop: everything not on the disk is gone.
    pub fn crash(&mut self) {
        self.alive = false;
        self.crash_after_next_write = false;
        self.incarnation += 1;
        self.writes.clear();
        self.pending_writes.clear();
        self.pending_reads.clear();
    }

    /// Restarts from the disk.
    pub fn restart(&mut self, net: &mut Net, inv: &mut Invariants) {
        self.alive = true;
        self.incarnation += 1;
        // As the real server: the snapshot's bytes stay on the disk.
        let snapshot = self.disk.snapshot.as_ref().map(Snapshot::stored);
        let restored = Restored { term: self.disk.term, snapshot, entries: self.disk.entries.clone() };
        self.kv = match &self.disk.snapshot {
            Some(s) => KvStore::restore(s.data.bytes().expect("the disk holds bytes"))
                .expect("the simulation writes valid snapshots"),
            None => KvStore::new(),
        };
        self.node = RaftNode::restore(self.config.clone(), restored);
        self.write_done_at = net.now;
        inv.on_restart(self.id);
        inv.after_step(net.now, &self.node);
        self.schedule_tick(net);
    }

    pub fn schedule_tick(&self, net: &mut Net) {
        let ev = Event::ServerTick { id: self.id, incarnation: self.incarnation };
        net.schedule(net.now + TICK_MS, ev);
    }

    pub fn on_tick(&mut self, net: &mut Net, inv: &mut Invariants) {
        self.node.tick();
        self.drive(net, inv);
        self.schedule_tick(net);
    }

    pub fn on_message(&mut self, from: Proc, msg: Msg, net: &mut Net, inv: &mut Invariants) {
        match msg {
            Msg::Raft(m) => self.node.step(m),
            Msg::LogStateRequest { term } => self.node.log_state_request(term),
            Msg::BecomeLeader { term, members } => self.node.become_leader(term, &members),
            Msg::Ping { seq } => {
                net.send(Proc::Server(self.id), from, Msg::Pong { seq });
                return;
            }
            Msg::Request { cmd, read_index } => self.on_request(from, cmd, read_index, net),
            _ => return,
        }
        self.drive(net, inv);
    }

    fn on_request(&mut self, from: Proc, cmd: Command, read_index: bool, net: &mut Net) {
        if read_index && cmd.op.is_read() {
            self.next_read += 1;
            self.pending_reads.insert(self.next_read, (from, cmd));
            self.node.read(self.next_read);
            return;
        }
        match self.node.propose(cmd.clone()) {
            Ok(index) => {
                self.pending_writes.insert(index, (from, cmd));
            }
            Err(ProposeError::NotLeader { leader }) => {
                reply(net, self.id, from, &cmd, Err(ClientError::NotLeader(leader)));
            }
            Err(ProposeError::NoQuorum) => {
                reply(net, self.id, from, &cmd, Err(ClientError::NoQuorum));
            }
        }
    }

    /// Hands every Ready of the core to the (simulated) disk and network.
    fn drive(&mut self, net: &mut Net, inv: &mut Invariants) {
        inv.after_step(net.now, &self.node);
        while self.node.has_ready() {
            let rd = self.node.ready();
            self.handle_ready(rd, net, inv);
            inv.after_step(net.now, &self.node);
        }
    }

    fn handle_ready(&mut self, rd: Ready, net: &mut Net, inv: &mut Invariants) {
        inv.on_new_entries(net.now, &self.node, &rd.entries);
        let me = Proc::Server(self.id);
        let must_write = rd.must_persist() || !rd.persisted_messages.is_empty();
        for out in rd.messages {
            self.send_out(net, me, out);
        }
        if must_write {
            self.writes.push_back(PendingWrite {
                snapshot: rd.snapshot.clone(),
                term: rd.term,
                entries: rd.entries,
                marker: rd.persisted_marker,
                then_send: rd.persisted_messages,
            });
            self.write_done_at = self.write_done_at.max(net.now) + net.rng.random_range(0..=3);
            let ev = Event::PersistDone { id: self.id, incarnation: self.incarnation };
            net.schedule(self.write_done_at, ev);
        }
        if let Some(s) = &rd.snapshot {
            let bytes = s.data.bytes().expect("received snapshots carry their bytes");
            self.kv = KvStore::restore(bytes).expect("snapshots come from KvStore::snapshot");
            // Writes waiting on entries now replaced by the snapshot cannot be answered.
            self.pending_writes.retain(|&i, _| i > s.meta.index);
        }
        for e in &rd.committed_entries {
            inv.on_apply(net.now, self.id, e);
            let outcome = self.kv.apply(e);
            if let Some((client, cmd)) = self.pending_writes.remove(&e.index) {
                let same = matches!(&e.payload, kvraft_core::Payload::Command(c) if *c == cmd);
                let result = match (same, outcome) {
                    (true, Some(Ok(r))) => Ok(r),
                    (true, Some(Err(_))) => Err(ClientError::Stale),
                    // Another leader's entry took this index: the client retries.
                    _ => Err(ClientError::NotLeader(self.node.leader())),
                };
                reply(net, self.id, client, &cmd, result);
            }
        }
        for id in rd.reads {
            if let Some((client, cmd)) = self.pending_reads.remove(&id) {
                let value = self.kv.get(cmd.op.key()).map(str::to_owned);
                reply(net, self.id, client, &cmd, Ok(Reply::Value(value)));
            }
        }
        for (id, err) in rd.failed_reads {
            if let Some((client, cmd)) = self.pending_reads.remove(&id) {
                let err = match err {
                    ReadError::NotLeader { leader } => ClientError::NotLeader(leader),
                    ReadError::NoQuorum => ClientError::NoQuorum,
                };
                reply(net, self.id, client, &cmd, Err(err));
            }
        }
        if rd.role_changed && self.node.role() == kvraft_core::Role::Leader {
            self.became_leader = true;
        }
        if rd.role_changed && self.node.role() == kvraft_core::Role::Follower {
            // Writes of a lost leadership may still commit; the client retries
            // them (same opId) wherever the leader now is.
            let leader = self.node.leader();
            for (_, (client, cmd)) in std::mem::take(&mut self.pending_writes) {
                reply(net, self.id, client, &cmd, Err(ClientError::NotLeader(leader)));
            }
        }
        self.maybe_snapshot();
    }

    /// Snapshots the state machine every `snapshot_every` entries. It waits
    /// for queued writes, so the disk's log and snapshot never interleave.
    fn maybe_snapshot(&mut self) {
        let applied = self.kv.applied_index();
        if self.writes.is_empty() && applied >= self.node.snapshot_meta().index + self.snapshot_every {
            let meta = SnapshotMeta { index: applied, term: self.kv.applied_term() };
            let snap = Snapshot::new(meta, self.kv.snapshot());
            drop(self.node.compact(snap.stored()));
            // A real shell writes the snapshot file, then trims the log.
            self.disk.entries.retain(|e| e.index > meta.index);
            self.disk.snapshot = Some(snap);
        }
    }

    /// The oldest queued write reached the disk. With `then_crash`, the
    /// server dies right after: the write is durable, nothing else happens.
    pub fn on_persist_done(&mut self, net: &mut Net, inv: &mut Invariants, then_crash: bool) {
        let Some(w) = self.writes.pop_front() else {
            return;
        };
        if let Some(s) = w.snapshot {
            // An installed snapshot replaces the whole log; once it is on
            // disk the node keeps only its size, as in the real server.
            drop(self.node.snapshot_stored(s.meta));
            self.disk.snapshot = Some(s);
            self.disk.entries.clear();
        }
        if let Some(t) = w.term {
            self.disk.term = t;
            inv.on_durable_term(net.now, self.id, t);
        }
        if let Some(first) = w.entries.first() {
            let first = first.index;
            self.disk.entries.retain(|e| e.index < first);
            self.disk.entries.extend(w.entries);
        }
        if then_crash {
            self.crash();
            return;
        }
        if let Some(marker) = w.marker {
            self.node.on_persisted(marker);
        }
        let me = Proc::Server(self.id);
        for out in w.then_send {
            self.send_out(net, me, out);
        }
        self.drive(net, inv);
    }

    /// The key-value state, for the end-of-run convergence check.
    pub fn state(&self) -> Vec<(String, String)> {
        self.kv.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    /// Sends `out`, reading a stored snapshot's bytes back from the disk as
    /// the real server does; one the disk no longer holds (a later one
    /// replaced it) is not sent, and the core sends again when its
    /// patience runs out.
    fn send_out(&self, net: &mut Net, me: Proc, out: Outbound) {
        let to = match out.to {
            Dest::Node(id) => Proc::Server(id),
            Dest::Coord => Proc::Coord,
        };
        let msg = match out.msg {
            Message::InstallSnapshot { term, leader, snapshot, read_ctx } if snapshot.data.bytes().is_none() => {
                match self.disk.snapshot.as_ref().filter(|s| s.meta == snapshot.meta) {
                    Some(s) => Message::InstallSnapshot { term, leader, snapshot: s.clone(), read_ctx },
                    None => return,
                }
            }
            msg => msg,
        };
        net.send(me, to, Msg::Raft(msg));
    }
}

fn reply(net: &mut Net, me: NodeId, client: Proc, cmd: &Command, result: Result<Reply, ClientError>) {
    let msg = Msg::Response { session: cmd.session, op_id: cmd.op_id, result };
    net.send(Proc::Server(me), client, msg);
}
