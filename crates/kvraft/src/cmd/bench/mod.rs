//! `kvraft bench`: a closed-loop load generator against a KVRaft cluster
//! (one it starts itself, or one already running) or an etcd cluster
//! (`--etcd`, with the `etcd` feature), printing throughput, latency
//! percentiles, and the servers' CPU and memory; `--compare-etcd`, the two
//! side by side; `kvraft bench floor`, what one durable write must cost at
//! least; and `kvraft bench failover`, the time from SIGKILL of the leader to
//! the first write committed by the next one.
//!
//! The files: `driver` runs the load against any [`driver::Conn`];
//! `kvraft_target` and `etcd_target` are the two kinds of connection;
//! `etcd_cluster` starts local etcd members; `usage` reads CPU and memory
//! from /proc; `report` prints rows; `floor` measures the floor, once
//! `quiet` has waited for idle CPUs; `compare` is
//! the side-by-side sequence; `failover` the failover timing; `solo` the
//! single-threaded runtime that loads of a few lanes run on.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

#[cfg(feature = "etcd")]
mod compare;
mod driver;
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
mod etcd_cluster;
#[cfg(feature = "etcd")]
mod etcd_target;
mod failover;
mod floor;
mod kvraft_target;
mod quiet;
mod report;
mod scale;
mod solo;
mod usage;

pub use driver::Workload;

use driver::Load;
use floor::Floor;
use kvraft_target::Started;
use report::Row;
use solo::Solo;

/// What any etcd flag says when the binary was built without the `etcd`
/// feature (the etcd client's build needs a system protoc).
#[cfg_attr(feature = "etcd", allow(dead_code))]
pub const NO_ETCD: &str = "this kvraft was built without etcd support: rebuild with \
    `cargo run --release --features etcd -- bench ...` after `apt-get install -y protobuf-compiler`";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: Option<What>,
    /// The operation mix (mixed: half gets, half puts).
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    op: Workload,
    /// Concurrent clients (each its own session).
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Operations in flight per client.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Seconds measured (per workload with --compare-etcd).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up, not measured (per workload with --compare-etcd).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Servers of the cluster the bench starts (3, 5 or 7; 1 for a cluster without replication).
    #[arg(long, default_value_t = 3)]
    servers: u64,
    /// Use a running cluster: its coord's client address (no CPU/memory figures then).
    #[arg(long, conflicts_with = "etcd")]
    coord: Option<String>,
    /// The running cluster's Secret, with --coord (a cluster the bench starts uses config/'s).
    #[arg(long, requires = "coord", default_value = "")]
    secret: String,
    /// Bench a running etcd instead: its client endpoints, comma-separated (needs the `etcd` feature).
    #[arg(long, value_name = "ENDPOINTS")]
    etcd: Option<String>,
    /// Start an etcd cluster and a KVRaft cluster of --members each, and bench put, get and
    /// mixed on both, then one client's puts (needs the `etcd` feature; installs etcd-server).
    #[arg(long, conflicts_with_all = ["coord", "etcd", "trace", "op", "servers"])]
    compare_etcd: bool,
    /// Members of each cluster with --compare-etcd (3 or 5).
    #[arg(long, default_value_t = 3, requires = "compare_etcd")]
    members: u64,
    /// One JSON object per line, no progress bar.
    #[arg(long)]
    json: bool,
    /// Record vector-clock traces (a tracing server is started too).
    #[arg(long, conflicts_with = "etcd")]
    trace: bool,
    /// KVRaft's clients use the gRPC Session stream, as a client in another
    /// language would, instead of the client wire's frames.
    #[arg(long, conflicts_with = "etcd")]
    grpc: bool,
    /// Where the started clusters keep configs, data and logs (and where the floor's fsyncs go).
    #[arg(long, default_value = "bench-run")]
    dir: PathBuf,
}

impl Args {
    fn transport(&self) -> kvslib::Transport {
        if self.grpc { kvslib::Transport::Grpc } else { kvslib::Transport::Frames }
    }
}

#[derive(clap::Subcommand)]
enum What {
    /// Kill the leader again and again; time until a write commits at the next one.
    Failover {
        #[arg(long, default_value_t = 20)]
        tries: u32,
        #[arg(long, default_value_t = 3)]
        servers: u64,
        #[arg(long, default_value = "bench-run")]
        dir: PathBuf,
    },
    /// Memory and restart time as the keys double (1,000,000 keys of 100 bytes by default).
    Scale(scale::Args),
    /// The floor of one durable write: one fdatasync plus two loopback round trips
    /// (and, not part of it, three fdatasyncs at once on the same disk).
    Floor {
        /// Where the fsynced file goes (the disk that is measured).
        #[arg(long, default_value = "bench-run")]
        dir: PathBuf,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Bounds on the load's shape (see `run`).
const MAX_CLIENTS: u64 = 10_000;
const MAX_WINDOW: usize = 1_024;
const MAX_SECONDS: u64 = 24 * 3600;
const MAX_VALUE_BYTES: usize = kvraft_server::convert::MAX_VALUE_BYTES;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if cfg!(not(feature = "etcd")) && (args.etcd.is_some() || args.compare_etcd) {
        bail!("{NO_ETCD}");
    }
    if args.clients == 0 || args.window == 0 || args.keys == 0 || args.duration == 0 {
        bail!("--clients, --window, --keys and --duration must be at least 1");
    }
    // Each client is a session with connections of its own, each lane a
    // task: far beyond what a machine can drive, they would only exhaust
    // its file descriptors or memory before the first operation.
    if args.clients > MAX_CLIENTS || args.window > MAX_WINDOW {
        bail!("--clients is at most {MAX_CLIENTS} and --window at most {MAX_WINDOW}");
    }
    if args.duration > MAX_SECONDS || args.warmup > MAX_SECONDS {
        bail!("--duration and --warmup are at most {MAX_SECONDS} seconds (a day)");
    }
    if args.value_size > MAX_VALUE_BYTES {
        bail!("--value-size is at most {MAX_VALUE_BYTES} (the largest value a server accepts)");
    }
    if args.compare_etcd && !matches!(args.members, 3 | 5) {
        bail!("--members must be 3 or 5");
    }
    let servers = match args.what {
        Some(What::Failover { servers, .. }) => servers,
        _ => args.servers,
    };
    if !matches!(servers, 1 | 3 | 5 | 7) {
        bail!("--servers must be 1, 3, 5 or 7, not {servers}");
    }
    if let Some(What::Failover { tries: 0, .. }) = args.what {
        bail!("--tries must be at least 1");
    }
    if args.etcd.is_some() && args.op == Workload::Append {
        bail!("{}", driver::APPEND_ON_ETCD);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let result = rt.block_on(async {
        // Whatever the bench started is killed when its owner is dropped:
        // at the end, on an error, and here on Ctrl-C (or SIGTERM).
        tokio::select! {
            r = dispatch(&args) => r,
            _ = crate::cmd::shutdown_signal() => {
                eprintln!("kvraft bench: interrupted; the processes it started are stopped");
                Ok(ExitCode::from(130))
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn dispatch(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.what {
        Some(What::Failover { tries, servers, dir }) => failover::failover(*tries, *servers, dir).await,
        Some(What::Scale(a)) => scale::run(a).await,
        Some(What::Floor { dir, json }) => {
            let f = floor::measure(dir).await?;
            let shared = floor::measure_shared(dir, 3).await?;
            if *json {
                let mut v = f.json();
                v["fsync3_p50_ms"] = serde_json::json!(shared);
                v["shared_bound_ms"] = serde_json::json!(floor::shared_bound_ms(&f, shared));
                println!("{v}");
            } else {
                println!("{}", f.line());
                println!("{}", floor::shared_line(3, shared));
                println!("{}", floor::shared_bound_line(&f, shared));
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "etcd")]
        None if args.compare_etcd => compare::run(args).await,
        #[cfg(not(feature = "etcd"))]
        None if args.compare_etcd => bail!("{NO_ETCD}"),
        None if args.etcd.is_some() => etcd(args).await,
        None => kvraft(args).await,
    }
}

/// The load of the flags, on `window` lanes per client; `watch`: the
/// processes whose CPU and memory are reported.
fn load_of(args: &Args, system: &'static str, op: Workload, watch: Option<Vec<u32>>) -> Load {
    Load {
        watch,
        label: format!("{system} {}", op.name()),
        op,
        window: args.window,
        keys: args.keys,
        value_size: args.value_size,
        warmup: args.warmup,
        duration: args.duration,
        progress: !args.json,
        on: None,
    }
}

/// `kvraft bench [--coord ADDR]`: one workload against KVRaft.
async fn kvraft(args: &Args) -> anyhow::Result<ExitCode> {
    // A single client's puts on a cluster of ours are judged against the
    // floor: the mean of one measured before the cluster starts and one
    // after it stopped, both on a quiet machine (see compare.rs).
    let judged = args.coord.is_none() && args.op == Workload::Put && args.clients == 1 && args.window == 1;
    let before = if judged { Some(floor::measure(&args.dir.join("floor")).await?) } else { None };
    let started = match &args.coord {
        Some(_) => None,
        None => Some(Started::new(&args.dir, args.servers, args.trace).await?),
    };
    let (coord, secret) = match (&args.coord, &started) {
        (Some(c), _) => (c.clone(), args.secret.clone()),
        (None, Some(s)) => (s.layout.coord_client.clone(), s.layout.secret.clone()),
        (None, None) => bail!("no cluster to bench"),
    };
    let tracing = started.as_ref().and_then(|s| s.layout.tracing.clone());
    let solo = Solo::for_lanes(args.clients.saturating_mul(args.window as u64))?;
    let conns = {
        // A few lanes' connections live on the runtime their lanes run on.
        let _on = solo.as_ref().map(|s| s.handle().enter());
        kvraft_target::clients(&coord, &secret, args.clients, args.window, tracing.as_deref(), "", args.transport())?
    };
    prefill_for_gets(args, "kvraft", &conns).await?;
    let mut load = load_of(args, "kvraft", args.op, started.as_ref().map(Started::pids));
    load.on = solo.as_ref().map(|s| s.handle().clone());
    let outcome = driver::run(&conns, &load).await?;
    drop(conns);
    drop(solo);
    drop(started);
    let mut row = Row::new("kvraft", args.op, args.clients, args.window, &outcome).traced(args.trace);
    let floor = match before {
        Some(b) => Some(Floor::mean(&b, &floor::measure(&args.dir.join("floor")).await?)),
        None => None,
    };
    if let Some(f) = floor {
        row = row.with_floor(f);
    }
    row.print(args.json);
    if let (false, Some(f), Some(l)) = (args.json, floor, report::floor_line(&row)) {
        println!("{} (the mean of one before the cluster started and one after it stopped)", f.line());
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Before a get workload, every key is written once, so that gets find values.
async fn prefill_for_gets<C: driver::Conn>(args: &Args, system: &str, conns: &[C]) -> anyhow::Result<()> {
    if args.op == Workload::Get {
        if !args.json {
            eprintln!("kvraft bench: {system}: writing each of the {} keys once before the gets", args.keys);
        }
        driver::prefill(conns, args.keys, args.value_size).await?;
    }
    Ok(())
}

/// `kvraft bench --etcd ENDPOINTS`: one workload against a running etcd.
#[cfg(feature = "etcd")]
async fn etcd(args: &Args) -> anyhow::Result<ExitCode> {
    let endpoints = parse_endpoints(args.etcd.as_deref().unwrap_or_default())?;
    let solo = Solo::for_lanes(args.clients.saturating_mul(args.window as u64))?;
    let n = args.clients;
    let conns = solo::on(solo.as_ref(), async move { etcd_target::connect(&endpoints, n).await }).await?;
    prefill_for_gets(args, "etcd", &conns).await?;
    let mut load = load_of(args, "etcd", args.op, None);
    load.on = solo.as_ref().map(|s| s.handle().clone());
    let outcome = driver::run(&conns, &load).await?;
    drop(conns);
    Row::new("etcd", args.op, args.clients, args.window, &outcome).print(args.json);
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_: &Args) -> anyhow::Result<ExitCode> {
    bail!("{NO_ETCD}")
}

/// `a:1, b:2` → `["a:1", "b:2"]`.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
fn parse_endpoints(s: &str) -> anyhow::Result<Vec<String>> {
    let v: Vec<String> = s.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect();
    if v.is_empty() {
        bail!("--etcd wants the endpoints, comma-separated (127.0.0.1:2379,127.0.0.1:22379)");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_split_on_commas() {
        assert_eq!(parse_endpoints(" a:1, b:2 ,").unwrap(), vec!["a:1".to_string(), "b:2".to_string()]);
        assert!(parse_endpoints(" , ").is_err());
    }
}
