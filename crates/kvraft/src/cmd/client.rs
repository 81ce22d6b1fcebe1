//! `kvraft client {client-id}`: the prototype's client, driving kvslib with
//! a workload and checking every result.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use kvslib::{Config, KvClient, Op, Value};
use serde::Deserialize;

#[derive(clap::Args)]
pub struct Args {
    /// This client's id (names config/client_config{id}.json).
    id: String,
    /// The config file [default: config/client_config{id}.json]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Operations to run: puts and gets, alternating as the prototype did
    /// (Put(k1,val1), Get(k1), Put(k2,val2), ...) unless --mix says otherwise.
    #[arg(long, default_value_t = 20)]
    count: u64,
    /// Percentage of puts in a random workload (0-100); without it, the
    /// prototype's alternation.
    #[arg(long)]
    mix: Option<u8>,
    /// Number of distinct keys for a random workload.
    #[arg(long, default_value_t = 10)]
    keys: u64,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Print only the summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ClientConfig {
    #[serde(rename = "ClientID")]
    client_id: String,
    #[serde(rename = "CoordIPPort")]
    coord_ip_port: String,
    #[serde(default = "one")]
    ch_capacity: usize,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    tracing_server_addr: String,
    #[serde(default)]
    tracing_identity: String,
    /// The prototype's fields for its client-side listeners, no longer needed.
    #[serde(rename = "LocalCoordIPPort", default)]
    local_coord_ip_port: Option<String>,
    #[serde(rename = "LocalLeaderServerIPPort", default)]
    local_leader_server_ip_port: Option<String>,
}

fn one() -> usize {
    1
}

/// The most operations one `kvraft client` run makes.
const MAX_COUNT: u64 = 1_000_000;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.mix.is_some_and(|m| m > 100) {
        bail!("--mix is a percentage of puts, 0 to 100");
    }
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    // The operations are made up front (a reproducible list): bounded so
    // that a large --count is an error, not an allocation failure.
    if args.count > MAX_COUNT {
        bail!("--count is at most {MAX_COUNT} (kvraft bench runs loads for a duration instead)");
    }
    if args.window == 0 || args.window > kvslib::MAX_WINDOW {
        bail!("--window is 1 to {}", kvslib::MAX_WINDOW);
    }
    let path = args.config.clone().unwrap_or_else(|| PathBuf::from(format!("config/client_config{}.json", args.id)));
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config {}", path.display()))?;
    let cfg: ClientConfig =
        serde_json::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
    if cfg.local_coord_ip_port.is_some() || cfg.local_leader_server_ip_port.is_some() {
        eprintln!(
            "kvraft client: LocalCoordIPPort and LocalLeaderServerIPPort are ignored (the client needs no listener)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(workload(args, cfg))
}

fn ops(args: &Args, client: &str) -> Vec<Op> {
    match args.mix {
        None => (1..=args.count)
            .map(|n| {
                let i = n.div_ceil(2);
                if n % 2 == 1 {
                    Op::Put { key: format!("k{i}"), value: format!("val{i}") }
                } else {
                    Op::Get { key: format!("k{i}") }
                }
            })
            .collect(),
        Some(mix) => {
            // A small deterministic generator: the workload is reproducible.
            let mut x: u64 = 0x9e3779b97f4a7c15 ^ args.count;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            (1..=args.count)
                .map(|n| {
                    let key = format!("k{}", next() % args.keys);
                    if next() % 100 < mix as u64 {
                        Op::Put { key, value: format!("{client}-{n}") }
                    } else {
                        Op::Get { key }
                    }
                })
                .collect()
        }
    }
}

async fn workload(args: Args, cfg: ClientConfig) -> anyhow::Result<ExitCode> {
    let mut kc = Config::new(cfg.client_id.clone(), cfg.coord_ip_port.clone());
    kc.secret = cfg.secret.clone();
    if !cfg.tracing_server_addr.is_empty() {
        let identity = if cfg.tracing_identity.is_empty() {
            format!("client{}", cfg.client_id)
        } else {
            cfg.tracing_identity.clone()
        };
        kc.tracer = kvraft_trace::Tracer::new(kvraft_trace::TracerConfig {
            identity,
            server_addr: cfg.tracing_server_addr.clone(),
            secret: cfg.secret.clone(),
        })
        .map_err(|e| anyhow::anyhow!("tracing: {e}"))?;
    }
    kc.ch_capacity = cfg.ch_capacity.max(args.window);
    kc.window = args.window;
    let kc_tracer = kc.tracer.clone();
    let (client, mut results) = KvClient::start(kc).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ops = ops(&args, &cfg.client_id);
    let total = ops.len();
    let start = Instant::now();
    let submitter = {
        let client = client.clone();
        tokio::spawn(async move {
            for op in ops {
                if client.submit(op).await.is_err() {
                    return;
                }
            }
        })
    };
    // Expected values as this client wrote them (the check assumes no other
    // client writes the same keys meanwhile).
    let mut expected: HashMap<String, Option<String>> = HashMap::new();
    let (mut wrong, mut failed, mut done) = (0, 0, 0);
    while done < total {
        let Some(r) = results.recv().await else { break };
        done += 1;
        match (&r.op, &r.result) {
            (Op::Put { key, value }, Ok(Value::Done)) => {
                expected.insert(key.clone(), Some(value.clone()));
                if !args.quiet {
                    println!("{}. {} -> ok", r.op_id, r.op);
                }
            }
            (Op::Get { key }, Ok(Value::Value(v))) => {
                let ok = expected.get(key).is_none_or(|e| e == v);
                if !ok {
                    wrong += 1;
                }
                if !args.quiet || !ok {
                    let shown = v.as_deref().unwrap_or("<absent>");
                    let mark = if ok { "" } else { "   WRONG: expected another value" };
                    println!("{}. {} -> {shown}{mark}", r.op_id, r.op);
                }
            }
            (_, Err(e)) => {
                failed += 1;
                println!("{}. {} -> error: {e}", r.op_id, r.op);
            }
            (_, Ok(other)) => {
                wrong += 1;
                println!("{}. {} -> unexpected {other:?}", r.op_id, r.op);
            }
        }
    }
    let _ = submitter.await;
    let tracer = kc_tracer;
    client.stop().await;
    if let Some(line) = tracer.unsent_report() {
        eprintln!("kvraft client: {line}");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "client {}: {done} operations in {:.2}s ({:.0} ops/s), {wrong} wrong, {failed} failed",
        cfg.client_id,
        secs,
        done as f64 / secs.max(1e-9)
    );
    Ok(if wrong == 0 && failed == 0 && done == total { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
