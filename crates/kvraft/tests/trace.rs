//! Tracing end to end: a traced run passes the trace checker, the servers
//! keep serving without a tracing server, and the viewer draws in a real
//! browser (headless Chromium, installed by .ci/run).

mod support;

use std::process::Command;

fn repo_config() -> String {
    format!("{}/../../config", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_traced_demo_passes_the_strict_trace_check() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = Command::new(support::kvraft_bin())
        .args(["demo", "--servers", "3", "--ops", "10", "--pace-ms", "2", "--fail", "none", "--config"])
        .arg(repo_config())
        .arg("--dir")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let trace = run.join("trace_output.log");
    let check = Command::new(support::kvraft_bin()).args(["trace", "check", "--strict"]).arg(&trace).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    for tag in [
        "CoordStart",
        "ServerJoiningRecvd",
        "AllServersJoined",
        "BecameLeader",
        "KvslibStart",
        "PutRecvd",
        "PutCommitted",
        "PutResultRecvd",
        "GetResultRecvd",
        "AppendEntriesRequestRecvd",
        "KvslibStop",
    ] {
        let text = std::fs::read_to_string(&trace).unwrap();
        assert!(text.contains(&format!("\"Tag\":\"{tag}\"")), "no {tag} in the trace");
    }
    // A client's leader lookup is answered in its own trace, by name.
    let text = std::fs::read_to_string(&trace).unwrap();
    for client in ["1", "2"] {
        for tag in ["LeaderReqRecvd", "LeaderRes"] {
            let record = format!(r#""Tag":"{tag}","Body":{{"ClientId":"{client}""#);
            assert!(text.contains(&record), "no {record} in the trace");
        }
    }
    let shiviz = std::fs::read_to_string(run.join("shiviz_output.log")).unwrap();
    assert!(shiviz.starts_with("(?<host>\\S*) (?<clock>{.*})\\n(?<event>.*)\n\n"), "ShiViz header");
}

#[test]
fn servers_keep_serving_without_a_tracing_server() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // A port held but not listening: connecting is refused, and no
        // other process (another test's tracing server) can take it.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let dead = held.local_addr().unwrap().port();
        let mut c = support::TestCluster::new(3, &format!(r#", "TracingServerAddr": "127.0.0.1:{dead}""#));
        for id in 1..=3 {
            c.start(id);
        }
        let leader = c.select_leader().await;
        let mut kv = c.client(leader).await;
        for i in 1..=50 {
            let r = kv.put(support::put("t", i, &format!("k{i}"), "v")).await.unwrap().into_inner();
            assert!(support::is_ok(&r), "{r:?}");
        }
        drop(held);
    });
}

#[test]
fn the_viewer_draws_lanes_and_arrows_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("view.html");
    let reference =
        format!("{}/../trace/tests/data/3Server2ClientLeaderFailure/trace_output.log", env!("CARGO_MANIFEST_DIR"));
    let reference = if std::path::Path::new(&reference).exists() {
        reference
    } else {
        // Fall back to whatever reference copy the trace crate keeps.
        let data = format!("{}/../trace/tests/data", env!("CARGO_MANIFEST_DIR"));
        let mut found = None;
        for e in walk(std::path::Path::new(&data)) {
            if e.file_name().is_some_and(|n| n == "trace_output.log") {
                found = Some(e.display().to_string());
                break;
            }
        }
        found.expect("a reference trace in crates/trace/tests/data")
    };
    let out =
        Command::new(support::kvraft_bin()).args(["trace", "view", &reference, "-o"]).arg(&html).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("headless Chromium is needed for this test (Debian package `chromium`; .ci/run installs it)");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
    ];
    let profile = dir.path().join("profile");
    let dom = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let lanes = dom.matches("<line class=\"lane").count();
    let arrows = dom.matches("<line class=\"arrow").count();
    assert!(lanes >= 6, "expected a lane per host (6), found {lanes}");
    assert!(arrows >= 50, "expected the token arrows, found {arrows}");
    let shot = dir.path().join("view.png");
    let _ = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "the screenshot is empty ({size} bytes)");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
