//! Which client sessions the state machine keeps: those of the `limit`
//! clients that sent a command most recently, by log index. The rest are
//! forgotten, so a client id used once does not stay in every snapshot for
//! ever. Only the log decides, so every server forgets the same sessions at
//! the same index.
//!
//! A forgotten client's late retry must not be applied as a new client's
//! first op: the op may have been applied, and its outcome is gone. The
//! table can no longer tell the two apart, so a watermark does: a command
//! of a client without a session is refused as expired when its session
//! number is at or below the largest one forgotten. A client told so
//! registers again (a registration's session is above every session
//! forgotten before it, since log indexes only grow) and learns that its
//! operations in flight may or may not have taken effect.
//!
//! The rule also refuses a client that registered before the last session
//! was forgotten and has not written since: that costs it one more
//! registration, and happens only once the table is full.
//!
//! The order starts at a marker in the log ([`marker`]), which a leader
//! proposes once it finds the bound not started. Before it nothing is
//! ordered or forgotten; at it every session counts as last active there.
//! Without it, servers whose states came from snapshots written before
//! the bound, at different indexes, would know different histories of
//! the same sessions (one replayed commands the other has only as a
//! snapshot), order them differently, and forget different ones.

use imbl::OrdSet;
use serde::{Deserialize, Serialize};

use super::command::{Command, Op};
use crate::types::Index;

/// How many client sessions a state machine keeps by default. Part of the
/// replicated rules: every server of a cluster must use the same.
pub const MAX_SESSIONS: usize = 100_000;

/// The log entry that starts the bound: a registration with no client id,
/// which servers have refused from clients since the first version, and
/// which servers from before the bound apply as a registration nobody
/// asked for (it changes nothing).
pub fn marker() -> Command {
    Command { client_id: String::new(), session: 0, op_id: 0, first_unacked: 0, op: Op::Register }
}

/// Whether `cmd` is [`marker`].
pub fn is_marker(cmd: &Command) -> bool {
    cmd.op == Op::Register && cmd.client_id.is_empty()
}

/// The recency order of the kept sessions and what was forgotten.
///
/// Invariant: once started (`since`), `order` holds exactly one
/// `(last_index, client)` for each session in the table, where
/// `last_index` is the index of the client's last applied command, or the
/// marker's if that is later; before, `order` is empty, every
/// `last_index` 0, and nothing is forgotten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Expiry {
    limit: usize,
    since: Option<Index>,
    order: OrdSet<(Index, String)>,
    forgotten_through: Option<u64>,
}

impl Default for Expiry {
    fn default() -> Self {
        Self::with_limit(MAX_SESSIONS)
    }
}

/// What a snapshot carries of [`Expiry`] beyond the sessions themselves:
/// each session's `last_index` travels in the session table's order.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Saved {
    pub limit: u64,
    pub since: Option<Index>,
    pub forgotten_through: Option<u64>,
    pub last_indexes: Vec<Index>,
}

impl Expiry {
    /// At least one session is kept: the one that just sent a command.
    pub fn with_limit(limit: usize) -> Self {
        Expiry { limit: limit.max(1), since: None, order: OrdSet::new(), forgotten_through: None }
    }

    /// Rebuilds the order from each session's client and last index.
    pub fn restored<'a>(
        limit: usize,
        since: Option<Index>,
        forgotten_through: Option<u64>,
        sessions: impl Iterator<Item = (&'a str, Index)>,
    ) -> Self {
        let mut e = Self::with_limit(limit);
        e.forgotten_through = forgotten_through;
        e.since = since;
        if since.is_some() {
            for (client, last) in sessions {
                e.order.insert((last, client.to_string()));
            }
        }
        e
    }

    /// Starts the order at the marker's `index`, with every session of
    /// the table last active there; a later marker changes nothing.
    /// Returns whether it started.
    pub fn start<'a>(&mut self, index: Index, sessions: impl Iterator<Item = &'a str>) -> bool {
        if self.since.is_some() {
            return false;
        }
        self.since = Some(index);
        self.order = sessions.map(|c| (index, c.to_string())).collect();
        true
    }

    pub fn since(&self) -> Option<Index> {
        self.since
    }

    /// What a command applied at `index` records as its client's last
    /// index: 0 until the order has started.
    pub fn stamp(&self, index: Index) -> Index {
        if self.since.is_some() { index } else { 0 }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn forgotten_through(&self) -> Option<u64> {
        self.forgotten_through
    }

    /// Whether a command of a client without a session, in `session`, may
    /// be a late one of a forgotten session.
    pub fn refuses(&self, session: u64) -> bool {
        self.forgotten_through.is_some_and(|w| session <= w)
    }

    /// `client`'s last command moved from index `from` to `to`.
    pub fn touched(&mut self, client: &str, from: Index, to: Index) {
        if from == to || self.since.is_none() {
            return;
        }
        let mut key = (from, client.to_string());
        self.order.remove(&key);
        key.0 = to;
        self.order.insert(key);
    }

    /// The least recently active client, to forget, while more sessions
    /// than the limit are kept; `None` once within it. The caller removes
    /// the session and reports its number with [`Expiry::forgot`].
    pub fn over_limit(&mut self) -> Option<String> {
        if self.since.is_none() || self.order.len() <= self.limit {
            return None;
        }
        self.order.remove_min().map(|(_, client)| client)
    }

    pub fn forgot(&mut self, session: u64) {
        self.forgotten_through = Some(self.forgotten_through.map_or(session, |w| w.max(session)));
    }

    #[cfg(test)]
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_active_is_forgotten_first() {
        let mut e = Expiry::with_limit(2);
        assert!(e.start(0, std::iter::empty()));
        e.touched("a", 0, 1);
        e.touched("b", 0, 2);
        assert_eq!(e.over_limit(), None);
        e.touched("a", 1, 3);
        e.touched("c", 0, 4);
        assert_eq!(e.over_limit().as_deref(), Some("b"));
        assert_eq!(e.over_limit(), None);
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn the_watermark_is_the_largest_session_forgotten() {
        let mut e = Expiry::with_limit(1);
        assert!(!e.refuses(0) && !e.refuses(u64::MAX));
        e.forgot(7);
        e.forgot(3);
        assert_eq!(e.forgotten_through(), Some(7));
        assert!(e.refuses(7) && e.refuses(1) && !e.refuses(8));
    }

    #[test]
    fn a_limit_of_zero_keeps_one() {
        let mut e = Expiry::with_limit(0);
        e.start(0, std::iter::empty());
        e.touched("a", 0, 1);
        assert_eq!(e.over_limit(), None);
    }

    #[test]
    fn nothing_is_ordered_or_forgotten_before_the_start_and_it_starts_once() {
        let mut e = Expiry::with_limit(1);
        assert_eq!(e.stamp(5), 0);
        e.touched("a", 0, 5);
        e.touched("b", 0, 6);
        assert_eq!((e.len(), e.over_limit()), (0, None));
        assert!(e.start(7, ["a", "b"].into_iter()));
        assert_eq!(e.stamp(8), 8);
        assert!(!e.start(9, ["a"].into_iter()), "a second marker restarted the order");
        assert_eq!(e.over_limit().as_deref(), Some("a"), "equally old: by client id");
        assert!(is_marker(&marker()));
    }
}
