//! What the monitor tells its owner: state changes as [`Event`]s, and the
//! current view as [`ServerHealth`] snapshots.

use std::net::SocketAddr;
use std::time::Duration;

/// A change in a watched server's state. Each server alternates strictly:
/// `Failed` is only reported for a server believed alive, `Recovered` only
/// for one believed failed. A fresh `watch` starts alive and reports nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Failed { id: u64 },
    Recovered { id: u64 },
}

/// One server as the monitor currently sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHealth {
    pub id: u64,
    pub addr: SocketAddr,
    pub alive: bool,
    /// How long the next heartbeat may go unanswered before it counts as lost.
    pub loss_timeout: Duration,
    /// Smoothed round-trip time; `None` until the first ack.
    pub srtt: Option<Duration>,
    /// Mean deviation of the round-trip time (zero until the first ack).
    pub rttvar: Duration,
    /// Heartbeats lost since the last ack.
    pub losses_in_row: u32,
}
