//! `RaftNode`: one server's replication state machine.
//!
//! Leaders are not elected here: the coord designates them (see
//! `docs/protocol.md`). A node adopts a new term when the coord asks for its
//! log state for that term, which fences any older leader; it becomes leader
//! when the coord designates it; it steps down on any message of a higher
//! term. Everything else is Raft log replication (Raft paper, figure 2).
//!
//! The node does no I/O: inputs are method calls, outputs accumulate until
//! the shell takes them with [`RaftNode::ready`].

use std::collections::BTreeMap;

use crate::config::Config;
use crate::kv::Command;
use crate::log::RaftLog;
use crate::message::{AppendResult, Dest, LogState, Message, Outbound};
use crate::progress::{Progress, SendState};
use crate::read_index::ReadIndex;
use crate::ready::{ReadError, ReadId, Ready};
use crate::types::{Entry, Index, NodeId, Payload, Snapshot, SnapshotMeta, Term};

/// A node's role. Only the coord's designation makes a leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Leader,
}

/// Why a proposal was refused.
/// A leader refuses writes once it has heard from no majority for this many
/// quorum windows (reads: one).
pub const WRITE_QUORUM_WINDOWS: u64 = 10;

/// A leader that has heard from no majority for this many quorum windows
/// says so ([`RaftNode::lost_quorum`]), for its shell to tell the coord,
/// which can only see that it is alive. Three times the writes' window: a
/// follower's answers wait for its disk, and a slow disk must not cost a
/// leader that still has its quorum its leadership.
pub const LOST_QUORUM_WINDOWS: u64 = 3 * WRITE_QUORUM_WINDOWS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// This leader has not heard from a majority within the quorum window:
    /// it may have been deposed, and whatever it appended could not commit
    /// until it hears again, so nothing is appended (the client retries).
    #[error("no quorum heard recently")]
    NoQuorum,
}

/// What [`RaftNode::compact`] let go of: the entries it compacted and the
/// snapshot it no longer holds (the previous one, or the one given if it was
/// not taken). Dropping them is the caller's to place: at a million keys,
/// freeing 100,000 entries and a 100 MB snapshot took the event loop
/// 13-38 ms.
#[must_use = "dropping it here frees the memory here"]
pub struct Released {
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
}

/// The durable state a node restarts from.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub term: Term,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

#[derive(Debug)]
struct LeaderState {
    /// Every server of the cluster, this one included.
    members: Vec<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    reads: ReadIndex,
    /// The index of this term's No-Op. Nothing is sent before it is durable
    /// (see [`RaftNode::become_leader`]).
    noop_index: Index,
    heartbeat_elapsed: u64,
    /// Entries were appended, or the commit index moved, since the last broadcast.
    dirty: bool,
}

impl LeaderState {
    fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

/// One server's replication core.
#[derive(Debug)]
pub struct RaftNode {
    cfg: Config,
    term: Term,
    leader: Option<NodeId>,
    ls: Option<LeaderState>,
    log: RaftLog,
    /// The latest snapshot, sent to followers that need compacted entries.
    snapshot: Option<Snapshot>,
    commit: Index,
    /// Entries up to here have been handed out for applying.
    applied: Index,
    /// The last index known durable here (what a leader counts for itself).
    durable: Index,
    /// Entries from here on have not yet been handed out to persist.
    unstable_from: Index,
    now: u64,
    out: Ready,
}

impl RaftNode {
    /// A fresh node with an empty log.
    pub fn new(cfg: Config) -> Self {
        Self::restore(cfg, Restored::default())
    }

    /// A node restarting from its durable state, as a follower with no
    /// known leader. Its commit index is the snapshot's; the leader tells it
    /// the rest.
    pub fn restore(cfg: Config, state: Restored) -> Self {
        let meta = state.snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
        let log = RaftLog::new(meta, state.entries);
        let last = log.last_index();
        RaftNode {
            cfg,
            term: state.term,
            leader: None,
            ls: None,
            snapshot: state.snapshot,
            commit: meta.index,
            applied: meta.index,
            durable: last,
            unstable_from: last + 1,
            log,
            now: 0,
            out: Ready::default(),
        }
    }

    // ----- accessors -----

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn role(&self) -> Role {
        if self.ls.is_some() { Role::Leader } else { Role::Follower }
    }
    /// The leader of the current term, as far as this node knows.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The leader's view of each follower: `(id, match index)`.
    pub fn match_indexes(&self) -> Vec<(NodeId, Index)> {
        self.ls.as_ref().map(|ls| ls.progress.iter().map(|(&id, p)| (id, p.match_index)).collect()).unwrap_or_default()
    }

    // ----- inputs from the coord -----

    /// The coord asks for this node's log state for `term`. A node adopts a
    /// higher term durably (the answer goes out only after persistence), and
    /// from then on refuses anything of a lower term: this is what fences an
    /// old leader. A term not above its own is refused with the node's own
    /// term: like a Raft vote, a term is granted once, for the coord always
    /// asks a term above every one it used, and a coord whose state went
    /// back (a file restored from an old copy) must not designate a second
    /// leader in a term that already has one.
    pub fn log_state_request(&mut self, term: Term) {
        if term <= self.term {
            let ans = self.log_state(term, false);
            self.out.messages.push(Outbound { to: Dest::Coord, msg: Message::LogState(ans) });
            return;
        }
        if term > self.term {
            self.adopt_term(term, None);
        }
        let ans = self.log_state(term, true);
        self.out.persisted_messages.push(Outbound { to: Dest::Coord, msg: Message::LogState(ans) });
    }

    fn log_state(&self, term: Term, granted: bool) -> LogState {
        LogState {
            from: self.cfg.id,
            term,
            granted,
            current_term: self.term,
            last_log_term: self.log.last_term(),
            last_log_index: self.log.last_index(),
        }
    }

    /// The coord designates this node leader of `term` over `members` (all
    /// servers, this one included). The node starts the term with a No-Op.
    ///
    /// A node never leads one term twice: a duplicate designation reaching a
    /// restarted node must not start a second, different log for the same
    /// term. The durable mark of having led `term` is the No-Op of `term` in
    /// its log (only the leader of a term writes entries of that term, and
    /// it sends nothing before that No-Op is durable).
    pub fn become_leader(&mut self, term: Term, members: &[NodeId]) {
        let leading = term == self.term && self.ls.is_some();
        let led_before = term == self.term && self.ls.is_none() && self.log.last_term() >= term;
        let accepted = leading || (term >= self.term && !led_before && members.contains(&self.cfg.id));
        if accepted && !leading {
            if term > self.term {
                self.adopt_term(term, None);
            }
            self.start_leading(members);
        }
        let reply = Message::BecomeLeaderResponse { term, from: self.cfg.id, accepted, current_term: self.term };
        self.out.persisted_messages.push(Outbound { to: Dest::Coord, msg: reply });
    }

    fn start_leading(&mut self, members: &[NodeId]) {
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup();
        let next = self.log.last_index() + 1;
        let progress =
            members.iter().filter(|&&id| id != self.cfg.id).map(|&id| (id, Progress::new(next, self.now))).collect();
        self.ls = Some(LeaderState {
            members,
            progress,
            reads: ReadIndex::default(),
            noop_index: next,
            heartbeat_elapsed: 0,
            dirty: true,
        });
        self.leader = Some(self.cfg.id);
        self.out.role_changed = true;
        self.append_local(Payload::Noop);
        // A single-node cluster commits on its own durability alone.
        self.maybe_commit();
    }

    /// Moves to `term` as a follower (stepping down if leading).
    fn adopt_term(&mut self, term: Term, leader: Option<NodeId>) {
        debug_assert!(term > self.term);
        self.term = term;
        self.out.term = Some(term);
        self.step_down(leader);
    }

    fn step_down(&mut self, leader: Option<NodeId>) {
        if let Some(mut ls) = self.ls.take() {
            let failed = ls.reads.drain_all();
            self.out.failed_reads.extend(failed.into_iter().map(|id| (id, ReadError::NotLeader { leader })));
        }
        self.leader = leader;
        self.out.role_changed = true;
    }

    // ----- inputs from clients -----

    /// Appends a client command (leader only). Returns the index it will be
    /// committed at if this node stays leader.
    pub fn propose(&mut self, cmd: Command) -> Result<Index, ProposeError> {
        if self.ls.is_none() {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        // A leader cut off from its followers would otherwise go on
        // appending every write its clients send, in memory and on disk,
        // none of which can commit. The window is ten times the reads':
        // a follower's answers wait for its disk, and a slow disk (a
        // snapshot being written) must not turn writes away from a leader
        // that still has its quorum.
        if !self.heard_from_majority_within(WRITE_QUORUM_WINDOWS * self.cfg.quorum_window_ticks) {
            return Err(ProposeError::NoQuorum);
        }
        Ok(self.append_local(Payload::Command(cmd)))
    }

    fn append_local(&mut self, payload: Payload) -> Index {
        let index = self.log.last_index() + 1;
        self.log.append(Entry { term: self.term, index, payload });
        if let Some(ls) = &mut self.ls {
            ls.dirty = true;
        }
        index
    }

    /// A linearizable read (ReadIndex). It comes back in `Ready::reads` once
    /// it may be served, or in `Ready::failed_reads`.
    pub fn read(&mut self, id: ReadId) {
        if self.ls.is_none() {
            self.out.failed_reads.push((id, ReadError::NotLeader { leader: self.leader }));
            return;
        }
        if !self.has_recent_quorum() {
            self.out.failed_reads.push((id, ReadError::NoQuorum));
            return;
        }
        self.ls.as_mut().expect("leader").reads.queue(id);
    }

    /// Whether a majority (this leader included) was heard from within the
    /// quorum window. False on a follower.
    pub fn has_recent_quorum(&self) -> bool {
        self.heard_from_majority_within(self.cfg.quorum_window_ticks)
    }

    /// True on a leader that has heard from no majority for
    /// [`LOST_QUORUM_WINDOWS`] quorum windows: cut off from its followers,
    /// it can commit nothing, and stays leader until a later term reaches
    /// it. False on a follower.
    pub fn lost_quorum(&self) -> bool {
        self.ls.is_some() && !self.heard_from_majority_within(LOST_QUORUM_WINDOWS * self.cfg.quorum_window_ticks)
    }

    /// Whether a majority (this leader included) was heard from within the
    /// last `ticks`. False on a follower.
    fn heard_from_majority_within(&self, ticks: u64) -> bool {
        let Some(ls) = &self.ls else { return false };
        let heard = ls.progress.values().filter(|p| self.now.saturating_sub(p.last_heard_tick) < ticks).count();
        heard + 1 >= ls.quorum()
    }

    // ----- time -----

    /// Whether [`RaftNode::tick`] can change anything here. Only a leader's
    /// ticks act (heartbeats, resends, the quorum window): there are no
    /// elections, the coord names leaders. A follower's tick only advances
    /// a clock that nothing reads until it leads, and then only as time
    /// since it became leader, so a shell may leave a follower unticked
    /// and spare it a wake-up per tick.
    pub fn needs_ticks(&self) -> bool {
        self.ls.is_some()
    }

    /// One tick of the shell's clock.
    pub fn tick(&mut self) {
        self.now += 1;
        let Some(ls) = &mut self.ls else { return };
        if self.durable < ls.noop_index {
            return;
        }
        ls.heartbeat_elapsed += 1;
        if ls.heartbeat_elapsed < self.cfg.heartbeat_ticks {
            self.send_pending_commits();
            return;
        }
        ls.heartbeat_elapsed = 0;
        let peers: Vec<NodeId> = ls.progress.keys().copied().collect();
        for p in peers {
            let pr = self.ls.as_mut().expect("leader").progress.get_mut(&p).expect("peer");
            let probing = matches!(pr.state, SendState::Probe { .. });
            if !probing && pr.is_stalled(self.now, self.cfg.resend_ticks) {
                // Messages (or the snapshot) were lost: start again from what is known.
                let next = pr.match_index + 1;
                pr.become_probe(next, self.now);
            }
            // A probe is resent every heartbeat interval, answered or not.
            if let SendState::Probe { .. } = pr.state {
                pr.state = SendState::Probe { paused: false };
                self.send_append(p, true);
            } else {
                self.send_heartbeat(p);
            }
        }
    }

    // ----- durability -----

    /// The shell made a Ready's entries durable; `marker` is that Ready's
    /// `persisted_marker`. A marker whose entry has since been replaced (the
    /// log was truncated meanwhile) proves nothing and is ignored.
    pub fn on_persisted(&mut self, marker: (Index, Term)) {
        let (index, term) = marker;
        if index > self.durable && self.log.term(index) == Some(term) {
            self.durable = index;
            if let Some(ls) = &mut self.ls {
                ls.dirty = true; // the first broadcast may have waited for this
            }
            self.maybe_commit();
        }
    }

    // ----- snapshots -----

    /// The shell took a snapshot of the state machine at `meta` (which must
    /// be applied already): entries up to it are dropped from the log. What
    /// the node lets go of is handed back (see [`Released`]).
    pub fn compact(&mut self, snapshot: Snapshot) -> Released {
        let meta = snapshot.meta;
        if meta.index <= self.log.snapshot_meta().index || meta.index > self.applied {
            return Released { entries: Vec::new(), snapshot: Some(snapshot) };
        }
        let entries = self.log.compact(meta);
        Released { entries, snapshot: self.snapshot.replace(snapshot) }
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The shell has the snapshot at `meta` durable and will read it back
    /// to send it: the node keeps only its size. Returns the bytes it let
    /// go of (none if its snapshot is another one, or already stored), for
    /// the shell to free where it likes.
    pub fn snapshot_stored(&mut self, meta: SnapshotMeta) -> Option<Snapshot> {
        let held = self.snapshot.as_mut().filter(|s| s.meta == meta && s.data.bytes().is_some())?;
        Some(std::mem::replace(held, held.stored()))
    }

    // ----- messages from other servers -----

    /// Handles a message from another server.
    pub fn step(&mut self, msg: Message) {
        match msg {
            Message::AppendEntries {
                term,
                leader,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_ctx,
            } => {
                if !self.accept_leader_message(term, leader, read_ctx) {
                    return;
                }
                let result = self.handle_append(prev_log_index, prev_log_term, entries, leader_commit);
                self.respond(leader, result, read_ctx);
            }
            Message::InstallSnapshot { term, leader, snapshot, read_ctx } => {
                if !self.accept_leader_message(term, leader, read_ctx) {
                    return;
                }
                let result = self.handle_snapshot(snapshot);
                self.respond(leader, result, read_ctx);
            }
            Message::AppendEntriesResponse { term, from, result, read_ctx } => {
                self.handle_response(term, from, result, read_ctx);
            }
            // Meant for the coord; a server ignores them.
            Message::LogState(_) | Message::BecomeLeaderResponse { .. } => {}
        }
    }

    /// The term check for messages from a leader. Returns false (after
    /// answering a stale leader) when the message must be ignored.
    fn accept_leader_message(&mut self, term: Term, leader: NodeId, read_ctx: u64) -> bool {
        if term < self.term {
            let reply = Message::AppendEntriesResponse {
                term: self.term,
                from: self.cfg.id,
                result: AppendResult::StaleTerm,
                read_ctx,
            };
            self.out.messages.push(Outbound { to: Dest::Node(leader), msg: reply });
            return false;
        }
        if term > self.term {
            self.adopt_term(term, Some(leader));
        } else if self.ls.is_some() {
            // Two leaders in one term cannot happen: the coord designates one
            // per term. Ignore rather than corrupt the log (the simulation's
            // invariants report the double leadership itself).
            return false;
        } else if self.leader != Some(leader) {
            self.leader = Some(leader);
            self.out.role_changed = true;
        }
        true
    }

    fn respond(&mut self, leader: NodeId, result: AppendResult, read_ctx: u64) {
        let reply = Message::AppendEntriesResponse { term: self.term, from: self.cfg.id, result, read_ctx };
        // A success vouches for durable entries: it waits for persistence.
        self.out.persisted_messages.push(Outbound { to: Dest::Node(leader), msg: reply });
    }

    fn handle_append(
        &mut self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) -> AppendResult {
        let snap = self.log.snapshot_meta().index;
        let mut prev = prev_log_index;
        let mut entries = entries;
        if prev < snap {
            // Everything up to the snapshot is committed, hence matches.
            let skip = (snap - prev).min(entries.len() as u64) as usize;
            entries.drain(..skip);
            prev += skip as u64;
            if prev < snap {
                return AppendResult::Success { match_index: prev };
            }
        } else {
            match self.log.term(prev) {
                Some(t) if t == prev_log_term => {}
                Some(_) => {
                    return AppendResult::Conflict {
                        rejected_prev: prev_log_index,
                        hint_term: self.log.term(prev),
                        hint_index: self.log.first_index_of_term_at(prev),
                    };
                }
                None => {
                    return AppendResult::Conflict {
                        rejected_prev: prev_log_index,
                        hint_term: None,
                        hint_index: self.log.last_index() + 1,
                    };
                }
            }
        }
        let match_index = prev + entries.len() as Index;
        if entries.iter().any(|e| e.index <= self.commit && self.log.term(e.index).is_some_and(|t| t != e.term)) {
            // A committed entry is never replaced (leader completeness): no
            // correct leader sends this. Refused whole, the log untouched.
            return AppendResult::Conflict {
                rejected_prev: prev_log_index,
                hint_term: None,
                hint_index: self.commit + 1,
            };
        }
        for e in entries {
            match self.log.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    // A real conflict: the suffix from here was never
                    // committed (leader completeness), so it may go.
                    self.log.truncate_from(e.index);
                    self.unstable_from = self.unstable_from.min(e.index);
                    self.durable = self.durable.min(e.index - 1);
                    self.log.append(e);
                }
                None => self.log.append(e),
            }
        }
        let new_commit = leader_commit.min(match_index);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        AppendResult::Success { match_index }
    }

    fn handle_snapshot(&mut self, snapshot: Snapshot) -> AppendResult {
        let meta = snapshot.meta;
        if meta.index <= self.commit {
            return AppendResult::Success { match_index: meta.index };
        }
        if self.log.term(meta.index) == Some(meta.term) {
            // The log already holds it: just commit up to it.
            self.commit = meta.index;
            return AppendResult::Success { match_index: meta.index };
        }
        self.log = RaftLog::new(meta, Vec::new());
        self.commit = meta.index;
        self.applied = meta.index;
        self.durable = meta.index;
        self.unstable_from = meta.index + 1;
        self.out.committed_entries.clear();
        self.snapshot = Some(snapshot.clone());
        self.out.snapshot = Some(snapshot);
        AppendResult::Success { match_index: meta.index }
    }

    fn handle_response(&mut self, term: Term, from: NodeId, result: AppendResult, read_ctx: u64) {
        if term > self.term {
            self.adopt_term(term, None);
            return;
        }
        if term < self.term {
            return;
        }
        let now = self.now;
        let Some(ls) = &mut self.ls else { return };
        let Some(pr) = ls.progress.get_mut(&from) else {
            return;
        };
        pr.last_heard_tick = now;
        // A refusal of an older term echoes the ctx of that term's message:
        // it vouches for no leadership of this term, so it acks no read
        // round (the ctx restarts with each leadership). A success or a
        // conflict answers a message of this term.
        if !matches!(result, AppendResult::StaleTerm) {
            pr.read_ack = pr.read_ack.max(read_ctx);
        }
        match result {
            // No follower can hold entries this leader never had: a message
            // no correct peer sends, refused rather than let it point the
            // follower's progress past the log.
            AppendResult::Success { match_index } if match_index > self.log.last_index() => return,
            AppendResult::Success { match_index } => {
                if pr.on_success(match_index, now) {
                    self.maybe_commit();
                }
                self.send_append_or_commit(from);
            }
            AppendResult::StaleTerm => {}
            AppendResult::Conflict { rejected_prev, hint_term, hint_index } => {
                if rejected_prev < pr.match_index {
                    return; // an old answer, overtaken by a success
                }
                let next = match hint_term.and_then(|t| self.log.last_index_of_term(t)) {
                    Some(last_of_term) => last_of_term + 1,
                    None => hint_index,
                };
                // Bounded by the log, whatever the hints say.
                let next = next.min(rejected_prev).min(self.log.last_index() + 1).max(pr.match_index + 1);
                pr.become_probe(next, now);
                self.send_append(from, false);
            }
        }
        self.confirm_reads();
    }

    // ----- leader internals -----

    /// Sends the follower what it lacks: entries (as many messages as flow
    /// control allows), a snapshot if they were compacted, or, with
    /// `heartbeat`, at least an empty AppendEntries.
    /// Returns whether anything was sent.
    fn send_append(&mut self, to: NodeId, heartbeat: bool) -> bool {
        let Some(ls) = &mut self.ls else { return false };
        let ctx = ls.reads.ctx;
        let pr = ls.progress.get_mut(&to).expect("peer");
        let mut sent_any = false;
        loop {
            if !pr.can_send(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes) {
                break;
            }
            if pr.next_index <= self.log.snapshot_meta().index {
                let Some(snapshot) = self.snapshot.clone() else {
                    break;
                };
                let patience = self.cfg.snapshot_resend_ticks
                    + (snapshot.data.len() / self.cfg.snapshot_bytes_per_tick.max(1)) as u64;
                pr.become_snapshot(snapshot.meta.index, patience, self.now);
                let msg = Message::InstallSnapshot { term: self.term, leader: self.cfg.id, snapshot, read_ctx: ctx };
                self.out.messages.push(Outbound { to: Dest::Node(to), msg });
                return true;
            }
            let last = self.log.last_index();
            if pr.next_index > last && (sent_any || !heartbeat) {
                break;
            }
            let prev = pr.next_index - 1;
            let entries = self.log.slice(pr.next_index, last, self.cfg.max_entries_per_msg, self.cfg.max_bytes_per_msg);
            let bytes: usize = entries.iter().map(Entry::approx_size).sum();
            let last_sent = entries.last().map(|e| e.index);
            let msg = Message::AppendEntries {
                term: self.term,
                leader: self.cfg.id,
                prev_log_index: prev,
                prev_log_term: self.log.term(prev).expect("prev is at or after the snapshot"),
                entries,
                leader_commit: self.commit,
                read_ctx: ctx,
            };
            self.out.messages.push(Outbound { to: Dest::Node(to), msg });
            pr.commit_sent = pr.commit_sent.max(self.commit.min(last_sent.unwrap_or(prev)));
            pr.on_sent(last_sent, bytes);
            sent_any = true;
            if last_sent.is_none() {
                break;
            }
        }
        sent_any
    }

    /// Sends new entries if any. A commit index alone waits for the next
    /// message or tick ([`RaftNode::tick`]): sending it at once doubled the
    /// messages, and the follower's wake-ups, of every write, while only
    /// the follower's own applying waits for it.
    fn send_append_or_commit(&mut self, to: NodeId) {
        self.send_append(to, false);
    }

    /// Followers not yet told the commit index covering what they hold get
    /// an empty AppendEntries carrying it.
    fn send_pending_commits(&mut self) {
        let Some(ls) = &self.ls else { return };
        let behind: Vec<NodeId> = ls
            .progress
            .iter()
            .filter(|(_, pr)| pr.commit_sent < self.commit.min(pr.match_index))
            .map(|(id, _)| *id)
            .collect();
        for p in behind {
            self.send_heartbeat(p);
        }
    }

    /// An empty AppendEntries at the follower's match index: it carries the
    /// commit index and the ReadIndex ctx without disturbing the pipeline.
    fn send_heartbeat(&mut self, to: NodeId) {
        let Some(ls) = &mut self.ls else { return };
        let pr = ls.progress.get_mut(&to).expect("peer");
        pr.commit_sent = pr.commit_sent.max(self.commit.min(pr.match_index));
        let prev = pr.match_index.max(self.log.snapshot_meta().index);
        let msg = Message::AppendEntries {
            term: self.term,
            leader: self.cfg.id,
            prev_log_index: prev,
            prev_log_term: self.log.term(prev).expect("prev is at or after the snapshot"),
            entries: Vec::new(),
            leader_commit: self.commit.min(pr.match_index),
            read_ctx: ls.reads.ctx,
        };
        self.out.messages.push(Outbound { to: Dest::Node(to), msg });
    }

    /// Commits the highest index stored durably on a majority, but only if
    /// it is of the current term (Raft 5.4.2, the figure 8 rule).
    fn maybe_commit(&mut self) {
        let Some(ls) = &self.ls else { return };
        let mut matched: Vec<Index> = ls.progress.values().map(|p| p.match_index).collect();
        matched.push(self.durable);
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[ls.quorum() - 1];
        if candidate > self.commit && self.log.term(candidate) == Some(self.term) {
            self.commit = candidate;
            // Followers learn the new commit index with the next message.
            self.ls.as_mut().expect("leader").dirty = true;
        }
    }

    /// Starts a ReadIndex round for queued reads, once this leader has
    /// committed an entry of its own term (before that, its commit index may
    /// lag behind what an earlier leader committed).
    fn start_read_round(&mut self) {
        let own_term_committed = self.log.term(self.commit) == Some(self.term);
        let Some(ls) = &mut self.ls else { return };
        if !ls.reads.has_queued() || !own_term_committed || self.durable < ls.noop_index {
            return;
        }
        // The read index is the last index, not just the commit index: a
        // read then also sees every write that reached this leader before
        // it (read-your-writes for a client with many operations in
        // flight), and is still linearizable (it only waits longer).
        ls.reads.start_round(self.log.last_index());
        let peers: Vec<NodeId> = ls.progress.keys().copied().collect();
        for p in peers {
            self.send_heartbeat(p);
        }
        self.confirm_reads();
    }

    fn confirm_reads(&mut self) {
        let Some(ls) = &mut self.ls else { return };
        let quorum = ls.quorum();
        let progress = &ls.progress;
        ls.reads.confirm(|ctx| 1 + progress.values().filter(|p| p.read_ack >= ctx).count() >= quorum);
    }

    // ----- output -----

    /// Takes everything the shell must do now (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        if let Some(ls) = &mut self.ls
            && ls.dirty
            && self.durable >= ls.noop_index
        {
            ls.dirty = false;
            let peers: Vec<NodeId> = ls.progress.keys().copied().collect();
            for p in peers {
                self.send_append_or_commit(p);
            }
        }
        self.start_read_round();

        let mut ready = std::mem::take(&mut self.out);
        let last = self.log.last_index();
        if self.unstable_from <= last {
            ready.entries = self.log.entries_from(self.unstable_from).to_vec();
            self.unstable_from = last + 1;
        }
        if ready.must_persist() {
            ready.persisted_marker = Some((last, self.log.last_term()));
        }
        if self.commit > self.applied {
            let from = self.applied.max(self.log.snapshot_meta().index) + 1;
            ready
                .committed_entries
                .extend_from_slice(&self.log.entries_from(from)[..(self.commit + 1 - from) as usize]);
            self.applied = self.commit;
        }
        if let Some(ls) = &mut self.ls {
            ls.reads.take_ready(self.applied, &mut ready.reads);
        }
        ready
    }

    /// Whether [`RaftNode::ready`] would return anything.
    pub fn has_ready(&self) -> bool {
        !self.out.is_empty()
            || self.unstable_from <= self.log.last_index()
            || self.commit > self.applied
            || self.ls.as_ref().is_some_and(|ls| {
                (ls.dirty && self.durable >= ls.noop_index)
                    || ls.reads.has_ready(self.applied)
                    || (ls.reads.has_queued() && self.log.term(self.commit) == Some(self.term))
            })
    }

    /// The snapshot metadata the log starts after.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.log.snapshot_meta()
    }
}
