//! etcd as a bench target (the `etcd` feature): each bench client is its own
//! etcd `Client`, connected to every endpoint. Put is a KV put, get a KV get
//! with etcd's default, linearizable, consistency; etcd has no append.

use std::time::Duration;

use anyhow::{anyhow, bail};
use etcd_client::{Client, ConnectOptions, KvClient};

use super::driver::{APPEND_ON_ETCD, BenchOp, Conn};

/// One bench client's connection. The `Client` is kept: it owns the
/// channel's endpoint list.
#[derive(Clone)]
pub struct EtcdConn {
    kv: KvClient,
    _client: Client,
}

impl Conn for EtcdConn {
    async fn execute(&mut self, op: BenchOp) -> Result<(), String> {
        let r = match op {
            BenchOp::Put { key, value } => self.kv.put(key, value, None).await.map(|_| ()),
            BenchOp::Get { key } => self.kv.get(key, None).await.map(|_| ()),
            BenchOp::Append { .. } => return Err(APPEND_ON_ETCD.into()),
        };
        r.map_err(|e| short(&e))
    }
}

/// An error in one line: a gRPC status by its message and code, not its
/// debug form.
fn short(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{} ({:?})", s.message(), s.code()),
        other => other.to_string(),
    }
}

/// `n` clients of the etcd at `endpoints`, checked with one get.
pub async fn connect(endpoints: &[String], n: u64) -> anyhow::Result<Vec<EtcdConn>> {
    let options = || {
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(10))
                .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5)),
        )
    };
    let mut v = Vec::new();
    for _ in 0..n {
        let c = Client::connect(endpoints, options())
            .await
            .map_err(|e| anyhow!("cannot connect to etcd at {}: {e}", endpoints.join(",")))?;
        v.push(EtcdConn { kv: c.kv_client(), _client: c });
    }
    if let Some(first) = v.first_mut() {
        match tokio::time::timeout(Duration::from_secs(10), first.kv.get("kvraft-bench-probe", None)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("etcd at {} does not answer: {}", endpoints.join(","), short(&e)),
            Err(_) => bail!("etcd at {} does not answer within 10 s", endpoints.join(",")),
        }
    }
    Ok(v)
}
