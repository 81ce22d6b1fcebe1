//! Real `kvraft server` processes on loopback for tests: free ports, a temp
//! directory per cluster, and every process killed when the cluster drops,
//! even when the test fails. The test itself plays the coord through each
//! server's ServerControl API.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvraft_proto as pb;
use kvraft_proto::admin_client::AdminClient;
use kvraft_proto::kv_client_client::KvClientClient;
use kvraft_proto::server_control_client::ServerControlClient;
use tonic::transport::Channel;

pub mod raw;

/// A free loopback port, never the same twice in this test process, and
/// clear of the ports the kernel gives out (`kvraft_faults::port`).
pub fn free_port() -> u16 {
    kvraft_faults::port::free_port().expect("a free loopback port")
}

pub struct ServerProc {
    pub id: u64,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub peer_addr: String,
    pub control_addr: String,
    pub client_addr: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

pub struct CoordProc {
    pub config: PathBuf,
    pub server_api: String,
    pub client_api: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub servers: Vec<ServerProc>,
    pub term: u64,
    pub coord: Option<CoordProc>,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A failing test says what its processes said: their logs are in
        // a temporary folder that goes with the cluster.
        let failing = std::thread::panicking();
        if let Some(c) = &mut self.coord
            && let Some(ch) = c.child.take()
        {
            stop(ch, "coord", &c.log, failing);
        }
        for s in &mut self.servers {
            if let Some(ch) = s.child.take() {
                stop(ch, &format!("server {}", s.id), &s.log, failing);
            }
        }
    }
}

/// Kills a process of the cluster; with `report`, prints whether it had
/// exited by itself and the end of its log.
fn stop(mut child: Child, name: &str, log: &Path, report: bool) {
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    if !report {
        return;
    }
    let state = exited.map_or("was still running".to_string(), |s| format!("had exited by itself: {s}"));
    let bytes = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- {name} {state}; the end of its log ({}):", log.display());
    for line in &lines[lines.len().saturating_sub(30)..] {
        eprintln!("    {line}");
    }
}

pub fn kvraft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kvraft")
}

impl TestCluster {
    /// Writes configs for `n` servers; `extra` is spliced into each config.
    pub fn new(n: u64, extra: &str) -> Self {
        Self::build(n, extra, None)
    }

    /// A cluster with a real coord process (not started yet); `coord_extra`
    /// is spliced into the coord's config.
    pub fn with_coord(n: u64, extra: &str, coord_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (sapi, capi) = (free_port(), free_port());
        let config = dir.path().join("coord_config.json");
        let text = format!(
            r#"{{"ClientAPIListenAddr": "127.0.0.1:{capi}", "ServerAPIListenAddr": "127.0.0.1:{sapi}",
                "LostMsgsThresh": 3, "NumServers": {n}, "DataDir": "{}"{coord_extra}}}"#,
            dir.path().join("coord").display()
        );
        std::fs::write(&config, text).expect("write coord config");
        let coord = CoordProc {
            config,
            server_api: format!("127.0.0.1:{sapi}"),
            client_api: format!("127.0.0.1:{capi}"),
            child: None,
            log: dir.path().join("coord.log"),
        };
        let coord_addr = coord.server_api.clone();
        let mut c = Self::build_in(dir, n, extra, Some(coord_addr));
        c.coord = Some(coord);
        c
    }

    /// Servers whose coord is at `coord_addr` (a test's own, say).
    pub fn with_coord_addr(n: u64, extra: &str, coord_addr: String) -> Self {
        Self::build(n, extra, Some(coord_addr))
    }

    fn build(n: u64, extra: &str, coord_addr: Option<String>) -> Self {
        Self::build_in(tempfile::tempdir().expect("temp dir"), n, extra, coord_addr)
    }

    fn build_in(dir: tempfile::TempDir, n: u64, extra: &str, coord_addr: Option<String>) -> Self {
        let coord_addr = coord_addr.unwrap_or_else(|| "127.0.0.1:1".into());
        let servers = (1..=n)
            .map(|id| {
                let (peer, control, client, udp) = (free_port(), free_port(), free_port(), free_port());
                let data_dir = dir.path().join(format!("data{id}"));
                let config = dir.path().join(format!("server_config{id}.json"));
                let text = format!(
                    r#"{{"ServerID": {id}, "CoordAddr": "{coord_addr}", "ServerAddr": "127.0.0.1:{udp}",
                        "ServerServerAddr": "127.0.0.1:{peer}", "ServerListenAddr": "127.0.0.1:{control}",
                        "ClientListenAddr": "127.0.0.1:{client}", "DataDir": "{}"{extra}}}"#,
                    data_dir.display()
                );
                std::fs::write(&config, text).expect("write config");
                ServerProc {
                    id,
                    config,
                    data_dir,
                    peer_addr: format!("127.0.0.1:{peer}"),
                    control_addr: format!("127.0.0.1:{control}"),
                    client_addr: format!("127.0.0.1:{client}"),
                    child: None,
                    log: dir.path().join(format!("server{id}.log")),
                }
            })
            .collect();
        TestCluster { dir, servers, term: 0, coord: None }
    }

    pub fn start_coord(&mut self) {
        let c = self.coord.as_mut().expect("a cluster with a coord");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&c.log).expect("log file");
        let child = Command::new(kvraft_bin())
            .args(["coord", "--config"])
            .arg(&c.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kvraft coord");
        c.child = Some(child);
    }

    pub fn kill9_coord(&mut self) {
        if let Some(c) = &mut self.coord
            && let Some(mut ch) = c.child.take()
        {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    pub async fn coord_client(&self) -> kvraft_proto::coord_client_client::CoordClientClient<Channel> {
        let addr = &self.coord.as_ref().expect("a coord").client_api;
        kvraft_proto::coord_client_client::CoordClientClient::new(connect(addr).await)
    }

    /// The coord's leader, waiting up to `wait` for one.
    pub async fn coord_leader(&self, wait: Duration) -> pb::LeaderInfo {
        let req = pb::LeaderRequest { wait_ms: wait.as_millis() as u32, client_id: String::new(), trace: vec![] };
        self.coord_client().await.get_leader(req).await.expect("get leader").into_inner()
    }

    pub fn server(&mut self, id: u64) -> &mut ServerProc {
        &mut self.servers[id as usize - 1]
    }

    pub fn start(&mut self, id: u64) {
        let s = self.server(id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&s.log).expect("log file");
        let mute = s.data_dir.with_extension("mute");
        let child = Command::new(kvraft_bin())
            .args(["server", &id.to_string(), "--config"])
            .arg(&s.config)
            .env("KVRAFT_TEST_FCHECK_MUTE_FILE", mute)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kvraft server");
        s.child = Some(child);
    }

    /// Makes server `id` stop (or resume) answering the coord's heartbeats.
    pub fn mute(&mut self, id: u64, muted: bool) {
        let path = self.server(id).data_dir.with_extension("mute");
        if muted {
            std::fs::write(path, "").expect("mute file");
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Gives server `id` (stopped) new ports for everything it listens on,
    /// as a server restarted on another machine would have.
    pub fn move_to_new_ports(&mut self, id: u64) {
        let s = self.server(id);
        assert!(s.child.is_none(), "server {id} must be stopped first");
        let text = std::fs::read_to_string(&s.config).expect("read config");
        let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("parse config");
        for field in ["ServerAddr", "ServerServerAddr", "ServerListenAddr", "ClientListenAddr"] {
            cfg[field] = format!("127.0.0.1:{}", free_port()).into();
        }
        std::fs::write(&s.config, cfg.to_string()).expect("write config");
        let addr = |f: &str| cfg[f].as_str().unwrap_or_default().to_owned();
        (s.peer_addr, s.control_addr, s.client_addr) =
            (addr("ServerServerAddr"), addr("ServerListenAddr"), addr("ClientListenAddr"));
    }

    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.server(id).child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn members(&self) -> Vec<pb::Member> {
        self.servers
            .iter()
            .map(|s| pb::Member { id: s.id, peer_addr: s.peer_addr.clone(), client_addr: s.client_addr.clone() })
            .collect()
    }

    pub fn alive(&self) -> Vec<u64> {
        self.servers.iter().filter(|s| s.child.is_some()).map(|s| s.id).collect()
    }

    pub async fn control(&self, id: u64) -> ServerControlClient<Channel> {
        ServerControlClient::new(connect(&self.servers[id as usize - 1].control_addr).await)
    }

    pub async fn client(&self, id: u64) -> KvClientClient<Channel> {
        KvClientClient::new(connect(&self.servers[id as usize - 1].client_addr).await)
    }

    pub async fn admin(&self, id: u64) -> AdminClient<Channel> {
        AdminClient::new(connect(&self.servers[id as usize - 1].client_addr).await)
    }

    /// Tells every live server the membership.
    pub async fn configure(&self) {
        for id in self.alive() {
            let members = self.members();
            self.control(id).await.configure(pb::Membership { members, trace: vec![] }).await.expect("configure");
        }
    }

    /// What the coord does: a new term, log states from every live server,
    /// the most up-to-date designated. Returns the leader.
    pub async fn select_leader(&mut self) -> u64 {
        self.configure().await;
        self.term += 1;
        let term = self.term;
        let mut best: Option<(u64, u64, u64)> = None;
        for id in self.alive() {
            let r = self.control(id).await.log_state(pb::LogStateRequest { term, trace: vec![] }).await;
            let r = r.expect("log state").into_inner();
            assert!(r.granted, "server {id} refused term {term}: it is at {}", r.current_term);
            let key = (r.last_log_term, r.last_log_index, u64::MAX - id);
            if best.is_none_or(|b| key > b) {
                best = Some(key);
            }
        }
        let leader = u64::MAX - best.expect("a live server").2;
        let members = self.members();
        let r =
            self.control(leader).await.become_leader(pb::BecomeLeaderRequest { term, members, trace: vec![] }).await;
        assert!(r.expect("become leader").into_inner().accepted);
        leader
    }

    pub async fn status(&self, id: u64) -> pb::StatusReply {
        self.admin(id).await.status(pb::StatusRequest {}).await.expect("status").into_inner()
    }

    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !f().await {
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Connects, retrying while the process starts (up to 10 s).
pub async fn connect(addr: &str) -> Channel {
    let start = Instant::now();
    loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await {
            Ok(c) => return c,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(10), "cannot connect to {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

pub fn put(client: &str, op_id: u64, key: &str, value: &str) -> pb::Command {
    pb::Command {
        client_id: client.into(),
        session: 1,
        op_id,
        first_unacked: op_id,
        op: Some(pb::command::Op::Put(pb::PutOp { key: key.into(), value: value.into() })),
        trace: vec![],
    }
}

pub fn get(client: &str, op_id: u64, key: &str) -> pb::Command {
    pb::Command {
        client_id: client.into(),
        session: 1,
        op_id,
        first_unacked: op_id,
        op: Some(pb::command::Op::Get(pb::GetOp { key: key.into() })),
        trace: vec![],
    }
}

/// The value of a successful Get reply.
pub fn value_of(r: &pb::Reply) -> Option<Option<String>> {
    match &r.result {
        Some(pb::reply::Result::Value(v)) => Some(v.value.clone()),
        _ => None,
    }
}

pub fn is_ok(r: &pb::Reply) -> bool {
    matches!(
        r.result,
        Some(pb::reply::Result::Done(_)) | Some(pb::reply::Result::Value(_)) | Some(pb::reply::Result::Cas(_))
    )
}
