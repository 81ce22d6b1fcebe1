//! Tunables of the core, all in ticks, counts or bytes (the core has no clock).

/// How a node behaves. Defaults suit a tick of about 10 ms.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: crate::NodeId,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u64,
    /// A leader that has not heard from a majority for this many ticks
    /// refuses reads (it may have been replaced behind a partition).
    pub quorum_window_ticks: u64,
    /// A pipelined follower that has acknowledged nothing for this many ticks
    /// is probed again from its match index (messages were lost).
    pub resend_ticks: u64,
    /// A snapshot sent is given this many ticks...
    pub snapshot_resend_ticks: u64,
    /// ...plus one per this many of its bytes, before it is sent again.
    pub snapshot_bytes_per_tick: usize,
    /// At most this many entries in one AppendEntries...
    pub max_entries_per_msg: usize,
    /// ...and about this many bytes.
    pub max_bytes_per_msg: usize,
    /// At most this many AppendEntries in flight to one follower...
    pub max_inflight_msgs: usize,
    /// ...holding about this many bytes in all.
    pub max_inflight_bytes: usize,
}

impl Config {
    pub fn new(id: crate::NodeId) -> Self {
        Config {
            id,
            heartbeat_ticks: 2,
            quorum_window_ticks: 10,
            resend_ticks: 6,
            // 1 s, plus 1 s per 6.4 MiB at 10 ms ticks: a 100 MiB snapshot
            // gets about 17 s before a copy follows it.
            snapshot_resend_ticks: 100,
            snapshot_bytes_per_tick: 64 << 10,
            max_entries_per_msg: 512,
            max_bytes_per_msg: 1 << 20,
            max_inflight_msgs: 64,
            max_inflight_bytes: 16 << 20,
        }
    }
}
