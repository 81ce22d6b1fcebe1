//! The monitor's state across servers: which servers are watched, which
//! heartbeats to send now, where each ack belongs, and when to wake next.
//! Pure (the caller passes the clock and does the I/O), so it is tested
//! without sockets.
//!
//! Sequence numbers are unique per epoch across all servers, so an ack names
//! one heartbeat of one watch: a late ack from before an `unwatch`/`watch`
//! matches nothing. Acks are routed by sequence number, not by source
//! address, so a responder bound to a wildcard address that answers from
//! another interface is still heard.
//!
//! Sends are aligned to a grid anchored at the monitor's start (one grid per
//! probe period): all servers of a period fall due together, so the monitor
//! wakes once per interval however many servers it watches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::MonitorConfig;
use crate::peer::Peer;
use crate::report::{Event, ServerHealth};
use crate::stats::MonitorStats;
use crate::wire::{Ack, Heartbeat};

/// A heartbeat the caller must put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) addr: SocketAddr,
    pub(crate) heartbeat: Heartbeat,
}

#[derive(Debug)]
pub(crate) struct Table {
    cfg: MonitorConfig,
    epoch: u64,
    origin: Instant,
    next_seq: u64,
    peers: BTreeMap<u64, Peer>,
    stats: MonitorStats,
}

impl Table {
    pub(crate) fn new(cfg: MonitorConfig, epoch: u64, origin: Instant) -> Table {
        Table { cfg, epoch, origin, next_seq: 0, peers: BTreeMap::new(), stats: MonitorStats::default() }
    }

    /// Starts (or restarts, forgetting all history) watching `id` at `addr`.
    /// It starts alive and is due for a heartbeat at once.
    pub(crate) fn watch(&mut self, id: u64, addr: SocketAddr, now: Instant) {
        self.peers.insert(id, Peer::new(addr, now));
    }

    pub(crate) fn unwatch(&mut self, id: u64) {
        self.peers.remove(&id);
    }

    /// Times out overdue heartbeats, then queues every heartbeat due at
    /// `now`. Afterwards [`Table::next_wake`] is strictly after `now` (every
    /// deadline `<= now` was popped and every send rescheduled to a future
    /// tick), which is what keeps the driver from spinning.
    pub(crate) fn poll(&mut self, now: Instant, sends: &mut Vec<Outgoing>, events: &mut Vec<Event>) {
        for (&id, peer) in &mut self.peers {
            if let Some(transition) = peer.expire(now, self.cfg.lost_msgs_thresh) {
                events.push(transition.event(id));
                peer.send_no_later_than(next_tick(self.origin, now, peer.probe_period(&self.cfg)));
            }
            if peer.send_due(now) {
                let seq = self.next_seq;
                self.next_seq = self.next_seq.wrapping_add(1);
                let next = next_tick(self.origin, now, peer.probe_period(&self.cfg));
                peer.sent(seq, now, &self.cfg, next);
                self.stats.heartbeats_sent += 1;
                sends.push(Outgoing { addr: peer.addr(), heartbeat: Heartbeat { epoch: self.epoch, seq } });
            }
        }
    }

    /// See [`Peer::postpone`]: the monitor was stalled for `by`.
    pub(crate) fn postpone_all(&mut self, by: Duration) {
        for peer in self.peers.values_mut() {
            peer.postpone(by);
        }
    }

    /// Applies an ack received at `now`. Wrong epoch or unknown sequence
    /// number: counted as stale and otherwise ignored.
    pub(crate) fn on_ack(&mut self, ack: Ack, now: Instant, events: &mut Vec<Event>) {
        if ack.epoch != self.epoch {
            self.stats.stale_acks += 1;
            return;
        }
        let owner = self.peers.iter_mut().find_map(|(&id, peer)| {
            if !peer.may_own(ack.seq) {
                return None;
            }
            peer.acked(ack.seq, now).ok().map(|t| (id, peer, t))
        });
        let Some((id, peer, transition)) = owner else {
            self.stats.stale_acks += 1;
            return;
        };
        self.stats.acks += 1;
        if let Some(transition) = transition {
            events.push(transition.event(id));
            peer.send_no_later_than(next_tick(self.origin, now, peer.probe_period(&self.cfg)));
        }
    }

    /// When the driver must next call [`Table::poll`]; `None` when nothing is
    /// watched (then only a datagram or a `watch` wakes it).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.peers.values().map(Peer::next_wake).min()
    }

    /// A wake-up later than this means the monitor was starved: one
    /// heartbeat interval.
    pub(crate) fn stall_threshold(&self) -> Duration {
        self.cfg.heartbeat_interval
    }

    pub(crate) fn view(&self) -> Vec<ServerHealth> {
        self.peers.iter().map(|(&id, peer)| peer.health(id, &self.cfg)).collect()
    }

    pub(crate) fn health(&self, id: u64) -> Option<ServerHealth> {
        self.peers.get(&id).map(|peer| peer.health(id, &self.cfg))
    }

    pub(crate) fn stats(&self) -> MonitorStats {
        self.stats
    }

    pub(crate) fn stats_mut(&mut self) -> &mut MonitorStats {
        &mut self.stats
    }
}

/// The first instant `origin + k * period` strictly after `now`. Skips the
/// ticks a late wake-up missed instead of bursting to catch up.
fn next_tick(origin: Instant, now: Instant, period: Duration) -> Instant {
    let period_ns = period.as_nanos().max(1);
    let elapsed_ns = now.saturating_duration_since(origin).as_nanos();
    let ticks = elapsed_ns / period_ns + 1;
    let offset_ns = u64::try_from(ticks * period_ns).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(offset_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const EPOCH: u64 = 0xE90C;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn polled(table: &mut Table, now: Instant) -> (Vec<Outgoing>, Vec<Event>) {
        let (mut sends, mut events) = (Vec::new(), Vec::new());
        table.poll(now, &mut sends, &mut events);
        if let Some(wake) = table.next_wake() {
            assert!(wake > now, "next wake {wake:?} not after {now:?}");
        }
        (sends, events)
    }

    fn ack(table: &mut Table, out: &Outgoing, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let hb = out.heartbeat;
        table.on_ack(Ack { epoch: hb.epoch, seq: hb.seq }, now, &mut events);
        events
    }

    #[test]
    fn next_tick_is_strictly_after_now_on_the_grid() {
        let t0 = Instant::now();
        assert_eq!(next_tick(t0, t0, 20 * MS), t0 + 20 * MS);
        assert_eq!(next_tick(t0, t0 + 19 * MS, 20 * MS), t0 + 20 * MS);
        assert_eq!(next_tick(t0, t0 + 20 * MS, 20 * MS), t0 + 40 * MS);
        assert_eq!(next_tick(t0, t0 + 95 * MS, 20 * MS), t0 + 100 * MS);
    }

    #[test]
    fn servers_share_ticks_and_seqs_are_unique() {
        let t0 = Instant::now();
        let mut table = Table::new(MonitorConfig::default(), EPOCH, t0);
        table.watch(1, addr(1), t0 + 3 * MS);
        table.watch(2, addr(2), t0 + 7 * MS);
        let (first, _) = polled(&mut table, t0 + 7 * MS);
        assert_eq!(first.len(), 2, "both due at once after watch");
        for out in &first {
            assert!(ack(&mut table, out, t0 + 8 * MS).is_empty());
        }
        assert_eq!(table.next_wake(), Some(t0 + 20 * MS));
        let (second, _) = polled(&mut table, t0 + 20 * MS);
        let seqs: Vec<u64> = first.iter().chain(&second).map(|o| o.heartbeat.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        assert_eq!(table.stats().acks, 2);
    }

    #[test]
    fn silent_server_fails_then_recovers_with_fast_probing() {
        let t0 = Instant::now();
        let cfg = MonitorConfig::default();
        let mut table = Table::new(cfg, EPOCH, t0);
        table.watch(7, addr(7), t0);
        let (sends, _) = polled(&mut table, t0);
        ack(&mut table, &sends[0], t0 + MS);
        // Silence from here on: step through the wake-ups, as the driver would.
        let mut now = t0 + MS;
        let mut failed_at = None;
        let mut last = None;
        while now < t0 + 1000 * MS {
            now = table.next_wake().unwrap();
            let (sends, events) = polled(&mut table, now);
            last = sends.last().copied().or(last);
            if !events.is_empty() {
                assert_eq!(events, vec![Event::Failed { id: 7 }]);
                assert!(failed_at.is_none(), "failed twice");
                failed_at = Some(now);
            }
        }
        // Last ack at 1 ms; heartbeats at 20, 40, 60 ms time out at 60, 80, 100.
        assert_eq!(failed_at, Some(t0 + 100 * MS));
        assert!(t0 + 100 * MS - (t0 + MS) <= cfg.detection_time(cfg.rtt_floor));
        // A late probe is answered: recovered, and back on the 20 ms grid.
        let events = ack(&mut table, &last.unwrap(), now + MS);
        assert_eq!(events, vec![Event::Recovered { id: 7 }]);
        assert!(table.next_wake().unwrap() <= now + 21 * MS);
    }

    #[test]
    fn stale_acks_change_nothing() {
        let t0 = Instant::now();
        let mut table = Table::new(MonitorConfig::default(), EPOCH, t0);
        table.watch(1, addr(1), t0);
        let (sends, _) = polled(&mut table, t0);
        let seq = sends[0].heartbeat.seq;
        let mut events = Vec::new();
        for bad in [Ack { epoch: EPOCH + 1, seq }, Ack { epoch: EPOCH, seq: seq + 1 }] {
            table.on_ack(bad, t0 + MS, &mut events);
        }
        assert!(events.is_empty());
        assert_eq!(table.stats().stale_acks, 2);
        assert_eq!(table.health(1).unwrap().srtt, None);
        // Re-watching forgets the old heartbeat: its ack is now stale too.
        table.watch(1, addr(1), t0 + MS);
        ack(&mut table, &sends[0], t0 + 2 * MS);
        assert_eq!(table.stats().stale_acks, 3);
        assert_eq!(table.stats().acks, 0);
    }

    #[test]
    fn unwatched_servers_are_forgotten() {
        let t0 = Instant::now();
        let mut table = Table::new(MonitorConfig::default(), EPOCH, t0);
        assert_eq!(table.next_wake(), None);
        table.watch(1, addr(1), t0);
        assert_eq!(table.view().len(), 1);
        table.unwatch(1);
        assert!(table.view().is_empty());
        assert_eq!(table.next_wake(), None);
        let (sends, events) = polled(&mut table, t0 + 100 * MS);
        assert!(sends.is_empty() && events.is_empty());
    }
}
