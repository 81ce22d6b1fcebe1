//! The coord's side: a handle to the monitor task, for telling it what to
//! watch and asking what it sees.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::task::JoinHandle;

use crate::config::MonitorConfig;
use crate::driver::{self, Shared};
use crate::report::{Event, ServerHealth};
use crate::stats::MonitorStats;
use crate::table::Table;

/// Watches servers with heartbeats over one UDP socket, driven by one task.
/// Dropping the handle stops the task and closes the socket.
#[derive(Debug)]
pub struct Monitor {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    epoch: u64,
    driver: JoinHandle<()>,
}

impl Monitor {
    /// Starts a monitor on an ephemeral port of `0.0.0.0` (so it can reach
    /// servers on any IPv4 interface, loopback included). Must be called
    /// within a tokio runtime. State changes arrive on the returned receiver.
    pub async fn start(cfg: MonitorConfig) -> io::Result<(Monitor, UnboundedReceiver<Event>)> {
        Monitor::start_on(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), cfg).await
    }

    /// [`Monitor::start`] on a given local address (e.g. an IPv6 one, or a
    /// fixed port). Fails with `InvalidInput` if `cfg` does not validate.
    pub async fn start_on(bind: SocketAddr, cfg: MonitorConfig) -> io::Result<(Monitor, UnboundedReceiver<Event>)> {
        cfg.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let socket = UdpSocket::bind(bind).await?;
        let local_addr = socket.local_addr()?;
        // Fresh per start: acks addressed to an earlier monitor never match.
        let epoch: u64 = rand::random();
        let shared = Arc::new(Shared::new(Table::new(cfg, epoch, Instant::now())));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(driver::run(socket, Arc::clone(&shared), events_tx));
        let monitor = Monitor { shared, local_addr, epoch, driver };
        Ok((monitor, events_rx))
    }

    /// Starts (or restarts, forgetting its history) watching server `id` at
    /// `addr`. It starts alive and is probed at once.
    pub fn watch(&self, id: u64, addr: SocketAddr) {
        self.shared.table().watch(id, addr, Instant::now());
        self.shared.changed.notify_one();
    }

    /// Stops watching `id`; no event is reported for it afterwards.
    pub fn unwatch(&self, id: u64) {
        self.shared.table().unwatch(id);
        self.shared.changed.notify_one();
    }

    /// Snapshot of every watched server, by increasing id.
    pub fn view(&self) -> Vec<ServerHealth> {
        self.shared.table().view()
    }

    /// Snapshot of one server, if watched.
    pub fn health(&self, id: u64) -> Option<ServerHealth> {
        self.shared.table().health(id)
    }

    pub fn stats(&self) -> MonitorStats {
        self.shared.table().stats()
    }

    /// The socket heartbeats leave from and acks must reach.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This run's epoch nonce (carried by every heartbeat).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
