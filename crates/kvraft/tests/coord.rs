//! The coord with real processes: join, bad joins, failover, quorum loss,
//! a partition between the coord and two servers, and a coord restart (with
//! its state, and without).

mod support;

use std::time::{Duration, Instant};

use kvraft_proto as pb;
use support::{TestCluster, is_ok, put};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

async fn started(n: u64, extra: &str) -> TestCluster {
    let mut c = TestCluster::with_coord(n, extra, "");
    c.start_coord();
    for id in 1..=n {
        c.start(id);
    }
    c
}

/// The coord's leader, or a failure naming what the coord says.
async fn leader(c: &TestCluster) -> pb::LeaderInfo {
    let info = c.coord_leader(Duration::from_secs(15)).await;
    assert_ne!(info.leader_id, 0, "no leader: {}", info.status);
    info
}

/// Puts through the coord's current leader until one succeeds (or `timeout`).
async fn put_via_coord(c: &TestCluster, client: &str, op_id: u64, key: &str, timeout: Duration) -> u64 {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < timeout, "no write succeeded within {timeout:?}");
        let info = c.coord_leader(Duration::from_millis(500)).await;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", info.client_addr)).unwrap();
        if info.leader_id != 0
            && let Ok(ch) = endpoint.connect_timeout(Duration::from_millis(200)).connect().await
        {
            let mut kv = pb::kv_client_client::KvClientClient::new(ch);
            // Bounded: a leader that cannot commit holds a write unanswered.
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), kv.put(put(client, op_id, key, "v"))).await
                && is_ok(r.get_ref())
            {
                return info.leader_id;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn join_of_3_5_and_7_servers_designates_server_1() {
    runtime().block_on(async {
        for n in [3, 5, 7] {
            let c = started(n, "").await;
            let info = leader(&c).await;
            assert_eq!((info.leader_id, info.term), (1, 1), "{n} servers");
            let view = c.coord_client().await.cluster(pb::Empty {}).await.unwrap().into_inner();
            assert!(view.join_complete);
            assert_eq!(view.servers.iter().filter(|s| s.alive).count() as u64, n);
            assert_eq!(put_via_coord(&c, "t", 1, "k", Duration::from_secs(10)).await, 1);
        }
    });
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < within, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A join out of range, a duplicate id and a wrong secret are each refused
/// with a clear error; the coord goes on and forms the cluster.
#[test]
fn bad_joins_are_refused_and_the_coord_goes_on() {
    runtime().block_on(async {
        let mut c = TestCluster::with_coord(3, r#", "Secret": "s3cret""#, r#", "Secret": "s3cret""#);
        c.start_coord();
        c.start(1);
        c.start(2);
        // Wait until 1 and 2 joined.
        c.wait_until("two servers joined", Duration::from_secs(10), || async {
            let mut req = tonic::Request::new(pb::Empty {});
            req.metadata_mut().insert("x-kvraft-secret", "s3cret".parse().unwrap());
            let v = c.coord_client().await.cluster(req).await.unwrap().into_inner();
            v.servers.len() == 2
        })
        .await;
        let coord = c.coord.as_ref().unwrap().server_api.clone();
        let bad_config = |name: &str, id: u64, secret: &str| {
            let p = c.dir.path().join(name);
            let (a, b, d, e) = (support::free_port(), support::free_port(), support::free_port(), support::free_port());
            std::fs::write(
                &p,
                format!(
                    r#"{{"ServerID": {id}, "CoordAddr": "{coord}", "ServerAddr": "127.0.0.1:{a}",
                        "ServerServerAddr": "127.0.0.1:{b}", "ServerListenAddr": "127.0.0.1:{d}",
                        "ClientListenAddr": "127.0.0.1:{e}", "Secret": "{secret}",
                        "DataDir": "{}"}}"#,
                    c.dir.path().join(format!("{name}.data")).display()
                ),
            )
            .unwrap();
            p
        };
        for (name, id, secret, expect) in [
            ("out_of_range", 5, "s3cret", "outside 1..=3"),
            ("duplicate", 1, "s3cret", "duplicate server id 1"),
            ("wrong_secret", 3, "nope", "secret"),
        ] {
            let cfg = bad_config(name, id, secret);
            let out = std::process::Command::new(support::kvraft_bin())
                .args(["server", &id.to_string(), "--config"])
                .arg(&cfg)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = out;
            let status = wait_exit(&mut out, Duration::from_secs(10));
            let mut err = String::new();
            std::io::Read::read_to_string(out.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "{name} was accepted");
            let last = err.lines().last().unwrap_or_default();
            assert!(last.contains(expect), "{name}: {err}");
        }
        c.start(3);
        let mut req =
            tonic::Request::new(pb::LeaderRequest { wait_ms: 15_000, client_id: String::new(), trace: vec![] });
        req.metadata_mut().insert("x-kvraft-secret", "s3cret".parse().unwrap());
        let info = c.coord_client().await.get_leader(req).await.unwrap().into_inner();
        assert_eq!(info.leader_id, 1, "{}", info.status);
        // A client id too long for the trace is refused; the coord goes on.
        let long = pb::LeaderRequest { wait_ms: 0, client_id: "c".repeat(257), trace: vec![] };
        let mut req = tonic::Request::new(long);
        req.metadata_mut().insert("x-kvraft-secret", "s3cret".parse().unwrap());
        let err = c.coord_client().await.watch_leader(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        let mut req = tonic::Request::new(pb::LeaderRequest { wait_ms: 0, client_id: "c".into(), trace: vec![] });
        req.metadata_mut().insert("x-kvraft-secret", "s3cret".parse().unwrap());
        assert_eq!(c.coord_client().await.get_leader(req).await.unwrap().into_inner().leader_id, 1);
    });
}

/// SIGKILL the leader: a new leader serves within the detection time plus
/// a few round trips.
#[test]
fn leader_failover_is_fast() {
    runtime().block_on(async {
        let mut c = started(3, "").await;
        let old = leader(&c).await.leader_id;
        put_via_coord(&c, "t", 1, "before", Duration::from_secs(10)).await;
        let killed = Instant::now();
        c.kill9(old);
        let new = put_via_coord(&c, "t", 2, "after", Duration::from_secs(10)).await;
        let took = killed.elapsed();
        eprintln!("failover: SIGKILL of leader {old} to a write committed by leader {new}: {took:?}");
        assert_ne!(new, old);
        assert!(took < Duration::from_secs(3), "failover took {took:?}");
    });
}

/// A follower that fails and comes back at new addresses is caught up: the
/// coord tells the leader where it went.
#[test]
fn a_follower_back_at_new_addresses_is_caught_up() {
    runtime().block_on(async {
        let mut c = started(3, "").await;
        let leader_id = leader(&c).await.leader_id;
        let f = (1..=3).find(|&i| i != leader_id).unwrap();
        put_via_coord(&c, "t", 1, "a", Duration::from_secs(10)).await;
        c.kill9(f);
        c.wait_until("the coord sees the follower fail", Duration::from_secs(10), || async {
            let view = c.coord_client().await.cluster(pb::Empty {}).await.unwrap().into_inner();
            view.servers.iter().any(|s| s.id == f && !s.alive)
        })
        .await;
        put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;
        c.move_to_new_ports(f);
        c.start(f);
        let target = c.status(leader_id).await.commit_index;
        c.wait_until("the follower at its new addresses catches up", Duration::from_secs(15), || async {
            c.status(f).await.applied_index >= target
        })
        .await;
        assert_eq!(leader(&c).await.leader_id, leader_id, "caught up without a failover");
    });
}

/// The leader restarts before the failure detector notices: the coord
/// learns it from the rejoin, selects a leader again, and its trace tells
/// it in an order the trace checker accepts.
#[test]
fn a_leader_restarted_before_detection_is_replaced_and_the_trace_checks() {
    let mut tracing = TracingServer::start();
    let at = format!(r#", "TracingServerAddr": "{}""#, tracing.addr);
    runtime().block_on(async {
        // Heartbeats five seconds apart: detection takes at least ten, far
        // longer than a restart, even of a debug build on a loaded machine.
        let mut c = TestCluster::with_coord(3, &at, &format!(r#"{at}, "HeartbeatMs": 5000"#));
        c.start_coord();
        for id in 1..=3 {
            c.start(id);
        }
        let old = leader(&c).await;
        put_via_coord(&c, "t", 1, "a", Duration::from_secs(10)).await;
        c.kill9(old.leader_id);
        c.start(old.leader_id);
        c.wait_until("a leader of a later term", Duration::from_secs(15), || async {
            let now = c.coord_leader(Duration::from_millis(200)).await;
            now.leader_id != 0 && now.term > old.term
        })
        .await;
        put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;
    });
    let trace = tracing.stop();
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.contains(r#""Reason":"restarted""#), "the restart went unnoticed by the join: {text}");
    let check =
        std::process::Command::new(support::kvraft_bin()).args(["trace", "check"]).arg(&trace).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
}

/// Kills the coord, deletes its state and starts it again; the leader it
/// names once it names one again.
async fn wipe_and_restart_coord(c: &mut TestCluster) -> pb::LeaderInfo {
    c.kill9_coord();
    std::fs::remove_dir_all(c.dir.path().join("coord")).unwrap();
    c.start_coord();
    let restarted = Instant::now();
    c.wait_until("the coord, its state lost, names a leader", Duration::from_secs(30), || async {
        c.coord_leader(Duration::from_millis(200)).await.leader_id != 0
    })
    .await;
    eprintln!("a leader named again {:?} after the coord's restart without its state", restarted.elapsed());
    c.coord_leader(Duration::ZERO).await
}

/// Three servers and a coord, all tracing to `tracing`, once a first
/// write has committed; and the leader that took it.
async fn traced_with_a_write(tracing: &TracingServer) -> (TestCluster, pb::LeaderInfo) {
    let at = format!(r#", "TracingServerAddr": "{}""#, tracing.addr);
    let mut c = TestCluster::with_coord(3, &at, &at);
    c.start_coord();
    for id in 1..=3 {
        c.start(id);
    }
    let before = leader(&c).await;
    put_via_coord(&c, "t", 1, "a", Duration::from_secs(10)).await;
    (c, before)
}

/// A tracing server process, killed on drop.
struct TracingServer {
    addr: String,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl TracingServer {
    fn start() -> TracingServer {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", support::free_port());
        let config = dir.path().join("tracing_server_config.json");
        let cfg = serde_json::json!({
            "ServerBind": addr,
            "Secret": "",
            "OutputFile": dir.path().join("trace_output.log"),
            "ShivizOutputFile": dir.path().join("shiviz_output.log"),
        });
        std::fs::write(&config, cfg.to_string()).unwrap();
        let child = std::process::Command::new(support::kvraft_bin())
            .args(["tracing-server", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Listening before any tracer dials it: a tracer refused at first
        // backs off (up to 2 s), and a process killed meanwhile would take
        // its whole trace with it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the tracing server does not listen on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
        TracingServer { addr, dir, child: Some(child) }
    }

    /// Stops it gracefully (SIGTERM: what it received is written out; the
    /// tracers that sent to it are gone by now) and returns its trace file,
    /// which lives as long as `self`.
    fn stop(&mut self) -> std::path::PathBuf {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.dir.path().join("trace_output.log")
    }
}

impl Drop for TracingServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two failures out of five, the leader among them, are survived.
#[test]
fn two_of_five_failures_are_survived() {
    runtime().block_on(async {
        let mut c = started(5, "").await;
        let old = leader(&c).await.leader_id;
        put_via_coord(&c, "t", 1, "a", Duration::from_secs(10)).await;
        c.kill9(old);
        c.kill9(if old == 5 { 4 } else { 5 });
        let new = put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;
        assert_ne!(new, old);
    });
}

/// Three failures out of five: the coord says "quorum impossible", a client
/// gets an answer rather than a hang, and the cluster recovers when one
/// server returns.
#[test]
fn three_of_five_is_quorum_impossible_until_one_returns() {
    runtime().block_on(async {
        let mut c = started(5, "").await;
        let old = leader(&c).await.leader_id;
        put_via_coord(&c, "t", 1, "a", Duration::from_secs(10)).await;
        let victims: Vec<u64> = std::iter::once(old).chain((1..=5).filter(|&i| i != old).take(2)).collect();
        for &v in &victims {
            c.kill9(v);
        }
        c.wait_until("the coord reports quorum impossible", Duration::from_secs(10), || async {
            c.coord_leader(Duration::ZERO).await.quorum_impossible
        })
        .await;
        let survivor = (1..=5).find(|i| !victims.contains(i)).unwrap();
        let start = Instant::now();
        let r = c.client(survivor).await.put(put("t", 2, "b", "v")).await.unwrap().into_inner();
        assert!(!is_ok(&r), "a write succeeded without a quorum: {r:?}");
        assert!(start.elapsed() < Duration::from_secs(2), "the client waited {:?}", start.elapsed());
        c.start(victims[1]);
        put_via_coord(&c, "t", 3, "c", Duration::from_secs(15)).await;
        assert!(!c.coord_leader(Duration::ZERO).await.quorum_impossible);
    });
}

/// The seed's coord test, for real: the leader and one follower of five
/// stop answering the coord's heartbeats. The coord designates the most
/// up-to-date of the others; the old leader is fenced; when the partition
/// heals both rejoin the view as followers and every log agrees.
#[test]
fn partition_between_coord_and_two_servers_is_survived_and_healed() {
    runtime().block_on(async {
        let mut c = started(5, "").await;
        let old = leader(&c).await.leader_id;
        for i in 1..=20 {
            put_via_coord(&c, "t", i, &format!("k{i}"), Duration::from_secs(10)).await;
        }
        let other = if old == 5 { 4 } else { 5 };
        c.mute(old, true);
        c.mute(other, true);
        c.wait_until("a new leader", Duration::from_secs(10), || async {
            let l = c.coord_leader(Duration::ZERO).await.leader_id;
            l != 0 && l != old
        })
        .await;
        let new = put_via_coord(&c, "t", 21, "k21", Duration::from_secs(10)).await;
        assert!(new != old && new != other);
        let st = c.status(old).await;
        assert_eq!(st.role, "follower", "the old leader is fenced: {st:?}");
        c.mute(old, false);
        c.mute(other, false);
        c.wait_until("both back in the view", Duration::from_secs(10), || async {
            let v = c.coord_client().await.cluster(pb::Empty {}).await.unwrap().into_inner();
            v.servers.iter().all(|s| s.alive)
        })
        .await;
        put_via_coord(&c, "t", 22, "k22", Duration::from_secs(10)).await;
        c.wait_until("every server applied everything", Duration::from_secs(10), || async {
            let mut applied = Vec::new();
            for id in 1..=5 {
                applied.push(c.status(id).await.applied_index);
            }
            applied.iter().all(|&a| a == applied[0])
        })
        .await;
        let mut logs = Vec::new();
        for id in 1..=5 {
            let r = c.admin(id).await.log(pb::LogRequest { from: 0, limit: 0 }).await.unwrap().into_inner();
            logs.push(r.lines.iter().map(|l| l.entry.clone()).collect::<Vec<_>>());
        }
        assert!(logs.iter().all(|l| *l == logs[0]), "logs differ: {logs:?}");
        assert_eq!(c.status(old).await.role, "follower");
    });
}

/// The coord dies and restarts in the middle of a write load: no write
/// fails, and the restarted coord keeps the same leader and term.
#[test]
fn coord_restart_does_not_interrupt_service() {
    runtime().block_on(async {
        let mut c = started(3, "").await;
        let before = leader(&c).await;
        let addr = before.client_addr.clone();
        let writer = tokio::spawn(async move {
            let mut kv = pb::kv_client_client::KvClientClient::new(support::connect(&addr).await);
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < Duration::from_millis(1500) {
                n += 1;
                let r = kv.put(put("w", n, &format!("k{n}"), "v")).await.expect("transport").into_inner();
                assert!(is_ok(&r), "write {n} failed while the coord restarted: {r:?}");
            }
            n
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.kill9_coord();
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.start_coord();
        let writes = writer.await.unwrap();
        assert!(writes > 20, "only {writes} writes");
        let after = leader(&c).await;
        assert_eq!((after.leader_id, after.term), (before.leader_id, before.term));
    });
}

/// The coord restarts with its state file lost (an empty data directory)
/// while the servers run on: they notice that it does not know them and
/// join again by themselves, and it keeps the leader it finds, at a term no
/// lower than before, with no failover and no server restarted. Failover
/// works afterwards, at a later term; the trace checks.
#[test]
fn coord_restart_with_its_state_lost_recovers_without_a_server_restart() {
    let mut tracing = TracingServer::start();
    runtime().block_on(async {
        let (mut c, before) = traced_with_a_write(&tracing).await;
        let after = wipe_and_restart_coord(&mut c).await;
        assert!(after.term >= before.term, "term went back from {} to {}", before.term, after.term);
        assert_eq!((after.leader_id, after.term), (before.leader_id, before.term), "the live leader was kept");
        for s in &mut c.servers {
            let exited = s.child.as_mut().map(|ch| ch.try_wait().unwrap());
            assert_eq!(exited, Some(None), "server {} is not running", s.id);
        }
        assert!(std::fs::metadata(c.dir.path().join("coord").join("coord_state.json")).is_ok(), "state persisted");
        put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;
        c.kill9(after.leader_id);
        let new = put_via_coord(&c, "t", 3, "c", Duration::from_secs(10)).await;
        assert_ne!(new, after.leader_id);
        let now = c.coord_leader(Duration::ZERO).await;
        assert!(now.term > after.term, "failover at term {} after {}", now.term, after.term);
    });
    let trace = tracing.stop();
    let text = std::fs::read_to_string(&trace).unwrap();
    // One failover: the leader's kill; none for the coord's restart.
    assert_eq!(text.matches(r#""Tag":"LeaderFailOver""#).count(), 1, "{text}");
    // One AllServersJoined per coord process.
    assert_eq!(text.matches(r#""Tag":"AllServersJoined""#).count(), 2, "{text}");
    let check =
        std::process::Command::new(support::kvraft_bin()).args(["trace", "check"]).arg(&trace).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
}

/// The coord reads a server's status on the server's control port, whose
/// places are kept for it: a coord restarted (its state lost) while the
/// leader's client port is full still finds that leader and keeps it,
/// instead of taking it for gone and naming one at a new term. So does
/// `kvraft ctl status`, which shows the refused connection.
#[test]
fn a_restarted_coord_keeps_a_leader_whose_client_port_is_full() {
    use support::raw::*;
    runtime().block_on(async {
        let mut c = started(3, r#", "MaxClientConnections": 1"#).await;
        let before = leader(&c).await;
        let (_held, w) = welcomed(&before.client_addr, "").await;
        assert!(w.accepted, "{w:?}");
        let mut s = TcpStream::connect(&before.client_addr).await.unwrap();
        let _ = s.write_all(&CLIENT_WIRE.hello(&pb::ClientHello::default())).await;
        closed(s, "a second connection to a full client port").await;

        let after = wipe_and_restart_coord(&mut c).await;
        assert_eq!((after.leader_id, after.term), (before.leader_id, before.term), "the live leader was kept");

        let coord = c.coord.as_ref().expect("a coord").client_api.clone();
        let out = std::process::Command::new(support::kvraft_bin())
            .args(["ctl", "--coord", &coord, "--secret", "", "--json", "status"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let row = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["id"] == before.leader_id)
            .unwrap_or_else(|| {
                panic!("no row for the leader: {text} {} {:?}", String::from_utf8_lossy(&out.stderr), out.status)
            });
        assert_eq!(row["role"], "leader", "{row}");
        assert!(row["client_connections_refused"].as_u64().unwrap_or(0) >= 1, "{row}");
    });
}

/// The coord loses its state while the leader is down for good: the two
/// servers left join it again, and once the rejoin grace is over it goes
/// on with them (a majority) instead of waiting forever for the third, so
/// the cluster has a leader and new clients find it. The dead server,
/// back later, joins as any returning server and counts again: with
/// another server killed, writes still commit on it and the leader.
#[test]
fn a_coord_that_lost_its_state_goes_on_without_a_server_down_for_good() {
    runtime().block_on(async {
        let mut c = started(3, "").await;
        let before = leader(&c).await;
        put_via_coord(&c, "t", 1, "a", Duration::from_secs(10)).await;
        let dead = before.leader_id;
        c.kill9(dead);
        let after = wipe_and_restart_coord(&mut c).await;
        assert_ne!(after.leader_id, dead, "the dead server was named");
        assert!(after.term > before.term, "term {} after {}", after.term, before.term);
        let view = c.coord_client().await.cluster(pb::Empty {}).await.unwrap().into_inner();
        assert!(view.join_complete, "{view:?}");
        assert_eq!(view.servers.len(), 2, "{view:?}");
        put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;

        c.start(dead);
        c.wait_until("the dead server joins again", Duration::from_secs(20), || async {
            let view = c.coord_client().await.cluster(pb::Empty {}).await.unwrap().into_inner();
            view.servers.iter().filter(|s| s.alive).count() == 3
        })
        .await;
        let now = leader(&c).await;
        let other = (1..=3).find(|&id| id != dead && id != now.leader_id).unwrap();
        c.kill9(other);
        // A majority is now the leader and the server that came back: the
        // write commits only if the leader replicates to it.
        put_via_coord(&c, "t", 3, "c", Duration::from_secs(15)).await;
    });
}

/// A follower holds a term above the leader's that the coord never
/// handed out (as after a selection the coord lost with its state): the
/// leader steps down at the follower's first answer, and the coord hears
/// of that term from the follower's next `Known` poll and selects above
/// it, instead of naming a leader that no longer leads.
#[test]
fn a_leader_fenced_by_a_term_the_coord_does_not_know_is_replaced() {
    runtime().block_on(async {
        let c = started(3, "").await;
        let before = leader(&c).await;
        put_via_coord(&c, "t", 1, "a", Duration::from_secs(10)).await;
        let follower = (1..=3).find(|&id| id != before.leader_id).unwrap();
        let lost = before.term + 5;
        let r = c.control(follower).await.log_state(pb::LogStateRequest { term: lost, trace: vec![] }).await;
        assert!(r.unwrap().into_inner().granted);
        c.wait_until("the coord selects above the lost term", Duration::from_secs(20), || async {
            let info = c.coord_leader(Duration::from_millis(200)).await;
            info.leader_id != 0 && info.term > lost
        })
        .await;
        put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;
    });
}

/// A coord restarted from a state file written before incarnations were
/// kept knows no server's incarnation, so every server joins it again; as
/// a rejoin (`JoinRequest.rejoin`: joined all along), not as a restart, so
/// the leader is kept and nobody fails over.
#[test]
fn a_state_file_from_before_incarnations_costs_no_failover() {
    let mut tracing = TracingServer::start();
    runtime().block_on(async {
        let (mut c, before) = traced_with_a_write(&tracing).await;
        c.kill9_coord();
        let path = c.dir.path().join("coord").join("coord_state.json");
        let incarnations = || -> usize {
            let text = std::fs::read_to_string(&path).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v.get("incarnations").and_then(|i| i.as_object()).map_or(0, |o| o.len())
        };
        assert_eq!(incarnations(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("incarnations");
        std::fs::write(&path, v.to_string()).unwrap();
        assert_eq!(incarnations(), 0);
        c.start_coord();
        c.wait_until("every server joined the coord again", Duration::from_secs(20), || async { incarnations() == 3 })
            .await;
        put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;
        let after = c.coord_leader(Duration::ZERO).await;
        assert_eq!((after.leader_id, after.term), (before.leader_id, before.term), "the leader was not kept");
    });
    let trace = tracing.stop();
    let text = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(text.matches(r#""Tag":"LeaderFailOver""#).count(), 0, "{text}");
}

/// After a write, kills a follower and the coord, wipes the coord's state
/// and starts it again, and waits until the two live servers have joined
/// it again. Returns the killed server and a reader of the coord's state
/// file: (members joined, whether the join is complete).
async fn coord_wiped_with_a_server_down(c: &mut TestCluster) -> (u64, impl Fn() -> Option<(usize, bool)> + use<>) {
    let before = leader(c).await;
    put_via_coord(c, "t", 1, "a", Duration::from_secs(10)).await;
    let dead = (1..=3).find(|&id| id != before.leader_id).unwrap();
    c.kill9(dead);
    c.kill9_coord();
    let dir = c.dir.path().join("coord");
    std::fs::remove_dir_all(&dir).unwrap();
    c.start_coord();
    let path = dir.join("coord_state.json");
    let joined = move || -> Option<(usize, bool)> {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        Some((v["members"].as_array()?.len(), v["join_complete"].as_bool()?))
    };
    c.wait_until("the two live servers join the coord again", Duration::from_secs(20), || async {
        joined() == Some((2, false))
    })
    .await;
    (dead, joined)
}

/// The coord loses its state with a server down, the two others join it
/// again, and it crashes again (its new state kept) before its rejoin
/// grace is over. The servers that joined are known to it now and do not
/// join again, so the grace must start over when it restarts, or it would
/// wait for the dead server for ever.
#[test]
fn a_coord_restarted_during_its_rejoin_grace_still_goes_on() {
    runtime().block_on(async {
        let mut c = started(3, "").await;
        let (_dead, joined) = coord_wiped_with_a_server_down(&mut c).await;
        c.kill9_coord();
        assert_eq!(joined(), Some((2, false)), "the join completed before the coord was killed");
        c.start_coord();
        c.wait_until("the coord names a leader", Duration::from_secs(20), || async {
            c.coord_leader(Duration::from_millis(200)).await.leader_id != 0
        })
        .await;
        put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;
        assert_eq!(joined().map(|j| j.1), Some(true));
    });
}

/// `RejoinGraceMs` is the coord's to set: with a minute of grace, a coord
/// that lost its state and has two of three servers back still waits for
/// the third well past the default 3 s, and goes on as soon as it joins.
#[test]
fn the_rejoin_grace_is_the_configured_one() {
    runtime().block_on(async {
        let mut c = TestCluster::with_coord(3, "", r#", "RejoinGraceMs": 60000"#);
        c.start_coord();
        for id in 1..=3 {
            c.start(id);
        }
        let (dead, joined) = coord_wiped_with_a_server_down(&mut c).await;
        // Twice the default grace: the default would have gone on by now.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(joined(), Some((2, false)), "the coord went on before its configured grace");
        assert_eq!(c.coord_leader(Duration::ZERO).await.leader_id, 0, "a leader before the join completed");
        c.start(dead);
        c.wait_until("all three join and the coord names a leader", Duration::from_secs(20), || async {
            c.coord_leader(Duration::from_millis(200)).await.leader_id != 0
        })
        .await;
        assert_eq!(joined(), Some((3, true)));
        put_via_coord(&c, "t", 2, "b", Duration::from_secs(10)).await;
    });
}

/// A leader cut off from its followers while the coord still hears it (its
/// links to them point nowhere) says so in its `Known` poll, and the coord
/// selects a leader among the others: writes go on. Before, the coord saw a
/// live leader and kept it, and nothing committed until the cut healed.
#[test]
fn a_leader_cut_off_from_its_followers_is_replaced() {
    runtime().block_on(async {
        let c = started(3, "").await;
        let old = leader(&c).await;
        put_via_coord(&c, "t", 1, "before", Duration::from_secs(10)).await;
        // The leader's links to its followers go to ports nobody listens on,
        // told again every 200 ms: the coord's own Configure calls (after a
        // detector flap, say) would otherwise put the real addresses back
        // and heal the cut. And only after its first `Known` poll (about a
        // second after its join), whose membership it applies because it is
        // its first: later polls bring the same one, which it leaves alone.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let nowhere: Vec<pb::Member> = c
            .members()
            .into_iter()
            .map(|mut m| {
                if m.id != old.leader_id {
                    m.peer_addr = format!("127.0.0.1:{}", support::free_port());
                }
                m
            })
            .collect();
        let mut control = c.control(old.leader_id).await;
        let cutting = tokio::spawn(async move {
            loop {
                let _ = control.configure(pb::Membership { members: nowhere.clone(), trace: vec![] }).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let cut = Instant::now();
        // Three seconds without a majority, then its next poll (about a
        // second), then a selection among the other two.
        let new = put_via_coord(&c, "t", 2, "after", Duration::from_secs(20)).await;
        eprintln!(
            "leader {} cut off from its followers; server {new} took a write after {:?}",
            old.leader_id,
            cut.elapsed()
        );
        assert_ne!(new, old.leader_id, "the cut-off leader took the write");
        let st = c.status(old.leader_id).await;
        cutting.abort();
        assert_eq!(st.role, "follower", "the cut-off leader did not step down: {st:?}");
    });
}
