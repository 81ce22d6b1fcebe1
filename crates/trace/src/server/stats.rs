//! What the tracing server has absorbed, for operators and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TracingServerStats {
    /// Tracers whose hello was accepted.
    pub tracers_accepted: u64,
    /// Tracers refused (wrong secret, bad identity, other wire version).
    pub tracers_refused: u64,
    /// Connections closed for a malformed frame or a missing hello.
    pub bad_connections: u64,
    /// Records written to both output files.
    pub records: u64,
    /// Records refused as malformed (counted as dropped by their tracer).
    pub rejected: u64,
    /// Records lost to output write errors (disk full, ...).
    pub write_errors: u64,
    /// Time since the server started.
    pub elapsed: Duration,
}

impl TracingServerStats {
    /// Records absorbed per second since the start.
    pub fn records_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.records as f64 / secs } else { 0.0 }
    }
}

/// The live counters behind [`TracingServerStats`]; shared by the accept
/// loop, the connection tasks and the writer thread.
#[derive(Debug)]
pub struct StatsHandle {
    pub(crate) tracers_accepted: AtomicU64,
    pub(crate) tracers_refused: AtomicU64,
    pub(crate) bad_connections: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    start: Instant,
}

impl StatsHandle {
    pub(crate) fn new() -> Self {
        StatsHandle {
            tracers_accepted: AtomicU64::new(0),
            tracers_refused: AtomicU64::new(0),
            bad_connections: AtomicU64::new(0),
            records: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> TracingServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TracingServerStats {
            tracers_accepted: get(&self.tracers_accepted),
            tracers_refused: get(&self.tracers_refused),
            bad_connections: get(&self.bad_connections),
            records: get(&self.records),
            rejected: get(&self.rejected),
            write_errors: get(&self.write_errors),
            elapsed: self.start.elapsed(),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
