//! The `kvraft` binary's tool subcommands, run as a user would.

use std::process::Command;

fn kvraft(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvraft")).args(args).output().expect("run kvraft");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sim_ends_with_the_summary_line() {
    let (code, out, _) = kvraft(&["sim", "--seeds", "30", "--seed", "7"]);
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("seeds=30 ops="), "{last}");
    assert!(last.ends_with(" violations=0"), "{last}");
}

#[test]
fn sim_rejects_a_bad_cluster_size_in_one_line() {
    assert_eq!(refused_in_one_line(&["sim", "--nodes", "4"], "--nodes must be 3, 5 or 7"), 2);
}

#[test]
fn lincheck_judges_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        concat!(
            r#"{"client":1,"key":"k","op":{"type":"put","value":"a"},"call":1,"ret":2,"output":{"type":"ok"}}"#,
            "\n",
            r#"{"client":2,"key":"k","op":{"type":"get"},"call":3,"ret":4,"output":{"type":"value","value":"a"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let (code, out, _) = kvraft(&["lincheck", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let stale = dir.path().join("stale.jsonl");
    std::fs::write(
        &stale,
        concat!(
            r#"{"client":1,"key":"k","op":{"type":"put","value":"a"},"call":1,"ret":2,"output":{"type":"ok"}}"#,
            "\n",
            r#"{"client":2,"key":"k","op":{"type":"get"},"call":3,"ret":4,"output":{"type":"value","value":null}}"#,
            "\n"
        ),
    )
    .unwrap();
    let (code, out, _) = kvraft(&["lincheck", stale.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT linearizable"), "{out}");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{not json\n").unwrap();
    let (code, _, err) = kvraft(&["lincheck", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("line 1"), "{err}");

    let (code, _, err) = kvraft(&["lincheck", "/nonexistent/history.jsonl"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn bench_prints_a_json_row_for_kvraft() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let args =
        ["bench", "--duration", "1", "--warmup", "0", "--clients", "2", "--json", "--dir", run.to_str().unwrap()];
    let (code, out, err) = kvraft(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let rows: Vec<serde_json::Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let row = rows.iter().find(|r| r["system"] == "kvraft").unwrap_or_else(|| panic!("no kvraft row in {out}"));
    assert_eq!(row["op"], "put");
    assert_eq!(row["clients"], 2);
    assert!(row["ops_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
    for f in ["p50_ms", "p99_ms", "errors", "server_cpu_s", "server_peak_rss_bytes"] {
        assert!(row.get(f).is_some(), "{f} missing in {row}");
    }
}

#[test]
fn bench_floor_prints_its_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = kvraft(&["bench", "floor", "--json", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let part = |f: &str| v[f].as_f64().unwrap_or_else(|| panic!("{f} missing in {v}"));
    assert!((part("floor_ms") - part("fsync_p50_ms") - 2.0 * part("rtt_p50_ms")).abs() < 1e-9, "{v}");
    assert!(part("fsync3_p50_ms") > 0.0, "{v}");
    assert!((part("shared_bound_ms") - part("fsync3_p50_ms") - 2.0 * part("rtt_p50_ms")).abs() < 1e-9, "{v}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the measured files are removed");
}

/// Without the `etcd` feature, every etcd flag says in one line how to get it.
#[cfg(not(feature = "etcd"))]
#[test]
fn bench_etcd_flags_without_the_feature_say_how_to_rebuild() {
    for args in [&["bench", "--etcd", "127.0.0.1:2379"][..], &["bench", "--compare-etcd"][..]] {
        assert_eq!(refused_in_one_line(args, "cargo run --release --features etcd -- bench"), 2);
        let (_, _, err) = kvraft(args);
        assert!(err.contains("apt-get install -y protobuf-compiler"), "{err}");
    }
}

#[cfg(feature = "etcd")]
#[test]
fn bench_append_against_etcd_is_refused_in_one_line() {
    let args = ["bench", "--etcd", "127.0.0.1:2379", "--op", "append"];
    assert_eq!(refused_in_one_line(&args, "append is not supported against etcd"), 2);
}

/// A load far beyond any machine is refused in one line before anything
/// starts (it used to try to open that many sessions).
#[test]
fn bench_refuses_an_absurd_load_in_one_line() {
    for (args, says) in [
        (&["bench", "--clients", "1000000"][..], "--clients is at most 10000"),
        (&["bench", "--window", "100000"][..], "--window at most 1024"),
        (&["bench", "--value-size", "2000000"][..], "--value-size is at most 1048576"),
    ] {
        assert_eq!(refused_in_one_line(args, says), 2, "{args:?}: a usage error");
    }
}

/// Runs `kvraft args`, checks it failed with one line of standard error
/// that contains `says`, and returns its exit code.
fn refused_in_one_line(args: &[&str], says: &str) -> i32 {
    let (code, out, err) = kvraft(args);
    assert_ne!(code, 0, "{args:?}: {out}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
    code
}

/// Sizes and durations that could only exhaust memory or overflow a clock
/// are refused in one line, before anything starts.
#[test]
fn absurd_counts_and_durations_are_refused_in_one_line() {
    for (args, says) in [
        (&["bench", "--duration", "100000000000"][..], "--duration and --warmup are at most 86400"),
        (&["bench", "--warmup", "100000000000"][..], "--duration and --warmup are at most 86400"),
        (&["client", "1", "--count", "10000000000"][..], "--count is at most 1000000"),
        (&["client", "1", "--window", "1000000000000"][..], "--window is 1 to 4096"),
        (&["client", "1", "--window", "0"][..], "--window is 1 to 4096"),
        (&["faults", "--time", "1000000000000000"][..], "--time is at most 604800"),
        (&["faults", "--snapshot-entries", "3"][..], "--snapshot-entries is at least 10"),
        (&["sim", "--jobs", "100000"][..], "--jobs is at most 256"),
        (&["bench", "--servers", "4"][..], "--servers must be 1, 3, 5 or 7, not 4"),
        (&["bench", "failover", "--servers", "2"][..], "--servers must be 1, 3, 5 or 7, not 2"),
    ] {
        refused_in_one_line(args, says);
    }
}
