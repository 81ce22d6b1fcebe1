//! What one simulated run looks like: cluster size, workload and faults, all
//! drawn from the seed so that a seed alone replays a run exactly.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How the leader serves Gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: confirm leadership by a heartbeat round, read the state machine.
    ReadIndex,
    /// Gets go through the log like writes (the prototype's way).
    Log,
}

/// One run's shape. [`SimConfig::from_seed`] draws everything from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u64,
    pub clients: u64,
    pub ops_per_client: u64,
    pub keys: u64,
    pub read_mode: ReadMode,
    /// Per-message probabilities while faults run.
    pub drop_rate: f64,
    pub dup_rate: f64,
    /// Chance that a message is held back long (reordering).
    pub long_delay_rate: f64,
    /// Mean gap between nemesis actions, in simulated milliseconds.
    pub nemesis_every_ms: u64,
    /// Faults stop (the network heals and every server restarts) at this time.
    pub faults_until_ms: u64,
    /// After faults stop, clients must finish within this long.
    pub settle_ms: u64,
    /// Servers take a snapshot (and compact their log) every this many entries.
    pub snapshot_every: u64,
    /// Flow control of the cores: small values split batches, so old-term
    /// entries travel without the new leader's No-Op (figure 8 of the paper).
    pub max_entries_per_msg: usize,
    pub max_inflight_msgs: usize,
    /// Chance that a newly designated leader crashes within its first
    /// round trips: the window in which a figure-8 bug would strike.
    pub takeover_crash_rate: f64,
    /// Chance, per disk write while faults run, of a crash right before the
    /// write lands (it is lost) or right after it (nothing of that Ready is
    /// sent): etcd's RaftBeforeSave and RaftAfterSave failpoints.
    pub crash_at_write_rate: f64,
    /// Chance, per nemesis action, that the coord's process crashes instead
    /// (restarting a little later, usually with its state file lost).
    pub coord_crash_rate: f64,
    /// The cores' quorum window: a short one makes leaders cut off from
    /// their followers say they lost their quorum (after
    /// `LOST_QUORUM_WINDOWS` windows) within a partition's time.
    pub quorum_window_ticks: u64,
    /// Client sessions the state machines keep: in some seeds fewer than
    /// the clients, so that sessions are forgotten while their clients run.
    pub session_limit: usize,
}

impl SimConfig {
    /// The run of `seed`; `nodes` overrides the cluster size (else 3, 5 or 7).
    pub fn from_seed(seed: u64, nodes: Option<u64>, rng: &mut ChaCha8Rng) -> Self {
        let mut cfg = SimConfig {
            seed,
            nodes: nodes.unwrap_or([3, 5, 7][(seed % 3) as usize]),
            clients: rng.random_range(2..=5),
            ops_per_client: rng.random_range(10..=30),
            keys: rng.random_range(1..=4),
            read_mode: if rng.random_bool(0.5) { ReadMode::ReadIndex } else { ReadMode::Log },
            drop_rate: rng.random_range(0.0..0.1),
            dup_rate: rng.random_range(0.0..0.05),
            long_delay_rate: rng.random_range(0.0..0.05),
            nemesis_every_ms: rng.random_range(20..400),
            faults_until_ms: rng.random_range(1_000..4_000),
            settle_ms: 20_000,
            snapshot_every: rng.random_range(8..64),
            max_entries_per_msg: [1, 2, 8, 64][rng.random_range(0..4)],
            max_inflight_msgs: rng.random_range(1..=8),
            takeover_crash_rate: [0.0, 0.2, 0.5][rng.random_range(0..3)],
            crash_at_write_rate: [0.0, 0.01, 0.03][rng.random_range(0..3)],
            coord_crash_rate: 0.0,
            quorum_window_ticks: 10,
            session_limit: kvraft_core::kv::MAX_SESSIONS,
        };
        if rng.random_bool(0.25) {
            // The takeover profile: leaders die during their first round
            // trips while entries travel one at a time, the setting in which
            // counting replicas of old-term entries (figure 8) goes wrong.
            cfg.max_entries_per_msg = 1;
            cfg.max_inflight_msgs = 1;
            cfg.takeover_crash_rate = 0.6;
        }
        // Drawn last, so that the draws above stay what they were.
        cfg.coord_crash_rate = [0.0, 0.03, 0.08][rng.random_range(0..3)];
        cfg.quorum_window_ticks = [10, 10, 3, 2][rng.random_range(0..4)];
        if rng.random_bool(0.25) {
            // One or two fewer than the clients: fewer would leave so many
            // operations of unknown outcome that the checker's search
            // gives up (a limit of 1 with 5 clients: 56 of 130).
            cfg.session_limit = rng.random_range(cfg.clients.saturating_sub(2).max(1)..cfg.clients) as usize;
        }
        cfg
    }
}
