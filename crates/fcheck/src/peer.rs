//! One watched server's loss accounting: the heartbeats in flight, the run of
//! losses, and the alive/failed verdict. Pure state, driven by the caller's
//! clock, so the rules are unit-tested without sockets or sleeps.
//!
//! Rules:
//! - every heartbeat times out on its own, `loss_timeout` after it was sent;
//!   several may be outstanding at once;
//! - each timeout extends the run of losses; `lost_msgs_thresh` in a row
//!   turns an alive server failed (reported once);
//! - an ack for any outstanding heartbeat proves liveness: it ends the run,
//!   retires every older heartbeat (a run is consecutive in send order, and
//!   this ack ends any run before it), feeds the RTT estimate, and turns a
//!   failed server alive again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::MonitorConfig;
use crate::report::{Event, ServerHealth};
use crate::rtt::RttEstimator;

/// A heartbeat awaiting its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    seq: u64,
    sent_at: Instant,
    deadline: Instant,
}

/// A state change of one server, before the table attaches its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Failed,
    Recovered,
}

impl Transition {
    pub(crate) fn event(self, id: u64) -> Event {
        match self {
            Transition::Failed => Event::Failed { id },
            Transition::Recovered => Event::Recovered { id },
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Peer {
    addr: SocketAddr,
    alive: bool,
    rtt: RttEstimator,
    /// Oldest first. Invariant: both `seq` and `deadline` are non-decreasing
    /// front to back (see [`Peer::sent`]), so expiry pops from the front and
    /// an ack is found by binary search.
    in_flight: VecDeque<InFlight>,
    losses_in_row: u32,
    next_send: Instant,
}

impl Peer {
    /// A server believed alive, due for its first heartbeat at `now`.
    pub(crate) fn new(addr: SocketAddr, now: Instant) -> Peer {
        Peer {
            addr,
            alive: true,
            rtt: RttEstimator::default(),
            in_flight: VecDeque::new(),
            losses_in_row: 0,
            next_send: now,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn send_due(&self, now: Instant) -> bool {
        self.next_send <= now
    }

    pub(crate) fn loss_timeout(&self, cfg: &MonitorConfig) -> Duration {
        self.rtt.timeout(cfg.rtt_floor, cfg.rtt_ceiling)
    }

    /// Alive servers are probed every heartbeat interval, failed ones slower.
    pub(crate) fn probe_period(&self, cfg: &MonitorConfig) -> Duration {
        if self.alive { cfg.heartbeat_interval } else { cfg.failed_probe_interval }
    }

    /// Records heartbeat `seq` sent at `now` and when the next one is due.
    /// The deadline never precedes an older heartbeat's: when the estimate
    /// shrinks, a newer heartbeat waits for the older ones, which keeps
    /// `in_flight` sorted by deadline and losses counted in send order.
    pub(crate) fn sent(&mut self, seq: u64, now: Instant, cfg: &MonitorConfig, next_send: Instant) {
        let mut deadline = now + self.loss_timeout(cfg);
        if let Some(last) = self.in_flight.back() {
            deadline = deadline.max(last.deadline);
        }
        self.in_flight.push_back(InFlight { seq, sent_at: now, deadline });
        self.next_send = next_send;
    }

    /// Counts every heartbeat whose deadline has passed as lost. Returns
    /// `Failed` when this makes an alive server cross the threshold.
    pub(crate) fn expire(&mut self, now: Instant, lost_msgs_thresh: u32) -> Option<Transition> {
        let mut transition = None;
        while self.in_flight.front().is_some_and(|hb| hb.deadline <= now) {
            self.in_flight.pop_front();
            self.losses_in_row = self.losses_in_row.saturating_add(1);
            if self.alive && self.losses_in_row >= lost_msgs_thresh {
                self.alive = false;
                transition = Some(Transition::Failed);
            }
        }
        transition
    }

    /// Pushes every outstanding deadline back by `by`: the monitor itself was
    /// not running for that long (a starved machine), so it cannot tell
    /// whether the acks would have come in time. Order is preserved.
    pub(crate) fn postpone(&mut self, by: Duration) {
        for hb in &mut self.in_flight {
            hb.deadline += by;
        }
    }

    /// Whether `seq` lies within the range of outstanding sequence numbers
    /// (a cheap filter before [`Peer::acked`]).
    pub(crate) fn may_own(&self, seq: u64) -> bool {
        match (self.in_flight.front(), self.in_flight.back()) {
            (Some(first), Some(last)) => first.seq <= seq && seq <= last.seq,
            _ => false,
        }
    }

    /// Applies an ack received at `now`: `Ok(Some(Recovered))` if the server
    /// was failed, `Ok(None)` if it was alive, `Err` if `seq` is not
    /// outstanding here (nothing changes then).
    pub(crate) fn acked(&mut self, seq: u64, now: Instant) -> Result<Option<Transition>, NotOwned> {
        let idx = self.in_flight.binary_search_by_key(&seq, |hb| hb.seq).map_err(|_| NotOwned)?;
        let sent_at = self.in_flight[idx].sent_at;
        self.in_flight.drain(..=idx);
        self.rtt.observe(now.saturating_duration_since(sent_at));
        self.losses_in_row = 0;
        if self.alive {
            Ok(None)
        } else {
            self.alive = true;
            Ok(Some(Transition::Recovered))
        }
    }

    /// Moves the next heartbeat earlier (never later): after a recovery the
    /// slow probe schedule must not delay the fast one.
    pub(crate) fn send_no_later_than(&mut self, at: Instant) {
        self.next_send = self.next_send.min(at);
    }

    /// The next instant this peer needs attention: a send or a deadline.
    pub(crate) fn next_wake(&self) -> Instant {
        match self.in_flight.front() {
            Some(hb) => hb.deadline.min(self.next_send),
            None => self.next_send,
        }
    }

    pub(crate) fn health(&self, id: u64, cfg: &MonitorConfig) -> ServerHealth {
        ServerHealth {
            id,
            addr: self.addr,
            alive: self.alive,
            loss_timeout: self.loss_timeout(cfg),
            srtt: self.rtt.srtt(),
            rttvar: self.rtt.rttvar(),
            losses_in_row: self.losses_in_row,
        }
    }

    #[cfg(test)]
    pub(crate) fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }
}

/// The acked sequence number is not outstanding at this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotOwned;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> MonitorConfig {
        MonitorConfig::default()
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    /// Sends heartbeat `seq` at `t0 + at` with the next one due 20 ms later.
    fn send(p: &mut Peer, seq: u64, t0: Instant, at: Duration) {
        p.sent(seq, t0 + at, &cfg(), t0 + at + 20 * MS);
    }

    /// A peer with one 1 ms RTT sample, so its timeout is the 40 ms floor.
    fn warmed(t0: Instant) -> Peer {
        let mut p = Peer::new(addr(), t0);
        send(&mut p, 0, t0, Duration::ZERO);
        assert_eq!(p.acked(0, t0 + MS), Ok(None));
        assert_eq!(p.loss_timeout(&cfg()), 40 * MS);
        p
    }

    #[test]
    fn fails_after_threshold_losses_in_row_exactly_once() {
        let t0 = Instant::now();
        let mut p = warmed(t0);
        for seq in 1..=5 {
            send(&mut p, seq, t0, seq as u32 * 20 * MS);
        }
        // Heartbeats 1 and 2 (sent at 20, 40 ms) expire at 60 and 80 ms.
        assert_eq!(p.expire(t0 + 80 * MS, 3), None);
        assert!(p.health(1, &cfg()).alive);
        // Heartbeat 3 expires at 100 ms: third loss in a row.
        assert_eq!(p.expire(t0 + 100 * MS, 3), Some(Transition::Failed));
        assert!(!p.health(1, &cfg()).alive);
        assert_eq!(p.expire(t0 + 500 * MS, 3), None, "reported once");
        assert_eq!(p.health(1, &cfg()).losses_in_row, 5);
    }

    #[test]
    fn an_ack_for_any_outstanding_heartbeat_resets_the_run() {
        let t0 = Instant::now();
        let mut p = warmed(t0);
        for seq in 1..=4 {
            send(&mut p, seq, t0, seq as u32 * 20 * MS);
        }
        assert_eq!(p.expire(t0 + 80 * MS, 3), None);
        assert_eq!(p.health(1, &cfg()).losses_in_row, 2);
        // Heartbeat 4 is answered; 3, older and unanswered, is retired with it.
        assert_eq!(p.acked(4, t0 + 85 * MS), Ok(None));
        assert_eq!(p.health(1, &cfg()).losses_in_row, 0);
        assert_eq!(p.in_flight_len(), 0);
        assert_eq!(p.acked(3, t0 + 86 * MS), Err(NotOwned), "retired");
        assert_eq!(p.expire(t0 + 200 * MS, 3), None);
    }

    #[test]
    fn an_ack_after_failure_recovers() {
        let t0 = Instant::now();
        let mut p = warmed(t0);
        for seq in 1..=4 {
            send(&mut p, seq, t0, seq as u32 * 20 * MS);
        }
        assert_eq!(p.expire(t0 + 100 * MS, 3), Some(Transition::Failed));
        assert_eq!(p.probe_period(&cfg()), 200 * MS);
        assert_eq!(p.acked(4, t0 + 101 * MS), Ok(Some(Transition::Recovered)));
        assert!(p.health(1, &cfg()).alive);
        assert_eq!(p.probe_period(&cfg()), 20 * MS);
    }

    #[test]
    fn deadlines_never_run_backwards() {
        let t0 = Instant::now();
        let mut p = Peer::new(addr(), t0);
        // No sample yet: heartbeat 0 waits for the 500 ms ceiling.
        send(&mut p, 0, t0, Duration::ZERO);
        // The estimate then drops to the 40 ms floor; heartbeat 1 would
        // expire at 60 ms but waits behind heartbeat 0.
        p.rtt.observe(MS);
        send(&mut p, 1, t0, 20 * MS);
        assert_eq!(p.expire(t0 + 100 * MS, 3), None);
        assert_eq!(p.health(1, &cfg()).losses_in_row, 0);
        assert_eq!(p.expire(t0 + 500 * MS, 3), None);
        assert_eq!(p.health(1, &cfg()).losses_in_row, 2);
    }

    #[test]
    fn unknown_seqs_are_rejected() {
        let t0 = Instant::now();
        let mut p = warmed(t0);
        send(&mut p, 5, t0, 20 * MS);
        send(&mut p, 9, t0, 40 * MS);
        assert!(p.may_own(7));
        assert_eq!(p.acked(7, t0 + 50 * MS), Err(NotOwned));
        assert!(!p.may_own(10));
        assert_eq!(p.acked(10, t0 + 50 * MS), Err(NotOwned));
        assert_eq!(p.health(1, &cfg()).losses_in_row, 0);
        assert_eq!(p.in_flight_len(), 2);
    }

    #[test]
    fn postponing_moves_every_deadline_and_keeps_their_order() {
        let cfg = MonitorConfig::default();
        let t0 = Instant::now();
        let mut p = Peer::new("127.0.0.1:9".parse().unwrap(), t0);
        p.sent(1, t0, &cfg, t0 + cfg.heartbeat_interval);
        p.sent(2, t0 + cfg.heartbeat_interval, &cfg, t0 + 2 * cfg.heartbeat_interval);
        let first_deadline = t0 + p.loss_timeout(&cfg);
        let late = first_deadline + cfg.heartbeat_interval * 2;
        let mut unpostponed = p.clone();
        unpostponed.expire(late, cfg.lost_msgs_thresh);
        assert!(unpostponed.in_flight_len() < 2, "without postponing, the first heartbeat is lost by then");
        p.postpone(cfg.heartbeat_interval * 3);
        p.expire(late, cfg.lost_msgs_thresh);
        assert_eq!(p.in_flight_len(), 2, "postponed: nothing expired");
    }
}
