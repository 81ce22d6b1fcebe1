//! The tracer library on its own: clocks across tokens, the disabled fast
//! path, typed errors, and recording while the tracing server is down.

mod common;

use std::time::{Duration, Instant};

use common::{bounded, tracer_at};
use kvraft_trace::{Token, TokenError, Tracer, TracerConfig, TracerError, TracerOptions};

const LIMIT: Duration = Duration::from_secs(20);

/// An address nobody listens on, for as long as the returned socket lives:
/// the port stays bound (so no other test can take it) but never listens,
/// so every connection to it is refused.
fn dead_addr() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    (socket, addr)
}

#[tokio::test]
async fn tokens_carry_clocks_between_tracers() {
    bounded(LIMIT, async {
        let (_bound, addr) = dead_addr();
        let a = tracer_at(&addr, "client1", "", TracerOptions::default());
        let b = tracer_at(&addr, "server1", "", TracerOptions::default());

        let ta = a.create_trace();
        assert_ne!(ta.id(), 0);
        ta.record("Put", serde_json::json!({"Key": "k", "Value": "v"}));
        let token = ta.generate_token();
        let at_send = a.clock();
        assert_eq!(at_send.get("client1"), 3, "create, record, generate each tick");

        // The token is the prototype's layout and carries the sender's clock.
        let decoded = Token::decode(&token).unwrap();
        assert_eq!(decoded.sender, "client1");
        assert_eq!(decoded.trace_id, ta.id());
        assert_eq!(decoded.clock, at_send);

        let tb = b.receive_token(&token).unwrap();
        assert_eq!(tb.id(), ta.id(), "the receiver continues the sender's trace");
        let at_recv = b.clock();
        assert!(at_send.happened_before(&at_recv), "{at_send} !< {at_recv}");
        assert_eq!(at_recv.get("server1"), 1);
        assert_eq!(at_recv.get("client1"), 3);

        tb.record("PutRecvd", serde_json::json!({}));
        let reply = tb.generate_token();
        let b_at_reply = b.clock();
        assert_eq!(b_at_reply.get("server1"), 3);
        a.receive_token(&reply).unwrap();
        let a_now = a.clock();
        assert!(b_at_reply.happened_before(&a_now));
        assert_eq!(a_now.get("client1"), 4, "own entry ticks once on receive");
        assert_eq!(a_now.get("server1"), 3);

        // A stale token (already merged) still ticks and never lowers.
        a.receive_token(&token).unwrap();
        assert_eq!(a.clock().get("client1"), 5);
        assert_eq!(a.clock().get("server1"), 3);

        assert_eq!(a.stats().recorded, 5);
        assert_eq!(b.stats().recorded, 3);
    })
    .await;
}

#[tokio::test]
async fn bad_tokens_are_typed_errors() {
    let (_bound, addr) = dead_addr();
    let a = tracer_at(&addr, "a", "", TracerOptions::default());
    assert_eq!(a.receive_token(&[]).unwrap_err(), TokenError::Empty);
    assert!(matches!(a.receive_token(&[0xa1, b'x', 0xcf, 1]), Err(TokenError::Truncated(_))));
    let err = a.receive_token(&[0xc1]).unwrap_err().to_string();
    assert!(!err.contains('\n') && err.contains("0xc1"), "{err}");
    // Failed receives record nothing and leave the clock alone.
    assert_eq!(a.stats().recorded, 0);
    assert!(a.clock().is_empty());
}

/// Tokens naming ever new processes stop growing the clock at its bound
/// (every token the process makes carries its whole clock); tokens naming
/// processes it knows still merge.
#[tokio::test]
async fn forged_tokens_cannot_grow_the_clock_without_end() {
    let (_bound, addr) = dead_addr();
    let a = tracer_at(&addr, "a", "", TracerOptions::default());
    let forged = |i: usize| {
        let clock = (0..64).map(|j| (format!("{:0>250}", i * 64 + j), 1u64)).collect();
        Token { sender: "b".into(), trace_id: 1, clock }.encode()
    };
    let mut refused = 0;
    for i in 0..100 {
        match a.receive_token(&forged(i)) {
            Ok(_) => {}
            Err(TokenError::ClockFull) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "100 tokens of 16 KB of new ids each all merged");
    let clock = a.clock();
    let bytes: usize = clock.iter().map(|(id, _)| id.len()).sum();
    assert!(bytes <= kvraft_trace::MAX_CLOCK_ID_BYTES, "{bytes}");
    // A token of known processes still merges and carries its counters.
    let known: kvraft_trace::VectorClock = [("a", 1000u64)].into_iter().collect();
    let t = a.receive_token(&Token { sender: "a".into(), trace_id: 9, clock: known }.encode()).unwrap();
    assert_eq!(t.id(), 9);
    assert!(a.clock().get("a") > 1000);
    // A refused token records nothing: only the accepted ones and the last.
    assert_eq!(a.stats().recorded, 100 - refused + 1);
}

#[tokio::test]
async fn disabled_tracing_does_nothing() {
    let off =
        Tracer::new(TracerConfig { identity: "server1".into(), server_addr: String::new(), secret: String::new() })
            .unwrap();
    for t in [off, Tracer::disabled()] {
        assert!(!t.enabled());
        let trace = t.create_trace();
        assert_eq!(trace.id(), 0);
        assert!(!trace.enabled());
        trace.record_with("Never", || -> serde_json::Value { panic!("body built with tracing off") });
        trace.record("Put", serde_json::json!({}));
        assert!(trace.generate_token().is_empty());
        assert_eq!(t.receive_token(b"garbage").unwrap().id(), 0);
        assert_eq!(t.stats().recorded, 0);
        assert!(t.clock().is_empty());
        assert!(t.flush(Duration::ZERO).await);
    }
}

#[test]
fn config_errors_are_typed() {
    let cfg = |identity: &str| TracerConfig {
        identity: identity.into(),
        server_addr: "127.0.0.1:1".into(),
        secret: String::new(),
    };
    // No runtime here: tracing on needs one for its sender.
    assert_eq!(Tracer::new(cfg("a")).unwrap_err(), TracerError::NoRuntime);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for bad in ["", "two words", "tab\there"] {
            assert!(matches!(Tracer::new(cfg(bad)), Err(TracerError::BadIdentity(_))));
        }
        assert!(Tracer::new(cfg("server1")).unwrap().enabled());
        let long = TracerConfig { secret: "s".repeat(kvraft_trace::wire::MAX_SECRET_BYTES + 1), ..cfg("server1") };
        assert_eq!(
            Tracer::new(long).unwrap_err(),
            TracerError::SecretTooLong(kvraft_trace::wire::MAX_SECRET_BYTES + 1)
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_recording_goes_on_and_counts_drops() {
    bounded(LIMIT, async {
        let opts = TracerOptions { queue_records: 100, ..TracerOptions::default() };
        let (_bound, addr) = dead_addr();
        let t = tracer_at(&addr, "server1", "", opts);
        let trace = t.create_trace();
        let start = Instant::now();
        for i in 0..20_000u32 {
            trace.record("AppendEntriesRequestSent", serde_json::json!({"Index": i}));
        }
        let took = start.elapsed();
        // Generous bound for a debug build on a loaded 2-core machine; the
        // point is that nothing waits on the (absent) network.
        assert!(took < Duration::from_secs(5), "recording blocked: {took:?}");
        let s = t.stats();
        assert_eq!(s.recorded, 20_001);
        assert_eq!(s.sent, 0);
        assert!(s.dropped >= 19_901, "{s:?}");
        assert!(s.pending() <= 100, "{s:?}");
        // The clock kept ticking for dropped records too.
        assert_eq!(t.clock().get("server1"), 20_001);
        // Nothing to flush to: flush gives up in time.
        assert!(!t.flush(Duration::from_millis(100)).await);
    })
    .await;
}
