//! How soon the driver dials the leader again after a connection that was
//! never served: a server at its `MaxClientConnections` closes new
//! connections as they come, and a thousand clients redialling every few
//! milliseconds would cost it more than serving them. The first retry is
//! at once (a leader that just died: the next one is likely named soon);
//! each further one waits twice as long, up to [`MAX_WAIT`]. A connection
//! that was served, or a new leader named, starts over.

use std::time::{Duration, Instant};

/// The wait after the second failure in a row; it doubles from there.
const FIRST_WAIT: Duration = Duration::from_millis(20);
/// The longest wait between two dials.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Redial {
    /// Connections in a row that closed before they were served.
    failures: u32,
    not_before: Option<Instant>,
}

impl Redial {
    /// A connection closed at `now` without having been served.
    pub fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= 2 {
            let wait = FIRST_WAIT.saturating_mul(1 << (self.failures - 2).min(16)).min(MAX_WAIT);
            self.not_before = Some(now + wait);
        }
    }

    /// A connection was served, or another leader is named: dial at once.
    pub fn reset(&mut self) {
        *self = Redial::default();
    }

    /// Whether a dial at `now` may go.
    pub fn may_dial(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_second_failure_up_to_a_second_and_reset_on_service() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Redial::default();
        assert!(r.may_dial(t0));
        r.failed(t0);
        assert!(r.may_dial(t0), "the first retry goes at once");
        let mut waits = Vec::new();
        for _ in 0..10 {
            r.failed(t0);
            let wait = (0..=2000).map(ms).find(|&w| r.may_dial(t0 + w)).unwrap();
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]);
        r.reset();
        assert!(r.may_dial(t0));
        for _ in 0..1000 {
            r.failed(t0); // no overflow however long it fails
        }
        assert!(!r.may_dial(t0) && r.may_dial(t0 + MAX_WAIT));
    }
}
