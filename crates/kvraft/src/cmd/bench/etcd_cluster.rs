//! A local etcd cluster as child processes (killed on drop): members on
//! free loopback ports, data under the bench folder, etcd's defaults
//! otherwise (fsync included). Installs Debian's etcd-server when etcd is
//! not on PATH. Needs no feature: it only starts processes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::local::free_port;

/// The Debian package that has the etcd server.
const PACKAGE: &str = "etcd-server";

/// The members this command started; killed on drop.
pub struct EtcdCluster {
    children: Vec<Child>,
    /// The members' client addresses (`127.0.0.1:PORT`).
    pub endpoints: Vec<String>,
    dir: PathBuf,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `etcd` on PATH.
fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
    })
}

/// The etcd binary: the one on PATH, or the one `apt-get install etcd-server`
/// brings (as root only). What it does goes to standard error; apt's output
/// to `dir/etcd-install.log`.
pub async fn ensure_installed(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = find_etcd() {
        return Ok(p);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("etcd is not on PATH, and installing it needs root: run `apt-get install -y {PACKAGE}` as root");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("etcd-install.log");
    eprintln!("kvraft bench: etcd is not on PATH: installing Debian's {PACKAGE} (apt-get install -y {PACKAGE})");
    let log2 = log.clone();
    let ok = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let apt = |args: &[&str]| -> anyhow::Result<bool> {
            let out = File::options().create(true).append(true).open(&log2)?;
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .status();
            Ok(status.is_ok_and(|s| s.success()))
        };
        // A machine that never ran `apt-get update` knows no packages yet.
        Ok(apt(&["install", "-y", PACKAGE])? || (apt(&["update"])? && apt(&["install", "-y", PACKAGE])?))
    })
    .await
    .map_err(|e| anyhow!("running apt-get: {e}"))??;
    let found = find_etcd().or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()));
    match (ok, found) {
        (true, Some(p)) => {
            let version = Command::new(&p)
                .arg("--version")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_owned());
            eprintln!("kvraft bench: installed {PACKAGE}: {}", version.unwrap_or_default());
            Ok(p)
        }
        _ => bail!(
            "installing Debian's {PACKAGE} with apt-get failed (see {}): install {PACKAGE} or put etcd on PATH",
            log.display()
        ),
    }
}

impl EtcdCluster {
    /// A fresh cluster of `members` in `dir` (emptied first), once every
    /// member reports itself healthy.
    pub async fn start(exe: &Path, dir: &Path, members: u64) -> anyhow::Result<EtcdCluster> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ports = Vec::new();
        for _ in 0..members {
            ports.push((free_port()?, free_port()?));
        }
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{}=http://127.0.0.1:{peer}", i + 1)).collect();
        let endpoints = ports.iter().map(|(client, _)| format!("127.0.0.1:{client}")).collect();
        let mut cluster = EtcdCluster { children: Vec::new(), endpoints, dir: dir.into() };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let log = File::create(dir.join(format!("{name}.log"))).context("creating an etcd log file")?;
            let (client, peer) = (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
            let mut cmd = Command::new(exe);
            cmd.args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(&name))
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("kvraft-bench-{}", std::process::id())])
                .args(["--logger", "zap", "--log-level", "error", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if std::env::consts::ARCH == "aarch64" {
                // etcd 3.4 runs on arm64 only when told to.
                cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
            }
            cluster.children.push(cmd.spawn().with_context(|| format!("starting etcd ({})", exe.display()))?);
        }
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            for (i, c) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = self.dir.join(format!("m{}.log", i + 1));
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing)");
                    bail!("etcd member m{} exited while starting ({status}); its log says: {last}", i + 1);
                }
            }
            let mut all = true;
            for e in &self.endpoints {
                all &= healthy(e).await;
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the etcd cluster was not healthy within {within:?} (logs in {})", self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether etcd's `/health` at `endpoint` says so (plain HTTP on the client port).
async fn healthy(endpoint: &str) -> bool {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(endpoint).await.ok()?;
        let req = format!("GET /health HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body);
        Some(text.contains("\"health\":\"true\""))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), ask).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one HTTP answer with `body` on a loopback port.
    async fn fake(body: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = s.write_all(reply.as_bytes()).await;
        });
        addr
    }

    #[tokio::test]
    async fn health_is_read_from_the_answer() {
        assert!(healthy(&fake(r#"{"health":"true","reason":""}"#).await).await);
        assert!(!healthy(&fake(r#"{"health":"false","reason":"RAFT NO LEADER"}"#).await).await);
        let closed = free_port().unwrap();
        assert!(!healthy(&format!("127.0.0.1:{closed}")).await);
    }
}
