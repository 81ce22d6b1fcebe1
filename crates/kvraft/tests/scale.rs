//! `kvraft bench scale` run as a user would, small: a real cluster loaded
//! with 4,000 keys in doubling steps, then the restarts; its JSON lines
//! checked for shape, not for speed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bench process; on drop (a timeout, a failed assertion) it gets
/// SIGINT, so that it stops the cluster it started, then SIGKILL.
struct Bench(Child);

impl Drop for Bench {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: sending a signal to our own child, which has not been reaped.
            unsafe {
                libc::kill(self.0.id() as libc::pid_t, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn scale_reports_each_doubling_and_the_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.jsonl");
    let err_path = dir.path().join("err.log");
    let run = dir.path().join("cluster");
    let mut bench = Bench(
        Command::new(env!("CARGO_BIN_EXE_kvraft"))
            .args(["bench", "scale", "--keys", "4000", "--snapshot-entries", "1000", "--json", "--dir"])
            .arg(&run)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("start kvraft bench scale"),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = bench.0.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            drop(bench);
            panic!(
                "bench scale did not finish in 300 s; stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");

    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "step").collect();
    let keys: Vec<u64> = steps.iter().map(|s| s["keys"].as_u64().unwrap()).collect();
    assert_eq!(keys, vec![500, 1000, 2000, 4000], "{out}");
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["system"], "kvraft", "{s}");
        assert!(s["load_ops_per_sec"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["rss_bytes_max"].as_u64().unwrap() > 0, "{s}");
        let per_server = s["rss_bytes_per_server"].as_array().unwrap();
        assert_eq!(per_server.len(), 3, "{s}");
        assert!(per_server.iter().all(|b| b.as_u64().unwrap() > 0), "{s}");
        assert!(s["data_dir_bytes"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["verified"].as_u64().unwrap(), keys[i].min(1000), "{s}");
        if i == 0 {
            assert!(s["rss_growth"].is_null(), "{s}");
        } else {
            assert!(s["rss_growth"].as_f64().unwrap() > 0.0, "{s}");
        }
    }
    let restarts: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "restart").collect();
    assert_eq!(restarts.len(), 1, "{out}");
    let r = restarts[0];
    assert_eq!(r["system"], "kvraft", "{r}");
    assert_eq!(r["keys"], 4000, "{r}");
    assert!(r["follower_restart_secs"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["follower_serving_secs"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["all_restart_secs"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["all_leader_secs"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["follower_target_index"].as_u64().unwrap() >= 4000, "{r}");
    assert!(r["rss_bytes_max_after_restart"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["lagging_writes"], 1100, "{r}");
    assert!(r["lagging_caught_up_secs"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["lagging_snapshot_index"].as_u64().unwrap() > 4000, "it was sent a snapshot: {r}");
    let before = r["leader_rss_bytes_before_send"].as_u64().unwrap();
    assert!(before > 0 && r["leader_rss_bytes_max_during_send"].as_u64().unwrap() >= before, "{r}");
    assert_eq!(r["verified"], 1000, "{r}");
    assert_eq!(lines.len(), steps.len() + 1, "{out}");
}

#[test]
fn scale_refuses_bad_arguments_in_one_line() {
    for args in [&["--keys", "0"][..], &["--servers", "4"], &["--value-size", "0"], &["--window", "0"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_kvraft"))
            .args(["bench", "scale"])
            .args(args)
            .arg("--dir")
            .arg(std::env::temp_dir().join("kvraft-scale-never-created"))
            .output()
            .expect("run kvraft");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn scale_will_not_empty_a_folder_that_is_not_a_bench_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvraft"))
        .args(["bench", "scale", "--keys", "10", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run kvraft");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert!(dir.path().join("precious.txt").exists());
}

/// The processes whose command line mentions `needle` (the cluster's folder).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Waits up to 10 s for the cluster in `run` to be gone.
fn assert_no_process_left(run: &std::path::Path) {
    let needle = run.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "still running: {:?}", processes_mentioning(&needle));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn scale_stops_at_the_memory_limit_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("cluster");
    let out = Command::new(env!("CARGO_BIN_EXE_kvraft"))
        .args(["bench", "scale", "--keys", "100000", "--max-rss-mib", "1", "--json", "--dir"])
        .arg(&run)
        .output()
        .expect("run kvraft");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("resident memory reached"), "{err}");
    assert_no_process_left(&run);
}

#[test]
fn scale_interrupted_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("cluster");
    let mut bench = Bench(
        Command::new(env!("CARGO_BIN_EXE_kvraft"))
            .args(["bench", "scale", "--keys", "1000000", "--json", "--dir"])
            .arg(&run)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kvraft bench scale"),
    );
    // Interrupt once the servers run (their logs exist), mid-load.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.join("logs").join("server3.log").exists() {
        assert!(Instant::now() < deadline, "the cluster did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: a signal to our own child, not yet reaped.
    unsafe {
        libc::kill(bench.0.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = bench.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "bench scale did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "{status}");
    assert_no_process_left(&run);
}
