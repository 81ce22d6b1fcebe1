//! ReadIndex: linearizable reads without writing to the log.
//!
//! A read waiting on a leader is served once (1) the leader has confirmed,
//! by a round of heartbeats answered by a majority, that it was still the
//! leader after the read arrived, and (2) the state machine has applied up
//! to the leader's last log index recorded when the round began (not just
//! its commit index: a read then also sees every write that reached the
//! leader before it). Every read that
//! arrives before a round starts shares that round, so a thousand reads cost
//! one round of heartbeats.

use std::collections::VecDeque;

use crate::ready::ReadId;
use crate::types::Index;

/// One round of heartbeats and the reads that wait on it.
#[derive(Debug)]
struct Round {
    ctx: u64,
    read_index: Index,
    reads: Vec<ReadId>,
}

#[derive(Debug, Default)]
pub struct ReadIndex {
    /// The ctx of the latest round started; every AppendEntries carries it.
    pub ctx: u64,
    /// Reads that arrived since the last round started.
    queued: Vec<ReadId>,
    /// Rounds started and not yet confirmed, oldest first.
    rounds: VecDeque<Round>,
    /// Confirmed reads and the index to apply before serving them.
    confirmed: VecDeque<(Index, ReadId)>,
}

impl ReadIndex {
    pub fn queue(&mut self, id: ReadId) {
        self.queued.push(id);
    }

    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Starts a round for the queued reads, served once the state machine
    /// has applied `read_index` (the leader's last log index); returns its ctx.
    pub fn start_round(&mut self, read_index: Index) -> u64 {
        self.ctx += 1;
        let reads = std::mem::take(&mut self.queued);
        self.rounds.push_back(Round { ctx: self.ctx, read_index, reads });
        self.ctx
    }

    /// Confirms every round whose ctx a quorum has acknowledged, where
    /// `acked(ctx)` says whether a quorum (the leader included) has.
    pub fn confirm(&mut self, acked: impl Fn(u64) -> bool) {
        while let Some(round) = self.rounds.front() {
            if !acked(round.ctx) {
                break;
            }
            let round = self.rounds.pop_front().expect("front exists");
            self.confirmed.extend(round.reads.into_iter().map(|id| (round.read_index, id)));
        }
    }

    /// Takes the confirmed reads whose index is covered by `applied`.
    pub fn take_ready(&mut self, applied: Index, out: &mut Vec<ReadId>) {
        while let Some(&(index, id)) = self.confirmed.front() {
            if index > applied {
                break;
            }
            self.confirmed.pop_front();
            out.push(id);
        }
    }

    /// Whether a confirmed read is covered by `applied`.
    pub fn has_ready(&self, applied: Index) -> bool {
        self.confirmed.front().is_some_and(|&(index, _)| index <= applied)
    }

    /// Takes every read, whatever its state (the leader stepped down).
    pub fn drain_all(&mut self) -> Vec<ReadId> {
        let mut all = std::mem::take(&mut self.queued);
        for r in self.rounds.drain(..) {
            all.extend(r.reads);
        }
        all.extend(self.confirmed.drain(..).map(|(_, id)| id));
        all
    }
}
