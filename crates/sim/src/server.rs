//! A simulated server: a core, its key-value state machine, a disk that
//! keeps only what was persisted, and the shell logic between them.

use std::collections::{BTreeMap, VecDeque};

use kvraft_core::kv::{ApplyError, Command, KvStore, Reply};
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
/// Until its first join is accepted, a server sends it again this often.
const JOIN_RETRY_MS: u64 = 50;
/// About how often a joined server asks the coord whether it still knows
/// it (the real server's second, scaled as the coord's other timings are).
const KNOWN_EVERY_MS: u64 = 200;

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
    /// The coord process whose request the messages to the coord answer.
    coord_epoch: u64,
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
    /// This incarnation's first join was accepted: from then on the server
    /// polls `Known` instead of joining.
    joined: bool,
    /// When the server next joins (not yet joined) or asks `Known`.
    next_poll_at: u64,
    /// The coord process whose request the core is answering.
    coord_epoch: u64,
    /// Joins again after the coord said it did not know this server.
    pub rejoins: u64,
    /// The state machine's session limit (the same on every server).
    session_limit: usize,
    /// As the real server: the term in which it proposed the marker that
    /// starts the bound on sessions.
    marker_term: Option<u64>,
}

fn core_config(id: NodeId, sim: &SimConfig) -> Config {
    Config {
        max_entries_per_msg: sim.max_entries_per_msg,
        max_inflight_msgs: sim.max_inflight_msgs,
        quorum_window_ticks: sim.quorum_window_ticks,
        ..Config::new(id)
    }
}

impl SimServer {
    pub fn new(id: NodeId, sim: &SimConfig) -> Self {
        let config = core_config(id, sim);
        SimServer {
            id,
            node: RaftNode::new(config.clone()),
            kv: KvStore::with_session_limit(sim.session_limit),
            alive: true,
            incarnation: 1,
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
            joined: false,
            next_poll_at: 0,
            coord_epoch: 0,
            rejoins: 0,
            session_limit: sim.session_limit,
            marker_term: None,
        }
    }

    /// Fail-stop: everything not on the disk is gone.
    pub fn crash(&mut self) {
        self.alive = false;
        self.marker_term = None;
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
            None => KvStore::with_session_limit(self.session_limit),
        };
        self.node = RaftNode::restore(self.config.clone(), restored);
        self.write_done_at = net.now;
        // A new process: it joins the coord again, as a restart.
        self.joined = false;
        self.next_poll_at = net.now;
        inv.on_restart(self.id);
        inv.after_step(net.now, &self.node);
        self.schedule_tick(net);
    }

    pub fn schedule_tick(&self, net: &mut Net) {
        let ev = Event::ServerTick { id: self.id, incarnation: self.incarnation };
        net.schedule(net.now + TICK_MS, ev);
    }

    pub fn on_tick(&mut self, net: &mut Net, inv: &mut Invariants) {
        // As the real server's loop: a follower is not ticked.
        if self.node.needs_ticks() {
            self.node.tick();
        }
        let term = self.node.term();
        let leads = self.node.role() == kvraft_core::Role::Leader;
        if leads
            && !self.kv.sessions_bounded()
            && self.marker_term != Some(term)
            && self.node.propose(kvraft_core::kv::session_bound_marker()).is_ok()
        {
            self.marker_term = Some(term);
        }
        self.drive(net, inv);
        if net.now >= self.next_poll_at {
            self.poll_coord(net);
        }
        self.schedule_tick(net);
    }

    /// As the real server's `Joiner`: join until the coord accepts, then
    /// ask about once a `KNOWN_EVERY_MS` whether it still knows this
    /// server in this incarnation.
    fn poll_coord(&mut self, net: &mut Net) {
        let me = Proc::Server(self.id);
        if self.joined {
            let (incarnation, current_term, lost_quorum) =
                (self.incarnation, self.node.term(), self.node.lost_quorum());
            net.send(me, Proc::Coord, Msg::Known { incarnation, current_term, lost_quorum });
            let fifth = KNOWN_EVERY_MS / 5;
            self.next_poll_at = net.now + KNOWN_EVERY_MS - fifth + net.rng.random_range(0..2 * fifth);
        } else {
            self.send_join(net, false);
            self.next_poll_at = net.now + JOIN_RETRY_MS + net.rng.random_range(0..JOIN_RETRY_MS);
        }
    }

    fn send_join(&self, net: &mut Net, rejoin: bool) {
        let msg = Msg::Join { incarnation: self.incarnation, current_term: self.node.term(), rejoin };
        net.send(Proc::Server(self.id), Proc::Coord, msg);
    }

    pub fn on_message(&mut self, from: Proc, msg: Msg, net: &mut Net, inv: &mut Invariants) {
        match msg {
            Msg::Raft(m) => self.node.step(m),
            Msg::LogStateRequest { term, epoch } => {
                self.coord_epoch = epoch;
                self.node.log_state_request(term);
            }
            Msg::BecomeLeader { term, members, epoch } => {
                self.coord_epoch = epoch;
                self.node.become_leader(term, &members);
            }
            Msg::Ping { seq } => {
                net.send(Proc::Server(self.id), from, Msg::Pong { seq });
                return;
            }
            Msg::StatusRequest { epoch } => {
                let leader = self.node.role() == kvraft_core::Role::Leader;
                net.send(Proc::Server(self.id), from, Msg::Status { epoch, leader, term: self.node.term() });
                return;
            }
            Msg::JoinReply { incarnation, accepted } => {
                // The reply to another process's join never reaches this one.
                if incarnation == self.incarnation && accepted {
                    self.joined = true;
                }
                return;
            }
            Msg::KnownReply { incarnation, known } => {
                if incarnation == self.incarnation && self.joined && !known {
                    // The coord lost its state: join again, in this
                    // incarnation and with the current term.
                    self.rejoins += 1;
                    self.send_join(net, true);
                }
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
            self.send_out(net, me, out, self.coord_epoch);
        }
        if must_write {
            self.writes.push_back(PendingWrite {
                snapshot: rd.snapshot.clone(),
                term: rd.term,
                entries: rd.entries,
                marker: rd.persisted_marker,
                then_send: rd.persisted_messages,
                coord_epoch: self.coord_epoch,
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
                    // The simulated clients use only issued sessions: an
                    // Unissued refusal shows up as unexpected.
                    (true, Some(Err(ApplyError::Stale { .. } | ApplyError::Unissued { .. }))) => {
                        Err(ClientError::Stale)
                    }
                    (true, Some(Err(ApplyError::SessionExpired { .. }))) => Err(ClientError::SessionExpired),
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
        self.maybe_snapshot(inv);
    }

    /// Snapshots the state machine every `snapshot_every` entries. It waits
    /// for queued writes, so the disk's log and snapshot never interleave.
    fn maybe_snapshot(&mut self, inv: &mut Invariants) {
        let applied = self.kv.applied_index();
        if self.writes.is_empty() && applied >= self.node.snapshot_meta().index + self.snapshot_every {
            let meta = SnapshotMeta { index: applied, term: self.kv.applied_term() };
            let snap = Snapshot::new(meta, self.kv.snapshot());
            drop(self.node.compact(snap.stored()));
            // A real shell writes the snapshot file, then trims the log.
            self.disk.entries.retain(|e| e.index > meta.index);
            self.disk.snapshot = Some(snap);
            self.report_disk(inv);
        }
    }

    /// Tells the checker what the disk holds now.
    fn report_disk(&self, inv: &mut Invariants) {
        let snap = self.disk.snapshot.as_ref().map_or(0, |s| s.meta.index);
        inv.on_durable_log(self.id, snap, self.disk.entries.iter().map(|e| (e.index, e.term)));
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
        self.report_disk(inv);
        if then_crash {
            self.crash();
            return;
        }
        if let Some(marker) = w.marker {
            self.node.on_persisted(marker);
        }
        let me = Proc::Server(self.id);
        for out in w.then_send {
            self.send_out(net, me, out, w.coord_epoch);
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
    /// patience runs out. An answer to the coord goes to the coord process
    /// `coord_epoch` that asked.
    fn send_out(&self, net: &mut Net, me: Proc, out: Outbound, coord_epoch: u64) {
        let to = match out.to {
            Dest::Node(id) => Proc::Server(id),
            Dest::Coord => {
                net.send(me, Proc::Coord, Msg::CoordReply { epoch: coord_epoch, msg: out.msg });
                return;
            }
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
