//! `kvraft faults`: the fault-injection harness (a Jepsen in miniature):
//! a real cluster in network namespaces, a seeded nemesis, clients recording
//! a history, and the linearizability check. Partitions need root; without
//! it (or with `--loopback`) they are skipped, said in one line, and the
//! other faults run on 127.0.0.1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of faults (the whole run takes about 30 s more).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Everything random derives from it: the same seed replays the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 5)]
    servers: u64,
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Configs, data, logs, the history and the report.
    #[arg(long, default_value = "faults-run")]
    dir: PathBuf,
    /// No network namespaces even as root: every process on 127.0.0.1, no partitions.
    #[arg(long)]
    loopback: bool,
    /// The servers' SnapshotEntries; a few hundred makes leaders send
    /// snapshots to the followers that faults left behind.
    #[arg(long, default_value_t = kvraft_faults::Options::default().snapshot_entries)]
    snapshot_entries: u64,
}

/// The longest fault run: a week (the schedule is made up front).
const MAX_TIME: u64 = 7 * 24 * 3600;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.time > MAX_TIME {
        anyhow::bail!("--time is at most {MAX_TIME} seconds (a week)");
    }
    if args.snapshot_entries < 10 {
        anyhow::bail!("--snapshot-entries is at least 10");
    }
    let opts = kvraft_faults::Options {
        kvraft_bin: std::env::current_exe().context("finding the kvraft binary")?,
        servers: args.servers,
        duration: Duration::from_secs(args.time),
        seed: args.seed,
        clients: args.clients,
        work_dir: args.dir,
        progress: true,
        loopback: args.loopback,
        snapshot_entries: args.snapshot_entries,
    };
    let report = kvraft_faults::run(&opts)?;
    println!("{report}");
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
