//! The harness without root: no network namespaces can be made, so the
//! partition faults are skipped with a line that says so, and the kills
//! and pauses still run, every process on 127.0.0.1.
//!
//! As root (CI), the run is made as user `nobody` through `setpriv`, so the
//! real non-root path is what is tested; run by a non-root user, the test
//! simply runs the binary as that user.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kvraft_faults::schedule::{self, Kind};

mod support;
use support::kvraft_bin;

const SEED: u64 = 3;
const SERVERS: u64 = 3;
const CLIENTS: u64 = 3;
const SECS: u64 = 10;
/// `nobody` on Debian.
const NOBODY: &str = "65534";

/// Kills the run if the test fails or times out before it ends.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_bounded(mut cmd: Command, within: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starting kvraft faults");
    let mut guard = KillOnDrop(Some(child));
    let deadline = Instant::now() + within;
    loop {
        let c = guard.0.as_mut().expect("taken only below");
        if c.try_wait().expect("waiting for kvraft faults").is_some() {
            return guard.0.take().expect("still here").wait_with_output().expect("collecting output");
        }
        assert!(Instant::now() < deadline, "kvraft faults ran longer than {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn make_world_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
}

#[test]
fn without_root_partitions_are_skipped_and_kills_and_pauses_run_on_loopback() {
    // The schedule this seed gives a loopback run: kills and pauses early.
    let planned = schedule::generate(SEED, SERVERS, CLIENTS, Duration::from_secs(SECS), &[Kind::Partition]);
    assert!(planned.iter().all(|s| s.fault.kind() != Kind::Partition));

    let work = tempfile::Builder::new().prefix("kvraft-faults-loopback-").tempdir().unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        // A copy of the binary where `nobody` may run it (the checkout may
        // sit in a folder only root can enter).
        make_world_writable(work.path());
        let bin = work.path().join("kvraft");
        std::fs::copy(kvraft_bin(), &bin).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"]).arg(bin);
        c
    } else {
        Command::new(kvraft_bin())
    };
    let dir = work.path().join("run");
    cmd.args(["faults", "--time", &SECS.to_string(), "--seed", &SEED.to_string()])
        .args(["--servers", &SERVERS.to_string(), "--clients", &CLIENTS.to_string()])
        .arg("--dir")
        .arg(&dir)
        .current_dir(work.path());
    let out = run_bounded(cmd, Duration::from_secs(SECS + 60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let both = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "the run failed ({}):\n{both}", out.status);
    assert!(
        stderr.lines().any(|l| l.contains("partition faults SKIPPED") && l.contains("not root")),
        "no line saying partitions were skipped:\n{both}"
    );
    assert!(stdout.contains("verdict: PASS"), "{both}");
    let faults = stdout.lines().find(|l| l.starts_with("faults:")).unwrap_or_else(|| panic!("{both}"));
    assert!(!faults.contains("partition="), "{faults}");
    assert!(!faults.contains("slow-disk="), "{faults}");
    for kind in [Kind::KillServer, Kind::PauseServer] {
        assert!(faults.contains(&format!("{}=", kind.name())), "no {} in: {faults}\n{both}", kind.name());
    }
    // The processes really ran on loopback.
    let cfg = std::fs::read_to_string(dir.join("config/server_config1.json")).unwrap();
    assert!(cfg.contains("\"127.0.0.1:"), "{cfg}");
    assert!(std::fs::read_to_string(dir.join("history.jsonl")).unwrap().lines().count() > 100);
}
