//! The safety properties checked after every step of every server.

use std::collections::BTreeMap;

use kvraft_core::{Entry, Index, NodeId, Payload, RaftNode, Role, Term};

/// What the checker has seen so far, across all servers and restarts.
#[derive(Default)]
pub struct Invariants {
    /// Who led each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Whom the coord designated for each term, across its restarts.
    designated: BTreeMap<Term, NodeId>,
    /// `(index, term)` → (payload, term of the previous entry) as first seen
    /// in any log. Unique payload and previous term per `(index, term)`
    /// gives the Log Matching property by induction on the index.
    entries: BTreeMap<(Index, Term), (Payload, Option<Term>)>,
    /// Every entry any server has counted as committed, with the term in
    /// which that first happened (the committing leader's term).
    committed: BTreeMap<Index, (Entry, Term)>,
    /// Every entry any server has applied.
    applied: BTreeMap<Index, Entry>,
    /// Per server: highest term seen in this incarnation, and durably.
    terms: BTreeMap<NodeId, (Term, Term)>,
    /// Per server: how far its commit index has been checked.
    commit_seen: BTreeMap<NodeId, Index>,
    /// Per server: what its disk holds, the snapshot's index and each
    /// entry's term by index.
    durable: BTreeMap<NodeId, (Index, BTreeMap<Index, Term>)>,
    /// Servers in the cluster: a leader may count an entry committed only
    /// once a majority of all of them hold it durably, whoever the coord
    /// knows of.
    cluster_size: usize,
    pub violations: Vec<String>,
}

impl Invariants {
    pub fn new(cluster_size: usize) -> Self {
        Invariants { cluster_size, ..Invariants::default() }
    }

    fn fail(&mut self, now: u64, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("t={now}ms: {what}"));
        }
    }

    /// Server `id`'s disk now holds a snapshot up to `snapshot_index` and
    /// these `(index, term)` entries.
    pub fn on_durable_log(&mut self, id: NodeId, snapshot_index: Index, entries: impl Iterator<Item = (Index, Term)>) {
        self.durable.insert(id, (snapshot_index, entries.collect()));
    }

    /// How many servers hold entry `(index, term)` on their disks.
    fn durable_copies(&self, index: Index, term: Term) -> usize {
        self.durable.values().filter(|(snap, es)| *snap >= index || es.get(&index) == Some(&term)).count()
    }

    /// Checks new log entries as a Ready hands them out (`node` already holds them).
    pub fn on_new_entries(&mut self, now: u64, node: &RaftNode, entries: &[Entry]) {
        for e in entries {
            let prev = node.log().term(e.index - 1);
            match self.entries.get(&(e.index, e.term)) {
                None => {
                    self.entries.insert((e.index, e.term), (e.payload.clone(), prev));
                }
                Some((payload, seen_prev)) => {
                    if *payload != e.payload {
                        let what = format!(
                            "log matching: server {} has a different entry at index {} term {}",
                            node.id(),
                            e.index,
                            e.term
                        );
                        self.fail(now, what);
                    } else if let (Some(a), Some(b)) = (prev, *seen_prev)
                        && a != b
                    {
                        let what = format!(
                            "log matching: server {} has entry ({}, {}) after term {a}, another after term {b}",
                            node.id(),
                            e.index,
                            e.term
                        );
                        self.fail(now, what);
                    }
                }
            }
            // A lagging server may still append stale entries of an old
            // term; but never over what it has itself counted as committed.
            if e.index <= node.commit_index()
                && let Some((c, _)) = self.committed.get(&e.index)
                && c.term != e.term
            {
                let what = format!(
                    "committed entry lost: server {} overwrote committed index {} (term {}) with term {}",
                    node.id(),
                    e.index,
                    c.term,
                    e.term
                );
                self.fail(now, what);
            }
        }
    }

    /// Checks a node after it handled an input: one leader per term, terms
    /// never going back, commit indexes agreeing, leader completeness.
    pub fn after_step(&mut self, now: u64, node: &RaftNode) {
        let id = node.id();
        let (seen, durable) = self.terms.get(&id).copied().unwrap_or_default();
        if node.term() < seen.max(durable) {
            let what = format!("term went back on server {id}: {} after {}", node.term(), seen.max(durable));
            self.fail(now, what);
        }
        self.terms.insert(id, (node.term(), durable));

        if node.role() == Role::Leader {
            match self.leaders.get(&node.term()) {
                Some(&other) if other != id => {
                    let what = format!("two leaders in term {}: {other} and {id}", node.term());
                    self.fail(now, what);
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(node.term(), id);
                    self.check_leader_completeness(now, node);
                }
            }
        }

        let from = self.commit_seen.get(&id).copied().unwrap_or(0).max(node.snapshot_meta().index);
        for i in from + 1..=node.commit_index() {
            let Some(e) = node.log().entry(i) else {
                continue;
            };
            match self.committed.get(&i) {
                None => {
                    self.committed.insert(i, (e.clone(), node.term()));
                    let copies = self.durable_copies(i, e.term);
                    if node.role() == Role::Leader && copies < self.cluster_size / 2 + 1 {
                        let what = format!(
                            "leader {id} committed index {i} (term {}) held durably by {copies} of {} servers",
                            e.term, self.cluster_size
                        );
                        self.fail(now, what);
                    }
                }
                Some((c, _)) if c != e => {
                    let what = format!("servers committed different entries at index {i}: {c:?} vs {e:?} on {id}");
                    self.fail(now, what);
                }
                Some(_) => {}
            }
        }
        self.commit_seen.insert(id, node.commit_index());
    }

    /// A new leader's log holds every entry committed in an earlier term.
    /// (A late designation of an old term may lack what later terms
    /// committed: such a leader cannot commit anything.)
    fn check_leader_completeness(&mut self, now: u64, node: &RaftNode) {
        let snap = node.snapshot_meta().index;
        let missing: Vec<Index> = self
            .committed
            .range(snap + 1..)
            .filter(|(i, (c, in_term))| *in_term < node.term() && node.log().term(**i) != Some(c.term))
            .map(|(i, _)| *i)
            .collect();
        if let Some(i) = missing.first() {
            let what = format!(
                "leader completeness: leader {} of term {} lacks committed index {i} ({} missing)",
                node.id(),
                node.term(),
                missing.len()
            );
            self.fail(now, what);
        }
    }

    /// Checks entries a server applies: one command per index, everywhere.
    pub fn on_apply(&mut self, now: u64, id: NodeId, e: &Entry) {
        match self.applied.get(&e.index) {
            None => {
                self.applied.insert(e.index, e.clone());
            }
            Some(a) if a != e => {
                let what = format!("servers applied different entries at index {}: {a:?} vs {e:?} on {id}", e.index);
                self.fail(now, what);
            }
            Some(_) => {}
        }
    }

    /// The coord designated `id` for `term`. A term is granted once by each
    /// server and a designation needs a majority of grants, so even a coord
    /// that lost its state and reuses a term number designates at most one
    /// server per term.
    pub fn on_designation(&mut self, now: u64, term: Term, id: NodeId) {
        match self.designated.get(&term) {
            Some(&other) if other != id => {
                self.fail(now, format!("the coord designated two servers for term {term}: {other} and {id}"));
            }
            Some(_) => {}
            None => {
                self.designated.insert(term, id);
            }
        }
    }

    /// A server made `term` durable.
    pub fn on_durable_term(&mut self, now: u64, id: NodeId, term: Term) {
        let (seen, durable) = self.terms.get(&id).copied().unwrap_or_default();
        if term < durable {
            self.fail(now, format!("durable term went back on server {id}: {term} after {durable}"));
        }
        self.terms.insert(id, (seen, durable.max(term)));
    }

    /// A server restarted: its volatile term is forgotten, its durable one stays.
    pub fn on_restart(&mut self, id: NodeId) {
        if let Some((_, durable)) = self.terms.get(&id).copied() {
            self.terms.insert(id, (0, durable));
        }
        self.commit_seen.remove(&id);
    }

    /// The highest index known committed.
    pub fn max_committed(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }
}
