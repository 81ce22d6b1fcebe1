//! `kvraft bench`: a closed-loop load generator against a KVRaft cluster
//! (one it starts itself, or one already running), printing throughput,
//! latency percentiles, and the servers' CPU and memory; and `kvraft bench
//! failover`, the time from SIGKILL of the leader to the first write
//! committed by the next one.

use std::path::PathBuf;
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use hdrhistogram::Histogram;
use kvslib::{Config, KvClient, Op, Value};

use crate::local::{self, Layout};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Put,
    Get,
    Mixed,
    Append,
}

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
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Servers of the cluster the bench starts (3, 5 or 7).
    #[arg(long, default_value_t = 3)]
    servers: u64,
    /// Use a running cluster: its coord's client address (no CPU/memory figures then).
    #[arg(long)]
    coord: Option<String>,
    /// One JSON object per line, no progress bar.
    #[arg(long)]
    json: bool,
    /// Record vector-clock traces (a tracing server is started too).
    #[arg(long)]
    trace: bool,
    /// Where the started cluster keeps configs, data and logs.
    #[arg(long, default_value = "bench-run")]
    dir: PathBuf,
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
}

/// The processes of a cluster this command started; killed on drop.
struct Started {
    layout: Layout,
    children: Vec<(u64, Option<Child>)>,
    coord: Option<Child>,
    tracing: Option<Child>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let all = self.children.iter_mut().filter_map(|(_, c)| c.as_mut()).chain(self.coord.as_mut());
        for c in all.chain(self.tracing.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Started {
    async fn new(dir: &std::path::Path, servers: u64, traced: bool) -> anyhow::Result<Started> {
        let _ = std::fs::remove_dir_all(dir);
        let layout = Layout::create_traced(dir, servers, std::path::Path::new("config"), traced)?;
        let tracing = if traced { Some(layout.start_tracing_server()?) } else { None };
        let coord = Some(layout.start_coord(false)?);
        let mut children = Vec::new();
        for id in 1..=servers {
            children.push((id, Some(layout.start_server(id, false)?)));
        }
        let s = Started { layout, children, coord, tracing };
        let l = local::leader(&s.layout.coord_client, Duration::from_secs(20)).await?;
        if l.leader_id == 0 {
            bail!("the cluster did not elect a leader: {}", l.status);
        }
        Ok(s)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|(_, c)| c.as_ref().map(Child::id)).collect()
    }
}

/// CPU seconds (user + system) and peak resident memory (bytes) of a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = hwm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, kb * 1024))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.clients == 0 || args.window == 0 || args.keys == 0 || args.duration == 0 {
        bail!("--clients, --window, --keys and --duration must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        match &args.what {
            Some(What::Failover { tries, servers, dir }) => failover(*tries, *servers, dir).await,
            None => load(&args).await,
        }
    })
}

async fn load(args: &Args) -> anyhow::Result<ExitCode> {
    let started = match &args.coord {
        Some(_) => None,
        None => Some(Started::new(&args.dir, args.servers, args.trace).await?),
    };
    let coord = match (&args.coord, &started) {
        (Some(c), _) => c.clone(),
        (None, Some(s)) => s.layout.coord_client.clone(),
        _ => unreachable!("one of them is set"),
    };
    let before: Vec<(f64, u64)> =
        started.as_ref().map(|s| s.pids().into_iter().filter_map(proc_usage).collect()).unwrap_or_default();

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let value = "x".repeat(args.value_size);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let mut cfg = Config::new(format!("bench{c}-{}", std::process::id()), coord.clone());
        cfg.window = args.window;
        if let Some(addr) = started.as_ref().and_then(|s| s.layout.tracing.clone()) {
            cfg.tracer = kvraft_trace::Tracer::new(kvraft_trace::TracerConfig {
                identity: format!("client{c}"),
                server_addr: addr,
                secret: String::new(),
            })
            .map_err(|e| anyhow!("tracing: {e}"))?;
        }
        let (client, _r) = KvClient::start(cfg).map_err(|e| anyhow!("{e}"))?;
        for lane in 0..args.window as u64 {
            let (client, measuring, stop, done, errors) =
                (client.clone(), measuring.clone(), stop.clone(), done.clone(), errors.clone());
            let (op, keys, value, seed) = (args.op, args.keys, value.clone(), c * 1_000_003 + lane * 7919 + 1);
            tasks.push(tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let mut x = seed;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("key{}", x % keys);
                    let op = match op {
                        Workload::Put => Op::Put { key, value: value.clone() },
                        Workload::Get => Op::Get { key },
                        Workload::Append => Op::Append { key, value: "a".into() },
                        Workload::Mixed if x % 2 == 0 => Op::Get { key },
                        Workload::Mixed => Op::Put { key, value: value.clone() },
                    };
                    let start = Instant::now();
                    let r = client.execute(op).await;
                    if measuring.load(Ordering::Relaxed) {
                        match r {
                            Ok(Value::Done | Value::Value(_) | Value::Cas { .. }) => {
                                let _ = hist.record(start.elapsed().as_micros().max(1) as u64);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("kvraft bench: first error: {e}");
                                }
                            }
                        }
                    }
                }
                hist
            }));
        }
    }
    let bar = (!args.json).then(|| {
        let b = indicatif::ProgressBar::new(args.warmup + args.duration);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len}s")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    });
    for s in 0..args.warmup {
        if let Some(b) = &bar {
            b.set_message("warm-up");
            b.set_position(s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    for s in 0..args.duration {
        if let Some(b) = &bar {
            b.set_message(format!("{} ops", done.load(Ordering::Relaxed)));
            b.set_position(args.warmup + s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    measuring.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for t in tasks {
        if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_secs(15), t).await {
            hist.add(&h).map_err(|e| anyhow!("merging histograms: {e}"))?;
        }
    }
    let after: Vec<(f64, u64)> =
        started.as_ref().map(|s| s.pids().into_iter().filter_map(proc_usage).collect()).unwrap_or_default();
    let cpu: f64 = after.iter().map(|a| a.0).sum::<f64>() - before.iter().map(|b| b.0).sum::<f64>();
    let peak_mem = after.iter().map(|a| a.1).max().unwrap_or(0);
    let n = done.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let op = format!("{:?}", args.op).to_lowercase();
    if args.json {
        let v = serde_json::json!({
            "system": "kvraft", "op": op, "tracing": args.trace, "clients": args.clients, "window": args.window,
            "ops_per_sec": n as f64 / secs, "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99),
            "p999_ms": ms(0.999), "max_ms": hist.max() as f64 / 1000.0, "errors": errors.load(Ordering::Relaxed),
            "server_cpu_s": started.as_ref().map(|_| cpu), "server_peak_rss_bytes": started.as_ref().map(|_| peak_mem),
        });
        println!("{v}");
    } else {
        println!(
            "kvraft {op:<6} clients={:<4} window={:<3} {:>9.0} ops/s   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  errors {}",
            args.clients,
            args.window,
            n as f64 / secs,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            hist.max() as f64 / 1000.0,
            errors.load(Ordering::Relaxed)
        );
        if started.is_some() {
            println!(
                "servers: {:.1} CPU-seconds in {secs:.1} s ({:.0}% of one core), peak RSS {:.1} MiB (largest server)",
                cpu,
                100.0 * cpu / secs,
                peak_mem as f64 / (1 << 20) as f64
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn failover(tries: u32, servers: u64, dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut s = Started::new(dir, servers, false).await?;
    let coord = s.layout.coord_client.clone();
    let mut cfg = Config::new(format!("failover-{}", std::process::id()), coord.clone());
    cfg.window = 1;
    cfg.op_timeout = Duration::from_secs(20);
    let (client, _r) = KvClient::start(cfg).map_err(|e| anyhow!("{e}"))?;
    let mut times = Vec::new();
    for t in 1..=tries {
        client.execute(Op::Put { key: "warm".into(), value: t.to_string() }).await.map_err(|e| anyhow!("{e}"))?;
        let leader = local::leader(&coord, Duration::from_secs(10)).await?.leader_id;
        let child = s.children.iter_mut().find(|(id, _)| *id == leader).and_then(|(_, c)| c.as_mut());
        let child = child.ok_or_else(|| anyhow!("leader {leader} is not one of ours"))?;
        let killed = Instant::now();
        let _ = child.kill();
        let _ = child.wait();
        client.execute(Op::Put { key: "after".into(), value: t.to_string() }).await.map_err(|e| anyhow!("{e}"))?;
        let took = killed.elapsed();
        times.push(took);
        eprintln!("try {t:>2}: leader {leader} killed; a write committed at the next leader after {took:.1?}");
        // Bring it back, and wait until it caught up, before the next try.
        let restarted = s.layout.start_server(leader, false)?;
        if let Some(slot) = s.children.iter_mut().find(|(id, _)| *id == leader) {
            slot.1 = Some(restarted);
        }
        let addr = s.layout.servers[leader as usize - 1].client.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = local::server_status(&addr).await;
            let l = local::leader(&coord, Duration::from_secs(1)).await?;
            let ls = local::server_status(&s.layout.servers[l.leader_id.max(1) as usize - 1].client).await;
            if let (Ok(st), Ok(ls)) = (st, ls)
                && st.applied_index >= ls.commit_index
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("server {leader} did not catch up after its restart");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    println!(
        "failover over {tries} tries ({servers} servers, HeartbeatMs 25, RttFloorMs 150, LostMsgsThresh 3): median {median:.1?}, worst {worst:.1?}, best {:.1?}",
        times[0]
    );
    Ok(ExitCode::SUCCESS)
}
