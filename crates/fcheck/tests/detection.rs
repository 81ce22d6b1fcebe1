//! Failure and recovery detection against real responders on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{TestServer, bounded, monitor, next_event, warmed_up};
use kvraft_fcheck::Event;

/// Allowance for scheduling on a shared 2-core test machine.
const SLACK: Duration = Duration::from_millis(250);
const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responder_is_seen_alive_with_an_rtt_estimate() {
    bounded(LIMIT, async {
        let server = TestServer::start().await;
        let (monitor, mut events, cfg) = monitor().await;
        monitor.watch(1, server.addr);
        let health = warmed_up(&monitor, 1).await;
        assert!(health.alive);
        assert_eq!(health.addr, server.addr);
        let srtt = health.srtt.unwrap();
        assert!(srtt < Duration::from_millis(20), "loopback srtt {srtt:?}");
        // Before a sample the timeout is the ceiling; the estimate brought it down.
        assert!(health.loss_timeout >= cfg.rtt_floor);
        assert!(health.loss_timeout < cfg.rtt_ceiling, "{health:?}");

        let acks_before = monitor.stats().acks;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let acks = monitor.stats().acks - acks_before;
        // 300 ms at one heartbeat per 20 ms: 15 expected.
        assert!(acks >= 8, "only {acks} acks in 300 ms");
        assert!(server.stats.answered() >= acks);
        assert_eq!(events.try_recv().ok(), None);
        assert_eq!(monitor.view(), vec![monitor.health(1).unwrap()]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_responder_is_reported_failed_once_within_the_detection_bound() {
    bounded(LIMIT, async {
        let server = TestServer::start().await;
        let (monitor, mut events, cfg) = monitor().await;
        monitor.watch(1, server.addr);
        let health = warmed_up(&monitor, 1).await;
        // Let the estimate settle so the bound below uses a steady timeout.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rto = monitor.health(1).unwrap().loss_timeout;
        assert!(health.alive);

        server.kill().await;
        let killed = Instant::now();
        let event = next_event(&mut events, Duration::from_secs(2)).await;
        let took = killed.elapsed();
        assert_eq!(event, Some(Event::Failed { id: 1 }));
        let bound = cfg.detection_time(rto);
        eprintln!("failure detected after {took:?} (rto {rto:?}, bound {bound:?})");
        assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");
        assert!(took < Duration::from_secs(1));
        // Not before the losses could have happened: T - 1 intervals minus one
        // for a heartbeat in flight at the kill, plus one timeout.
        let earliest = cfg.heartbeat_interval * (cfg.lost_msgs_thresh - 2) + rto;
        assert!(took >= earliest, "took {took:?}, earliest possible {earliest:?}");
        assert!(!monitor.health(1).unwrap().alive);

        // Exactly once: the slow probes that follow report nothing more.
        let again = next_event(&mut events, 3 * cfg.failed_probe_interval).await;
        assert_eq!(again, None);
        assert!(monitor.stats().heartbeats_sent > 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_responder_on_the_same_address_is_reported_recovered() {
    bounded(LIMIT, async {
        let server = TestServer::start().await;
        let addr = server.addr;
        let (monitor, mut events, cfg) = monitor().await;
        monitor.watch(4, addr);
        warmed_up(&monitor, 4).await;
        server.kill().await;
        let failed = next_event(&mut events, Duration::from_secs(2)).await;
        assert_eq!(failed, Some(Event::Failed { id: 4 }));

        let _server = TestServer::start_on(addr).await;
        let restarted = Instant::now();
        let event = next_event(&mut events, Duration::from_secs(2)).await;
        let took = restarted.elapsed();
        assert_eq!(event, Some(Event::Recovered { id: 4 }));
        let bound = cfg.recovery_time(Duration::from_millis(1));
        eprintln!("recovery detected after {took:?} (bound {bound:?})");
        assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");
        assert!(monitor.health(4).unwrap().alive);
        assert_eq!(next_event(&mut events, Duration::from_millis(300)).await, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_responder_fails_and_recovers_when_unmuted() {
    bounded(LIMIT, async {
        let server = TestServer::start().await;
        let (monitor, mut events, cfg) = monitor().await;
        monitor.watch(2, server.addr);
        warmed_up(&monitor, 2).await;
        let rto = monitor.health(2).unwrap().loss_timeout;

        server.mute.store(true, Ordering::Relaxed);
        let muted = Instant::now();
        let event = next_event(&mut events, Duration::from_secs(2)).await;
        let took = muted.elapsed();
        assert_eq!(event, Some(Event::Failed { id: 2 }));
        assert!(took <= cfg.detection_time(rto) + SLACK, "took {took:?}");
        assert!(server.stats.muted() >= u64::from(cfg.lost_msgs_thresh));

        server.mute.store(false, Ordering::Relaxed);
        let unmuted = Instant::now();
        let event = next_event(&mut events, Duration::from_secs(2)).await;
        let took = unmuted.elapsed();
        assert_eq!(event, Some(Event::Recovered { id: 2 }));
        assert!(took <= cfg.recovery_time(rto) + SLACK, "took {took:?}");
        eprintln!("mute: failed and recovered; recovery took {took:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatched_server_is_forgotten_and_reports_nothing() {
    bounded(LIMIT, async {
        let server = TestServer::start().await;
        let (monitor, mut events, cfg) = monitor().await;
        monitor.watch(3, server.addr);
        warmed_up(&monitor, 3).await;
        monitor.unwatch(3);
        assert!(monitor.view().is_empty());
        server.kill().await;
        let quiet = cfg.worst_detection_time() + SLACK;
        assert_eq!(next_event(&mut events, quiet).await, None);
    })
    .await;
}
