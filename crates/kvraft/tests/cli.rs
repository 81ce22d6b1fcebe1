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
    let (code, _, err) = kvraft(&["sim", "--nodes", "4"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--nodes must be 3, 5 or 7"), "{err}");
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
