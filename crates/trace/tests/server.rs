//! Tracers and the tracing server together on loopback: the end-to-end
//! path, refusal, restarts, abrupt death, hostile input, and throughput.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, bounded, read_outputs, tracer_at, until};
use kvraft_trace::{TracerOptions, check};
use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tracers_exchange_tokens_end_to_end() {
    bounded(LIMIT, async {
        let mut server = TestServer::start("s3cret").await;
        let client = server.tracer("client1", "s3cret");
        let leader = server.tracer("server1", "s3cret");

        let mut expected = 0;
        for op in 1..=50u64 {
            let t = client.create_trace();
            let body = serde_json::json!({"ClientId": "1", "OpId": op, "Key": "k", "Value": format!("v{op}")});
            t.record("Put", &body);
            let req = t.generate_token();
            let st = leader.receive_token(&req).unwrap();
            st.record("PutRecvd", &body);
            st.record("PutCommitted", &body);
            let res = st.generate_token();
            let ct = client.receive_token(&res).unwrap();
            ct.record("PutResultRecvd", serde_json::json!({"OpId": op, "Key": "k"}));
            expected += 9;
        }
        for t in [&client, &leader] {
            assert!(t.flush(Duration::from_secs(10)).await, "{:?}", t.stats());
            let s = t.stats();
            assert_eq!(s.sent, s.recorded);
            assert_eq!(s.dropped, 0);
        }
        let stats = server.stop().await;
        assert_eq!(stats.records, expected);
        assert_eq!(stats.tracers_accepted, 2);

        let records = read_outputs(&server.trace_path, &server.shiviz_path);
        assert_eq!(records.len() as u64, expected);
        // Each host's records are in its own clock order, tokens match up,
        // and the puts check out.
        let report = check(&records, true);
        assert!(report.passed(), "{report}");
        let gens = records.iter().filter(|r| r.tag == "GenerateTokenTrace").count();
        assert_eq!(gens, 100);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused_and_counted() {
    bounded(LIMIT, async {
        let mut server = TestServer::start("right").await;
        let t = server.tracer("coord", "wrong");
        let trace = t.create_trace();
        for _ in 0..99 {
            trace.record("CoordStart", serde_json::json!({}));
        }
        // Everything ends up dropped: nothing is pending after a refusal.
        assert!(t.flush(Duration::from_secs(10)).await, "{:?}", t.stats());
        let s = t.stats();
        assert_eq!((s.recorded, s.sent, s.dropped), (100, 0, 100));
        let stats = server.stop().await;
        assert!(stats.tracers_refused >= 1);
        assert_eq!(stats.tracers_accepted, 0);
        assert_eq!(stats.records, 0);
        assert!(read_outputs(&server.trace_path, &server.shiviz_path).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracer_reconnects_after_a_server_restart() {
    bounded(LIMIT, async {
        let mut first = TestServer::start("").await;
        let addr = first.addr.to_string();
        let t = tracer_at(&addr, "server2", "", TracerOptions::default());
        let trace = t.create_trace();
        trace.record("ServerStart", serde_json::json!({"ServerId": 2}));
        assert!(t.flush(Duration::from_secs(5)).await);
        first.stop().await;
        assert_eq!(read_outputs(&first.trace_path, &first.shiviz_path).len(), 2);
        // Give the tracer a moment to see its connection end: records sent
        // on a connection as it dies are in flight, unacked, and counted
        // dropped (at most once), which is not what this test is about. On
        // loopback the end is seen at once; 300 ms is for a loaded machine.
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Down: records wait in the queue.
        for i in 0..10u32 {
            trace.record("BecameFollower", serde_json::json!({"N": i}));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Back on the same port: the queue drains to the new server.
        let mut second = TestServer::start_at(&addr, "", tempfile::tempdir().unwrap()).await;
        assert!(t.flush(Duration::from_secs(10)).await, "{:?}", t.stats());
        let s = t.stats();
        assert_eq!(s.recorded, 12);
        assert_eq!(s.sent + s.dropped, 12);
        second.stop().await;
        let later = read_outputs(&second.trace_path, &second.shiviz_path);
        assert_eq!(later.len() as u64, s.sent - 2);
        assert!(later.len() >= 10, "queued records were lost: {s:?}");
        assert_eq!(later.last().unwrap().vector_clock.get("server2"), 12);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_leaves_whole_lines() {
    bounded(LIMIT, async {
        let server = TestServer::start("").await;
        let tracers: Vec<_> = (1..=3).map(|i| server.tracer(&format!("server{i}"), "")).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for t in tracers.clone() {
            let stop = stop.clone();
            writers.push(tokio::spawn(async move {
                let trace = t.create_trace();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for _ in 0..100 {
                        n += 1;
                        trace.record(
                            "AppendEntriesRequestSent",
                            serde_json::json!({"Term": 1, "Entries": ["x".repeat(64)], "N": n}),
                        );
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        until(|| server.stats.snapshot().records > 5_000).await;
        // Kill: abort the server's task mid-stream.
        server.task.abort();
        let before = tracers.iter().map(|t| t.stats().recorded).sum::<u64>();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Tracers go on recording with the server gone.
        let after = tracers.iter().map(|t| t.stats().recorded).sum::<u64>();
        assert!(after > before, "recording stopped with the server");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        // The writer thread drains what it was given; wait until the files
        // stop growing.
        let size = || {
            std::fs::metadata(&server.trace_path).unwrap().len() + std::fs::metadata(&server.shiviz_path).unwrap().len()
        };
        let mut last = size();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = size();
            if now == last {
                break;
            }
            last = now;
        }
        let records = read_outputs(&server.trace_path, &server.shiviz_path);
        assert!(records.len() > 5_000);
        let report = check(&records, false);
        assert_eq!(report.errors(), 0, "{report}");
        // In-flight and queued records are accounted as dropped or pending.
        for t in &tracers {
            let s = t.stats();
            assert!(s.sent <= s.recorded);
            assert_eq!(s.sent + s.dropped + s.pending(), s.recorded);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_do_not_disturb_tracers() {
    bounded(LIMIT, async {
        let mut server = TestServer::start("").await;
        // Junk instead of a hello; an absurd frame length; a hello-less batch.
        for junk in
            [b"GET / HTTP/1.1\r\n\r\n".to_vec(), u32::MAX.to_le_bytes().to_vec(), vec![6, 0, 0, 0, 3, 1, 0, 0, 0, 0]]
        {
            let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            s.write_all(&junk).await.unwrap();
            let _ = s.shutdown().await;
        }
        let t = server.tracer("client2", "");
        t.create_trace().record("KvslibStart", serde_json::json!({"ClientId": "2"}));
        assert!(t.flush(Duration::from_secs(5)).await);
        until(|| server.stats.snapshot().bad_connections >= 3).await;
        let stats = server.stop().await;
        assert_eq!(stats.records, 2);
        assert_eq!(read_outputs(&server.trace_path, &server.shiviz_path).len(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_sharing_a_tracer_keep_clock_order() {
    bounded(LIMIT, async {
        let mut server = TestServer::start("").await;
        let t = server.tracer("server3", "");
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let trace = t.create_trace();
                    for i in 0..2_000u32 {
                        trace.record("ApplyEntry", serde_json::json!({"Thread": k, "I": i}));
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert!(t.flush(Duration::from_secs(10)).await, "{:?}", t.stats());
        server.stop().await;
        let records = read_outputs(&server.trace_path, &server.shiviz_path);
        assert_eq!(records.len(), 8_004);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.vector_clock.get("server3"), i as u64 + 1);
        }
    })
    .await;
}

/// Not a pass/fail benchmark: prints how many records per second one server
/// absorbs from 4 tracers (run with `--nocapture`, ideally `--release`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_from_four_tracers() {
    const PER_TRACER: u64 = 50_000;
    bounded(Duration::from_secs(120), async {
        let mut server = TestServer::start("").await;
        let opts =
            TracerOptions { queue_records: 2 * PER_TRACER as usize, queue_bytes: 15 << 20, ..TracerOptions::default() };
        let addr = server.addr.to_string();
        let tracers: Vec<_> = (1..=4).map(|i| tracer_at(&addr, &format!("server{i}"), "", opts.clone())).collect();
        let start = Instant::now();
        let producers: Vec<_> = tracers
            .iter()
            .cloned()
            .map(|t| {
                std::thread::spawn(move || {
                    let trace = t.create_trace();
                    for i in 1..PER_TRACER {
                        trace.record(
                            "PutRecvd",
                            serde_json::json!({"ClientId": "1", "OpId": i, "Key": "k12", "Value": "val12"}),
                        );
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let recorded = start.elapsed();
        let total = 4 * PER_TRACER;
        until(|| server.stats.snapshot().records >= total).await;
        let absorbed = start.elapsed();
        let stats = server.stop().await;
        let dropped: u64 = tracers.iter().map(|t| t.stats().dropped).sum();
        println!(
            "throughput: {total} records from 4 tracers absorbed in {:.2} s = {:.0} records/s \
             (recording took {:.2} s; server lifetime average {:.0} records/s; dropped {dropped})",
            absorbed.as_secs_f64(),
            total as f64 / absorbed.as_secs_f64(),
            recorded.as_secs_f64(),
            stats.records_per_sec(),
        );
        assert_eq!(stats.records, total);
        assert_eq!(dropped, 0);
        let size = std::fs::metadata(&server.trace_path).unwrap().len();
        println!("trace_output.log: {:.1} MB", size as f64 / 1e6);
    })
    .await;
}
