//! Hostile or stray traffic: garbage is dropped and counted without
//! disturbing either end, and acks from another epoch prove nothing.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{LOOPBACK, TestServer, bounded, monitor, next_event, wait_until, warmed_up};
use kvraft_fcheck::Event;
use kvraft_fcheck::wire::{self, Ack, Heartbeat, MAGIC, MAX_MESSAGE_LEN, Message, VERSION};
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(10);

fn encoded(msg: Message) -> Vec<u8> {
    let mut buf = [0; MAX_MESSAGE_LEN];
    wire::encode(&msg, &mut buf).unwrap().to_vec()
}

/// Datagrams neither end may accept (and must not choke on).
fn garbage() -> Vec<Vec<u8>> {
    let mut trailing = encoded(Message::Heartbeat(Heartbeat { epoch: 1, seq: 2 }));
    trailing.push(0);
    let mut oversized = encoded(Message::Ack(Ack { epoch: 1, seq: 2 }));
    oversized.resize(9000, 0xAB);
    vec![
        vec![],
        vec![MAGIC],
        vec![MAGIC, VERSION],
        vec![MAGIC, VERSION, 0x07],
        vec![MAGIC, VERSION + 1, 0, 1, 2],
        vec![0; 64],
        vec![0xFF; 1400],
        (0..=255).collect(),
        trailing,
        oversized,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_counted() {
    bounded(LIMIT, async {
        let server = TestServer::start().await;
        let (monitor, mut events, _cfg) = monitor().await;
        monitor.watch(1, server.addr);
        warmed_up(&monitor, 1).await;
        let rogue = UdpSocket::bind(LOOPBACK).await.unwrap();

        // Garbage, plus a well-formed message of the wrong kind, to each end.
        for datagram in garbage() {
            rogue.send_to(&datagram, server.addr).await.unwrap();
            rogue.send_to(&datagram, monitor.local_addr()).await.unwrap();
        }
        let ack = encoded(Message::Ack(Ack { epoch: 1, seq: 2 }));
        rogue.send_to(&ack, server.addr).await.unwrap();
        let hb = encoded(Message::Heartbeat(Heartbeat { epoch: 1, seq: 2 }));
        rogue.send_to(&hb, monitor.local_addr()).await.unwrap();
        let expected = garbage().len() as u64 + 1;

        // The responder still answers: a heartbeat sent after the garbage is
        // echoed, and by then all the garbage before it has been counted.
        let probe = Heartbeat { epoch: 77, seq: 99 };
        rogue.send_to(&encoded(Message::Heartbeat(probe)), server.addr).await.unwrap();
        let mut buf = [0; 64];
        let (len, from) = rogue.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, server.addr);
        assert_eq!(wire::decode(&buf[..len]), Ok(Message::Ack(Ack { epoch: 77, seq: 99 })));
        assert_eq!(server.stats.malformed(), expected);

        let counted =
            wait_until(Duration::from_secs(2), || (monitor.stats().malformed == expected).then_some(())).await;
        assert!(counted.is_some(), "monitor stats {:?}", monitor.stats());

        // And the monitor still works: acks keep coming, nothing failed.
        let acks = monitor.stats().acks;
        assert_eq!(next_event(&mut events, Duration::from_millis(300)).await, None);
        assert!(monitor.stats().acks > acks);
        assert!(monitor.health(1).unwrap().alive);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_with_a_wrong_epoch_or_unknown_seq_prove_nothing() {
    bounded(LIMIT, async {
        let server = TestServer::start().await;
        let (monitor, mut events, cfg) = monitor().await;
        monitor.watch(1, server.addr);
        warmed_up(&monitor, 1).await;
        let rto = monitor.health(1).unwrap().loss_timeout;
        let wrong_epoch = monitor.epoch().wrapping_add(1);
        let target = monitor.local_addr();

        // Partition the real server, then forge acks with a wrong epoch for
        // every heartbeat that could be outstanding (one server watched:
        // seqs just below the number sent), and with the right epoch for
        // seqs never sent. Were either accepted, the server would stay alive.
        server.mute.store(true, Ordering::Relaxed);
        let forger = UdpSocket::bind(LOOPBACK).await.unwrap();
        let muted = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        let event = loop {
            tokio::select! {
                event = events.recv() => break event,
                _ = tick.tick() => {}
            }
            if muted.elapsed() > Duration::from_secs(2) {
                break None;
            }
            let sent = monitor.stats().heartbeats_sent;
            for seq in sent.saturating_sub(6)..sent + 2 {
                let forged = Ack { epoch: wrong_epoch, seq };
                forger.send_to(&encoded(Message::Ack(forged)), target).await.unwrap();
            }
            let unknown = Ack { epoch: monitor.epoch(), seq: u64::MAX - sent };
            forger.send_to(&encoded(Message::Ack(unknown)), target).await.unwrap();
        };
        let took = muted.elapsed();
        assert_eq!(event, Some(Event::Failed { id: 1 }), "after {took:?}");
        assert!(took <= cfg.detection_time(rto) + Duration::from_millis(250), "took {took:?}");
        let stats = monitor.stats();
        assert!(stats.stale_acks >= 20, "{stats:?}");
    })
    .await;
}
