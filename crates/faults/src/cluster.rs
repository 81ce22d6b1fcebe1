//! The coord and server processes, each run as
//! `ip netns exec <its namespace> <kvraft> coord|server ...` (or plainly
//! `<kvraft> coord|server ...` on loopback), and the signals the nemesis
//! sends them.
//!
//! `ip netns exec` switches namespace and then execs the command in place,
//! so the child's pid is the kvraft process itself: SIGKILL, SIGSTOP and
//! SIGCONT reach it directly.
//!
//! Invariants:
//! - [`Cluster`] is a guard: dropping it resumes and kills every process it
//!   started and reaps them, on success, error and panic;
//! - each child also gets SIGKILL if the thread that started it dies
//!   (PR_SET_PDEATHSIG), so a harness killed outright leaves no server
//!   running; that is why one thread starts all of them and outlives them;
//! - a process's output is appended to `logs/<name>.log` across restarts,
//!   each start preceded by a marker line with the harness's clock.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::configs::Paths;
use crate::layout::{Layout, Node};

struct Proc {
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    layout: Layout,
    bin: PathBuf,
    paths: Paths,
    epoch: Instant,
    procs: BTreeMap<Node, Proc>,
    /// Exits the harness did not cause, not yet taken by [`Cluster::take_exits`].
    exits: Vec<String>,
}

impl Cluster {
    /// Starts the coord, then every server.
    pub fn start(layout: &Layout, bin: PathBuf, paths: Paths, epoch: Instant) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(paths.dir.join("logs")).context("creating the logs folder")?;
        let mut c = Cluster { layout: layout.clone(), bin, paths, epoch, procs: BTreeMap::new(), exits: Vec::new() };
        c.launch(Node::Coord)?;
        for id in layout.server_ids() {
            c.launch(Node::Server(id))?;
        }
        Ok(c)
    }

    fn name(node: Node) -> String {
        match node {
            Node::Server(id) => format!("server{id}"),
            _ => "coord".into(),
        }
    }

    /// Starts `node`'s process (it must not be running).
    pub fn launch(&mut self, node: Node) -> anyhow::Result<()> {
        if self.is_up(node) {
            bail!("{node} is already running");
        }
        let name = Self::name(node);
        let log_path = self.paths.log(&name);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        writeln!(log, "==== kvraft faults: starting {name} at t={:.3}s", self.epoch.elapsed().as_secs_f64())?;
        let config = self.paths.config(node);
        let mut cmd = if self.layout.namespaced() {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &self.layout.netns(node)]).arg(&self.bin);
            cmd
        } else {
            Command::new(&self.bin)
        };
        match node {
            Node::Server(id) => cmd.args(["server", &id.to_string()]),
            _ => cmd.arg("coord"),
        };
        cmd.arg("--config").arg(&config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).env("NO_COLOR", "1");
        die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {name} ({})", self.bin.display()))?;
        self.procs.insert(node, Proc { child: Some(child), paused: false });
        Ok(())
    }

    /// True if `node`'s process was started and has not exited. An exit
    /// found here was not the harness's doing (its kills take the child
    /// out first): it is recorded for [`Cluster::take_exits`].
    pub fn is_up(&mut self, node: Node) -> bool {
        let Some(p) = self.procs.get_mut(&node) else {
            return false;
        };
        let status = match p.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => return true,
            None => return false,
            Some(Ok(Some(status))) => describe_exit(status),
            Some(Err(e)) => format!("cannot be waited for: {e}"),
        };
        p.child = None;
        p.paused = false;
        let at = self.epoch.elapsed().as_secs_f64();
        self.exits.push(format!("{node} exited by itself (seen at t={at:.2}s): {status}"));
        false
    }

    /// Checks every process; returns the exits nobody asked for since the
    /// last call. A server that dies on its own is a finding.
    pub fn take_exits(&mut self) -> Vec<String> {
        let nodes: Vec<Node> = self.procs.keys().copied().collect();
        for node in nodes {
            self.is_up(node);
        }
        std::mem::take(&mut self.exits)
    }

    pub fn pid(&self, node: Node) -> Option<u32> {
        self.procs.get(&node)?.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap. False if it was not running.
    pub fn kill(&mut self, node: Node) -> bool {
        let Some(p) = self.procs.get_mut(&node) else {
            return false;
        };
        let Some(mut child) = p.child.take() else {
            return false;
        };
        let running = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        p.paused = false;
        running
    }

    /// SIGSTOP: the process freezes with its sockets open, as in a long GC
    /// pause or a VM migration.
    pub fn pause(&mut self, node: Node) -> bool {
        self.signal(node, libc::SIGSTOP, true)
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, node: Node) -> bool {
        self.signal(node, libc::SIGCONT, false)
    }

    fn signal(&mut self, node: Node, sig: i32, paused: bool) -> bool {
        if !self.is_up(node) {
            return false;
        }
        let Some(p) = self.procs.get_mut(&node) else {
            return false;
        };
        let Some(pid) = p.child.as_ref().map(Child::id) else {
            return false;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot have been recycled.
        let ok = unsafe { libc::kill(pid as i32, sig) } == 0;
        if ok {
            p.paused = paused;
        }
        ok
    }

    /// Every node that should be running but is not.
    pub fn down(&mut self) -> Vec<Node> {
        let mut nodes = vec![Node::Coord];
        nodes.extend(self.layout.server_ids().map(Node::Server));
        nodes.into_iter().filter(|n| !self.is_up(*n)).collect()
    }

    /// Every paused node.
    pub fn paused(&self) -> Vec<Node> {
        self.procs.iter().filter(|(_, p)| p.paused).map(|(n, _)| *n).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let nodes: Vec<Node> = self.procs.keys().copied().collect();
        for node in nodes {
            self.resume(node);
            self.kill(node);
        }
    }
}

/// `exit code 1`, `killed by signal 13 (SIGPIPE)`...
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => {
            let name = match sig {
                libc::SIGINT => "SIGINT",
                libc::SIGTERM => "SIGTERM",
                libc::SIGKILL => "SIGKILL",
                libc::SIGPIPE => "SIGPIPE",
                libc::SIGABRT => "SIGABRT",
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGBUS => "SIGBUS",
                _ => "?",
            };
            format!("killed by signal {sig} ({name})")
        }
        _ => format!("{status}"),
    }
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it
/// exits, so nothing outlives a harness that was killed.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing is allocated between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
