//! Idle cost: watching healthy servers must not burn CPU (production target
//! well under 1% of a core; asserted here with a generous 10%).

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, bounded, monitor, warmed_up};

/// `/proc/self/stat` counts CPU time in USER_HZ ticks, fixed at 100 per
/// second by the Linux ABI on the architectures we run on.
const TICKS_PER_SEC: u64 = 100;

/// User + system CPU time of this whole process (all threads).
fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let after_comm = &stat[stat.rfind(')').expect("malformed stat") + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15; field 3 is the first after ')'.
    let ticks: u64 = fields[14 - 3].parse::<u64>().unwrap() + fields[15 - 3].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_five_healthy_servers_costs_little_cpu() {
    bounded(Duration::from_secs(20), async {
        let mut servers = Vec::new();
        for _ in 0..5 {
            servers.push(TestServer::start().await);
        }
        let (monitor, mut events, cfg) = monitor().await;
        for (id, server) in (0..).zip(&servers) {
            monitor.watch(id, server.addr);
        }
        for id in 0..5 {
            warmed_up(&monitor, id).await;
        }

        let sent_before = monitor.stats().heartbeats_sent;
        let cpu_before = process_cpu_time();
        let wall_before = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = process_cpu_time() - cpu_before;
        let wall = wall_before.elapsed();
        let sent = monitor.stats().heartbeats_sent - sent_before;

        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        eprintln!(
            "idle CPU: {cpu:?} over {wall:?} = {:.2}% of one core \
             (5 servers, {sent} heartbeats, responders in-process)",
            share * 100.0
        );
        // The monitor was working, not stalled: 5 * 2 s / 20 ms = 500 expected.
        let expected = 5 * (wall.as_millis() / cfg.heartbeat_interval.as_millis()) as u64;
        assert!(sent >= expected / 2, "only {sent} heartbeats, expected ~{expected}");
        assert!(share < 0.10, "monitoring used {:.1}% of a core", share * 100.0);
        assert_eq!(events.try_recv().ok(), None);
    })
    .await;
}
