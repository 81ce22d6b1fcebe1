//! Counters of what each end did with its datagrams, so that dropped traffic
//! is visible rather than silent.

use std::sync::atomic::{AtomicU64, Ordering};

/// The monitor's counters (a snapshot; see `Monitor::stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorStats {
    pub heartbeats_sent: u64,
    /// Acks that matched an outstanding heartbeat.
    pub acks: u64,
    /// Well-formed acks ignored: wrong epoch, or no such outstanding heartbeat
    /// (already timed out, superseded by a later ack, or never sent).
    pub stale_acks: u64,
    /// Datagrams that did not decode, or were not acks.
    pub malformed: u64,
    /// Heartbeats that could not be handed to the socket (they count as lost).
    pub send_errors: u64,
    pub recv_errors: u64,
}

/// The responder's counters, shared with its owner while it runs. Relaxed
/// atomics: they are statistics, ordering nothing.
#[derive(Debug, Default)]
pub struct ResponderStats {
    pub(crate) answered: AtomicU64,
    pub(crate) muted: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) recv_errors: AtomicU64,
}

impl ResponderStats {
    /// Heartbeats answered with an ack.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Datagrams ignored because the mute switch was on.
    pub fn muted(&self) -> u64 {
        self.muted.load(Ordering::Relaxed)
    }

    /// Datagrams that did not decode, or were not heartbeats.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Acks that could not be handed to the socket.
    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }

    pub fn recv_errors(&self) -> u64 {
        self.recv_errors.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
