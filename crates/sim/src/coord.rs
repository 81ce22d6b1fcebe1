//! A model of the coord's protocol: failure detection by ping, and leader
//! selection exactly as the brief fixes it (term + 1, log states from a
//! majority of the whole cluster, the most up-to-date wins, ties to the
//! lowest id). The real coord (crates/coord) implements the same steps.

use std::collections::{BTreeMap, BTreeSet};

use kvraft_core::{LogState, Message, NodeId, Term};

use crate::net::{Event, Msg, Net, Proc};

pub const COORD_TICK_MS: u64 = 10;
/// The leader is failed after this long without a pong.
const FAIL_AFTER_MS: u64 = 80;
/// A selection with no leader by then starts over with a new term.
const SELECTION_TIMEOUT_MS: u64 = 150;

enum Phase {
    /// Waiting for every server's first answer (the join), then server 1 leads term 1.
    Joining,
    Stable,
    /// Collecting log states for `term`.
    Selecting {
        term: Term,
        started: u64,
        answers: BTreeMap<NodeId, LogState>,
        chosen: Option<NodeId>,
    },
}

pub struct CoordModel {
    n: u64,
    /// The highest term used or seen; a real coord persists it before use.
    term: Term,
    leader: Option<NodeId>,
    phase: Phase,
    last_pong: BTreeMap<NodeId, u64>,
    joined: BTreeSet<NodeId>,
    ping_seq: u64,
    pub selections: u64,
    pub failed_selections: u64,
}

impl CoordModel {
    pub fn new(n: u64) -> Self {
        CoordModel {
            n,
            term: 0,
            leader: None,
            phase: Phase::Joining,
            last_pong: BTreeMap::new(),
            joined: BTreeSet::new(),
            ping_seq: 0,
            selections: 0,
            failed_selections: 0,
        }
    }

    fn members(&self) -> Vec<NodeId> {
        (1..=self.n).collect()
    }

    pub fn on_tick(&mut self, net: &mut Net) {
        let now = net.now;
        self.ping_seq += 1;
        for id in self.members() {
            net.send(Proc::Coord, Proc::Server(id), Msg::Ping { seq: self.ping_seq });
        }
        match &mut self.phase {
            Phase::Joining => {
                for id in self.members() {
                    net.send(Proc::Coord, Proc::Server(id), Msg::LogStateRequest { term: 1 });
                }
            }
            Phase::Stable => {
                let leader = self.leader.expect("a stable phase has a leader");
                let heard = self.last_pong.get(&leader).copied().unwrap_or(0);
                if now.saturating_sub(heard) > FAIL_AFTER_MS {
                    self.start_selection(net);
                }
            }
            Phase::Selecting { started, .. } => {
                if now - *started > SELECTION_TIMEOUT_MS {
                    self.failed_selections += 1;
                    self.start_selection(net);
                }
            }
        }
        net.schedule(now + COORD_TICK_MS, Event::CoordTick);
    }

    fn start_selection(&mut self, net: &mut Net) {
        self.term += 1;
        self.selections += 1;
        self.leader = None;
        let term = self.term;
        self.phase = Phase::Selecting { term, started: net.now, answers: BTreeMap::new(), chosen: None };
        for id in self.members() {
            net.send(Proc::Coord, Proc::Server(id), Msg::LogStateRequest { term });
        }
    }

    pub fn on_message(&mut self, from: Proc, msg: Msg, net: &mut Net) {
        let Proc::Server(id) = from else {
            if let (Proc::Client(_), Msg::LeaderQuery) = (from, &msg) {
                net.send(Proc::Coord, from, Msg::LeaderAnswer { leader: self.leader });
            }
            return;
        };
        match msg {
            Msg::Pong { .. } => {
                self.last_pong.insert(id, net.now);
            }
            Msg::Raft(Message::LogState(ls)) => self.on_log_state(ls, net),
            Msg::Raft(Message::BecomeLeaderResponse { term, from, accepted, current_term }) => {
                self.term = self.term.max(current_term);
                match &self.phase {
                    Phase::Selecting { term: t, chosen: Some(c), .. } if *t == term && *c == from => {
                        if accepted {
                            self.leader = Some(from);
                            self.last_pong.insert(from, net.now);
                            self.phase = Phase::Stable;
                        } else {
                            self.start_selection(net);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn on_log_state(&mut self, ls: LogState, net: &mut Net) {
        self.term = self.term.max(ls.current_term);
        let quorum = (self.n / 2 + 1) as usize;
        let n = self.n as usize;
        let members = self.members();
        match &mut self.phase {
            // Joined: it holds term 1 (granted now, or earlier, before a
            // restart: a term is granted once).
            Phase::Joining if ls.term == 1 && (ls.granted || ls.current_term == 1) => {
                self.joined.insert(ls.from);
                if self.joined.len() == n {
                    self.term = self.term.max(1);
                    self.phase =
                        Phase::Selecting { term: 1, started: net.now, answers: BTreeMap::new(), chosen: Some(1) };
                    net.send(Proc::Coord, Proc::Server(1), Msg::BecomeLeader { term: 1, members });
                }
            }
            Phase::Selecting { term, answers, chosen, .. } if *term == ls.term && chosen.is_none() => {
                if !ls.granted {
                    // The server holds this term or a later one (the real
                    // coord's rule, selection.rs): designating anyone in it
                    // could make a second leader of a term that has one.
                    // Start above what it holds.
                    self.start_selection(net);
                    return;
                }
                answers.insert(ls.from, ls);
                if answers.len() >= quorum {
                    // Most up-to-date log; ties go to the lowest id.
                    let best = answers
                        .values()
                        .max_by(|a, b| a.up_to_date_key().cmp(&b.up_to_date_key()).then(b.from.cmp(&a.from)))
                        .expect("a quorum is not empty")
                        .from;
                    *chosen = Some(best);
                    let term = *term;
                    net.send(Proc::Coord, Proc::Server(best), Msg::BecomeLeader { term, members });
                }
            }
            _ => {}
        }
    }
}
