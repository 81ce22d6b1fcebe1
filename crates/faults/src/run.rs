//! One harness run, start to end:
//!
//! 1. checks (binary, sizes), picks namespaces (root) or loopback (not
//!    root, or `--loopback`: partitions skipped, said in one line), sweeps
//!    namespaces left by dead runs, writes configs, builds the network
//!    (caller's thread);
//! 2. on a thread moved into the harness's own namespace: starts the coord
//!    and servers, waits for a leader, starts the client threads, runs the
//!    nemesis for the time budget, heals everything, waits for every client
//!    to complete operations again, stops the clients, compares the
//!    servers' logs, kills the cluster;
//! 3. deletes the network, writes the history, checks it.
//!
//! Cleanup never depends on reaching the end: the cluster, the slow disk,
//! the network and the clients' stop flag are all Drop guards, unwound in
//! reverse order on an error or a panic. The thread that starts processes
//! outlives every one of them (their parent-death signal is tied to it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Options;
use crate::client::{self, Shared, StopOnDrop};
use crate::cluster::Cluster;
use crate::configs::{self, Paths};
use crate::history::{self, Record};
use crate::layout::{Layout, MAX_CLIENTS, Node};
use crate::leader;
use crate::logs::{self, LogCheck};
use crate::nemesis::Nemesis;
use crate::netns;
use crate::network::Network;
use crate::report::Report;
use crate::schedule::{self, Kind};

/// Each client must complete this many operations after the final heal.
const OPS_TO_RECOVER: u64 = 3;
/// ... within this long.
const RECOVERY_WINDOW: Duration = Duration::from_secs(20);
/// How long the cluster gets to designate its first leader.
const FIRST_LEADER_WITHIN: Duration = Duration::from_secs(20);

/// What the driving thread brings back.
struct Driven {
    records: Vec<Record>,
    actions: Vec<String>,
    counts: BTreeMap<String, usize>,
    recovered: bool,
    recovery: String,
    logs: LogCheck,
    unexpected_exits: Vec<String>,
}

fn say(opts: &Options, epoch: Instant, what: &str) {
    if opts.progress {
        eprintln!("[faults] t={:>7.2}s {what}", epoch.elapsed().as_secs_f64());
    }
}

fn validate(opts: &Options) -> anyhow::Result<()> {
    if !matches!(opts.servers, 3 | 5 | 7) {
        bail!("--servers must be 3, 5 or 7, not {}", opts.servers);
    }
    if !(1..=MAX_CLIENTS).contains(&opts.clients) {
        bail!("clients must be 1..={MAX_CLIENTS}, not {}", opts.clients);
    }
    if opts.duration < Duration::from_secs(1) {
        bail!("the fault phase must last at least 1 s");
    }
    if !opts.kvraft_bin.is_file() {
        bail!("the kvraft binary {} does not exist (build it with `cargo build -p kvraft`)", opts.kvraft_bin.display());
    }
    Ok(())
}

/// True if this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The kinds of fault this run cannot inject.
fn skipped_kinds(layout: &Layout) -> Vec<Kind> {
    let mut skip = Vec::new();
    if !layout.namespaced() {
        skip.push(Kind::Partition);
    }
    if !is_root() {
        skip.push(Kind::SlowDisk);
    }
    skip
}

/// Namespaces when they can be made (root, unless `--loopback` asks
/// otherwise); else loopback, with the line that says what is skipped.
fn choose_layout(opts: &Options) -> anyhow::Result<(Layout, Option<String>)> {
    let why = if opts.loopback {
        "--loopback"
    } else if !is_root() {
        "not root, so no network namespaces can be made"
    } else {
        return Ok((Layout::new(opts.servers, opts.clients), None));
    };
    let layout = Layout::loopback(opts.servers, opts.clients)?;
    let line = format!(
        "partition faults SKIPPED ({why}): kills, pauses and coord kills run on loopback (127.0.0.1){}",
        if is_root() { "" } else { "; slow disks skipped too (strace cannot attach without root)" }
    );
    Ok((layout, Some(line)))
}

/// Creates the folder and clears what an earlier run left in it (only the
/// names this harness writes).
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    for sub in ["data", "logs", "config"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("clearing {}", p.display()))?;
        }
    }
    for file in ["history.jsonl", "ops.log", "nemesis.log", "report.txt"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    Ok(dir)
}

/// Runs the harness (see the crate docs). Blocking: it makes its own
/// threads and runtimes, so call it from a plain thread, not from inside an
/// async task. An `Err` means the harness itself could not run (no
/// binary, a cluster that never elected a leader...); what it found
/// about KVRaft is in the [`Report`], whose [`Report::passed`] is the
/// verdict.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    validate(opts)?;
    let epoch = Instant::now();
    let dir = prepare(&opts.work_dir)?;
    let paths = Paths { dir: dir.clone() };
    let (layout, skipped) = choose_layout(opts)?;
    if let Some(line) = &skipped {
        // Always printed: a run that tests less than usual must say so.
        eprintln!("kvraft faults: {line}");
    }
    if layout.namespaced() {
        let swept = netns::sweep_stale();
        if !swept.is_empty() {
            say(opts, epoch, &format!("swept {} stale namespaces: {}", swept.len(), swept.join(" ")));
        }
    }
    say(opts, epoch, &format!("replay with: {}", replay_command(opts)));
    configs::write_all(&layout, &paths, opts.snapshot_entries)?;
    let net = if layout.namespaced() {
        let net = Network::create(&layout)?;
        say(
            opts,
            epoch,
            &format!(
                "network up: {} namespaces {}* on a bridge in {}",
                layout.nodes().len() + 1,
                layout.prefix(),
                layout.hub()
            ),
        );
        Some(net)
    } else {
        None
    };
    let driven = std::thread::scope(|s| match s.spawn(|| drive(opts, &layout, &paths, epoch)).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })?;
    if net.is_some() {
        drop(net);
        say(opts, epoch, "network deleted; checking the history");
    }
    finish(opts, &layout, &paths, driven, epoch, skipped)
}

fn finish(
    opts: &Options,
    layout: &Layout,
    paths: &Paths,
    d: Driven,
    epoch: Instant,
    skipped: Option<String>,
) -> anyhow::Result<Report> {
    let tally = history::tally(&d.records);
    let ops = history::to_operations(&d.records);
    history::write_history(&paths.history(), &ops)?;
    history::write_ops_log(&paths.dir.join("ops.log"), &d.records)?;
    std::fs::write(paths.dir.join("nemesis.log"), d.actions.join("\n") + "\n")?;
    let check = kvraft_lincheck::check(&ops);
    let mut summary = check.to_string();
    if let Some(v) = check.verdict.violation() {
        summary = format!("{summary}\n{v}");
    }
    say(opts, epoch, &format!("lincheck: {}", summary.lines().next().unwrap_or("")));
    let transfers = snapshot_transfers(layout, paths);
    let report = Report {
        ops: tally.ops,
        ok: tally.ok,
        failed: tally.failed,
        unknown: tally.unknown,
        nemesis_actions: d.actions,
        linearizable: check.verdict.is_linearizable(),
        lincheck_summary: summary,
        history_file: paths.history(),
        faults_by_kind: d.counts,
        recovered: d.recovered,
        recovery: d.recovery,
        logs_consistent: d.logs.consistent,
        log_check: d.logs.summary,
        snapshots_sent: transfers.0,
        snapshots_installed: transfers.1,
        unexpected_exits: d.unexpected_exits,
        checked_ops: ops.len(),
        replay: replay_command(opts),
        work_dir: paths.dir.clone(),
        netns_prefix: layout.prefix(),
        skipped,
    };
    std::fs::write(paths.dir.join("report.txt"), format!("{report}\n"))?;
    Ok(report)
}

/// How many snapshots leaders started sending and followers installed,
/// counted in the servers' logs (appended to across restarts).
fn snapshot_transfers(layout: &Layout, paths: &Paths) -> (usize, usize) {
    let (mut sent, mut installed) = (0, 0);
    for id in layout.server_ids() {
        let log = std::fs::read_to_string(paths.log(&format!("server{id}"))).unwrap_or_default();
        sent += log.matches("sending a snapshot to server").count();
        installed += log.matches("installed a snapshot from the leader").count();
    }
    (sent, installed)
}

/// `kvraft faults --time SECS --seed S --servers N`, plus `--clients N`
/// when not the default 4 (the clients' operations derive from the seed
/// per client, so their number is part of what a replay must repeat),
/// `--loopback` and `--snapshot-entries N` when given.
fn replay_command(opts: &Options) -> String {
    let mut cmd =
        format!("kvraft faults --time {} --seed {} --servers {}", opts.duration.as_secs(), opts.seed, opts.servers);
    if opts.clients != Options::default().clients {
        cmd.push_str(&format!(" --clients {}", opts.clients));
    }
    if opts.loopback {
        cmd.push_str(" --loopback");
    }
    if opts.snapshot_entries != Options::default().snapshot_entries {
        cmd.push_str(&format!(" --snapshot-entries {}", opts.snapshot_entries));
    }
    cmd
}

/// Step 2, on its own thread in the harness's namespace.
fn drive(opts: &Options, layout: &Layout, paths: &Paths, epoch: Instant) -> anyhow::Result<Driven> {
    layout.enter(Node::Ctl)?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("building the harness's runtime")?;
    let mut cluster = Cluster::start(layout, opts.kvraft_bin.clone(), paths.clone(), epoch)?;
    say(opts, epoch, &format!("coord and {} servers started", layout.servers));
    let first = first_leader(&rt, &mut cluster, layout, paths)?;
    say(opts, epoch, &format!("server {first} leads; starting {} clients", layout.clients));
    let shared = Arc::new(Shared::new(epoch, layout.clients));
    let driven = std::thread::scope(|s| -> anyhow::Result<Driven> {
        // Inside the scope: a panic or error here stops the clients before
        // the scope waits for them.
        let _stop = StopOnDrop(shared.clone());
        let clients: Vec<_> = (1..=layout.clients)
            .map(|i| {
                let shared = shared.clone();
                s.spawn(move || client::run(layout, i, opts.seed, shared))
            })
            .collect();
        let mut nemesis =
            Nemesis::new(layout, paths, &mut cluster, &rt, epoch, opts.progress).with_stats(shared.clone());
        let steps =
            schedule::generate(opts.seed, layout.servers, layout.clients, opts.duration, &skipped_kinds(layout));
        nemesis.note(format!(
            "fault phase: {} steps over {:.0}s (seed {})",
            steps.len(),
            opts.duration.as_secs_f64(),
            opts.seed
        ));
        nemesis.run(&steps, Instant::now() + opts.duration)?;
        nemesis.heal_all()?;
        shared.healed_at.store(shared.now_us().max(1), Ordering::SeqCst);
        nemesis.note(format!(
            "all healed; every client must now complete {OPS_TO_RECOVER} operations within {}s",
            RECOVERY_WINDOW.as_secs()
        ));
        let (recovered, recovery) = await_recovery(&shared, layout.clients);
        nemesis.note(format!("recovery: {recovery}"));
        if !recovered {
            for line in rt.block_on(leader::describe(layout)) {
                nemesis.note(format!("  {line}"));
            }
        }
        shared.stop.store(true, Ordering::SeqCst);
        let mut records = Vec::new();
        for (i, c) in clients.into_iter().enumerate() {
            match c.join() {
                Ok(Ok(mut r)) => records.append(&mut r),
                Ok(Err(e)) => return Err(e.context(format!("client {}", i + 1))),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        nemesis.note(format!("clients stopped after {} operations", records.len()));
        let logs = rt.block_on(logs::compare(layout));
        nemesis.note(format!("log check: {}", logs.summary));
        nemesis.watch_processes();
        let counts = nemesis.counts.iter().map(|(k, n)| (k.name().to_owned(), *n)).collect();
        Ok(Driven {
            records,
            actions: std::mem::take(&mut nemesis.actions),
            counts,
            recovered,
            recovery,
            logs,
            unexpected_exits: std::mem::take(&mut nemesis.unexpected_exits),
        })
    })?;
    drop(cluster);
    Ok(driven)
}

/// Waits for the first leader; fails at once if a process exits meanwhile
/// (a wrong binary, a bad config, a port in use) rather than after the
/// whole wait.
fn first_leader(
    rt: &tokio::runtime::Runtime,
    cluster: &mut Cluster,
    layout: &Layout,
    paths: &Paths,
) -> anyhow::Result<u64> {
    let logs = paths.dir.join("logs");
    let deadline = Instant::now() + FIRST_LEADER_WITHIN;
    loop {
        let exits = cluster.take_exits();
        if !exits.is_empty() {
            bail!("during start-up: {}; see {}", exits.join("; "), logs.display());
        }
        if let Some(id) = rt.block_on(leader::from_coord(layout)) {
            return Ok(id);
        }
        if Instant::now() >= deadline {
            bail!("no leader within {FIRST_LEADER_WITHIN:?} of start-up; see {}", logs.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every client has completed [`OPS_TO_RECOVER`] operations
/// invoked after the heal, or [`RECOVERY_WINDOW`] passes.
fn await_recovery(shared: &Shared, clients: u64) -> (bool, String) {
    let start = Instant::now();
    let counts = || -> Vec<u64> { shared.ok_after_heal.iter().map(|c| c.load(Ordering::SeqCst)).collect() };
    loop {
        let done = counts();
        if done.iter().all(|n| *n >= OPS_TO_RECOVER) {
            return (
                true,
                format!(
                    "all {clients} clients completed {OPS_TO_RECOVER} operations {:.2}s after the heal",
                    start.elapsed().as_secs_f64()
                ),
            );
        }
        if start.elapsed() >= RECOVERY_WINDOW {
            return (
                false,
                format!(
                    "NOT RECOVERED: {}s after the heal, operations completed per client: {done:?}",
                    RECOVERY_WINDOW.as_secs()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
