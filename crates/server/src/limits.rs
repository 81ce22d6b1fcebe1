//! The process's file descriptors, shared between what the server needs
//! (the log's segments, snapshots, peer and coord connections) and what
//! clients may take (the client port's connections).
//!
//! Why: with the common soft limit of 1,024 descriptors, a crowd of
//! clients could leave the log unable to open its next segment. So the
//! soft limit is raised to the hard one at start, as Go's runtime does for
//! etcd, and the client port is held below what that leaves. Each port
//! admits connections through a [`Gate`]: one more than it holds is closed
//! as it is accepted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections the peer port holds at once: far above a cluster's six
/// peers (each with a connection, and another while it reconnects), and
/// within [`RESERVED_FDS`].
pub const MAX_PEER_CONNECTIONS: usize = 64;

/// Connections the control port holds at once: the coord keeps one, a
/// restarted coord another, and `kvraft ctl` none.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;

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
}

impl Gate {
    pub fn new(max: usize, what: &'static str) -> Self {
        Gate { open: Arc::new(Semaphore::new(max)), max, what, refused: 0, warned: None }
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

/// Descriptors kept for the server itself whatever the clients do: the
/// log's segments and snapshots, peers, the coord, the tracing server,
/// and the runtime's own, with room to spare.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft descriptor limit to the hard one (best effort) and
/// returns how many client connections fit: `wanted`, or fewer with a
/// warning when the limit leaves less beside [`RESERVED_FDS`].
pub fn client_connections(wanted: usize) -> usize {
    let limit = raise_fd_limit();
    let fit = limit.saturating_sub(RESERVED_FDS).max(1);
    if (wanted as u64) <= fit {
        return wanted;
    }
    tracing::warn!(
        "MaxClientConnections {wanted} lowered to {fit}: the process may open {limit} files \
         (ulimit -n), {RESERVED_FDS} of them kept for the log and the peers"
    );
    fit as usize
}

/// The soft limit after raising it as far as the hard limit allows.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX; // unknown: do not second-guess the config
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
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
        let limit = raise_fd_limit();
        assert!(limit > RESERVED_FDS, "this machine allows only {limit} files");
        assert_eq!(client_connections(8), 8);
        assert_eq!(client_connections(usize::MAX) as u64, limit - RESERVED_FDS);
    }

    #[test]
    fn a_gate_admits_up_to_its_max_and_takes_back_dropped_places() {
        let mut gate = Gate::new(2, "test port");
        let a = gate.admit().expect("a first place");
        let _b = gate.admit().expect("a second place");
        assert!(gate.admit().is_none());
        assert!(gate.admit().is_none());
        drop(a);
        assert!(gate.admit().is_some());
    }
}
