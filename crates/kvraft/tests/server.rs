//! The server process with real disks and real sockets: replication, crash
//! recovery with SIGKILL, torn and corrupt logs, snapshot catch-up.

mod support;

use std::time::Duration;

use support::{TestCluster, get, is_ok, put, value_of};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

#[test]
fn replicates_and_serves_reads_and_writes() {
    runtime().block_on(async {
        let mut c = TestCluster::new(3, "");
        for id in 1..=3 {
            c.start(id);
        }
        let leader = c.select_leader().await;
        let mut kv = c.client(leader).await;
        for i in 1..=20 {
            let r = kv.put(put("t", i, &format!("k{i}"), &format!("v{i}"))).await.unwrap().into_inner();
            assert!(is_ok(&r), "{r:?}");
        }
        let r = kv.get(get("t", 21, "k7")).await.unwrap().into_inner();
        assert_eq!(value_of(&r), Some(Some("v7".into())));
        // A follower refuses and names the leader.
        let follower = if leader == 1 { 2 } else { 1 };
        let r = c.client(follower).await.put(put("t", 22, "x", "y")).await.unwrap().into_inner();
        match r.result {
            Some(kvraft_proto::reply::Result::Error(e)) => {
                assert_eq!(e.code, kvraft_proto::ErrorCode::NotLeader as i32);
                assert_eq!(e.leader_id, leader);
            }
            other => panic!("expected not leader, got {other:?}"),
        }
        // Every server applies the same log.
        c.wait_until("all servers applied everything", Duration::from_secs(10), || async {
            let mut applied = Vec::new();
            for id in 1..=3 {
                applied.push(c.status(id).await.applied_index);
            }
            applied.iter().all(|&a| a == applied[0] && a >= 21)
        })
        .await;
        // And holds the same state: the digests agree (20 keys, and the
        // client's session).
        let mut digests = Vec::new();
        for id in 1..=3 {
            let d = c.admin(id).await.digest(kvraft_proto::DigestRequest {}).await.unwrap().into_inner();
            digests.push((d.applied_index, d.crc32c, d.keys));
        }
        assert_eq!(digests[0].2, 20, "{digests:?}");
        assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
        // The digest is of the state: one more write changes it.
        let r = kv.put(put("t", 23, "k1", "changed")).await.unwrap().into_inner();
        assert!(is_ok(&r), "{r:?}");
        let after = c.admin(leader).await.digest(kvraft_proto::DigestRequest {}).await.unwrap().into_inner();
        assert_ne!(after.crc32c, digests[0].1);
        // The log pages by index: a window from the middle, then past the end.
        let page =
            c.admin(leader).await.log(kvraft_proto::LogRequest { from: 5, limit: 3 }).await.unwrap().into_inner();
        let indexes: Vec<u64> = page.lines.iter().map(|l| l.index).collect();
        assert_eq!(indexes, [5, 6, 7], "{page:?}");
        assert!(page.lines.iter().all(|l| l.term >= 1 && !l.entry.is_empty()), "{page:?}");
        let past = c.admin(leader).await.log(kvraft_proto::LogRequest { from: 1_000, limit: 0 }).await.unwrap();
        assert!(past.into_inner().lines.is_empty());
        // The first leader started the bound on sessions, at one index on
        // every server (the digests above agree on the order it keeps).
        let mut markers = Vec::new();
        for id in 1..=3 {
            let log = c.admin(id).await.log(kvraft_proto::LogRequest { from: 0, limit: 0 }).await.unwrap().into_inner();
            let at: Vec<u64> =
                log.lines.iter().filter(|l| l.entry.ends_with("Entry=SessionBound")).map(|l| l.index).collect();
            markers.push(at);
        }
        assert_eq!(markers[0].len(), 1, "{markers:?}");
        assert!(markers.iter().all(|m| *m == markers[0]), "{markers:?}");
        // A unary caller gets a session from the cluster, and writes in it.
        let register = kvraft_proto::Command {
            client_id: "unary".into(),
            op_id: 4242,
            op: Some(kvraft_proto::command::Op::Register(kvraft_proto::RegisterOp {})),
            ..Default::default()
        };
        let r = kv.register(register).await.unwrap().into_inner();
        let Some(kvraft_proto::reply::Result::Registered(reg)) = r.result else { panic!("{r:?}") };
        assert!(reg.session >= 1 << 63, "{reg:?}");
        let mut cmd = put("unary", 1, "u", "v");
        cmd.session = reg.session;
        let r = kv.put(cmd).await.unwrap().into_inner();
        assert!(is_ok(&r), "{r:?}");
        // The call takes registrations only.
        let r = kv.register(put("unary", 2, "u", "w")).await.unwrap().into_inner();
        assert!(matches!(&r.result, Some(kvraft_proto::reply::Result::Error(e)) if e.code == kvraft_proto::ErrorCode::BadRequest as i32), "{r:?}");
    });
}

/// SIGKILL every server in the middle of a write load, restart them all:
/// every acknowledged write is still there.
#[test]
fn kill9_mid_write_load_loses_no_acknowledged_write() {
    runtime().block_on(async {
        let mut c = TestCluster::new(3, "");
        for id in 1..=3 {
            c.start(id);
        }
        let leader = c.select_leader().await;
        let addr = c.servers[leader as usize - 1].client_addr.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..8u64 {
            let addr = addr.clone();
            let stop = stop.clone();
            writers.push(tokio::spawn(async move {
                let mut kv = kvraft_proto::kv_client_client::KvClientClient::new(support::connect(&addr).await);
                let mut acked = Vec::new();
                for i in 1.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("w{w}-{i}");
                    match kv.put(put(&format!("writer{w}"), i, &key, &format!("value-{i}"))).await {
                        Ok(r) if is_ok(r.get_ref()) => acked.push(key),
                        _ => break, // the server died under us
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        for id in 1..=3 {
            c.kill9(id);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.unwrap());
        }
        assert!(acked.len() > 50, "the load wrote too little to mean anything: {}", acked.len());

        for id in 1..=3 {
            c.start(id);
        }
        let leader = c.select_leader().await;
        let mut kv = c.client(leader).await;
        for (n, key) in acked.iter().enumerate() {
            let i: u64 = key.rsplit('-').next().unwrap().parse().unwrap();
            let r = kv.get(get("reader", n as u64 + 1, key)).await.unwrap().into_inner();
            assert_eq!(value_of(&r), Some(Some(format!("value-{i}"))), "acknowledged {key} lost: {r:?}");
        }
    });
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    segs.sort();
    segs.pop().expect("a WAL segment")
}

async fn write_some(c: &TestCluster, leader: u64, client: &str, n: u64) {
    let mut kv = c.client(leader).await;
    for i in 1..=n {
        let r = kv.put(put(client, i, &format!("{client}-{i}"), "v")).await.unwrap().into_inner();
        assert!(is_ok(&r), "{r:?}");
    }
}

/// Waits until server `id` exits (failing with `what` after `within`),
/// checks it failed, and returns the last line of its log.
fn stopped(c: &mut TestCluster, id: u64, within: Duration, what: &str) -> String {
    let child = c.server(id).child.as_mut().unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    };
    c.server(id).child = None;
    assert!(!status.success());
    let log = std::fs::read_to_string(&c.servers[(id - 1) as usize].log).unwrap();
    log.lines().last().unwrap_or_default().to_owned()
}

/// Three servers that snapshot every 40 entries; one follower killed, then
/// 300 writes: the leader has compacted past it. Returns the cluster, the
/// leader and the killed follower.
async fn lagging_cluster() -> (TestCluster, u64, u64) {
    let mut c = TestCluster::new(3, r#", "SnapshotEntries": 40"#);
    for id in 1..=3 {
        c.start(id);
    }
    let leader = c.select_leader().await;
    let lagging = if leader == 3 { 2 } else { 3 };
    c.kill9(lagging);
    write_some(&c, leader, "a", 300).await;
    (c, leader, lagging)
}

/// Where a WAL segment's records end, before the zero-filled room after
/// them (framing: `len:u32 | crc:u32 | type:u8 | payload`).
fn records_end(bytes: &[u8]) -> usize {
    let mut at = 0usize;
    while at + 9 <= bytes.len() && bytes[at..at + 9] != [0u8; 9] {
        at += 9 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    at.min(bytes.len())
}

/// A WAL cut in the middle of its last record (a crash mid-write): the
/// server recovers without that record, says so in one line, and serves.
#[test]
fn torn_tail_is_cut_off_and_reported() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, "");
        c.start(1);
        let leader = c.select_leader().await;
        write_some(&c, leader, "a", 20).await;
        // The No-Op, the marker that starts the bound on sessions, 20 writes.
        let written = c.status(1).await.last_log_index;
        assert_eq!(written, 22);
        c.kill9(1);
        let seg = last_segment(&c.servers[0].data_dir);
        // The segment ends in zero-filled room: cut inside the last record.
        let len = records_end(&std::fs::read(&seg).unwrap()) as u64;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        c.start(1);
        let st = c.status(1).await;
        assert_eq!(st.last_log_index, written - 1, "exactly the torn record is gone");
        let log = std::fs::read_to_string(&c.servers[0].log).unwrap();
        let torn: Vec<&str> = log.lines().filter(|l| l.contains("torn")).collect();
        assert_eq!(torn.len(), 1, "one line reports the torn write: {log}");
        let leader = c.select_leader().await;
        let mut kv = c.client(leader).await;
        let r = kv.get(get("b", 1, "a-19")).await.unwrap().into_inner();
        assert_eq!(value_of(&r), Some(Some("v".into())));
    });
}

/// A corrupt byte before the tail: the server refuses to start, with a
/// clear error, instead of serving wrong data.
#[test]
fn corruption_before_the_tail_stops_the_server() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, "");
        c.start(1);
        let leader = c.select_leader().await;
        write_some(&c, leader, "a", 50).await;
        c.kill9(1);
        let seg = last_segment(&c.servers[0].data_dir);
        let mut bytes = std::fs::read(&seg).unwrap();
        let mid = records_end(&bytes) / 3;
        bytes[mid] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        c.start(1);
        let last = stopped(&mut c, 1, Duration::from_secs(10), "server did not stop on a corrupt log");
        assert!(last.contains("corrupt"), "{last}");
        assert!(last.contains("wal-"), "the error names the file: {last}");
    });
}

/// A follower that missed more than a snapshot's worth of entries is caught
/// up by InstallSnapshot, and the leader's log stays compacted.
#[test]
fn lagging_follower_is_caught_up_by_snapshot() {
    runtime().block_on(async {
        let (mut c, leader, lagging) = lagging_cluster().await;
        let st = c.status(leader).await;
        assert!(st.snapshot_index >= 200, "the leader compacted: {st:?}");
        c.start(lagging);
        c.configure().await;
        let target = st.commit_index;
        c.wait_until("the lagging follower caught up", Duration::from_secs(20), || async {
            c.status(lagging).await.applied_index >= target
        })
        .await;
        let st = c.status(lagging).await;
        assert!(st.snapshot_index > 0, "it was sent a snapshot: {st:?}");
        // Both ends say so in their logs, and the state decoded on the way
        // in is the one installed.
        let log = |id: u64| std::fs::read_to_string(&c.servers[(id - 1) as usize].log).unwrap();
        let (sent, got) = (log(leader), log(lagging));
        assert!(sent.contains(&format!("sending a snapshot to server {lagging}")), "{sent}");
        assert!(got.contains("installed a snapshot from the leader"), "{got}");
        assert!(!got.contains("decoding a received snapshot on the loop"), "{got}");
    });
}

/// 200,000 writes through one session stream with a small snapshot
/// threshold: the data directory stays small while the log keeps moving.
#[test]
fn disk_use_stays_bounded_over_200k_writes() {
    use std::collections::BTreeSet;
    use tokio_stream::StreamExt;
    runtime().block_on(async {
        // fsync off keeps this test about space, not disk speed.
        let mut c = TestCluster::new(1, r#", "SnapshotEntries": 1000, "SegmentBytes": 262144, "Fsync": "never""#);
        c.start(1);
        let leader = c.select_leader().await;
        let mut kv = c.client(leader).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<kvraft_proto::Command>(1024);
        let mut replies = kv.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        const TOTAL: u64 = 200_000;
        const WINDOW: u64 = 512;
        let mut outstanding = BTreeSet::new();
        let (mut next, mut done, mut max_disk) = (1u64, 0u64, 0u64);
        let value = "x".repeat(100);
        while done < TOTAL {
            while next <= TOTAL && outstanding.len() < WINDOW as usize {
                let mut cmd = put("bulk", next, &format!("k{}", next % 1000), &value);
                cmd.first_unacked = outstanding.first().copied().unwrap_or(next);
                tx.send(cmd).await.unwrap();
                outstanding.insert(next);
                next += 1;
            }
            let r = replies.next().await.expect("stream open").expect("reply");
            assert!(is_ok(&r), "{r:?}");
            outstanding.remove(&r.op_id);
            done += 1;
            if done % 20_000 == 0 {
                max_disk = max_disk.max(c.status(leader).await.disk_bytes);
            }
        }
        let st = c.status(leader).await;
        assert!(st.applied_index > TOTAL);
        assert!(st.snapshot_index > TOTAL - 2000, "{st:?}");
        // 200,000 entries of ~150 bytes were written: ~30 MB of log.
        assert!(max_disk > 0 && max_disk < 4 << 20, "disk use peaked at {max_disk} bytes");
    });
}

/// With a Secret set, a request that does not present it is refused, and
/// the server goes on serving.
#[test]
fn requests_without_the_secret_are_refused() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, r#", "Secret": "s3cret""#);
        c.start(1);
        let mut kv = c.client(1).await;
        let err = kv.put(put("t", 1, "k", "v")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut req = tonic::Request::new(kvraft_proto::StatusRequest {});
        req.metadata_mut().insert("x-kvraft-secret", "s3cret".parse().unwrap());
        let st = c.admin(1).await.status(req).await.expect("the right secret is accepted").into_inner();
        assert_eq!(st.id, 1);
    });
}

/// The peer wire (plain length-prefixed protobuf, not gRPC): a hello, then
/// frames. See crates/server/src/peer/frame.rs.
mod peer_wire {
    use prost::Message as _;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub fn hello(secret: &str) -> Vec<u8> {
        let h = kvraft_proto::PeerHello { from: 2, secret: secret.into() }.encode_to_vec();
        let mut out = b"KVRP\x01".to_vec();
        out.extend((h.len() as u32).to_be_bytes());
        out.extend(h);
        out
    }

    pub fn frame(m: &kvraft_proto::PeerMessage) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    /// An empty AppendEntries from server 2 at `term`.
    pub fn append(term: u64) -> kvraft_proto::PeerMessage {
        kvraft_proto::PeerMessage {
            msg: Some(kvraft_proto::peer_message::Msg::Append(kvraft_proto::AppendEntries {
                term,
                leader: 2,
                ..Default::default()
            })),
            trace: Vec::new(),
        }
    }

    /// Writes `bytes`; true if the server then closes the connection.
    pub async fn closed_after(addr: &str, bytes: &[u8]) -> bool {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        matches!(r, Ok(Ok(0) | Err(_)))
    }
}

/// Junk and an oversized frame on the peer port get the connection closed,
/// and the cluster goes on replicating.
#[test]
fn peer_port_closes_on_junk_and_goes_on() {
    runtime().block_on(async {
        let mut c = TestCluster::new(3, "");
        for id in 1..=3 {
            c.start(id);
        }
        let leader = c.select_leader().await;
        let follower = if leader == 1 { 2 } else { 1 };
        let addr = c.servers[(follower - 1) as usize].peer_addr.clone();
        assert!(peer_wire::closed_after(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await, "junk is refused");
        let mut oversized = peer_wire::hello("");
        oversized.extend(u32::MAX.to_be_bytes());
        assert!(peer_wire::closed_after(&addr, &oversized).await, "an oversized frame is refused");

        let applied = c.status(follower).await.applied_index;
        let r = c.client(leader).await.put(put("t", 1, "k", "v")).await.unwrap().into_inner();
        assert!(is_ok(&r), "{r:?}");
        c.wait_until("the follower applies the write", Duration::from_secs(10), || async {
            c.status(follower).await.applied_index > applied
        })
        .await;
    });
}

/// A connection speaks for the server its hello names: a message in
/// another server's name closes it unstepped.
#[test]
fn a_message_in_another_servers_name_is_refused() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, "");
        c.start(1);
        let before = c.status(1).await.term;
        let addr = c.servers[0].peer_addr.clone();
        let mut forged = peer_wire::append(before + 1000);
        if let Some(kvraft_proto::peer_message::Msg::Append(a)) = forged.msg.as_mut() {
            a.leader = 3; // the hello says server 2
        }
        let mut wire = peer_wire::hello("");
        wire.extend(peer_wire::frame(&forged));
        assert!(peer_wire::closed_after(&addr, &wire).await, "a message in another's name is taken");
        assert_eq!(c.status(1).await.term, before, "the forged message was stepped");
        // In its own name, the same message is stepped.
        let mut wire = peer_wire::hello("");
        wire.extend(peer_wire::frame(&peer_wire::append(before + 1000)));
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, &wire).await.unwrap();
        c.wait_until("the server's own message is stepped", Duration::from_secs(10), || async {
            c.status(1).await.term == before + 1000
        })
        .await;
    });
}

/// With a Secret set, a peer connection must present it in its hello: a
/// message behind a wrong secret is never stepped, while the same message
/// behind the right one is (its far later term is adopted).
#[test]
fn peer_port_wants_the_secret() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, r#", "Secret": "s3cret""#);
        c.start(1);
        let term = || async {
            let mut req = tonic::Request::new(kvraft_proto::StatusRequest {});
            req.metadata_mut().insert("x-kvraft-secret", "s3cret".parse().unwrap());
            c.admin(1).await.status(req).await.expect("status with the secret").into_inner().term
        };
        let before = term().await;
        let addr = c.servers[0].peer_addr.clone();
        let mut wrong = peer_wire::hello("wrong");
        wrong.extend(peer_wire::frame(&peer_wire::append(before + 1000)));
        assert!(peer_wire::closed_after(&addr, &wrong).await, "a wrong secret is refused");
        assert_eq!(term().await, before, "a message behind a wrong secret was stepped");

        let mut right = peer_wire::hello("s3cret");
        right.extend(peer_wire::frame(&peer_wire::append(before + 1000)));
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, &right).await.unwrap();
        c.wait_until("the right secret's message is stepped", Duration::from_secs(10), || async {
            term().await == before + 1000
        })
        .await;
    });
}

/// The peer port holds at most 64 connections (crates/server/src/limits.rs):
/// one more is closed as it comes, even with a good hello, and its place
/// comes back when one of them closes.
#[test]
fn the_peer_port_holds_at_most_64_connections() {
    use tokio::io::AsyncWriteExt;
    runtime().block_on(async {
        let mut c = TestCluster::new(1, "");
        c.start(1);
        let before = c.status(1).await.term;
        let addr = c.servers[0].peer_addr.clone();
        let mut held = Vec::new();
        for _ in 0..64 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(&peer_wire::hello("")).await.unwrap();
            held.push(s);
        }
        let mut wire = peer_wire::hello("");
        wire.extend(peer_wire::frame(&peer_wire::append(before + 1000)));
        assert!(peer_wire::closed_after(&addr, &wire).await, "a 65th connection was kept");
        assert_eq!(c.status(1).await.term, before, "the 65th connection's message was stepped");

        // The server sees the closed connection a moment later: until
        // then a new one is still refused, so try again until one is kept.
        held.pop();
        let (mut kept, until) = (Vec::new(), std::time::Instant::now() + Duration::from_secs(10));
        while c.status(1).await.term != before + 1000 {
            assert!(std::time::Instant::now() < until, "a freed place did not serve again");
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let _ = s.write_all(&wire).await;
            kept.push(s);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop((held, kept));
    });
}

/// The control port holds at most 16 connections (crates/server/src/limits.rs):
/// one more is closed as it comes, and once one closes the coord's calls
/// get through again.
#[test]
fn the_control_port_holds_at_most_16_connections() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, "");
        c.start(1);
        // One place, taken by a real client of the control port (the only
        // one: no coord here), then fifteen that send HTTP/2's preface and
        // nothing more (the port waits for them: a silent one would be
        // closed after 10 s, one that says too little after a keepalive).
        let mut control = c.control(1).await;
        let req = || kvraft_proto::LogStateRequest { term: 0, trace: vec![] };
        control.log_state(req()).await.expect("a call within the bound");
        let addr = c.servers[0].control_addr.clone();
        let mut held = Vec::new();
        for _ in 0..15 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
            held.push(s);
        }
        assert!(peer_wire::closed_after(&addr, b"").await, "a 17th connection was kept");
        control.log_state(req()).await.expect("the first client goes on");

        held.pop();
        let (mut served, until) = (false, std::time::Instant::now() + Duration::from_secs(10));
        while !served {
            assert!(std::time::Instant::now() < until, "a freed place did not serve again");
            tokio::time::sleep(Duration::from_millis(100)).await;
            served = tokio::time::timeout(Duration::from_secs(2), async {
                c.control(1).await.log_state(req()).await.is_ok()
            })
            .await
            .unwrap_or(false);
        }
        drop(held);
    });
}

/// Connections that say nothing do not hold the control port's places for
/// good: each is closed after 10 s, and the coord's calls get through.
#[test]
fn silent_connections_give_back_the_control_ports_places() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, "");
        c.start(1);
        let req = || kvraft_proto::LogStateRequest { term: 0, trace: vec![] };
        c.control(1).await.log_state(req()).await.expect("the server is up");
        let addr = c.servers[0].control_addr.clone();
        // The probe's own connection may still hold a place for a moment:
        // sixteen silent ones fill the rest, and one more is closed at once.
        let mut held = Vec::new();
        for _ in 0..17 {
            held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        }
        let (start, mut served) = (std::time::Instant::now(), false);
        while !served {
            assert!(start.elapsed() < Duration::from_secs(30), "silent connections kept their places");
            tokio::time::sleep(Duration::from_millis(500)).await;
            served = tokio::time::timeout(Duration::from_secs(2), async {
                c.control(1).await.log_state(req()).await.is_ok()
            })
            .await
            .unwrap_or(false);
        }
        drop(held);
    });
}

fn run_kvraft(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(support::kvraft_bin()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Bad configs, a port in use, an unwritable data directory: one line, non-zero exit.
#[test]
fn startup_errors_are_one_line() {
    let c = TestCluster::new(1, "");
    let cfg = c.servers[0].config.to_str().unwrap().to_owned();

    let (code, err) = run_kvraft(&["server", "1", "--config", "/nonexistent/server_config1.json"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot read config"), "{err}");

    let (code, err) = run_kvraft(&["server", "2", "--config", &cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("is the config of server 1"), "{err}");

    let bad = c.dir.path().join("bad.json");
    std::fs::write(&bad, "{\"ServerID\": 1,").unwrap();
    let (code, err) = run_kvraft(&["server", "1", "--config", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.trim().lines().count() == 1 && err.contains("invalid config"), "{err}");

    let taken = std::net::TcpListener::bind(c.servers[0].client_addr.as_str()).unwrap();
    let (code, err) = run_kvraft(&["server", "1", "--config", &cfg]);
    assert_ne!(code, 0);
    assert!(err.lines().last().unwrap_or_default().contains("cannot listen on"), "{err}");
    drop(taken);

    let file = c.dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let (code, err) = run_kvraft(&["server", "1", "--config", &cfg, "--data-dir", file.join("sub").to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.lines().last().unwrap_or_default().contains("data directory"), "{err}");
}

/// A snapshot whose bytes arrive whole (its checksum holds) but do not
/// decode into a state, or hold the state of another index, is refused: the connection that brought it is
/// closed (the leader sends a snapshot once per connection, so only a new
/// one gets it again), and the follower goes on serving from the state it
/// has, instead of adopting it or stopping. A good snapshot on a new
/// connection is then installed.
#[test]
fn a_snapshot_that_does_not_decode_is_refused_and_the_follower_goes_on() {
    use kvraft_core::kv::{Command, KvStore, Op};
    use kvraft_core::{Entry, Payload};
    use tokio::io::AsyncWriteExt;

    /// Hello and a one-chunk snapshot; `crc_off` spoils its checksum.
    fn snapshot_chunk(term: u64, index: u64, data: Vec<u8>, crc_off: u32) -> Vec<u8> {
        let crc = crc32c::crc32c(&data) ^ crc_off;
        let chunk = kvraft_proto::SnapshotChunk {
            term,
            leader: 2,
            read_ctx: 0,
            index,
            snapshot_term: 3,
            offset: 0,
            data,
            last: true,
            crc32c: Some(crc),
        };
        let m =
            kvraft_proto::PeerMessage { msg: Some(kvraft_proto::peer_message::Msg::Snapshot(chunk)), trace: vec![] };
        let mut out = peer_wire::hello("");
        out.extend(peer_wire::frame(&m));
        out
    }

    runtime().block_on(async {
        let mut c = TestCluster::new(1, "");
        c.start(1);
        let before = c.status(1).await;
        let term = before.term + 1000;
        let addr = c.servers[0].peer_addr.clone();
        let bad = snapshot_chunk(term, 50, b"not a state machine at all".to_vec(), 0);
        assert!(peer_wire::closed_after(&addr, &bad).await, "the connection with the bad snapshot stays open");
        let after_bad = c.status(1).await;
        assert_eq!(
            (after_bad.term, after_bad.snapshot_index, after_bad.applied_index),
            (before.term, before.snapshot_index, before.applied_index),
            "the undecodable snapshot was stepped"
        );

        let mut kv = KvStore::new();
        for index in 1..50 {
            kv.apply(&Entry { term: 3, index, payload: Payload::Noop });
        }
        let cmd = Command {
            client_id: "c".into(),
            session: 1,
            op_id: 1,
            first_unacked: 1,
            op: Op::Put { key: "k".into(), value: "v".into() },
        };
        kv.apply(&Entry { term: 3, index: 50, payload: Payload::Command(cmd) });
        assert_eq!(kv.get("k"), Some("v"));
        // The good state behind a checksum that does not hold: refused too.
        let spoiled = snapshot_chunk(term, 50, kv.snapshot(), 1);
        assert!(peer_wire::closed_after(&addr, &spoiled).await, "the connection with a bad checksum stays open");
        assert_eq!(c.status(1).await.snapshot_index, before.snapshot_index, "a snapshot with a bad checksum was taken");
        // The good state under another index than its own: refused too.
        let misplaced = snapshot_chunk(term, 60, kv.snapshot(), 0);
        assert!(peer_wire::closed_after(&addr, &misplaced).await, "the connection with a misplaced state stays open");
        assert_eq!(c.status(1).await.snapshot_index, before.snapshot_index, "a misplaced snapshot was taken");
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(&snapshot_chunk(term, 50, kv.snapshot(), 0)).await.unwrap();
        c.wait_until("the good snapshot is installed", Duration::from_secs(10), || async {
            let st = c.status(1).await;
            st.snapshot_index == 50 && st.applied_index == 50 && st.term == term
        })
        .await;
        assert!(c.alive().contains(&1), "the server stopped");
        // The state decoded on the way in was the one installed (the first
        // line shows the log has the info level the second needs).
        let log = std::fs::read_to_string(&c.servers[0].log).unwrap();
        assert!(log.contains("installed a snapshot from the leader"), "{log}");
        assert!(!log.contains("decoding a received snapshot on the loop"), "{log}");

        // A snapshot at or below the commit index is not decoded at all (the
        // core would not adopt it): even bytes that are no state pass, and
        // the connection stays open.
        let late = snapshot_chunk(term, 40, b"not a state machine at all".to_vec(), 0);
        assert!(!peer_wire::closed_after(&addr, &late).await, "a snapshot below the commit index was decoded");
        assert_eq!(c.status(1).await.snapshot_index, 50);
    });
}

/// A term past the bound from the control port is refused with an error
/// reply; the server keeps its term and goes on answering.
#[test]
fn a_term_out_of_range_from_the_control_port_is_refused() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, "");
        c.start(1);
        let before = c.status(1).await.term;
        let huge = kvraft_proto::MAX_TERM_OR_INDEX + 1;
        let mut control = c.control(1).await;
        let err = control.log_state(kvraft_proto::LogStateRequest { term: huge, trace: vec![] }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        let leader = kvraft_proto::BecomeLeaderRequest { term: huge, members: c.members(), trace: vec![] };
        let err = control.become_leader(leader).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert_eq!(c.status(1).await.term, before);
        // A term in range is still taken.
        let ok = control.log_state(kvraft_proto::LogStateRequest { term: before + 1, trace: vec![] }).await.unwrap();
        assert_eq!(ok.into_inner().current_term, before + 1);
    });
}

/// A leader whose snapshot file went bad on disk stops when it must send
/// it, naming the file (fail-stop, as on any storage error), instead of
/// sending nothing, forever.
#[test]
fn a_corrupt_snapshot_the_leader_must_send_stops_it() {
    runtime().block_on(async {
        let (mut c, leader, lagging) = lagging_cluster().await;
        c.wait_until("the leader compacted", Duration::from_secs(10), || async {
            c.status(leader).await.snapshot_index >= 200
        })
        .await;
        let dir = c.servers[(leader - 1) as usize].data_dir.clone();
        let snap = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "snap"))
            .expect("a snapshot file");
        let mut bytes = std::fs::read(&snap).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&snap, bytes).unwrap();
        c.start(lagging);
        c.configure().await;
        let last = stopped(&mut c, leader, Duration::from_secs(20), "the leader did not stop on a corrupt snapshot");
        assert!(last.contains("corrupt") && last.contains("snapshot-"), "{last}");
    });
}

/// A session client that sends without ever reading its replies is held
/// back once its commands in flight reach the bound: the server stops
/// taking commands instead of piling up replies and log entries.
#[test]
fn a_session_that_never_reads_its_replies_is_held_back() {
    runtime().block_on(async {
        let mut c = TestCluster::new(1, r#", "Fsync": "never""#);
        c.start(1);
        let leader = c.select_leader().await;
        // Small flow-control windows, so that what the transport itself
        // holds of unread replies stays small beside the bound.
        let addr = format!("http://{}", c.servers[leader as usize - 1].client_addr);
        let channel = tonic::transport::Endpoint::from_shared(addr)
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        let mut kv = kvraft_proto::kv_client_client::KvClientClient::new(channel);
        const SENT: u64 = 100_000;
        let (tx, rx) = tokio::sync::mpsc::channel::<kvraft_proto::Command>(SENT as usize);
        for op_id in 1..=SENT {
            let mut cmd = put("greedy", op_id, &format!("k{op_id}"), "v");
            cmd.first_unacked = 1;
            tx.send(cmd).await.unwrap();
        }
        // The replies are never read (the response is held, not polled).
        let _replies = kv.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
        let mut last = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = c.status(leader).await.last_log_index;
            if now == last && now > 0 {
                break;
            }
            last = now;
        }
        eprintln!("proposed for a client that reads nothing: {last}");
        // 4,096 in flight, plus what the transport's windows hold of
        // replies (tens of bytes each) and commands.
        assert!(last > 4_000 && last < 15_000, "{last} entries proposed for a client that reads nothing");
        drop(tx);
    });
}

/// A coord that takes every join and answers every `Known` poll with the
/// membership, and never calls a server's Configure: what a server sees
/// when that call was lost.
#[derive(Clone)]
struct SilentCoord {
    members: std::sync::Arc<std::sync::Mutex<Vec<kvraft_proto::Member>>>,
}

#[tonic::async_trait]
impl kvraft_proto::coord_server_server::CoordServer for SilentCoord {
    async fn join(
        &self,
        _: tonic::Request<kvraft_proto::JoinRequest>,
    ) -> Result<tonic::Response<kvraft_proto::JoinReply>, tonic::Status> {
        let reply = kvraft_proto::JoinReply { accepted: true, error: String::new(), num_servers: 3, trace: vec![] };
        Ok(tonic::Response::new(reply))
    }

    async fn known(
        &self,
        _: tonic::Request<kvraft_proto::KnownRequest>,
    ) -> Result<tonic::Response<kvraft_proto::KnownReply>, tonic::Status> {
        let members = self.members.lock().unwrap().clone();
        Ok(tonic::Response::new(kvraft_proto::KnownReply { known: true, members }))
    }
}

/// A follower that missed the coord's Configure call (it timed out, say)
/// learns its peers from its next `Known` poll. Before, it dropped every
/// reply to the leader for good, and a write that needed its copy never
/// committed.
#[test]
fn a_follower_that_missed_its_configure_learns_its_peers_from_known() {
    use kvraft_proto as pb;
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let coord_addr = listener.local_addr().unwrap().to_string();
        let coord = SilentCoord { members: Default::default() };
        let svc = pb::coord_server_server::CoordServerServer::new(coord.clone());
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let serving = tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming));
        let mut c = TestCluster::with_coord_addr(3, "", coord_addr);
        *coord.members.lock().unwrap() = c.members();
        c.start(1);
        c.start(2);
        // Server 1 leads term 1 (its designation carries the members);
        // server 2 is told nothing but by its polls.
        for id in [1, 2] {
            let r = c.control(id).await.log_state(pb::LogStateRequest { term: 1, trace: vec![] }).await;
            assert!(r.unwrap().into_inner().granted);
        }
        let members = c.members();
        let r = c.control(1).await.become_leader(pb::BecomeLeaderRequest { term: 1, members, trace: vec![] }).await;
        assert!(r.unwrap().into_inner().accepted);
        // Two of three: the write needs server 2's copy, and its answer.
        let mut kv = c.client(1).await;
        let r = tokio::time::timeout(Duration::from_secs(15), kv.put(put("t", 1, "k", "v"))).await;
        let r = r.expect("the write never committed: the follower has no way back to the leader");
        assert!(is_ok(&r.unwrap().into_inner()));
        serving.abort();
    });
}
