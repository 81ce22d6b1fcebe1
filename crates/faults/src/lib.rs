//! A Jepsen in miniature for KVRaft.
//!
//! [`run`] starts a real cluster, the coord and N servers as processes,
//! each in a Linux network namespace of its own joined by a bridge (see
//! `network.rs`), runs clients that record every operation, and lets a
//! seeded nemesis loose on it for a time budget: servers SIGKILLed and
//! restarted (the leader more often), paused with SIGSTOP, partitioned
//! (majority/minority, leader isolated, leader cut from the coord, coord
//! isolated, arbitrary splits; one way or both; silent drops or immediate
//! rejects), the coord killed and restarted, and fsyncs slowed down. Then
//! everything is healed and restarted, the clients must complete operations
//! again, the servers' committed logs are compared, and the history is
//! checked for linearizability with `kvraft-lincheck`.
//!
//! Everything random derives from [`Options::seed`]: the schedule of faults
//! (`schedule.rs`, a pure function of the seed) and each client's
//! operations. What the seed cannot fix is timing, so a replay injects the
//! same faults in the same order at the same offsets, against a cluster
//! whose leader and timing may differ.
//!
//! Partitions need root (network namespaces). Without root, or with
//! [`Options::loopback`], the run says in one line that it skips them and
//! runs every process on 127.0.0.1 with the other faults (the slow disk
//! needs root as well). Touches nothing of the host's network: no
//! interface, route or address is added in the root namespace, and the
//! namespaces have no route out.
//!
//! `kvraft faults --time 60 --seed 7` runs it; `cargo run -p kvraft-faults
//! --example plan -- SEED SECS` prints a seed's schedule without running
//! anything.

mod client;
mod cluster;
mod configs;
mod cuts;
mod history;
mod layout;
mod leader;
mod logs;
mod nemesis;
mod netns;
mod network;
pub mod port;
mod report;
mod run;
pub mod schedule;
mod slow_disk;
mod states;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use layout::{PREFIX as NETNS_PREFIX, process_prefix};
pub use report::Report;
pub use run::run;

/// Deletes the namespaces (and kills what runs in them) of earlier runs
/// whose process is gone, e.g. one stopped by Ctrl-C, which skips the Drop
/// guards (their processes die with the harness: see `cluster.rs`). [`run`]
/// does this itself at start; returns the names deleted.
pub fn sweep_stale_namespaces() -> Vec<String> {
    netns::sweep_stale()
}

/// How to run the harness.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `kvraft` binary (runs `kvraft coord --config F` and
    /// `kvraft server {id} --config F`).
    pub kvraft_bin: PathBuf,
    /// 3, 5 or 7.
    pub servers: u64,
    /// The fault phase; the whole run takes this plus about 10-30 s.
    pub duration: Duration,
    /// Fixes the fault schedule and the clients' operations.
    pub seed: u64,
    /// Client threads, each in a namespace of its own, one operation at a
    /// time.
    pub clients: u64,
    /// Configs, data, logs, the history and the report; kept afterwards.
    pub work_dir: PathBuf,
    /// One line per nemesis action and phase on standard error.
    pub progress: bool,
    /// Run on 127.0.0.1 without namespaces even as root (what a non-root
    /// run does anyway): no partitions.
    pub loopback: bool,
    /// The servers' SnapshotEntries: a local snapshot every this many
    /// entries. The default, a fifth of the servers' own, compacts a dozen
    /// times per server in ten minutes, so crashes land while snapshots are
    /// written and adopted; a few hundred makes the leader send snapshots
    /// to followers that a kill or a partition left behind. The price: the
    /// log check compares only what lies above the highest snapshot.
    pub snapshot_entries: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kvraft_bin: PathBuf::from("target/debug/kvraft"),
            servers: 5,
            duration: Duration::from_secs(60),
            seed: 0,
            clients: 4,
            work_dir: PathBuf::from("faults-run"),
            progress: false,
            loopback: false,
            snapshot_entries: 20_000,
        }
    }
}
