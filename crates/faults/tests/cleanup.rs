//! A run that fails part-way still removes everything it made. (Its own
//! test binary: the namespace check below looks at every run of this
//! process, so no other run may be going on in parallel.)

use std::process::Command;

#[test]
fn a_run_whose_processes_die_at_start_fails_fast_and_cleans_up() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the fault harness test must run as root (it creates network namespaces); CI runs it as root"
    );
    let work = tempfile::tempdir().unwrap();
    let opts = kvraft_faults::Options {
        // Exits at once, whatever its arguments: no cluster ever forms.
        kvraft_bin: "/bin/true".into(),
        servers: 3,
        duration: std::time::Duration::from_secs(5),
        seed: 1,
        clients: 2,
        work_dir: work.path().join("run"),
        progress: true,
        loopback: false,
        ..kvraft_faults::Options::default()
    };
    let started = std::time::Instant::now();
    let err = kvraft_faults::run(&opts).expect_err("a cluster of /bin/true cannot run");
    let msg = format!("{err:#}");
    assert!(msg.contains("exited by itself") && msg.contains("exit code 0"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}", started.elapsed());
    let out = Command::new("ip").args(["netns", "list"]).output().expect("iproute2 is required");
    let left = String::from_utf8_lossy(&out.stdout);
    let ours = kvraft_faults::process_prefix(std::process::id());
    assert!(!left.lines().any(|l| l.starts_with(&ours)), "namespaces left behind:\n{left}");
}
