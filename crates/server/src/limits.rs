//! The process's file descriptors, shared between what the server needs
//! (the log's segments, snapshots, peer and coord connections) and what
//! clients may take (the client port's connections).
//!
//! Why: with the common soft limit of 1,024 descriptors, a crowd of
//! clients could leave the log unable to open its next segment. So the
//! soft limit is raised to the hard one at start, as Go's runtime does for
//! etcd, and the client port is held below what that leaves. Each port
//! accepts through [`accept`] and a [`Gate`]: one connection more than it
//! holds is closed as it is accepted. A place must not be held for good by
//! a connection nobody is at the other end of: TCP keepalive finds a
//! crashed or cut-off host's connection dead, and each port closes one
//! that stays silent (sniff, hello and HTTP/2 keepalive timeouts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Connections the peer port holds at once: far above a cluster's six
/// peers (each with a connection, and another while it reconnects), and
/// within [`RESERVED_FDS`].
pub const MAX_PEER_CONNECTIONS: usize = 64;

/// Connections the control port holds at once: the coord keeps one, a
/// restarted coord another, and `kvraft ctl` none.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;

/// TCP keepalive on accepted connections: probes after this long idle...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ...this often, and the connection is dead after this many unanswered.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// At most one warning about refused connections this often, per port.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Admits at most `max` connections at once to one port: each admitted
/// one holds a permit until it is dropped.
pub struct Gate {
    open: Arc<Semaphore>,
    max: usize,
    /// The port and the setting that bounds it, for the warning.
    what: &'static str,
    refused: u64,
    warned: Option<Instant>,
    /// Connections refused since the gate was made (see [`Gate::refused`]).
    refused_total: Arc<AtomicU64>,
}

impl Gate {
    pub fn new(max: usize, what: &'static str) -> Self {
        Gate { open: Arc::new(Semaphore::new(max)), max, what, refused: 0, warned: None, refused_total: Arc::default() }
    }

    /// How many connections this gate has refused, kept up as it refuses
    /// more (the client port's goes out in the Admin service's Status).
    pub fn refused(&self) -> Arc<AtomicU64> {
        self.refused_total.clone()
    }

    /// A place for a connection just accepted, or `None` (with a warning,
    /// at most one per [`REFUSAL_WARNING_EVERY`]) when all are taken: the
    /// caller drops the connection, and the client sees it closed and
    /// retries later or elsewhere.
    pub fn admit(&mut self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.open.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.refused += 1;
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        if self.warned.is_none_or(|w| w.elapsed() >= REFUSAL_WARNING_EVERY) {
            tracing::warn!(
                "{}: {} connections open, the most it holds; refused {} since the last warning",
                self.what,
                self.max,
                self.refused
            );
            (self.warned, self.refused) = (Some(Instant::now()), 0);
        }
        None
    }
}

/// Accepts on `listener` until `stop`, through `gate`: each connection
/// admitted (Nagle off, TCP keepalive on) goes to `admitted` with its
/// place, which it holds until it drops it.
pub async fn accept(
    listener: TcpListener,
    mut gate: Gate,
    mut stop: watch::Receiver<bool>,
    mut admitted: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, from)) => {
                let Some(permit) = gate.admit() else { continue };
                // Nagle off: a reply written in two pieces would wait for
                // the client's delayed ACK (the 40-ms stalls once seen).
                let _ = stream.set_nodelay(true);
                let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                admitted(stream, from, permit);
            }
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("{}: accept failed: {e}", gate.what);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Descriptors kept for the server itself whatever the clients do: the
/// log's segments and snapshots, peers, the coord, the tracing server,
/// and the runtime's own, with room to spare.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft descriptor limit to the hard one (best effort) and
/// returns how many client connections fit: `wanted`, or fewer with a
/// warning when the limit leaves less beside [`RESERVED_FDS`].
pub fn client_connections(wanted: usize) -> usize {
    fit(wanted, raise_fd_limit())
}

/// `wanted`, or what a limit of `limit` descriptors leaves: all but
/// [`RESERVED_FDS`], or half of a limit too small for that.
fn fit(wanted: usize, limit: u64) -> usize {
    let fit = if limit > 2 * RESERVED_FDS { limit - RESERVED_FDS } else { (limit / 2).max(1) };
    if (wanted as u64) <= fit {
        return wanted;
    }
    tracing::warn!(
        "MaxClientConnections {wanted} lowered to {fit}: the process may open {limit} files \
         (ulimit -n), {RESERVED_FDS} of them kept for the log and the peers"
    );
    fit as usize
}

/// A hard limit above this is not taken whole (it may be "unlimited").
const MAX_RAISED_FDS: u64 = 1 << 20;

/// The soft limit after raising it as far as the hard limit allows.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX; // unknown: do not second-guess the config
        }
        let target = lim.rlim_max.min(MAX_RAISED_FDS);
        if lim.rlim_cur < target {
            let raised = libc::rlimit { rlim_cur: target, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = target;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_limit_lowers_the_client_connections() {
        assert_eq!(fit(1024, 20_000), 1024);
        assert_eq!(fit(1024, 1024), 1024 - RESERVED_FDS as usize);
        assert_eq!(fit(1024, 256), 128, "a limit below the reserve: half of it");
        assert_eq!(fit(1024, 1), 1);
        // This process's own limit, raised.
        let limit = raise_fd_limit();
        assert!(limit > 2 * RESERVED_FDS, "this machine allows only {limit} files");
        assert_eq!(client_connections(8), 8);
        assert_eq!(client_connections(usize::MAX) as u64, limit - RESERVED_FDS);
    }

    #[test]
    fn a_gate_admits_up_to_its_max_and_takes_back_dropped_places() {
        let mut gate = Gate::new(2, "test port");
        let refused = gate.refused();
        let a = gate.admit().expect("a first place");
        let _b = gate.admit().expect("a second place");
        assert!(gate.admit().is_none());
        assert!(gate.admit().is_none());
        drop(a);
        assert!(gate.admit().is_some());
        assert_eq!(refused.load(Ordering::Relaxed), 2);
    }
}
