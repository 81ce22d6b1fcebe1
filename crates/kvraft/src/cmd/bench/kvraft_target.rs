//! KVRaft as a bench target: a cluster the bench starts (coord and servers
//! as child processes, killed on drop), and kvslib clients.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use anyhow::{anyhow, bail};
use kvslib::{Config, KvClient, Op};

use super::driver::{BenchOp, Conn};
use crate::local::{self, Layout};

/// The processes of a cluster this command started; killed on drop.
pub struct Started {
    pub layout: Layout,
    pub children: Vec<(u64, Option<Child>)>,
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
    /// A fresh cluster of `servers` in `dir` (emptied first), fsync on, once
    /// it has a leader.
    pub async fn new(dir: &Path, servers: u64, traced: bool) -> anyhow::Result<Started> {
        let _ = std::fs::remove_dir_all(dir);
        let layout = Layout::create_traced(dir, servers, Path::new("config"), traced)?;
        let tracing = if traced { Some(layout.start_tracing_server()?) } else { None };
        let mut s = Started { layout, children: Vec::new(), coord: None, tracing };
        s.coord = Some(s.layout.start_coord(false)?);
        for id in 1..=servers {
            let child = s.layout.start_server(id, false)?;
            s.children.push((id, Some(child)));
        }
        let l = local::leader(&s.layout.coord_client, &s.layout.secret, Duration::from_secs(20)).await?;
        if l.leader_id == 0 {
            bail!("the cluster did not elect a leader: {}", l.status);
        }
        Ok(s)
    }

    /// The servers' process ids (not the coord's).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|(_, c)| c.as_ref().map(Child::id)).collect()
    }
}

/// One bench client: a kvslib session.
#[derive(Clone)]
pub struct KvraftConn(KvClient);

impl Conn for KvraftConn {
    async fn execute(&mut self, op: BenchOp) -> Result<(), String> {
        let op = match op {
            BenchOp::Get { key } => Op::Get { key },
            BenchOp::Put { key, value } => Op::Put { key, value },
            BenchOp::Append { key, value } => Op::Append { key, value },
        };
        self.0.execute(op).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// `n` clients of the cluster whose coord is at `coord`, each with `window`
/// operations in flight; traced when `tracing` names a tracing server. `tag`
/// keeps the ids of several sets of clients apart.
pub fn clients(
    coord: &str,
    secret: &str,
    n: u64,
    window: usize,
    tracing: Option<&str>,
    tag: &str,
    transport: kvslib::Transport,
) -> anyhow::Result<Vec<KvraftConn>> {
    let mut v = Vec::new();
    for c in 0..n {
        let mut cfg = Config::new(format!("bench{tag}{c}-{}", std::process::id()), coord);
        cfg.window = window;
        cfg.secret = secret.to_owned();
        cfg.transport = transport;
        if let Some(addr) = tracing {
            cfg.tracer = kvraft_trace::Tracer::new(kvraft_trace::TracerConfig {
                identity: format!("client{c}"),
                server_addr: addr.to_owned(),
                secret: secret.to_owned(),
            })
            .map_err(|e| anyhow!("tracing: {e}"))?;
        }
        let (client, _results) = KvClient::start(cfg).map_err(|e| anyhow!("{e}"))?;
        v.push(KvraftConn(client));
    }
    Ok(v)
}
