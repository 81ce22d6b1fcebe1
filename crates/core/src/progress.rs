//! What a leader knows of one follower, and its flow control.

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader is sending to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendState {
    /// Where the follower's log matches is not known: one AppendEntries at a
    /// time, the next only after an answer or a heartbeat interval.
    Probe { paused: bool },
    /// The follower's log matches: send optimistically, many in flight.
    Replicate,
    /// A snapshot ending at `index` is on its way; it counts as lost only
    /// after `patience` ticks without progress (a big snapshot takes long
    /// to send and install, and resending it early only queues copies).
    Snapshot { index: Index, patience: u64 },
}

/// Invariants: `match_index < next_index`; `match_index` only grows while
/// this node leads the same term (a follower's durable matching prefix
/// cannot shrink within a term).
#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: Index,
    pub next_index: Index,
    pub state: SendState,
    /// `(last index carried, bytes)` of each AppendEntries in flight.
    inflight: VecDeque<(Index, usize)>,
    inflight_bytes: usize,
    /// The tick of the last response that moved `match_index` (or of the
    /// last state change), to detect a pipeline whose messages were lost.
    pub last_progress_tick: u64,
    /// The highest ReadIndex round this follower has answered.
    pub read_ack: u64,
    /// The tick of the last response of the current term from this follower.
    pub last_heard_tick: u64,
    /// The highest commit index sent to this follower.
    pub commit_sent: Index,
}

impl Progress {
    pub fn new(next_index: Index, now: u64) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: SendState::Probe { paused: false },
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            last_progress_tick: now,
            read_ack: 0,
            last_heard_tick: now,
            commit_sent: 0,
        }
    }

    /// Whether another AppendEntries carrying entries may be sent now.
    pub fn can_send(&self, max_msgs: usize, max_bytes: usize) -> bool {
        match self.state {
            SendState::Probe { paused } => !paused,
            SendState::Replicate => self.inflight.len() < max_msgs && self.inflight_bytes < max_bytes,
            SendState::Snapshot { .. } => false,
        }
    }

    /// Records an AppendEntries carrying entries up to `last` (if any).
    pub fn on_sent(&mut self, last: Option<Index>, bytes: usize) {
        match self.state {
            SendState::Probe { .. } => self.state = SendState::Probe { paused: true },
            SendState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last + 1;
                    self.inflight.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
            SendState::Snapshot { .. } => {}
        }
    }

    /// The follower's log matches through `index`. Returns true if that is news.
    pub fn on_success(&mut self, index: Index, now: u64) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.last_progress_tick = now;
        }
        self.next_index = self.next_index.max(index + 1);
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        match self.state {
            SendState::Probe { .. } => self.become_replicate(now),
            SendState::Snapshot { index: snap, .. } if self.match_index >= snap => self.become_replicate(now),
            _ => {}
        }
        advanced
    }

    /// Falls back to probing from `next_index` (after a rejection, or lost messages).
    pub fn become_probe(&mut self, next_index: Index, now: u64) {
        self.next_index = next_index.max(self.match_index + 1);
        self.state = SendState::Probe { paused: false };
        self.clear_inflight();
        self.last_progress_tick = now;
    }

    pub fn become_snapshot(&mut self, index: Index, patience: u64, now: u64) {
        self.state = SendState::Snapshot { index, patience };
        self.clear_inflight();
        self.last_progress_tick = now;
    }

    fn become_replicate(&mut self, now: u64) {
        self.state = SendState::Replicate;
        self.next_index = self.next_index.max(self.match_index + 1);
        self.last_progress_tick = now;
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// True when messages are outstanding but nothing came back for `window`
    /// ticks (for a snapshot, its own patience if longer).
    pub fn is_stalled(&self, now: u64, window: u64) -> bool {
        let (waiting, window) = match self.state {
            SendState::Replicate => (!self.inflight.is_empty(), window),
            SendState::Probe { paused } => (paused, window),
            SendState::Snapshot { patience, .. } => (true, window.max(patience)),
        };
        waiting && now.saturating_sub(self.last_progress_tick) >= window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_in_flight_counts_as_lost_only_after_its_patience() {
        let mut pr = Progress::new(1, 0);
        pr.become_snapshot(500, 100, 10);
        // The pipeline's window would call it lost after 6 ticks: too early
        // for a snapshot still being sent.
        assert!(!pr.is_stalled(16, 6));
        assert!(!pr.is_stalled(109, 6));
        assert!(pr.is_stalled(110, 6));
        // Entries in flight keep the short window.
        let mut pr = Progress::new(1, 0);
        pr.on_success(0, 0);
        pr.on_sent(Some(3), 10);
        assert!(pr.is_stalled(6, 6));
    }
}
