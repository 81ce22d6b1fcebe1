//! The coord's one actor: membership, the failure detector's verdicts, and
//! leader selection, all decided in one place so they never race.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use kvraft_fcheck::{Event, Monitor};
use kvraft_proto as pb;
use kvraft_trace::{Trace, Tracer};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::controls::Controls;
use crate::selection::{self, Outcome};
use crate::state_file::{Member, Persisted, StateFile};

/// Everything the actor reacts to.
pub enum Input {
    /// A join's answer: accepted or refused for good, or a status the
    /// server retries on (the coord could not persist it).
    Join(pb::JoinRequest, oneshot::Sender<Result<pb::JoinReply, tonic::Status>>),
    /// Whether this server, in this incarnation, is a member.
    Known(pb::KnownRequest, oneshot::Sender<pb::KnownReply>),
    Fcheck(Event),
    Selected(Outcome),
    /// What the servers said about themselves after a coord restart.
    Rediscovered(Option<(u64, u64)>),
    /// The rejoin grace (`RejoinGraceMs`) has passed since a majority of
    /// a cluster that ran before joined this coord, which had lost its state.
    RejoinGraceOver,
    Retry,
    View(oneshot::Sender<pb::ClusterView>),
}

pub struct Coord {
    n: u64,
    file: StateFile,
    state: Persisted,
    alive: BTreeMap<u64, bool>,
    /// While the servers are asked who leads (after a coord restart, or
    /// once a cluster that ran before has joined a coord that lost its
    /// state): those that joined in a new incarnation or were declared
    /// failed meanwhile, whose answer may be out of date by the time it
    /// arrives.
    rediscovery_saw: Option<BTreeSet<u64>>,
    /// A coord that lost its state waits this long (`RejoinGraceMs`), once
    /// a majority of the servers have joined it again, for the rest before
    /// it goes on without them: a server down for good must not keep a
    /// cluster that still has its majority from ever having a leader again.
    rejoin_grace: Duration,
    /// The rejoin grace timer is running.
    rejoin_grace_armed: bool,
    leader: Option<u64>,
    selecting: bool,
    /// Servers that joined in a new incarnation (restarted) while the
    /// current selection ran: one of them designated leads no more.
    restarted_while_selecting: BTreeSet<u64>,
    quorum_impossible: bool,
    /// A leader that said it lost its quorum: asked in the selections that
    /// follow (so it adopts their term) but not chosen, until one names a
    /// leader or finds no quorum without it.
    passed_over: Option<u64>,
    monitor: Monitor,
    controls: Controls,
    leader_tx: watch::Sender<pb::LeaderInfo>,
    me: mpsc::UnboundedSender<Input>,
    tracer: Tracer,
    /// The coord's own trace: CoordStart, failures, selections.
    trace: Trace,
}

fn token(trace: &Trace) -> Vec<u8> {
    if trace.enabled() { trace.generate_token() } else { Vec::new() }
}

pub struct Parts {
    pub num_servers: u64,
    pub rejoin_grace: Duration,
    pub file: StateFile,
    pub state: Persisted,
    pub monitor: Monitor,
    pub controls: Controls,
    pub leader_tx: watch::Sender<pb::LeaderInfo>,
    pub me: mpsc::UnboundedSender<Input>,
    pub tracer: Tracer,
}

fn member_pb(m: &Member) -> pb::Member {
    pb::Member { id: m.id, peer_addr: m.peer_addr.clone(), client_addr: m.client_addr.clone() }
}

impl Coord {
    pub fn new(p: Parts) -> Self {
        Coord {
            n: p.num_servers,
            file: p.file,
            state: p.state,
            alive: BTreeMap::new(),
            rediscovery_saw: None,
            rejoin_grace: p.rejoin_grace,
            rejoin_grace_armed: false,
            leader: None,
            selecting: false,
            restarted_while_selecting: BTreeSet::new(),
            quorum_impossible: false,
            passed_over: None,
            monitor: p.monitor,
            controls: p.controls,
            leader_tx: p.leader_tx,
            me: p.me,
            trace: p.tracer.create_trace(),
            tracer: p.tracer,
        }
    }

    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        tracing::info!(num_servers = self.n, term = self.state.term, "CoordStart");
        self.trace.record("CoordStart", json!({"NumServers": self.n, "Term": self.state.term}));
        if !self.state.members.is_empty() {
            // A restart: watch everyone again and ask who leads.
            for m in self.state.members.clone() {
                self.track(&m);
            }
            if self.state.join_complete {
                self.rediscover();
            } else {
                // Restarted while a cluster that ran before was joining
                // it again (after an earlier loss of its state): the
                // servers that had joined know it knows them and will not
                // join again, so the grace starts now or never.
                self.maybe_arm_rejoin_grace();
            }
        }
        self.publish();
        while let Some(input) = inputs.recv().await {
            match input {
                Input::Join(req, reply) => {
                    let r = self.on_join(req);
                    let _ = reply.send(r);
                }
                Input::Known(req, reply) => {
                    let _ = reply.send(self.on_known(&req));
                }
                Input::Fcheck(ev) => self.on_fcheck(ev),
                Input::Selected(outcome) => self.on_selected(outcome),
                Input::Rediscovered(found) => self.on_rediscovered(found),
                Input::RejoinGraceOver => self.on_rejoin_grace_over(),
                Input::Retry => self.maybe_select(),
                Input::View(reply) => {
                    let _ = reply.send(self.view());
                }
            }
        }
    }

    /// Asks every server who leads before anything is selected: a leader
    /// that leads the highest term any server holds is kept.
    fn rediscover(&mut self) {
        self.selecting = true; // no selection until we know whether a leader exists
        self.rediscovery_saw = Some(BTreeSet::new());
        tokio::spawn(rediscover(self.state.members.clone(), self.controls.clone(), self.me.clone()));
    }

    /// A server's poll: whether the coord knows it in this incarnation,
    /// and then the membership (so a missed Configure call is made up for).
    fn on_known(&mut self, req: &pb::KnownRequest) -> pb::KnownReply {
        let known = self.knows(req.server_id, req.incarnation);
        if !known {
            return pb::KnownReply { known, members: Vec::new() };
        }
        self.heard_term(req.server_id, req.current_term);
        if req.lost_quorum && self.leader == Some(req.server_id) && req.current_term == self.state.term {
            self.lost_quorum(req.server_id);
        }
        pb::KnownReply { known, members: self.state.members.iter().map(member_pb).collect() }
    }

    /// The leader says it has heard from no majority for a while: it is cut
    /// off from its followers, though not from the coord, and commits
    /// nothing. A new leader is selected among the others (if they make a
    /// majority); the selection's term reaches the old leader too, which
    /// steps down.
    fn lost_quorum(&mut self, id: u64) {
        // Passing it over helps only if the others can make a majority
        // without it; else the cluster is down to it (or to less) anyway,
        // and it leads on until they are back.
        let others = self.alive.iter().filter(|&(&s, &a)| a && s != id).count() as u64;
        if others < self.n / 2 + 1 {
            return;
        }
        tracing::warn!(server = id, "LeaderFailOver: server {id} has heard from no majority of the servers");
        self.trace.record("LeaderFailOver", json!({"FailedLeaderId": id, "Reason": "lost its quorum"}));
        self.leader = None;
        self.passed_over = Some(id);
        self.publish();
        self.maybe_select();
    }

    /// A member, in the incarnation it last joined in (as persisted: a
    /// coord that lost its state knows nobody, and hears from each again).
    fn knows(&self, id: u64, incarnation: u64) -> bool {
        self.state.members.iter().any(|m| m.id == id) && self.state.incarnations.get(&id) == Some(&incarnation)
    }

    fn save(&self) -> bool {
        match self.file.save(&self.state) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("cannot persist the coord's state: {e}");
                false
            }
        }
    }

    fn track(&mut self, m: &Member) {
        self.controls.set(m.id, &m.control_addr);
        if let Ok(addr) = m.fcheck_addr.parse::<SocketAddr>() {
            self.monitor.watch(m.id, addr);
        }
        self.alive.insert(m.id, true);
    }

    fn refuse(&self, error: String) -> pb::JoinReply {
        tracing::warn!("join refused: {error}");
        pb::JoinReply { accepted: false, error, num_servers: self.n, trace: Vec::new() }
    }

    fn on_join(&mut self, req: pb::JoinRequest) -> Result<pb::JoinReply, tonic::Status> {
        let trace = self.tracer.continue_or_create(&req.trace);
        let mut reply = self.join(req, &trace)?;
        reply.trace = token(&trace);
        Ok(reply)
    }

    /// A refusal is for good (the server stops); an error, only for now.
    fn join(&mut self, req: pb::JoinRequest, trace: &Trace) -> Result<pb::JoinReply, tonic::Status> {
        let id = req.server_id;
        tracing::info!(server = id, "ServerJoiningRecvd");
        trace.record("ServerJoiningRecvd", json!({"ServerId": id}));
        if id == 0 || id > self.n {
            return Ok(
                self.refuse(format!("server id {id} is outside 1..={} (the cluster has {} servers)", self.n, self.n))
            );
        }
        if req.fcheck_addr.parse::<SocketAddr>().is_err() {
            return Ok(self.refuse(format!("server {id}: fcheck address {:?} is not host:port", req.fcheck_addr)));
        }
        if req.current_term > pb::MAX_TERM_OR_INDEX {
            return Ok(self.refuse(format!("server {id}: term {} is out of range", req.current_term)));
        }
        let before = self.state.clone();
        let m = Member {
            id,
            peer_addr: req.peer_addr,
            client_addr: req.client_addr,
            control_addr: req.control_addr,
            fcheck_addr: req.fcheck_addr,
        };
        let mut moved = false;
        match self.state.members.iter().position(|x| x.id == id) {
            Some(i) if self.state.members[i] == m => {} // a retried join, or a restart at the same addresses
            Some(i) => {
                let alive = self.alive.get(&id).copied().unwrap_or(false);
                if !self.state.join_complete || alive {
                    let at = self.state.members[i].peer_addr.clone();
                    return Ok(self.refuse(format!("duplicate server id {id}: already joined from {at}")));
                }
                // A failed server coming back at new addresses.
                self.state.members[i] = m.clone();
                moved = true;
            }
            None => self.state.members.push(m.clone()),
        }
        self.state.members.sort_by_key(|m| m.id);
        let previous = self.state.incarnations.insert(id, req.incarnation);
        let new_member = !before.members.iter().any(|x| x.id == id);
        // A coord that lost its state learns from the joins how far the
        // terms went: it never hands out a term a server already holds.
        let fenced = req.current_term > self.state.term && self.leader.is_some();
        self.state.term = self.state.term.max(req.current_term);
        // The last join of the cluster completes it, in the same write.
        let completes = !self.state.join_complete && self.state.members.len() as u64 == self.n;
        self.state.join_complete |= completes;
        if !self.save() {
            // Not the server's fault, nor for good: it asks again.
            self.state = before;
            return Err(tonic::Status::unavailable("the coord cannot persist its state; try again"));
        }
        self.track(&m);
        // A join in a new incarnation (or one the coord has not seen) is a
        // restart of the server. A retried join of the same process (its
        // reply lost) is not, nor is a rejoin: a server joined all along
        // asking again because this coord does not know it (it lost its
        // state, or its file predates incarnations).
        let restarted = !req.rejoin && (previous != Some(req.incarnation) || req.incarnation == 0);
        if restarted && let Some(saw) = &mut self.rediscovery_saw {
            saw.insert(id);
        }
        if restarted && self.selecting {
            self.restarted_while_selecting.insert(id);
        }
        // A join from the leader in a new incarnation means the leader
        // restarted faster than the failure detector noticed: the join is
        // how the coord learns it failed.
        let restarted_leader = self.state.join_complete && !completes && self.leader == Some(id) && restarted;
        if restarted_leader {
            tracing::warn!(server = id, "ServerFail (the leader restarted)");
            trace.record("ServerFail", json!({"ServerId": id, "Reason": "restarted"}));
            // It comes back as a follower, so nobody leads.
            self.leader = None;
        }
        // The joining server holds a term above the leader's: a selection
        // this coord lost (with its state) granted it, so the leader is
        // fenced and will step down at that server's first answer.
        let fenced_leader = fenced && !restarted_leader && self.leader.is_some();
        if fenced_leader {
            self.leader = None;
        }
        tracing::info!(server = id, "ServerJoinedRecvd");
        trace.record("ServerJoinedRecvd", json!({"ServerId": id}));
        if completes {
            tracing::info!("AllServersJoined");
            self.trace.record("AllServersJoined", json!({}));
            self.configure(None);
            self.publish(); // no longer "waiting for servers to join"
            if self.state.term > 0 {
                // The servers ran before, under a coord that lost its
                // state: one may still lead, and is kept if it leads the
                // highest term, as after a restart of the coord with it.
                tracing::info!(
                    term = self.state.term,
                    "the servers held terms up to {}; asking who leads",
                    self.state.term
                );
                self.rediscover();
            } else {
                self.maybe_select();
            }
        } else if self.state.join_complete {
            // A rejoin: it learns the membership and the leader, and follows.
            // Back at new addresses, or never seen by this coord (one that
            // was down when a coord that lost its state went on without
            // it), everyone learns them: the leader would otherwise go on
            // dialling the old ones, or none.
            self.configure(if moved || new_member { None } else { Some(id) });
            if restarted_leader {
                tracing::info!(server = id, "the leader restarted; selecting a new one");
                self.trace.record("LeaderFailOver", json!({"FailedLeaderId": id, "Reason": "restarted"}));
                self.publish();
                self.maybe_select();
            } else if fenced_leader {
                self.fail_over_fenced(id, req.current_term);
            }
        } else {
            self.maybe_arm_rejoin_grace();
            self.publish(); // "waiting for servers to join (k of N)", with k one more
        }
        Ok(pb::JoinReply { accepted: true, error: String::new(), num_servers: self.n, trace: Vec::new() })
    }

    /// A coord that lost its state and has heard again from a majority of
    /// a cluster that ran before (a join reported a term above 0) gives
    /// the rest the rejoin grace to join too.
    fn maybe_arm_rejoin_grace(&mut self) {
        let quorum = self.n / 2 + 1;
        if self.rejoin_grace_armed || self.state.term == 0 || (self.state.members.len() as u64) < quorum {
            return;
        }
        self.rejoin_grace_armed = true;
        self.send_in(self.rejoin_grace, Input::RejoinGraceOver);
    }

    /// The grace is over and some servers have not joined again: the join
    /// completes with those that did (a majority), and the coord asks them
    /// who leads. Safe without the others: every term a leader was ever
    /// designated for was granted by a majority first, so one of these
    /// holds the highest, and the coord never hands out a term at or below
    /// it; and a leader counts its quorum over all `NumServers`
    /// ([`Coord::all_members`]), not over those that joined. The others
    /// join later as servers coming back.
    fn on_rejoin_grace_over(&mut self) {
        self.rejoin_grace_armed = false;
        if self.state.join_complete {
            return; // everyone joined meanwhile
        }
        let before = self.state.clone();
        self.state.join_complete = true;
        if !self.save() {
            self.state = before;
            self.rejoin_grace_armed = true;
            self.send_in(Duration::from_millis(500), Input::RejoinGraceOver);
            return;
        }
        let joined: Vec<u64> = self.state.members.iter().map(|m| m.id).collect();
        let missing: Vec<u64> = (1..=self.n).filter(|id| !joined.contains(id)).collect();
        tracing::warn!(
            "{} of {} servers joined again within {:?}; going on without {missing:?} (they join when they are back); asking who leads",
            joined.len(),
            self.n,
            self.rejoin_grace
        );
        self.trace.record("RejoinCompleted", json!({"Joined": joined, "Missing": missing}));
        self.configure(None);
        self.publish();
        self.rediscover();
    }

    /// A member reports `term`: one above the coord's means a selection
    /// the coord lost (with its state) granted it, and the leader the
    /// coord knows, of an older term, is fenced.
    fn heard_term(&mut self, from: u64, term: u64) {
        if term <= self.state.term || term > pb::MAX_TERM_OR_INDEX {
            return;
        }
        let before = self.state.term;
        self.state.term = term;
        if !self.save() {
            self.state.term = before;
            return;
        }
        if self.leader.is_some() {
            self.leader = None;
            self.fail_over_fenced(from, term);
        }
        // A cluster that joined at term 0 has run before after all: a
        // majority of it need not wait for the rest for good.
        if !self.state.join_complete {
            self.maybe_arm_rejoin_grace();
        }
    }

    /// The leader was fenced by `term`, which server `from` holds: select
    /// above it.
    fn fail_over_fenced(&mut self, from: u64, term: u64) {
        tracing::warn!(server = from, term, "LeaderFailOver: server {from} holds term {term}, above the leader's");
        self.trace.record("LeaderFailOver", json!({"Reason": "fenced", "ServerId": from, "Term": term}));
        self.publish();
        self.maybe_select();
    }

    /// Every server of the cluster, as a new leader must count them: those
    /// that have not joined this coord (yet) have no addresses.
    fn all_members(&self) -> Vec<pb::Member> {
        (1..=self.n)
            .map(|id| match self.state.members.iter().find(|m| m.id == id) {
                Some(m) => member_pb(m),
                None => pb::Member { id, peer_addr: String::new(), client_addr: String::new() },
            })
            .collect()
    }

    /// Sends the membership (and the leader) to one server or all.
    fn configure(&self, only: Option<u64>) {
        let members: Vec<pb::Member> = self.state.members.iter().map(member_pb).collect();
        let notice = self.leader.map(|l| pb::ClusterNotice {
            term: self.state.term,
            leader_id: l,
            failed: vec![],
            trace: token(&self.trace),
        });
        for m in &self.state.members {
            if only.is_some_and(|o| o != m.id) {
                continue;
            }
            let Some(mut c) = self.controls.control(m.id) else {
                continue;
            };
            let req = self.controls.request(pb::Membership { members: members.clone(), trace: vec![] });
            let notice = notice.clone().map(|n| self.controls.request(n));
            tokio::spawn(async move {
                let _ = c.configure(req).await;
                if let Some(n) = notice {
                    let _ = c.notify(n).await;
                }
            });
        }
    }

    fn on_fcheck(&mut self, ev: Event) {
        match ev {
            Event::Failed { id } if self.monitor.health(id).is_some_and(|h| h.alive) => {
                // The verdict waited in the queue behind a join, which made
                // the monitor watch the server afresh (alive), or behind the
                // server's recovery: the monitor no longer stands by it, and
                // taken now it would never be undone (no `Recovered` follows).
                tracing::info!(server = id, "a failure verdict the detector has since withdrawn; ignored");
            }
            Event::Failed { id } => {
                self.alive.insert(id, false);
                if let Some(saw) = &mut self.rediscovery_saw {
                    saw.insert(id);
                }
                tracing::warn!(server = id, "ServerFail");
                self.trace.record("ServerFail", json!({"ServerId": id}));
                self.log_view();
                if self.leader == Some(id) {
                    tracing::info!(server = id, "LeaderFailOver");
                    self.trace.record("LeaderFailOver", json!({"FailedLeaderId": id}));
                    self.leader = None;
                    self.publish();
                    self.maybe_select();
                }
            }
            Event::Recovered { id } => {
                self.alive.insert(id, true);
                tracing::info!(server = id, "server is back");
                self.log_view();
                self.configure(Some(id));
                self.maybe_select();
            }
        }
    }

    fn log_view(&self) {
        let view: Vec<u64> = self.alive.iter().filter(|(_, a)| **a).map(|(id, _)| *id).collect();
        let shown: Vec<String> = view.iter().map(u64::to_string).collect();
        tracing::info!("NewClusterView: {}", shown.join(", "));
        self.trace.record("NewClusterView", json!({"View": view}));
    }

    /// Starts a selection if one is due: the join is complete, there is no
    /// leader, and none is under way.
    fn maybe_select(&mut self) {
        if !self.state.join_complete || self.leader.is_some() || self.selecting {
            return;
        }
        if self.state.term >= pb::MAX_TERM_OR_INDEX {
            // Only a server reporting an absurd term gets here; a term above
            // the bound would also keep the state file from loading again.
            tracing::error!(term = self.state.term, "no term left to select a leader for");
            return;
        }
        // Persist the term before using it: a restarted coord never reuses one.
        self.state.term += 1;
        if !self.save() {
            self.state.term -= 1;
            self.retry_in(Duration::from_millis(500));
            return;
        }
        self.selecting = true;
        self.restarted_while_selecting.clear();
        let term = self.state.term;
        tracing::info!(term, "ServerLogStateRequest");
        self.trace.record("ServerLogStateRequest", json!({"Term": term}));
        let members = self.all_members();
        // Only servers the failure detector believes alive are asked: one it
        // has failed is unreachable as far as the coord knows (and may be a
        // leader cut off from it).
        let asked: Vec<u64> = self.alive.iter().filter(|(_, a)| **a).map(|(id, _)| *id).collect();
        let (controls, me, trace) = (self.controls.clone(), self.me.clone(), self.trace.clone());
        let round = selection::Round {
            term,
            num_servers: self.n as usize,
            members,
            asked,
            // The first selection waits for every server, so that with
            // equal (empty) logs server 1 leads term 1, as in the prototype.
            wait_for_all: term == 1,
            passed_over: self.passed_over,
        };
        tokio::spawn(async move {
            let outcome = selection::run(round, controls, &trace).await;
            let _ = me.send(Input::Selected(outcome));
        });
    }

    fn retry_in(&self, d: Duration) {
        self.send_in(d, Input::Retry);
    }

    /// Hands `input` to this actor after `d`.
    fn send_in(&self, d: Duration, input: Input) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            let _ = me.send(input);
        });
    }

    fn on_selected(&mut self, outcome: Outcome) {
        self.selecting = false;
        if matches!(outcome, Outcome::QuorumImpossible { .. }) {
            // No quorum without the one passed over: the next selection
            // may choose it again. (A leader named clears it below, unless
            // that leader is already lost.)
            self.passed_over = None;
        }
        match outcome {
            Outcome::Leader { id, term } => {
                self.leader = Some(id);
                self.quorum_impossible = false;
                tracing::info!(leader = id, term, "LeaderReconfigDone: new leader {id} for term {term}");
                self.trace.record("LeaderReconfigDone", json!({"ServerId": id, "Term": term}));
                self.publish();
                let failed: Vec<u64> = self.alive.iter().filter(|(_, a)| !**a).map(|(id, _)| *id).collect();
                // The new leader got the members as they were when the
                // selection began; one that rejoined at new addresses since
                // would be dialled at its old ones. It gets them as they
                // are now, before its notice.
                let members = self.all_members();
                for m in &self.state.members {
                    let Some(mut c) = self.controls.control(m.id) else {
                        continue;
                    };
                    let membership = (m.id == id)
                        .then(|| self.controls.request(pb::Membership { members: members.clone(), trace: vec![] }));
                    let req = self.controls.request(pb::ClusterNotice {
                        term,
                        leader_id: id,
                        failed: failed.clone(),
                        trace: token(&self.trace),
                    });
                    tokio::spawn(async move {
                        if let Some(membership) = membership {
                            let _ = c.configure(membership).await;
                        }
                        let _ = c.notify(req).await;
                    });
                }
                // A new leader that leads no more by the time its
                // acceptance is handled: nothing would report it again.
                let lost = if self.restarted_while_selecting.contains(&id) {
                    // It accepted, then restarted (as a follower) and
                    // joined again: that join could not fail a leader not
                    // yet recorded, and the failure detector may never have
                    // missed it.
                    Some("restarted while selected")
                } else if self.alive.get(&id) == Some(&false) {
                    // The failure detector gave it up while its answer was
                    // on the way: that verdict came first and will not come
                    // again.
                    Some("failed while selected")
                } else if term < self.state.term {
                    // A server reported a later term while this selection
                    // ran (see `heard_term`): the new leader is fenced.
                    Some("fenced")
                } else {
                    None
                };
                if lost.is_none() {
                    self.passed_over = None;
                }
                if let Some(reason) = lost {
                    let now = self.state.term;
                    tracing::info!(server = id, term, now, "LeaderFailOver: the new leader of term {term}: {reason}");
                    self.trace.record("LeaderFailOver", json!({"FailedLeaderId": id, "Reason": reason, "Term": now}));
                    self.leader = None;
                    self.publish();
                    self.maybe_select();
                }
            }
            Outcome::QuorumImpossible { term, answered, needed } => {
                self.quorum_impossible = true;
                self.trace
                    .record("LeaderSelectionFailed", json!({"Term": term, "Answered": answered, "Needed": needed}));
                tracing::warn!(
                    term,
                    "LeaderSelectionFailed: quorum impossible, {} of {} servers answered, {needed} needed",
                    answered.len(),
                    self.n
                );
                self.publish();
                self.retry_in(Duration::from_millis(300));
            }
            Outcome::Refused { term, current_term } => {
                tracing::info!(term, current_term, "selection for term {term} superseded; retrying");
                if current_term > self.state.term && current_term <= pb::MAX_TERM_OR_INDEX {
                    self.state.term = current_term;
                    self.save();
                }
                self.retry_in(Duration::from_millis(20));
            }
        }
    }

    fn on_rediscovered(&mut self, found: Option<(u64, u64)>) {
        self.selecting = false;
        let saw = self.rediscovery_saw.take().unwrap_or_default();
        match found {
            // A leader that restarted (it rejoined) or failed while the
            // servers were being asked leads no more, and one the detector
            // had already failed would never be reported failed again:
            // select instead.
            Some((id, _)) if saw.contains(&id) || self.alive.get(&id) == Some(&false) => {
                tracing::info!(server = id, "after restart: server {id} led, but rejoined or failed since; selecting");
                self.maybe_select();
            }
            Some((id, term)) if term >= self.state.term && term <= pb::MAX_TERM_OR_INDEX => {
                if term > self.state.term {
                    self.state.term = term;
                    self.save();
                }
                tracing::info!(leader = id, term, "after restart: server {id} leads term {term}");
                self.leader = Some(id);
                self.publish();
            }
            _ => self.maybe_select(),
        }
    }

    fn publish(&self) {
        let info = match self.leader {
            Some(id) => {
                let addr = self.state.members.iter().find(|m| m.id == id).map(|m| m.client_addr.clone());
                pb::LeaderInfo {
                    leader_id: id,
                    client_addr: addr.unwrap_or_default(),
                    term: self.state.term,
                    quorum_impossible: false,
                    status: format!("server {id} leads term {}", self.state.term),
                    trace: vec![],
                }
            }
            None => pb::LeaderInfo {
                leader_id: 0,
                client_addr: String::new(),
                term: self.state.term,
                quorum_impossible: self.quorum_impossible,
                status: if !self.state.join_complete {
                    format!("waiting for servers to join ({} of {})", self.state.members.len(), self.n)
                } else if self.quorum_impossible {
                    format!("quorum impossible: fewer than {} of {} servers answer", self.n / 2 + 1, self.n)
                } else {
                    "selecting a leader".into()
                },
                trace: vec![],
            },
        };
        // Each watcher's answer carries a token of its own trace (api.rs).
        self.leader_tx.send_replace(info);
    }

    fn view(&self) -> pb::ClusterView {
        pb::ClusterView {
            num_servers: self.n,
            join_complete: self.state.join_complete,
            term: self.state.term,
            leader_id: self.leader.unwrap_or(0),
            quorum_impossible: self.quorum_impossible,
            servers: self
                .state
                .members
                .iter()
                .map(|m| pb::ServerView {
                    id: m.id,
                    alive: self.alive.get(&m.id).copied().unwrap_or(false),
                    client_addr: m.client_addr.clone(),
                    peer_addr: m.peer_addr.clone(),
                    control_addr: m.control_addr.clone(),
                })
                .collect(),
        }
    }
}

/// After a restart: asks every server for its role and term; the leader of
/// the highest term, if one is found, is kept.
async fn rediscover(members: Vec<Member>, controls: Controls, me: mpsc::UnboundedSender<Input>) {
    let mut found: Option<(u64, u64)> = None;
    let mut highest = 0;
    for m in &members {
        let Some(mut a) = controls.admin(m.id) else {
            continue;
        };
        if let Ok(r) = a.status(controls.request(pb::StatusRequest {})).await {
            let r = r.into_inner();
            highest = highest.max(r.term);
            if r.role == "leader" && found.is_none_or(|(_, t)| r.term > t) {
                found = Some((m.id, r.term));
            }
        }
    }
    // A leader of a term below one another server holds has been fenced (a
    // selection granted that later term, then the coord lost it): it will
    // step down at its followers' next answer, so it is no leader to keep.
    let _ = me.send(Input::Rediscovered(found.filter(|&(_, t)| t >= highest)));
}

#[cfg(test)]
mod tests;
