//! `kvraft bench --compare-etcd`: KVRaft and etcd side by side on one
//! machine. Installs etcd if need be; measures the floor; then a KVRaft
//! cluster of `--members` (fsync on), and after it has stopped, an etcd
//! cluster of the same size, each in turn: put, get (after writing every
//! key once) and mixed with `--clients` clients, and one client's puts. Prints the
//! rows grouped by workload with a kvraft/etcd line each, or JSON lines.
//!
//! KVRaft's single client is judged against the mean of two floors, one
//! measured before any cluster runs and one after both have stopped: this
//! VM's disk drifts by a third over minutes, and a floor measured while
//! anything else runs is no floor (with the CPUs kept awake, a loopback
//! round trip took 6 us instead of 100): each waits for idle CPUs first,
//! and pins its round trips' two ends to two CPUs (see floor.rs).

use std::process::ExitCode;

use super::driver::{self, Conn, Workload};
use super::etcd_cluster::{self, EtcdCluster};
use super::floor::{self, Floor};
use super::kvraft_target::{self, Started};
use super::report::{self, Row};
use super::solo::{self, Solo};
use super::{Args, etcd_target, load_of};

/// The workloads with `--clients` clients, in order.
const WORKLOADS: [Workload; 3] = [Workload::Put, Workload::Get, Workload::Mixed];

pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let exe = etcd_cluster::ensure_installed(&args.dir).await?;
    // Before any cluster runs, and after both stopped: the machine is quiet.
    let before = floor::measure(&args.dir).await?;
    if !args.json {
        println!("{}", before.line());
    }
    // One system runs at a time: etcd starts once KVRaft has stopped.
    let mut kvraft_rows = {
        let started = Started::new(&args.dir.join("kvraft"), args.members, false).await?;
        eprintln!("kvraft bench: kvraft: {} servers, fsync on, leader elected", args.members);
        let coord = started.layout.coord_client.clone();
        let conns = kvraft_target::clients(
            &coord,
            &started.layout.secret,
            args.clients,
            args.window,
            None,
            "",
            args.transport(),
        )?;
        let solo = Solo::for_lanes(1)?;
        let one = {
            let _on = solo.as_ref().map(|s| s.handle().enter());
            kvraft_target::clients(&coord, &started.layout.secret, 1, 1, None, "one", args.transport())?
        };
        sequence(args, "kvraft", conns, one, solo, started.pids()).await?
        // The KVRaft cluster stops here, before etcd starts.
    };
    let etcd = EtcdCluster::start(&exe, &args.dir.join("etcd"), args.members).await?;
    eprintln!("kvraft bench: etcd: {} members healthy at {}", args.members, etcd.endpoints.join(","));
    let etcd_rows = {
        let conns = etcd_target::connect(&etcd.endpoints, args.clients).await?;
        let solo = Solo::for_lanes(1)?;
        let endpoints = etcd.endpoints.clone();
        let one = solo::on(solo.as_ref(), async move { etcd_target::connect(&endpoints, 1).await }).await?;
        sequence(args, "etcd", conns, one, solo, etcd.pids()).await?
    };
    drop(etcd);
    let after = floor::measure(&args.dir).await?;
    let writers = args.members as usize;
    let shared = floor::measure_shared(&args.dir, writers).await?;
    if let Some(row) = kvraft_rows.last_mut() {
        row.floor = Some(Floor::mean(&before, &after));
        row.shared_fsync_ms = Some(shared);
    }
    if args.json {
        for r in kvraft_rows.iter().chain(&etcd_rows) {
            println!("{}", r.json());
        }
    } else {
        for (k, e) in kvraft_rows.iter().zip(&etcd_rows) {
            println!();
            for r in [k, e] {
                println!("{}", r.line());
                if let Some(u) = r.usage_line() {
                    println!("    {u}");
                }
            }
            println!("  => {}", report::ratio_line(k, e));
        }
        println!("  => again after both clusters stopped: {}", after.line());
        if let Some(l) = kvraft_rows.last().and_then(report::floor_line) {
            println!("  => against the mean of the two floors: {l}");
        }
        println!("  => {}", floor::shared_line(writers, shared));
        println!("  => {}", floor::shared_bound_line(&Floor::mean(&before, &after), shared));
    }
    Ok(ExitCode::SUCCESS)
}

/// One system's runs: the workloads on `conns`, then (`conns` closed, so
/// that only one client is connected) a single client's puts on `one`,
/// whose connection was made on `solo`'s runtime.
async fn sequence<C: Conn>(
    args: &Args,
    system: &'static str,
    conns: Vec<C>,
    one: Vec<C>,
    solo: Option<Solo>,
    pids: Vec<u32>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for op in WORKLOADS {
        if op == Workload::Get {
            eprintln!("kvraft bench: {system}: writing each of the {} keys once before the gets", args.keys);
            driver::prefill(&conns, args.keys, args.value_size).await?;
        }
        let outcome = driver::run(&conns, &load_of(args, system, op, Some(pids.clone()))).await?;
        rows.push(Row::new(system, op, args.clients, args.window, &outcome));
    }
    drop(conns);
    let mut load = load_of(args, system, Workload::Put, Some(pids));
    load.window = 1;
    load.label = format!("{system} put, 1 client");
    load.on = solo.as_ref().map(|s| s.handle().clone());
    let outcome = driver::run(&one, &load).await?;
    drop(one);
    drop(solo);
    rows.push(Row::new(system, Workload::Put, 1, 1, &outcome));
    Ok(rows)
}
