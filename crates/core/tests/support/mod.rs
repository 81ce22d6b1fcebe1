//! A tiny synchronous network of cores for the core's own tests and its
//! benchmark: persistence is instant, delivery is FIFO, and a filter can drop
//! any message. (The seeded, faulty, many-process simulation lives in
//! `crates/sim`.)
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kvraft_core::kv::{Command, KvStore, Op, Outcome};
use kvraft_core::{Config, Dest, Entry, Message, NodeId, Payload, RaftNode, ReadId, Restored, Term};

type Filter = Box<dyn FnMut(NodeId, NodeId, &mut Message) -> bool>;

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, RaftNode>,
    pub kv: BTreeMap<NodeId, KvStore>,
    /// Each node's durable state, as its shell would have written it.
    pub disk: BTreeMap<NodeId, Restored>,
    pub down: BTreeSet<NodeId>,
    /// Returns false to drop a message `(from, to, msg)`; may rewrite it.
    pub filter: Option<Filter>,
    pub to_coord: Vec<Message>,
    pub reads_served: Vec<(NodeId, ReadId)>,
    pub reads_failed: Vec<(NodeId, ReadId)>,
    /// Outcomes of applied commands, per node, by log index.
    pub outcomes: BTreeMap<NodeId, BTreeMap<u64, Outcome>>,
    /// AppendEntries delivered, per destination.
    pub appends_delivered: BTreeMap<NodeId, usize>,
    pub config: fn(NodeId) -> Config,
    queue: VecDeque<(NodeId, NodeId, Message)>,
}

impl Cluster {
    pub fn new(n: u64) -> Self {
        Self::with_logs(0, &vec![vec![]; n as usize])
    }

    /// Nodes `1..=logs.len()` restored at `term` with logs of the given terms.
    pub fn with_logs(term: Term, logs: &[Vec<Term>]) -> Self {
        Self::with_config(term, logs, Config::new)
    }

    pub fn with_config(term: Term, logs: &[Vec<Term>], config: fn(NodeId) -> Config) -> Self {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            kv: BTreeMap::new(),
            disk: BTreeMap::new(),
            down: BTreeSet::new(),
            filter: None,
            to_coord: Vec::new(),
            reads_served: Vec::new(),
            reads_failed: Vec::new(),
            outcomes: BTreeMap::new(),
            appends_delivered: BTreeMap::new(),
            config,
            queue: VecDeque::new(),
        };
        for (id, terms) in (1..).zip(logs) {
            let entries =
                terms.iter().zip(1..).map(|(&term, index)| Entry { term, index, payload: Payload::Noop }).collect();
            c.disk.insert(id, Restored { term, snapshot: None, entries });
            c.start(id);
        }
        c
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: NodeId) -> &RaftNode {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).expect("node")
    }

    /// (Re)starts a node from its disk.
    pub fn start(&mut self, id: NodeId) {
        let node = RaftNode::restore((self.config)(id), self.disk[&id].clone());
        self.nodes.insert(id, node);
        self.kv.insert(id, KvStore::new());
        self.down.remove(&id);
    }

    pub fn crash(&mut self, id: NodeId) {
        self.down.insert(id);
    }

    /// What the coord does: log-state requests for `term` to every live node,
    /// then the designation of `leader`.
    pub fn designate(&mut self, leader: NodeId, term: Term) {
        let ids: Vec<NodeId> = self.ids().into_iter().filter(|id| !self.down.contains(id)).collect();
        for &id in &ids {
            self.node_mut(id).log_state_request(term);
        }
        self.run();
        let members = self.ids();
        self.node_mut(leader).become_leader(term, &members);
        self.run();
    }

    pub fn propose(&mut self, at: NodeId, client: &str, op_id: u64, op: Op) -> Option<u64> {
        let cmd = Command { client_id: client.into(), session: 1, op_id, first_unacked: op_id, op };
        self.node_mut(at).propose(cmd).ok()
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            if !self.down.contains(&id) {
                self.node_mut(id).tick();
            }
        }
        self.run();
    }

    /// Handles every Ready and delivers every message until quiet.
    pub fn run(&mut self) {
        loop {
            let mut progressed = false;
            for id in self.ids() {
                if self.down.contains(&id) || !self.nodes[&id].has_ready() {
                    continue;
                }
                progressed = true;
                self.handle_ready(id);
            }
            if let Some((from, to, mut msg)) = self.queue.pop_front() {
                progressed = true;
                let keep = self.filter.as_mut().is_none_or(|f| f(from, to, &mut msg));
                if keep && !self.down.contains(&to) && !self.down.contains(&from) {
                    if matches!(msg, Message::AppendEntries { .. }) {
                        *self.appends_delivered.entry(to).or_default() += 1;
                    }
                    self.node_mut(to).step(msg);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn handle_ready(&mut self, id: NodeId) {
        let rd = self.nodes.get_mut(&id).expect("node").ready();
        let disk = self.disk.get_mut(&id).expect("disk");
        if let Some(s) = &rd.snapshot {
            disk.snapshot = Some(s.clone());
            disk.entries.clear();
            *self.kv.get_mut(&id).expect("kv") = KvStore::restore(s.data.bytes().expect("bytes")).expect("snapshot");
        }
        if let Some(t) = rd.term {
            disk.term = t;
        }
        if let Some(first) = rd.entries.first() {
            disk.entries.retain(|e| e.index < first.index);
            disk.entries.extend(rd.entries.iter().cloned());
        }
        if let Some(marker) = rd.persisted_marker {
            self.nodes.get_mut(&id).expect("node").on_persisted(marker);
        }
        for out in rd.messages.into_iter().chain(rd.persisted_messages) {
            match out.to {
                Dest::Node(to) => self.queue.push_back((id, to, out.msg)),
                Dest::Coord => self.to_coord.push(out.msg),
            }
        }
        let kv = self.kv.get_mut(&id).expect("kv");
        for e in &rd.committed_entries {
            if let Some(outcome) = kv.apply(e) {
                self.outcomes.entry(id).or_default().insert(e.index, outcome);
            }
        }
        self.reads_served.extend(rd.reads.into_iter().map(|r| (id, r)));
        self.reads_failed.extend(rd.failed_reads.into_iter().map(|(r, _)| (id, r)));
    }

    /// `(term)` of every entry of a node's log, in order.
    pub fn terms(&self, id: NodeId) -> Vec<Term> {
        self.node(id).log().iter().map(|e| e.term).collect()
    }
}
