//! A local cluster of real processes (coord and servers, children of this
//! one) in one folder: configs, data and logs. Used by `kvraft demo` and
//! `kvraft cluster`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow};
use kvraft_proto as pb;
use kvraft_proto::secret::with_secret;

/// A free loopback port for a child to bind, never the same twice in this
/// process (see `kvraft_faults::port` for how it keeps clear of other
/// processes' ports).
pub fn free_port() -> anyhow::Result<u16> {
    kvraft_faults::port::free_port().context("picking a loopback port")
}

/// The servers' test switch: while the file it names exists, the heartbeat
/// responder is silent.
const MUTE_FILE_ENV: &str = "KVRAFT_TEST_FCHECK_MUTE_FILE";

pub struct ServerAddrs {
    pub id: u64,
    pub client: String,
    /// The control port, which also serves Admin (and keeps its places for
    /// the coord and tools, whatever the client port holds).
    pub control: String,
}

/// The layout of a local cluster's folder.
pub struct Layout {
    pub dir: PathBuf,
    pub n: u64,
    pub coord_client: String,
    pub servers: Vec<ServerAddrs>,
    /// The tracing server's address, when the layout traces.
    pub tracing: Option<String>,
    /// The cluster's Secret (from the template's coord config): every
    /// request to the coord, the servers and the tracing server carries it.
    pub secret: String,
    /// Servers are started with the switch that silences their heartbeat
    /// responder (see [`Layout::mute_file`]). Only the demo stages that
    /// partition: a server with the switch checks its file every 10 ms, a
    /// wake-up of its loop that benchmarks and users' clusters need not pay.
    pub partition_switch: bool,
}

impl Layout {
    /// Writes configs for a coord and `n` servers on free ports, taking the
    /// other settings (LostMsgsThresh, Secret...) from `template` (config/).
    pub fn create(dir: &Path, n: u64, template: &Path) -> anyhow::Result<Layout> {
        Self::create_traced(dir, n, template, false)
    }

    /// Like [`Layout::create`]; with `traced`, also a tracing server config,
    /// and every process records to it.
    pub fn create_traced(dir: &Path, n: u64, template: &Path, traced: bool) -> anyhow::Result<Layout> {
        std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
        let coord_tpl: serde_json::Value = read_json(&template.join("coord_config.json")).unwrap_or_default();
        let thresh = coord_tpl.get("LostMsgsThresh").and_then(|v| v.as_u64()).unwrap_or(3);
        let secret = coord_tpl.get("Secret").and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let (sapi, capi) = (free_port()?, free_port()?);
        let tracing = if traced {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let cfg = serde_json::json!({
                "ServerBind": addr,
                "Secret": secret,
                "OutputFile": dir.join("trace_output.log"),
                "ShivizOutputFile": dir.join("shiviz_output.log"),
            });
            write_json(&dir.join("tracing_server_config.json"), &cfg)?;
            Some(addr)
        } else {
            None
        };
        let trace_addr = tracing.clone().unwrap_or_default();
        let coord = serde_json::json!({
            "ClientAPIListenAddr": format!("127.0.0.1:{capi}"),
            "ServerAPIListenAddr": format!("127.0.0.1:{sapi}"),
            "LostMsgsThresh": thresh,
            "NumServers": n,
            "Secret": secret,
            "TracingServerAddr": trace_addr,
            "TracingIdentity": "coord",
            "DataDir": dir.join("data/coord"),
        });
        write_json(&dir.join("coord_config.json"), &coord)?;
        let mut servers = Vec::new();
        for id in 1..=n {
            let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
            let cfg = serde_json::json!({
                "ServerID": id,
                "CoordAddr": format!("127.0.0.1:{sapi}"),
                "ServerAddr": format!("127.0.0.1:{}", ports[0]),
                "ServerServerAddr": format!("127.0.0.1:{}", ports[1]),
                "ServerListenAddr": format!("127.0.0.1:{}", ports[2]),
                "ClientListenAddr": format!("127.0.0.1:{}", ports[3]),
                "Secret": secret,
                "TracingServerAddr": trace_addr,
                "TracingIdentity": format!("server{id}"),
                "DataDir": dir.join(format!("data/server{id}")),
            });
            write_json(&dir.join(format!("server_config{id}.json")), &cfg)?;
            servers.push(ServerAddrs {
                id,
                client: format!("127.0.0.1:{}", ports[3]),
                control: format!("127.0.0.1:{}", ports[2]),
            });
        }
        Ok(Layout {
            dir: dir.into(),
            n,
            coord_client: format!("127.0.0.1:{capi}"),
            servers,
            tracing,
            secret,
            partition_switch: false,
        })
    }

    /// Reads back a folder made by [`Layout::create`].
    pub fn open(dir: &Path) -> anyhow::Result<Layout> {
        let coord = read_json(&dir.join("coord_config.json"))
            .map_err(|e| anyhow!("{} is not a cluster folder: {e}", dir.display()))?;
        let n = coord.get("NumServers").and_then(|v| v.as_u64()).ok_or_else(|| anyhow!("NumServers missing"))?;
        let capi = coord.get("ClientAPIListenAddr").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let secret = coord.get("Secret").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let mut servers = Vec::new();
        for id in 1..=n {
            let s = read_json(&dir.join(format!("server_config{id}.json")))?;
            let client = s.get("ClientListenAddr").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let control = s.get("ServerListenAddr").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            servers.push(ServerAddrs { id, client, control });
        }
        Ok(Layout { dir: dir.into(), n, coord_client: capi, servers, tracing: None, secret, partition_switch: false })
    }

    fn spawn(&self, name: &str, args: &[String], detach: bool) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("finding the kvraft binary")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs").join(format!("{name}.log")))
            .context("opening a log file")?;
        let mut cmd = self.command(exe, name, args);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        if detach {
            // Its own process group: Ctrl-C in this terminal does not reach it.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        cmd.spawn().with_context(|| format!("starting {name}"))
    }

    /// The command line and environment of child `name` (its stdio aside).
    fn command(&self, exe: PathBuf, name: &str, args: &[String]) -> Command {
        let mut cmd = Command::new(exe);
        match name.strip_prefix("server").and_then(|i| i.parse::<u64>().ok()) {
            Some(id) if self.partition_switch => cmd.env(MUTE_FILE_ENV, self.mute_file(id)),
            // Not even one inherited from this process's environment.
            _ => cmd.env_remove(MUTE_FILE_ENV),
        };
        cmd.args(args).env("NO_COLOR", "1");
        cmd
    }

    /// Server `id`'s addresses. An id outside `1..=n` (a coord's answer
    /// gone wrong) is an error, not a panic.
    pub fn server(&self, id: u64) -> anyhow::Result<&ServerAddrs> {
        let i = usize::try_from(id).ok().and_then(|id| id.checked_sub(1));
        i.and_then(|i| self.servers.get(i))
            .ok_or_else(|| anyhow::anyhow!("server {id} is not one of this cluster's {} servers", self.n))
    }

    pub fn start_tracing_server(&self) -> anyhow::Result<Child> {
        let cfg = self.dir.join("tracing_server_config.json").display().to_string();
        self.spawn("tracing-server", &["tracing-server".into(), "--config".into(), cfg], false)
    }

    pub fn start_coord(&self, detach: bool) -> anyhow::Result<Child> {
        let cfg = self.dir.join("coord_config.json").display().to_string();
        self.spawn("coord", &["coord".into(), "--config".into(), cfg], detach)
    }

    pub fn start_server(&self, id: u64, detach: bool) -> anyhow::Result<Child> {
        let cfg = self.dir.join(format!("server_config{id}.json")).display().to_string();
        self.spawn(&format!("server{id}"), &["server".into(), id.to_string(), "--config".into(), cfg], detach)
    }

    /// The file whose presence silences server `id`'s heartbeat responder
    /// (the servers' test switch; the demo's "partition"), when the servers
    /// were started with [`Layout::partition_switch`].
    pub fn mute_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("mute-server{id}"))
    }
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_json(path: &Path, v: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n").with_context(|| format!("writing {}", path.display()))
}

/// A channel to `addr`, or an error after `within`.
pub async fn connect(addr: &str, within: Duration) -> anyhow::Result<tonic::transport::Channel> {
    let e = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    e.connect_timeout(within).connect().await.map_err(|e| anyhow!("cannot reach {addr}: {e}"))
}

/// Connects, retrying for up to `within` while the process starts.
pub async fn connect_retry(addr: &str, within: Duration) -> anyhow::Result<tonic::transport::Channel> {
    let start = std::time::Instant::now();
    loop {
        match connect(addr, Duration::from_millis(500)).await {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() >= within => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The coord's answer about the leader, waiting up to `wait` for one.
pub async fn leader(coord: &str, secret: &str, wait: Duration) -> anyhow::Result<pb::LeaderInfo> {
    let ch = connect_retry(coord, wait.max(Duration::from_secs(1))).await?;
    let mut c = pb::coord_client_client::CoordClientClient::new(ch);
    let req = pb::LeaderRequest { wait_ms: wait.as_millis() as u32, client_id: String::new(), trace: vec![] };
    Ok(c.get_leader(with_secret(req, secret)).await.map_err(|s| anyhow!("coord: {}", s.message()))?.into_inner())
}

/// A server's log lines, in the prototype's form.
pub async fn server_log(addr: &str, secret: &str) -> anyhow::Result<Vec<pb::LogLine>> {
    let mut a = pb::admin_client::AdminClient::new(connect(addr, Duration::from_secs(2)).await?);
    let req = with_secret(pb::LogRequest { from: 0, limit: 100_000 }, secret);
    let r = a.log(req).await.map_err(|s| anyhow!("{}", s.message()))?;
    Ok(r.into_inner().lines)
}

pub async fn server_status(addr: &str, secret: &str) -> anyhow::Result<pb::StatusReply> {
    let mut a = pb::admin_client::AdminClient::new(connect(addr, Duration::from_millis(500)).await?);
    Ok(a.status(with_secret(pb::StatusRequest {}, secret)).await.map_err(|s| anyhow!("{}", s.message()))?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_switch(layout: &Layout, name: &str) -> bool {
        let cmd = layout.command("kvraft".into(), name, &[]);
        cmd.get_envs().any(|(k, v)| k == MUTE_FILE_ENV && v.is_some())
    }

    /// `kvraft cluster status` reads a server whose client port does not
    /// answer on its control port: a folder read back knows both.
    #[test]
    fn a_layout_read_back_knows_each_servers_control_port() {
        let dir = tempfile::tempdir().unwrap();
        let made = Layout::create(dir.path(), 3, &dir.path().join("no-template")).unwrap();
        let read = Layout::open(dir.path()).unwrap();
        assert_eq!(read.servers.len(), 3);
        for (a, b) in made.servers.iter().zip(&read.servers) {
            assert!(!a.control.is_empty() && a.control != a.client);
            assert_eq!((a.id, &a.client, &a.control), (b.id, &b.client, &b.control));
        }
    }

    /// Only the demo's servers poll a mute file: in the clusters of
    /// `kvraft cluster` and the benchmarks, that poll would wake every
    /// server's loop each 10 ms for nothing.
    #[test]
    fn only_a_layout_with_the_partition_switch_gives_it_to_its_servers() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = Layout::create(dir.path(), 3, &dir.path().join("no-template")).unwrap();
        assert!(!has_switch(&layout, "server1"));
        let removed = layout.command("kvraft".into(), "server1", &[]);
        assert!(
            removed.get_envs().any(|(k, v)| k == MUTE_FILE_ENV && v.is_none()),
            "a switch in this process's environment would reach the server"
        );
        layout.partition_switch = true;
        assert!(has_switch(&layout, "server2"));
        assert!(!has_switch(&layout, "coord"));
    }
}
