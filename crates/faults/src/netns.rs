//! Thin wrappers over iproute2 and `setns(2)`: run `ip`, list and delete
//! namespaces, move the calling thread into one, and sweep what dead runs
//! left behind.
//!
//! Everything goes through `ip -n <ns>` (never the caller's namespace), so
//! it does not matter which namespace the calling thread happens to be in.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::layout::PREFIX;

/// Runs `ip args...`; an error carries the command and what `ip` said.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    ip_output(args).map(|_| ())
}

/// Runs `ip args...` and returns its standard output.
pub fn ip_output(args: &[&str]) -> anyhow::Result<String> {
    tool_output("ip", args)
}

/// Runs `tool args...` (iproute2's `ip` or `tc`) and returns its output.
pub fn tool_output(tool: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{tool}` (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!("`{tool} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `tool args...` with `input` on its standard input (`ip -batch -`).
pub fn tool_with_input(tool: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{tool}` (is iproute2 installed?)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("`{tool} {}` failed on:\n{}{}", args.join(" "), input, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The names of all named network namespaces on the machine.
pub fn list() -> anyhow::Result<Vec<String>> {
    Ok(ip_output(&["netns", "list"])?.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect())
}

/// Kills whatever still runs inside `name`, then deletes it. Best effort:
/// used on the way out, where one failure must not stop the rest.
pub fn delete(name: &str) -> anyhow::Result<()> {
    if let Ok(pids) = ip_output(&["netns", "pids", name]) {
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    ip(&["netns", "delete", name])
}

/// Moves the calling thread (only it) into network namespace `name`:
/// sockets it creates from now on, and threads it spawns, live there.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: the fd is valid for the duration of the call (owned by `f`).
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns into {name}: {} (the harness must run as root)", std::io::Error::last_os_error());
    }
    Ok(())
}

/// True while process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Deletes the namespaces of earlier runs whose harness is gone (a run
/// killed by SIGKILL or Ctrl-C never reaches its Drop guards). Namespaces
/// of live runs are left alone. Returns the names deleted.
pub fn sweep_stale() -> Vec<String> {
    let mut swept = Vec::new();
    for name in list().unwrap_or_default() {
        let Some(pid) =
            name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !pid_alive(pid) && delete(&name).is_ok() {
            swept.push(name);
        }
    }
    swept
}
