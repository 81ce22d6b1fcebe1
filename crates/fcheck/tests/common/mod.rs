//! Helpers shared by the integration tests. Each test binary uses a subset,
//! hence the `dead_code` allowance.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kvraft_fcheck::{Event, Monitor, MonitorConfig, Responder, ResponderStats, ServerHealth};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

pub const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A responder running on the test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub mute: Arc<AtomicBool>,
    pub stats: Arc<ResponderStats>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_on(LOOPBACK).await
    }

    pub async fn start_on(addr: SocketAddr) -> TestServer {
        let responder = Responder::bind(addr).await.expect("bind responder");
        TestServer {
            addr: responder.local_addr(),
            mute: responder.mute_handle(),
            stats: responder.stats(),
            task: responder.spawn(),
        }
    }

    /// Aborts the responder and waits until its socket is closed.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Polls `probe` every 5 ms until it returns `Some`, or `limit` passes.
pub async fn wait_until<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until server `id` has an RTT estimate, and returns its health.
pub async fn warmed_up(monitor: &Monitor, id: u64) -> ServerHealth {
    wait_until(Duration::from_secs(2), || monitor.health(id).filter(|h| h.srtt.is_some()))
        .await
        .unwrap_or_else(|| panic!("server {id} has no RTT estimate after 2 s"))
}

/// The next event within `limit`, or `None`.
pub async fn next_event(events: &mut UnboundedReceiver<Event>, limit: Duration) -> Option<Event> {
    tokio::time::timeout(limit, events.recv()).await.ok().flatten()
}

/// Runs `fut` with a hard time limit, so a hung test fails instead of hanging.
pub async fn bounded<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("test exceeded {limit:?}"))
}

/// A monitor with the default config, as the coord would run it.
pub async fn monitor() -> (Monitor, UnboundedReceiver<Event>, MonitorConfig) {
    let cfg = MonitorConfig::default();
    let (monitor, events) = Monitor::start(cfg).await.expect("start monitor");
    (monitor, events, cfg)
}
