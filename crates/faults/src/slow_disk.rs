//! A slow disk for one running server: strace attaches to every thread of
//! the process and delays each `fdatasync`/`fsync` on entry, so the WAL's
//! group commit (and snapshot writes) take that much longer to become
//! durable. Detaching strace (SIGINT) restores full speed.
//!
//! This needs no device-mapper, loop device or cgroup: only ptrace, which
//! root has. Side effect worth knowing: while attached, every syscall of
//! the server stops in the tracer, so the whole process runs somewhat
//! slower too, not only its disk.
//!
//! Invariant: a [`SlowDisk`] owns its strace process; dropping it detaches
//! (or, failing that, kills) strace, which releases the server.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cluster::die_with_parent;

/// True if `strace` can be run here.
pub fn available() -> bool {
    Command::new("strace").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

pub struct SlowDisk {
    strace: Child,
}

impl SlowDisk {
    /// Delays every fsync of process `pid` by `delay`; strace's own
    /// complaints go to `log`.
    pub fn start(pid: u32, delay: Duration, log: &Path) -> anyhow::Result<SlowDisk> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let inject = format!("inject=fdatasync,fsync:delay_enter={}", delay.as_micros().max(1));
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync,fsync"])
            .args(["-e", &inject, "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut cmd);
        let strace = cmd.spawn().context("starting strace")?;
        Ok(SlowDisk { strace })
    }

    /// Detaches strace: the server runs at full speed again.
    pub fn stop(mut self) {
        self.detach();
    }

    fn detach(&mut self) {
        if matches!(self.strace.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the child is
        // unreaped, so its pid is still ours.
        unsafe {
            libc::kill(self.strace.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.strace.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        self.detach();
    }
}
