//! A model of the coord's protocol: joins, failure detection by ping, and
//! leader selection exactly as the brief fixes it (term + 1, log states from
//! a majority of the whole cluster, the most up-to-date wins, ties to the
//! lowest id). The real coord (crates/coord) implements the same steps.
//!
//! The coord's process can crash and restart, with its state file or
//! without it (docs/protocol.md, "Leader selection"). What the real coord
//! persists before it acts ([`Persisted`]: the term, the members with the
//! incarnation each joined in, whether the join is complete) survives a
//! restart that keeps the file; everything else is volatile. A restarted
//! coord asks every server who leads (rediscovery) before it selects; one
//! that lost its file waits for the servers to join again (they find out
//! by polling `Known`, see `server.rs`), learns the terms they hold from
//! their joins, and then rediscovers if any was above 0: once all N have
//! joined, or a majority has and [`REJOIN_GRACE_MS`] has passed. A server
//! reporting a term above the coord's (in a join or a `Known`) fences the
//! leader the coord knows: it selects again.

use std::collections::{BTreeMap, BTreeSet};

use kvraft_core::{LogState, Message, NodeId, Term};
use rand::Rng;

use crate::invariants::Invariants;
use crate::net::{Event, Msg, Net, Proc};

pub const COORD_TICK_MS: u64 = 10;
/// A server is failed after this long without a pong.
const FAIL_AFTER_MS: u64 = 80;
/// A selection with no leader by then starts over with a new term.
const SELECTION_TIMEOUT_MS: u64 = 150;
/// How long a restarted coord waits for the servers' status answers (the
/// real one asks them one by one, each call with a timeout).
const REDISCOVERY_TIMEOUT_MS: u64 = 100;
/// As the real coord's `RejoinGraceMs` (3 s by default against a 1-s `Known` poll),
/// scaled to the model's 200-ms poll.
const REJOIN_GRACE_MS: u64 = 600;

/// What the real coord's state file holds; the model changes it only where
/// the real coord saves it before acting (or answering).
#[derive(Clone, Debug, Default)]
struct Persisted {
    /// The highest term used or seen.
    term: Term,
    /// The members, each with the incarnation it last joined in.
    members: BTreeMap<NodeId, u64>,
    join_complete: bool,
}

enum Phase {
    /// The coord's process is down.
    Down,
    /// Waiting for every server to join.
    Joining,
    /// Join complete, no leader, no selection under way (only for an
    /// instant: [`CoordModel::maybe_select`] starts one).
    Idle,
    /// After a restart: asking every member its role and term. `saw`: those
    /// that joined in a new incarnation or failed meanwhile.
    Rediscovering {
        started: u64,
        answers: BTreeMap<NodeId, (bool, Term)>,
        saw: BTreeSet<NodeId>,
    },
    Stable,
    /// Collecting log states for `term`. The first selection (term 1) waits
    /// for every server's answer, until its timeout, so that with equal
    /// empty logs server 1 leads term 1.
    Selecting {
        term: Term,
        started: u64,
        answers: BTreeMap<NodeId, LogState>,
        chosen: Option<NodeId>,
        wait_all: bool,
    },
}

pub struct CoordModel {
    n: u64,
    state: Persisted,
    /// The coord process's number, bumped at each restart: servers tag their
    /// answers with the process that asked, and another process's are
    /// dropped (the real answers travel on the asking process's connection).
    epoch: u64,
    leader: Option<NodeId>,
    phase: Phase,
    /// Servers that joined in a new incarnation while the current selection
    /// ran (the real coord's `restarted_while_selecting`).
    restarted_while_selecting: BTreeSet<NodeId>,
    /// When a coord that lost its state goes on with the servers that
    /// joined again (a majority), if the rest have not joined by then.
    rejoin_grace_until: Option<u64>,
    last_pong: BTreeMap<NodeId, u64>,
    ping_seq: u64,
    pub selections: u64,
    pub failed_selections: u64,
    /// Restarts of the coord's process, and of those how many lost the state file.
    pub restarts: u64,
    pub state_losses: u64,
    pub rediscoveries: u64,
    /// Rediscoveries that kept a live leader (no failover).
    pub kept_leaders: u64,
    /// Joins completed without every server (after the rejoin grace).
    pub partial_rejoins: u64,
    /// Leaders given up because a server reported a later term.
    pub fenced_failovers: u64,
    /// Leaders given up because they said they lost their quorum.
    pub lost_quorum_failovers: u64,
    /// As the real coord's: a leader that said it lost its quorum, asked in
    /// the selections that follow but not chosen, until one names a leader
    /// or times out.
    passed_over: Option<NodeId>,
}

impl CoordModel {
    pub fn new(n: u64) -> Self {
        CoordModel {
            n,
            state: Persisted::default(),
            epoch: 1,
            leader: None,
            phase: Phase::Joining,
            rejoin_grace_until: None,
            restarted_while_selecting: BTreeSet::new(),
            last_pong: BTreeMap::new(),
            ping_seq: 0,
            selections: 0,
            failed_selections: 0,
            restarts: 0,
            state_losses: 0,
            rediscoveries: 0,
            kept_leaders: 0,
            partial_rejoins: 0,
            fenced_failovers: 0,
            lost_quorum_failovers: 0,
            passed_over: None,
        }
    }

    fn members(&self) -> Vec<NodeId> {
        self.state.members.keys().copied().collect()
    }

    /// What the coord is doing, for a failure report.
    pub fn phase_name(&self) -> String {
        let phase = match &self.phase {
            Phase::Down => "down".to_owned(),
            Phase::Joining => format!("joining ({} of {})", self.state.members.len(), self.n),
            Phase::Idle => "idle".to_owned(),
            Phase::Rediscovering { .. } => "rediscovering".to_owned(),
            Phase::Stable => "stable".to_owned(),
            Phase::Selecting { term, answers, chosen, .. } => {
                format!("selecting term {term} ({} answers, chosen {chosen:?})", answers.len())
            }
        };
        format!("{phase}, term {}, join complete {}", self.state.term, self.state.join_complete)
    }

    /// The leader the coord names to clients.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn is_up(&self) -> bool {
        !matches!(self.phase, Phase::Down)
    }

    /// The coord's process dies: everything volatile is gone.
    pub fn crash(&mut self) {
        self.phase = Phase::Down;
        self.leader = None;
        self.rejoin_grace_until = None;
        self.last_pong.clear();
        self.passed_over = None;
    }

    /// Just before a crash that loses the state file: a selection the
    /// dying process ran for a term above its own that reached only a
    /// minority (refused or cut short, so it designated nobody). The
    /// servers it reached hold a term the restarted coord cannot know of
    /// until they tell it. Returns that term and the process's epoch.
    pub fn lost_selection(&self, net: &mut Net) -> (Term, u64) {
        (self.state.term + net.rng.random_range(2..=4), self.epoch)
    }

    /// The coord's process starts again, from its state file or, with
    /// `lose_state`, from nothing.
    pub fn restart(&mut self, lose_state: bool, net: &mut Net) {
        debug_assert!(!self.is_up());
        self.epoch += 1;
        self.restarts += 1;
        if lose_state {
            self.state = Persisted::default();
            self.state_losses += 1;
        }
        self.leader = None;
        // The failure detector watches every member again, alive at first.
        for id in self.members() {
            self.last_pong.insert(id, net.now);
        }
        self.phase = Phase::Joining;
        if self.state.join_complete {
            self.rediscover(net);
        } else if self.state.term > 0 && self.state.members.len() as u64 > self.n / 2 {
            // Restarted while a cluster that ran before was joining again:
            // those that joined will not join again, so the grace starts now.
            self.rejoin_grace_until = Some(net.now + REJOIN_GRACE_MS);
        }
    }

    pub fn on_tick(&mut self, net: &mut Net, inv: &mut Invariants) {
        let now = net.now;
        net.schedule(now + COORD_TICK_MS, Event::CoordTick);
        if !self.is_up() {
            return;
        }
        self.ping_seq += 1;
        for id in self.members() {
            net.send(Proc::Coord, Proc::Server(id), Msg::Ping { seq: self.ping_seq });
        }
        let quorum = (self.n / 2 + 1) as usize;
        let failed = self.failed(now);
        match &mut self.phase {
            Phase::Joining => {
                if self.rejoin_grace_until.is_some_and(|t| now >= t) {
                    self.rejoin_grace_over(net);
                }
            }
            Phase::Down | Phase::Idle => {}
            Phase::Rediscovering { started, saw, .. } => {
                saw.extend(failed);
                if now - *started > REDISCOVERY_TIMEOUT_MS {
                    self.finish_rediscovery(net);
                }
            }
            Phase::Stable => {
                let leader = self.leader.expect("a stable phase has a leader");
                if failed.contains(&leader) {
                    self.leader = None;
                    self.phase = Phase::Idle;
                    self.maybe_select(net);
                }
            }
            Phase::Selecting { term, started, answers, chosen, wait_all } => {
                if now - *started > SELECTION_TIMEOUT_MS {
                    let passed_over = self.passed_over;
                    let eligible = answers.keys().filter(|&&a| Some(a) != passed_over).count();
                    if *wait_all && chosen.is_none() && eligible >= quorum {
                        // Not everyone answered the first selection: a
                        // majority did, which is enough.
                        let term = *term;
                        *started = now;
                        self.designate(term, net, inv);
                    } else {
                        self.failed_selections += 1;
                        if chosen.is_none() {
                            // No quorum without the one passed over (the
                            // real coord's QuorumImpossible); a designee
                            // that did not answer is a refusal there.
                            self.passed_over = None;
                        }
                        self.phase = Phase::Idle;
                        self.maybe_select(net);
                    }
                }
            }
        }
    }

    /// Members the failure detector has given up at `now`.
    fn failed(&self, now: u64) -> Vec<NodeId> {
        self.last_pong.iter().filter(|&(_, &t)| now.saturating_sub(t) > FAIL_AFTER_MS).map(|(&id, _)| id).collect()
    }

    /// Starts a selection if one is due: the join is complete, there is no
    /// leader, and none (nor a rediscovery) is under way. As in the real
    /// coord, only members the detector believes alive are asked.
    fn maybe_select(&mut self, net: &mut Net) {
        if !self.state.join_complete || self.leader.is_some() || !matches!(self.phase, Phase::Idle) {
            return;
        }
        self.state.term += 1;
        self.selections += 1;
        self.restarted_while_selecting.clear();
        let term = self.state.term;
        self.phase =
            Phase::Selecting { term, started: net.now, answers: BTreeMap::new(), chosen: None, wait_all: term == 1 };
        let failed = self.failed(net.now);
        for id in self.members().into_iter().filter(|id| !failed.contains(id)) {
            net.send(Proc::Coord, Proc::Server(id), Msg::LogStateRequest { term, epoch: self.epoch });
        }
    }

    /// Selecting again, above every term heard of.
    fn superseded(&mut self, net: &mut Net) {
        self.phase = Phase::Idle;
        self.maybe_select(net);
    }

    fn rediscover(&mut self, net: &mut Net) {
        self.rediscoveries += 1;
        self.phase = Phase::Rediscovering { started: net.now, answers: BTreeMap::new(), saw: BTreeSet::new() };
        for id in self.members() {
            net.send(Proc::Coord, Proc::Server(id), Msg::StatusRequest { epoch: self.epoch });
        }
    }

    /// As the real coord's `rediscover` and `on_rediscovered`: the leader of
    /// the highest term any answer reports is kept, unless it rejoined in a
    /// new incarnation or failed meanwhile, or leads a term below the
    /// coord's; otherwise a selection.
    fn finish_rediscovery(&mut self, net: &mut Net) {
        let Phase::Rediscovering { answers, saw, .. } = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        let highest = answers.values().map(|&(_, t)| t).max().unwrap_or(0);
        let mut found: Option<(NodeId, Term)> = None;
        for (&id, &(leads, term)) in &answers {
            if leads && found.is_none_or(|(_, t)| term > t) {
                found = Some((id, term));
            }
        }
        match found.filter(|&(_, t)| t >= highest) {
            Some((id, _)) if saw.contains(&id) => self.maybe_select(net),
            Some((id, term)) if term >= self.state.term => {
                self.state.term = term;
                self.leader = Some(id);
                self.last_pong.insert(id, net.now);
                self.phase = Phase::Stable;
                self.kept_leaders += 1;
            }
            _ => self.maybe_select(net),
        }
    }

    pub fn on_message(&mut self, from: Proc, msg: Msg, net: &mut Net, inv: &mut Invariants) {
        if !self.is_up() {
            return;
        }
        let Proc::Server(id) = from else {
            if let (Proc::Client(_), Msg::LeaderQuery) = (from, &msg) {
                net.send(Proc::Coord, from, Msg::LeaderAnswer { leader: self.leader });
            }
            return;
        };
        match msg {
            // The failure detector watches members only.
            Msg::Pong { .. } if self.state.members.contains_key(&id) => {
                self.last_pong.insert(id, net.now);
            }
            Msg::Join { incarnation, current_term, rejoin } => self.on_join(id, incarnation, current_term, rejoin, net),
            Msg::Known { incarnation, current_term, lost_quorum } => {
                let known = self.state.members.get(&id) == Some(&incarnation);
                if known && current_term > self.state.term {
                    self.state.term = current_term;
                    self.fenced(net);
                    self.maybe_arm_rejoin_grace(net);
                }
                let failed = self.failed(net.now);
                let others = self.members().iter().filter(|&&s| s != id && !failed.contains(&s)).count() as u64;
                if known
                    && lost_quorum
                    && self.leader == Some(id)
                    && current_term == self.state.term
                    && others > self.n / 2
                {
                    // As the real coord's `lost_quorum`: only if the others
                    // can make a majority without it.
                    self.leader = None;
                    self.passed_over = Some(id);
                    self.lost_quorum_failovers += 1;
                    self.phase = Phase::Idle;
                    self.maybe_select(net);
                }
                net.send(Proc::Coord, from, Msg::KnownReply { incarnation, known });
            }
            Msg::Status { epoch, leader, term } if epoch == self.epoch => {
                if let Phase::Rediscovering { answers, .. } = &mut self.phase {
                    answers.insert(id, (leader, term));
                    if answers.len() as u64 == self.n {
                        self.finish_rediscovery(net);
                    }
                }
            }
            Msg::CoordReply { epoch, msg } if epoch == self.epoch => match msg {
                Message::LogState(ls) => self.on_log_state(ls, net, inv),
                // Only an answer of the selection under way counts, as in
                // the real coord, whose calls end with their selection: a
                // late one must not raise the term past a leader it then
                // would never fence.
                Message::BecomeLeaderResponse { term, from, accepted, current_term } => {
                    match &self.phase {
                        Phase::Selecting { term: t, chosen: Some(c), .. } if *t == term && *c == from => {
                            // A term overtaken during its selection (a
                            // server reported a later one): its leader is
                            // fenced already.
                            // Nor does one that restarted since (it joined
                            // again as a follower before this answer).
                            let restarted = self.restarted_while_selecting.contains(&from);
                            if accepted && term >= self.state.term && !restarted {
                                // The failure detector goes on as it was,
                                // as the real coord's does: a designee it
                                // has given up meanwhile is failed over at
                                // the next tick (the real coord does so at
                                // once, `on_selected`).
                                self.leader = Some(from);
                                self.passed_over = None;
                                self.phase = Phase::Stable;
                            } else {
                                self.state.term = self.state.term.max(current_term);
                                self.superseded(net);
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// As the real coord's `join`: persist the member, its incarnation and
    /// the term it reports (raising the coord's), then answer.
    fn on_join(&mut self, id: NodeId, incarnation: u64, current_term: Term, rejoin: bool, net: &mut Net) {
        if id == 0 || id > self.n {
            return;
        }
        let previous = self.state.members.insert(id, incarnation);
        let fenced = current_term > self.state.term && self.leader.is_some();
        self.state.term = self.state.term.max(current_term);
        let completes = !self.state.join_complete && self.state.members.len() as u64 == self.n;
        self.state.join_complete |= completes;
        net.send(Proc::Coord, Proc::Server(id), Msg::JoinReply { incarnation, accepted: true });
        self.last_pong.insert(id, net.now);
        // A join in a new incarnation is a restart of the server; a join
        // again in the same one, or a rejoin (the coord lost its state),
        // is not.
        let restarted = !rejoin && previous != Some(incarnation);
        if restarted && let Phase::Rediscovering { saw, .. } = &mut self.phase {
            saw.insert(id);
        }
        if restarted && matches!(self.phase, Phase::Selecting { .. }) {
            self.restarted_while_selecting.insert(id);
        }
        let restarted_leader = self.state.join_complete && !completes && self.leader == Some(id) && restarted;
        if restarted_leader {
            // It comes back as a follower: nobody leads.
            self.leader = None;
            self.phase = Phase::Idle;
        }
        if fenced && !restarted_leader && self.state.join_complete && !completes {
            self.fenced(net);
        }
        self.maybe_arm_rejoin_grace(net);
        if completes {
            self.rejoin_grace_until = None;
            self.phase = Phase::Idle;
            if self.state.term > 0 {
                // The servers ran before, under a coord that lost its state.
                self.rediscover(net);
            } else {
                self.maybe_select(net);
            }
        } else if restarted_leader {
            self.maybe_select(net);
        }
    }

    /// The grace is over: the join completes with the majority that joined
    /// again, and the coord asks them who leads (the real coord's
    /// `on_rejoin_grace_over`).
    fn rejoin_grace_over(&mut self, net: &mut Net) {
        self.rejoin_grace_until = None;
        if self.state.join_complete {
            return;
        }
        self.state.join_complete = true;
        self.partial_rejoins += 1;
        self.rediscover(net);
    }

    /// As the real coord's: a coord that lost its state, with a majority
    /// of a cluster that ran before joined again (a term above 0 heard, in
    /// a join or a `Known`), gives the rest the rejoin grace.
    fn maybe_arm_rejoin_grace(&mut self, net: &Net) {
        let quorum = self.n / 2 + 1;
        if !self.state.join_complete
            && self.state.term > 0
            && self.state.members.len() as u64 >= quorum
            && self.rejoin_grace_until.is_none()
        {
            self.rejoin_grace_until = Some(net.now + REJOIN_GRACE_MS);
        }
    }

    /// A server holds a term above the leader's: the leader is fenced.
    fn fenced(&mut self, net: &mut Net) {
        if self.leader.take().is_some() {
            self.fenced_failovers += 1;
            self.phase = Phase::Idle;
            self.maybe_select(net);
        }
    }

    fn on_log_state(&mut self, ls: LogState, net: &mut Net, inv: &mut Invariants) {
        let quorum = (self.n / 2 + 1) as usize;
        let n = self.n as usize;
        let Phase::Selecting { term, answers, chosen, wait_all, .. } = &mut self.phase else {
            return;
        };
        if *term != ls.term || chosen.is_some() {
            return;
        }
        if !ls.granted {
            // The server holds this term or a later one (the real coord's
            // rule, selection.rs): designating anyone in it could make a
            // second leader of a term that has one. Start above what it holds.
            self.state.term = self.state.term.max(ls.current_term);
            self.superseded(net);
            return;
        }
        answers.insert(ls.from, ls);
        let passed_over = self.passed_over;
        let eligible = answers.keys().filter(|&&a| Some(a) != passed_over).count();
        if eligible >= quorum && (answers.len() == n || !*wait_all) {
            let term = *term;
            self.designate(term, net, inv);
        }
    }

    /// Designates the most up-to-date answer of the selection for `term`;
    /// ties go to the lowest id.
    fn designate(&mut self, term: Term, net: &mut Net, inv: &mut Invariants) {
        // Every server of the cluster, joined or not: the leader counts
        // its quorum over all of them (the real coord's `all_members`).
        let members: Vec<NodeId> = (1..=self.n).collect();
        let Phase::Selecting { answers, chosen, .. } = &mut self.phase else {
            return;
        };
        // The one passed over is not chosen: its longer log, of entries it
        // could not commit, would win again.
        let passed_over = self.passed_over;
        let best = answers
            .values()
            .filter(|a| Some(a.from) != passed_over)
            .max_by(|a, b| a.up_to_date_key().cmp(&b.up_to_date_key()).then(b.from.cmp(&a.from)))
            .expect("a quorum is not empty")
            .from;
        *chosen = Some(best);
        inv.on_designation(net.now, term, best);
        net.send(Proc::Coord, Proc::Server(best), Msg::BecomeLeader { term, members, epoch: self.epoch });
    }
}
