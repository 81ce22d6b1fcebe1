//! `kvraft sim`: many seeds of the deterministic cluster simulation.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use kvraft_sim::{SeedReport, run_seed};

#[derive(clap::Args)]
pub struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed (with `--seeds 1`, replays exactly that seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Cluster size for every seed (3, 5 or 7); by default each seed picks one.
    #[arg(long)]
    nodes: Option<u64>,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print one line per seed.
    #[arg(long, short)]
    verbose: bool,
}

/// More threads than this only wait on each other (and too many could not
/// even be started).
const MAX_JOBS: usize = 256;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.nodes
        && !matches!(n, 3 | 5 | 7)
    {
        bail!("--nodes must be 3, 5 or 7, not {n}");
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if args.jobs.is_some_and(|j| j > MAX_JOBS) {
        bail!("--jobs is at most {MAX_JOBS} (one thread each)");
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let start = Instant::now();
    let next = AtomicU64::new(args.seed);
    let end = args.seed.saturating_add(args.seeds);
    let done = AtomicU64::new(0);
    let ops = AtomicU64::new(0);
    // Coord crashes, of those with the state file lost, and the seeds that lost it.
    let coord_crashes = AtomicU64::new(0);
    let coord_losses = AtomicU64::new(0);
    let seeds_with_loss = AtomicU64::new(0);
    // Joins a coord without its state completed with a majority only.
    let partial_rejoins = AtomicU64::new(0);
    // Leaders failed over because they said they lost their quorum.
    let lost_quorum = AtomicU64::new(0);
    let expired = AtomicU64::new(0);
    let failed: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    let last_progress = Mutex::new(Instant::now());

    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let report = run_seed(seed, args.nodes);
                    ops.fetch_add(report.ops as u64, Ordering::Relaxed);
                    coord_crashes.fetch_add(report.coord_crashes, Ordering::Relaxed);
                    coord_losses.fetch_add(report.coord_state_losses, Ordering::Relaxed);
                    partial_rejoins.fetch_add(report.partial_rejoins, Ordering::Relaxed);
                    lost_quorum.fetch_add(report.lost_quorum_failovers, Ordering::Relaxed);
                    expired.fetch_add(report.sessions_expired, Ordering::Relaxed);
                    if report.coord_state_losses > 0 {
                        seeds_with_loss.fetch_add(1, Ordering::Relaxed);
                    }
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if args.verbose {
                        println!("{}", describe(&report));
                    }
                    if !report.violations.is_empty() {
                        print_failure(&report, args.nodes);
                        failed.lock().expect("no panics hold this lock").push(report);
                    }
                    let mut last = last_progress.lock().expect("no panics hold this lock");
                    if last.elapsed() > Duration::from_secs(5) {
                        *last = Instant::now();
                        eprintln!("[sim] {finished}/{} seeds, {:.0}s", args.seeds, start.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });

    let failed = failed.into_inner().expect("no panics hold this lock");
    let violations: usize = failed.iter().map(|r| r.violations.len()).sum();
    eprintln!("[sim] {} seeds in {:.1}s", args.seeds, start.elapsed().as_secs_f64());
    println!(
        "seeds={} ops={} coord_crashes={} coord_state_losses={} seeds_with_state_loss={} partial_rejoins={} lost_quorum_failovers={} sessions_expired={} violations={violations}",
        args.seeds,
        ops.load(Ordering::Relaxed),
        coord_crashes.load(Ordering::Relaxed),
        coord_losses.load(Ordering::Relaxed),
        seeds_with_loss.load(Ordering::Relaxed),
        partial_rejoins.load(Ordering::Relaxed),
        lost_quorum.load(Ordering::Relaxed),
        expired.load(Ordering::Relaxed)
    );
    Ok(if violations == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn describe(r: &SeedReport) -> String {
    let c = &r.config;
    format!(
        "seed={} nodes={} clients={} reads={:?} drop={:.2} ops={} completed={} crashes={} selections={} coord_crashes={} coord_state_losses={} rediscoveries={} kept_leader={} rejoins={} partial_rejoins={} fenced_failovers={} lost_quorum_failovers={} session_limit={} sessions_expired={} msgs={} sim_ms={} violations={}",
        c.seed,
        c.nodes,
        c.clients,
        c.read_mode,
        c.drop_rate,
        r.ops,
        r.ops_completed,
        r.crashes,
        r.selections,
        r.coord_crashes,
        r.coord_state_losses,
        r.rediscoveries,
        r.rediscovery_kept_leader,
        r.rejoins,
        r.partial_rejoins,
        r.fenced_failovers,
        r.lost_quorum_failovers,
        c.session_limit,
        r.sessions_expired,
        r.messages,
        r.sim_ms,
        r.violations.len()
    )
}

fn print_failure(r: &SeedReport, nodes: Option<u64>) {
    let mut out = format!("FAIL {}\n", describe(r));
    for v in &r.violations {
        out.push_str(&format!("  {v}\n"));
    }
    let nodes = nodes.map(|n| format!(" --nodes {n}")).unwrap_or_default();
    out.push_str(&format!("  replay: kvraft sim --seed {} --seeds 1{nodes} --verbose\n", r.config.seed));
    print!("{out}");
}
