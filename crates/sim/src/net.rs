//! The simulated network: a time-ordered event queue, and delivery that
//! drops, duplicates, delays, reorders and partitions.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use kvraft_core::kv::{Command, Reply};
use kvraft_core::{Message, NodeId, Term};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A process of the simulated system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proc {
    Server(NodeId),
    Coord,
    Client(u64),
}

/// Why a server refused a client's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    NotLeader(Option<NodeId>),
    NoQuorum,
    Stale,
    /// The state machine forgot the client's session.
    SessionExpired,
}

/// Everything that travels between simulated processes.
#[derive(Clone, Debug)]
pub enum Msg {
    /// Server to server.
    Raft(Message),
    /// Server to coord: a core's answer to a request that the coord's
    /// process `epoch` sent. The real coord gets it on that request's
    /// connection, so a restarted coord never sees an answer meant for the
    /// process before it.
    CoordReply {
        epoch: u64,
        msg: Message,
    },
    LogStateRequest {
        term: Term,
        epoch: u64,
    },
    BecomeLeader {
        term: Term,
        members: Vec<NodeId>,
        epoch: u64,
    },
    /// Server to coord: join (or, once joined, join again) in this
    /// incarnation of the server's process, reporting its current term;
    /// `rejoin` when joined all along (the coord did not know it).
    Join {
        incarnation: u64,
        current_term: Term,
        rejoin: bool,
    },
    /// To the server process `incarnation` that joined.
    JoinReply {
        incarnation: u64,
        accepted: bool,
    },
    /// Server to coord: does the coord know this server in this incarnation?
    /// With its current term: one above the coord's fences the leader it knows.
    Known {
        incarnation: u64,
        current_term: Term,
        /// It leads `current_term` and has heard from no majority for a
        /// while (`RaftNode::lost_quorum`).
        lost_quorum: bool,
    },
    KnownReply {
        incarnation: u64,
        known: bool,
    },
    /// Coord to server, after a restart: who are you (role and term)?
    StatusRequest {
        epoch: u64,
    },
    Status {
        epoch: u64,
        leader: bool,
        term: Term,
    },
    Ping {
        seq: u64,
    },
    Pong {
        seq: u64,
    },
    Request {
        cmd: Command,
        read_index: bool,
    },
    Response {
        session: u64,
        op_id: u64,
        result: Result<Reply, ClientError>,
    },
    LeaderQuery,
    LeaderAnswer {
        leader: Option<NodeId>,
    },
}

/// Something that happens at a simulated time.
#[derive(Clone, Debug)]
pub enum Event {
    Deliver {
        from: Proc,
        to: Proc,
        msg: Msg,
    },
    ServerTick {
        id: NodeId,
        incarnation: u64,
    },
    PersistDone {
        id: NodeId,
        incarnation: u64,
    },
    CoordTick,
    /// The coord's process, down since a crash, starts again; with
    /// `lose_state` its state file is gone.
    CoordRestart {
        lose_state: bool,
    },
    /// A fail-stop crash aimed at one incarnation of a server.
    Crash {
        id: NodeId,
        incarnation: u64,
    },
    ClientWake {
        id: u64,
        timer: u64,
    },
    Nemesis,
}

/// The event queue plus the network's faults. Ties in time are broken by
/// insertion order, so a run is a pure function of the seed.
pub struct Net {
    pub now: u64,
    pub rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: std::collections::HashMap<u64, Event>,
    seq: u64,
    /// Directed links that drop everything: `(from, to)`.
    pub cut: BTreeSet<(Proc, Proc)>,
    pub faulty: bool,
    pub drop_rate: f64,
    pub dup_rate: f64,
    pub long_delay_rate: f64,
    pub messages_sent: u64,
}

impl Net {
    pub fn new(rng: ChaCha8Rng, drop_rate: f64, dup_rate: f64, long_delay_rate: f64) -> Self {
        Net {
            now: 0,
            rng,
            queue: BinaryHeap::new(),
            events: std::collections::HashMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            faulty: true,
            drop_rate,
            dup_rate,
            long_delay_rate,
            messages_sent: 0,
        }
    }

    pub fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    pub fn pop(&mut self) -> Option<Event> {
        let Reverse((at, seq)) = self.queue.pop()?;
        self.now = at;
        self.events.remove(&seq)
    }

    /// Sends `msg`, subject to partitions and, while faults run, loss,
    /// duplication and delay.
    pub fn send(&mut self, from: Proc, to: Proc, msg: Msg) {
        self.messages_sent += 1;
        if self.cut.contains(&(from, to)) {
            return;
        }
        if self.faulty && self.rng.random_bool(self.drop_rate) {
            return;
        }
        let copies = if self.faulty && self.rng.random_bool(self.dup_rate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if self.faulty && self.rng.random_bool(self.long_delay_rate) {
                self.rng.random_range(20..200)
            } else {
                self.rng.random_range(1..=5)
            };
            let ev = Event::Deliver { from, to, msg: msg.clone() };
            self.schedule(self.now + delay, ev);
        }
    }

    /// Cuts every link between `side` and the rest of `all`, one way or both.
    pub fn partition(&mut self, side: &[Proc], all: &[Proc], both_ways: bool) {
        for &a in side {
            for &b in all {
                if side.contains(&b) {
                    continue;
                }
                self.cut.insert((a, b));
                if both_ways {
                    self.cut.insert((b, a));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}
