//! No false failures on a loaded machine: the loss-timeout floor and reading
//! acks before judging deadlines keep a healthy server alive while every core
//! is busy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestServer, bounded, monitor, warmed_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_failure_while_both_cores_are_busy() {
    bounded(Duration::from_secs(20), async {
        let server = TestServer::start().await;
        let (monitor, mut events, _cfg) = monitor().await;
        monitor.watch(1, server.addr);
        warmed_up(&monitor, 1).await;

        // Two spinning threads per core: every core stays busy throughout.
        let stop = Arc::new(AtomicBool::new(false));
        let burners: Vec<_> = (0..4)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        let acks_before = monitor.stats().acks;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let acks = monitor.stats().acks - acks_before;
        let health = monitor.health(1).unwrap();
        stop.store(true, Ordering::Relaxed);
        for burner in burners {
            burner.join().unwrap();
        }

        eprintln!("under load: {acks} acks in 3 s; {health:?}; {:?}", monitor.stats());
        assert_eq!(events.try_recv().ok(), None, "false failure under load");
        assert!(health.alive);
        // The monitor really was probing throughout (150 heartbeats expected).
        assert!(acks >= 50, "only {acks} acks in 3 s");
    })
    .await;
}
