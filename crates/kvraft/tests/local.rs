//! The newcomer's commands: `kvraft demo` and `kvraft cluster up|status|down`.

mod support;

use std::process::Command;

fn repo_config() -> String {
    format!("{}/../../config", env!("CARGO_MANIFEST_DIR"))
}

/// A config folder like the repository's whose coord config sets a
/// Secret: every process, tool call, client and tracer must then carry it.
fn secret_config(dir: &std::path::Path) -> String {
    let path = dir.join("coord_config.json");
    let text = std::fs::read_to_string(format!("{}/coord_config.json", repo_config())).unwrap();
    let mut coord: serde_json::Value = serde_json::from_str(&text).unwrap();
    coord["Secret"] = "s3cret".into();
    std::fs::write(&path, coord.to_string()).unwrap();
    dir.display().to_string()
}

/// The seed's four scenarios (normal operation, follower failure, leader
/// failure, quorum impossible) and its partition test, with 3 servers and 2
/// clients each: every result right (or, without a quorum, a typed error),
/// identical logs, and a trace that passes `kvraft trace check`. Two of
/// them run with a Secret set.
#[test]
fn the_seeds_scenarios_pass_with_identical_logs_and_checked_traces() {
    let dir = tempfile::tempdir().unwrap();
    let with_secret = secret_config(dir.path());
    for fail in ["none", "follower", "leader", "quorum", "partition"] {
        let config = if matches!(fail, "leader" | "partition") { with_secret.clone() } else { repo_config() };
        let out = Command::new(support::kvraft_bin())
            .args(["demo", "--servers", "3", "--ops", "12", "--pace-ms", "5", "--fail", fail, "--config"])
            .arg(config)
            .arg("--dir")
            .arg(dir.path().join(fail))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{fail}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("0 wrong"), "{fail}: {stdout}");
        assert!(stdout.contains("logs of every running server: identical"), "{fail}: {stdout}");
        assert!(stdout.contains("kvraft trace check: checked") && stdout.contains(" 0 errors"), "{fail}: {stdout}");
        if fail == "quorum" {
            assert!(stdout.contains("refused with a typed error"), "{fail}: {stdout}");
        }
        if fail == "leader" || fail == "partition" {
            assert!(stdout.contains("is the new leader, term"), "{fail}: no failover shown: {stdout}");
        }
    }
}

/// With a Secret set (the tools must carry it): up, the hint it prints
/// works, status, down.
#[test]
fn cluster_up_status_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("c");
    let config = secret_config(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new(support::kvraft_bin()).args(args).arg("--dir").arg(&d).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Kill everything even if an assertion fails.
    struct Down<'a>(&'a std::path::Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Command::new(support::kvraft_bin()).args(["cluster", "down", "--dir"]).arg(self.0).output();
        }
    }
    let _down = Down(&d);
    let (ok, out, err) = run(&["cluster", "up", "--servers", "3", "--config", &config]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("leads term"), "{out}");
    let (ok, _, err) = run(&["cluster", "up", "--servers", "3"]);
    assert!(!ok && err.contains("already running"), "{err}");
    let (ok, out, _) = run(&["cluster", "status"]);
    assert!(ok && out.matches("running").count() >= 4, "{out}");
    assert_eq!(out.matches(" term ").count(), 3, "every server answers the status call: {out}");

    // The hint `up` printed reaches the cluster, Secret included.
    let coord_config = d.join("coord_config.json");
    let ctl = |args: &[&str]| {
        let out = Command::new(support::kvraft_bin())
            .arg("ctl")
            .arg("--coord-config")
            .arg(&coord_config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = ctl(&["put", "k", "v"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = ctl(&["get", "k"]);
    assert!(ok && out.trim() == "v", "{out}{err}");
    let out = Command::new(support::kvraft_bin())
        .args(["ctl", "--secret", "wrong", "--coord-config"])
        .arg(&coord_config)
        .args(["get", "k"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong Secret is refused");
    assert!(err.contains("refused by the cluster") && err.contains("secret"), "not said why: {err}");
    let (ok, out, _) = run(&["cluster", "down"]);
    assert!(ok && out.contains("stopped (4 processes)"), "{out}");
    let (ok, _, _) = run(&["cluster", "status"]);
    assert!(!ok);
}
