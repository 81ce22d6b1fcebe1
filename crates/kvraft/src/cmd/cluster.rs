//! `kvraft cluster up|down|status`: a local cluster kept running in the
//! background, for playing with `kvraft ctl` and `kvraft client`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::local::{self, Layout};

#[derive(clap::Args)]
pub struct Args {
    /// The cluster's folder: configs, data, logs, pids.
    #[arg(long, default_value = "local-cluster", global = true)]
    dir: PathBuf,
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Start a coord and N servers in the background.
    Up {
        #[arg(long, default_value_t = 5)]
        servers: u64,
        /// Settings (LostMsgsThresh, Secret) come from this folder's coord_config.json.
        #[arg(long, default_value = "config")]
        config: PathBuf,
    },
    /// Stop every process of the cluster (data is kept).
    Down,
    /// Which processes run, and the cluster as the coord sees it.
    Status,
}

fn pids_file(dir: &Path) -> PathBuf {
    dir.join("pids")
}

/// Running, and not a zombie waiting to be reaped (processes outlive the
/// `cluster up` that started them, and not every init reaps).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The processes the pids file names. Only pids above 1 count: `kill`
/// takes 0 and -1 for whole groups, and 1 is init.
fn read_pids(dir: &Path) -> Vec<(String, i32)> {
    std::fs::read_to_string(pids_file(dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_owned(), pid.parse().ok().filter(|&p: &i32| p > 1)?))
        })
        .collect()
}

/// Still a process of this program: a pid outlives its process (the file
/// may predate a reboot), and the next process given it is not ours to
/// stop. By the command name (the executable's, cut to 15 bytes), which a
/// rebuilt binary keeps; the cluster's processes run this executable.
fn ours(pid: i32) -> bool {
    let exe = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.as_encoded_bytes().to_vec()));
    let mut name = exe.unwrap_or_else(|| b"kvraft".to_vec());
    name.truncate(15);
    std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.strip_suffix(b"\n").unwrap_or(&c) == name)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Up { servers, config } => up(&args.dir, servers, &config),
        What::Down => down(&args.dir),
        What::Status => status(&args.dir),
    }
}

fn up(dir: &Path, n: u64, config: &Path) -> anyhow::Result<ExitCode> {
    if !matches!(n, 1 | 3 | 5 | 7) {
        bail!("--servers must be 1, 3, 5 or 7, not {n}");
    }
    if read_pids(dir).iter().any(|(_, p)| alive(*p)) {
        bail!("a cluster is already running in {} (kvraft cluster down --dir {0})", dir.display());
    }
    let layout =
        if dir.join("coord_config.json").exists() { Layout::open(dir)? } else { Layout::create(dir, n, config)? };
    let mut pids = vec![("coord".to_string(), layout.start_coord(true)?.id())];
    for id in 1..=layout.n {
        pids.push((format!("server{id}"), layout.start_server(id, true)?.id()));
    }
    let text: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
    std::fs::write(pids_file(dir), text).context("writing the pids file")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let info = rt.block_on(local::leader(&layout.coord_client, &layout.secret, Duration::from_secs(20))).with_context(
        || format!("started, but the coord does not answer (`kvraft cluster down --dir {}` stops it)", dir.display()),
    )?;
    if info.leader_id == 0 {
        for name in pids.iter().map(|(n, _)| n) {
            let log = std::fs::read_to_string(dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
            if let Some(last) = log.lines().last() {
                eprintln!("{name}: {last}");
            }
        }
        bail!("started, but no leader yet: {} (logs in {}/logs)", info.status, dir.display());
    }
    println!(
        "cluster of {} servers up in {}; server {} leads term {}",
        layout.n,
        dir.display(),
        info.leader_id,
        info.term
    );
    println!("coord for clients: {}", layout.coord_client);
    println!("try: kvraft ctl --coord-config {} status", dir.join("coord_config.json").display());
    Ok(ExitCode::SUCCESS)
}

fn down(dir: &Path) -> anyhow::Result<ExitCode> {
    let pids = read_pids(dir);
    if pids.is_empty() {
        bail!("no cluster recorded in {}", dir.display());
    }
    let (pids, gone): (Vec<_>, Vec<_>) = pids.into_iter().partition(|(_, pid)| ours(*pid));
    for (name, pid) in &gone {
        println!("{name} ({pid}) is no longer running (the pid is not a kvraft process)");
    }
    for (_, pid) in &pids {
        // SAFETY: plain signal delivery to our own children.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    for _ in 0..40 {
        if !pids.iter().any(|(_, p)| alive(*p)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, pid) in &pids {
        if alive(*pid) && ours(*pid) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            println!("{name} ({pid}) did not stop on SIGTERM: killed");
        }
    }
    let _ = std::fs::remove_file(pids_file(dir));
    println!("cluster in {} stopped ({} processes); data kept", dir.display(), pids.len());
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &Path) -> anyhow::Result<ExitCode> {
    let pids = read_pids(dir);
    if pids.is_empty() {
        println!("no cluster running in {}", dir.display());
        return Ok(ExitCode::from(1));
    }
    for (name, pid) in &pids {
        println!("{name:<8} pid {pid:<8} {}", if alive(*pid) { "running" } else { "NOT RUNNING" });
    }
    let layout = Layout::open(dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        for s in &layout.servers {
            // The control port when the client port does not answer (full, say).
            let status = match local::server_status(&s.client, &layout.secret).await {
                Err(_) if !s.control.is_empty() => local::server_status(&s.control, &layout.secret).await,
                other => other,
            };
            match status {
                Ok(st) => println!(
                    "server {}: {} term {} commit {} applied {} log {}",
                    st.id, st.role, st.term, st.commit_index, st.applied_index, st.last_log_index
                ),
                Err(e) => println!("server {}: {e}", s.id),
            }
        }
    });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cluster down` signals only kvraft processes of the pids file: not
    /// whole groups (0, -1), not init, not whoever got a pid since.
    #[test]
    fn down_stops_only_kvraft_processes() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = other.id();
        std::fs::write(pids_file(dir.path()), format!("coord 0\nserver1 -1\nserver2 1\nserver3 {pid}\n")).unwrap();
        assert_eq!(read_pids(dir.path()), vec![("server3".to_string(), pid as i32)]);
        let stopped = down(dir.path());
        let still = other.try_wait().unwrap().is_none();
        let _ = other.kill();
        let _ = other.wait();
        stopped.unwrap();
        assert!(still, "cluster down signalled a process that is not kvraft");
    }
}
