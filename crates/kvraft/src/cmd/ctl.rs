//! `kvraft ctl`: the admin and one-shot client, in the style of etcdctl.
//! Tables for people, `--json` for scripts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use kvraft_proto as pb;
use kvraft_proto::admin_client::AdminClient;
use kvslib::{Config, KvClient, Op, Value};
use tonic::transport::Channel;

/// `println!` that ends the process quietly once standard output is a
/// closed pipe (`kvraft ctl log 1 | head`), as SIGPIPE would. SIGPIPE itself
/// stays ignored here: ctl writes to servers' sockets too, and one that a
/// server closes (its client port full, say) must give an error, not kill
/// the process without a word.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("kvraft ctl: writing to standard output: {e}");
            std::process::exit(2);
        }
    }};
}

#[derive(clap::Args)]
pub struct Args {
    /// The coord's client address [default: ClientAPIListenAddr of --coord-config].
    #[arg(long)]
    coord: Option<String>,
    /// The coord config to take the address (and Secret) from.
    #[arg(long, default_value = "config/coord_config.json")]
    coord_config: PathBuf,
    /// The cluster's Secret [default: the coord config's].
    #[arg(long)]
    secret: Option<String>,
    /// One JSON object per line instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for the cluster.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Print a key's value.
    Get { key: String },
    /// Set a key.
    Put { key: String, value: String },
    /// Delete a key.
    Del { key: String },
    /// One row per server: role, term, indexes, liveness, leader.
    Status,
    /// A server's log, one entry a line: `27. Term=1, Index=27, Entry=Put(k13,val13)`.
    Log { server_id: u64 },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (coord, secret) = match (&args.coord, &args.secret) {
        (Some(c), Some(s)) => (c.clone(), s.clone()),
        _ => {
            let cfg = kvraft_coord::CoordConfig::load(&args.coord_config)
                .map_err(|e| anyhow!("{e} (or give --coord and --secret)"))?;
            (
                args.coord.clone().unwrap_or_else(|| cfg.client_api_listen_addr.to_string()),
                args.secret.clone().unwrap_or(cfg.secret),
            )
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let timeout = Duration::from_millis(args.timeout_ms);
        match &args.what {
            What::Get { key } => one_shot(&coord, &secret, timeout, Op::Get { key: key.clone() }, args.json).await,
            What::Put { key, value } => {
                one_shot(&coord, &secret, timeout, Op::Put { key: key.clone(), value: value.clone() }, args.json).await
            }
            What::Del { key } => one_shot(&coord, &secret, timeout, Op::Delete { key: key.clone() }, args.json).await,
            What::Status => status(&coord, &secret, args.json).await,
            What::Log { server_id } => log(&coord, &secret, *server_id, args.json).await,
        }
    })
}

async fn one_shot(coord: &str, secret: &str, timeout: Duration, op: Op, json: bool) -> anyhow::Result<ExitCode> {
    if op.key().len() > 4096 {
        bail!("key of {} bytes is over the limit of 4096", op.key().len());
    }
    if let Op::Put { value, .. } = &op
        && value.len() > 1 << 20
    {
        bail!("value of {} bytes is over the limit of 1048576", value.len());
    }
    let mut cfg = Config::new(format!("ctl-{}", std::process::id()), coord);
    cfg.secret = secret.to_owned();
    cfg.op_timeout = timeout;
    cfg.window = 1;
    let (client, _results) = KvClient::start(cfg).map_err(|e| anyhow!("{e}"))?;
    let r = client.execute(op.clone()).await;
    let r = r.map_err(|e| match e {
        // The cluster answered: it is up, and said why.
        kvslib::ClientError::Unauthenticated(_) => anyhow!("{op} failed: {e} (check --secret)"),
        _ => anyhow!("{op} failed: {e} (is the cluster at {coord} up?)"),
    })?;
    match (&op, r) {
        (Op::Get { key }, Value::Value(v)) => {
            if json {
                out!("{}", serde_json::json!({"key": key, "value": v}));
            } else {
                match v {
                    Some(v) => out!("{v}"),
                    None => {
                        eprintln!("kvraft ctl: key {key:?} not found");
                        return Ok(ExitCode::from(1));
                    }
                }
            }
        }
        _ => {
            if json {
                out!("{}", serde_json::json!({"ok": true}));
            } else {
                out!("OK");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn connect(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    let e = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(|e| anyhow!("{addr}: {e}"))?;
    e.connect_timeout(Duration::from_secs(2)).connect().await.map_err(|e| anyhow!("cannot reach {addr}: {e}"))
}

fn req<T>(msg: T, secret: &str) -> tonic::Request<T> {
    let mut r = kvraft_proto::secret::with_secret(msg, secret);
    r.set_timeout(Duration::from_secs(2));
    r
}

/// A server's Admin service and its status: on its client port, or, when
/// that does not answer (full, say), on its control port, which keeps its
/// places for the coord and tools (and may not be reachable from here).
async fn admin(s: &pb::ServerView, secret: &str) -> Option<(AdminClient<Channel>, pb::StatusReply)> {
    for addr in [&s.client_addr, &s.control_addr] {
        if addr.is_empty() {
            continue;
        }
        let Ok(ch) = connect(addr).await else { continue };
        let mut a = AdminClient::new(ch);
        if let Ok(st) = a.status(req(pb::StatusRequest {}, secret)).await {
            return Some((a, st.into_inner()));
        }
    }
    None
}

async fn cluster(coord: &str, secret: &str) -> anyhow::Result<pb::ClusterView> {
    let mut c = pb::coord_client_client::CoordClientClient::new(connect(coord).await?);
    Ok(c.cluster(req(pb::Empty {}, secret))
        .await
        .map_err(|s| anyhow!("coord at {coord}: {}", s.message()))?
        .into_inner())
}

async fn status(coord: &str, secret: &str, json: bool) -> anyhow::Result<ExitCode> {
    let view = cluster(coord, secret).await?;
    if !json {
        out!(
            "{:>3}  {:<9} {:>5} {:>8} {:>8} {:>8} {:>9}  {:<5}  {:<6}  ADDRESS",
            "ID",
            "ROLE",
            "TERM",
            "COMMIT",
            "APPLIED",
            "LOG",
            "SNAPSHOT",
            "ALIVE",
            "LEADER"
        );
    }
    for s in &view.servers {
        let st = admin(s, secret).await.map(|(_, st)| st);
        if json {
            let v = serde_json::json!({
                "id": s.id,
                "alive": s.alive,
                "address": s.client_addr,
                "role": st.as_ref().map(|x| x.role.clone()),
                "term": st.as_ref().map(|x| x.term),
                "commit_index": st.as_ref().map(|x| x.commit_index),
                "applied_index": st.as_ref().map(|x| x.applied_index),
                "last_log_index": st.as_ref().map(|x| x.last_log_index),
                "snapshot_index": st.as_ref().map(|x| x.snapshot_index),
                "client_connections_refused": st.as_ref().map(|x| x.client_connections_refused),
                "lost_quorum": st.as_ref().map(|x| x.lost_quorum),
                "leader": view.leader_id == s.id,
            });
            out!("{v}");
        } else {
            let dash = || "-".to_string();
            out!(
                "{:>3}  {:<9} {:>5} {:>8} {:>8} {:>8} {:>9}  {:<5}  {:<6}  {}",
                s.id,
                st.as_ref().map_or("unreach.".into(), |x| x.role.clone()),
                st.as_ref().map_or_else(dash, |x| x.term.to_string()),
                st.as_ref().map_or_else(dash, |x| x.commit_index.to_string()),
                st.as_ref().map_or_else(dash, |x| x.applied_index.to_string()),
                st.as_ref().map_or_else(dash, |x| x.last_log_index.to_string()),
                st.as_ref().map_or_else(dash, |x| x.snapshot_index.to_string()),
                if s.alive { "yes" } else { "no" },
                if view.leader_id == s.id { "*" } else { "" },
                s.client_addr
            );
        }
    }
    if !json {
        let leader = if view.leader_id == 0 { "none".to_string() } else { view.leader_id.to_string() };
        let mut line = format!("term {}, leader {leader}", view.term);
        if view.quorum_impossible {
            line.push_str(", QUORUM IMPOSSIBLE");
        }
        if !view.join_complete {
            line.push_str(&format!(", {} of {} servers joined", view.servers.len(), view.num_servers));
        }
        out!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn log(coord: &str, secret: &str, id: u64, json: bool) -> anyhow::Result<ExitCode> {
    let view = cluster(coord, secret).await?;
    let s = view.servers.iter().find(|s| s.id == id).ok_or_else(|| anyhow!("no server {id} in the cluster"))?;
    let Some((mut admin, _)) = admin(s, secret).await else {
        bail!(
            "server {id} answers Admin on neither its client port ({}) nor its control port ({})",
            s.client_addr,
            if s.control_addr.is_empty() { "not known to the coord" } else { &s.control_addr }
        );
    };
    let mut from = 0;
    let mut first = true;
    loop {
        let r = admin
            .log(req(pb::LogRequest { from, limit: 10_000 }, secret))
            .await
            .map_err(|st| anyhow!("server {id}: {}", st.message()))?
            .into_inner();
        if first && r.snapshot_index > 0 && !json {
            out!("(entries up to {} are in the snapshot)", r.snapshot_index);
        }
        first = false;
        let Some(last) = r.lines.last().map(|l| l.index) else {
            break;
        };
        for l in &r.lines {
            if json {
                out!("{}", serde_json::json!({"index": l.index, "term": l.term, "entry": l.entry}));
            } else {
                out!("{}. {}", l.index, l.entry);
            }
        }
        // A reply that does not move forward would loop for ever.
        if last < from || last == u64::MAX {
            break;
        }
        from = last + 1;
    }
    Ok(ExitCode::SUCCESS)
}
