//! The coord's and servers' JSON configs, with the prototype's field names
//! (as `kvraft cluster` writes them), addresses inside the namespaces, and
//! each process's data under the run's folder.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::layout::{Layout, Node, Port};

/// Where a run keeps its files.
#[derive(Clone, Debug)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn config(&self, node: Node) -> PathBuf {
        match node {
            Node::Server(id) => self.dir.join(format!("config/server_config{id}.json")),
            _ => self.dir.join("config/coord_config.json"),
        }
    }

    pub fn data(&self, node: Node) -> PathBuf {
        match node {
            Node::Server(id) => self.dir.join(format!("data/server{id}")),
            _ => self.dir.join("data/coord"),
        }
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    pub fn history(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }
}

/// Writes every config, the servers' with a snapshot every
/// `snapshot_entries` entries (see `Options::snapshot_entries`). Settings
/// left out take the processes' defaults: fsync always, ReadIndex reads,
/// 3 heartbeats lost before a failure.
pub fn write_all(layout: &Layout, paths: &Paths, snapshot_entries: u64) -> anyhow::Result<()> {
    let coord = serde_json::json!({
        "ClientAPIListenAddr": layout.coord_client_addr(),
        "ServerAPIListenAddr": layout.coord_server_addr(),
        "LostMsgsThresh": 3,
        "NumServers": layout.servers,
        "Secret": "",
        "TracingIdentity": "coord",
        "DataDir": paths.data(Node::Coord),
    });
    write_json(&paths.config(Node::Coord), &coord)?;
    for id in layout.server_ids() {
        let cfg = serde_json::json!({
            "ServerID": id,
            "CoordAddr": layout.coord_server_addr(),
            "ServerAddr": layout.server_addr(id, Port::Fcheck),
            "ServerServerAddr": layout.server_addr(id, Port::Peer),
            "ServerListenAddr": layout.server_addr(id, Port::Control),
            "ClientListenAddr": layout.server_addr(id, Port::Client),
            "Secret": "",
            "TracingIdentity": format!("server{id}"),
            "DataDir": paths.data(Node::Server(id)),
            "SnapshotEntries": snapshot_entries,
        });
        write_json(&paths.config(Node::Server(id)), &cfg)?;
    }
    Ok(())
}

fn write_json(path: &Path, v: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n").with_context(|| format!("writing {}", path.display()))
}
