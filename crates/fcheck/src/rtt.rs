//! Round-trip estimation, TCP-style (RFC 6298): a smoothed RTT and its mean
//! deviation, turned into a loss timeout `srtt + 4 * rttvar` clamped to the
//! configured `[floor, ceiling]`.
//!
//! The floor keeps a loopback RTT of microseconds from turning scheduling
//! hiccups into losses; the ceiling bounds detection time however slow the
//! path once looked.

use std::time::Duration;

/// Smoothed RTT and variance of one server. Empty until the first sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    /// Folds in one sample with the RFC 6298 gains (1/8 for srtt, 1/4 for
    /// rttvar). Saturating arithmetic: a sample can be arbitrarily late (the
    /// process was stopped), and nothing here may panic on it.
    pub(crate) fn observe(&mut self, sample: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                self.rttvar = self.rttvar.saturating_mul(3).saturating_add(srtt.abs_diff(sample)) / 4;
                self.srtt = Some(srtt.saturating_mul(7).saturating_add(sample) / 8);
            }
        }
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub(crate) fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// How long to wait for an ack before counting the heartbeat lost. With no
    /// sample yet, the ceiling: a server is not failed on a guess.
    /// `max` then `min` (not `clamp`) so that a floor above the ceiling
    /// cannot panic; the ceiling wins.
    pub(crate) fn timeout(&self, floor: Duration, ceiling: Duration) -> Duration {
        match self.srtt {
            None => ceiling,
            Some(srtt) => srtt.saturating_add(self.rttvar.saturating_mul(4)).max(floor).min(ceiling),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut rtt = RttEstimator::default();
        assert_eq!(rtt.timeout(MS, 500 * MS), 500 * MS);
        rtt.observe(10 * MS);
        assert_eq!(rtt.srtt(), Some(10 * MS));
        assert_eq!(rtt.rttvar(), 5 * MS);
        assert_eq!(rtt.timeout(MS, 500 * MS), 30 * MS);
    }

    #[test]
    fn converges_and_is_clamped() {
        let mut rtt = RttEstimator::default();
        for _ in 0..200 {
            rtt.observe(20 * MS);
        }
        assert_eq!(rtt.srtt(), Some(20 * MS));
        assert!(rtt.rttvar() < MS);
        assert_eq!(rtt.timeout(40 * MS, 500 * MS), 40 * MS, "floor");
        for _ in 0..200 {
            rtt.observe(300 * MS);
        }
        assert_eq!(rtt.timeout(40 * MS, 250 * MS), 250 * MS, "ceiling");
        assert_eq!(rtt.timeout(600 * MS, 250 * MS), 250 * MS, "ceiling wins");
    }

    #[test]
    fn jitter_raises_the_timeout() {
        let mut steady = RttEstimator::default();
        let mut jittery = RttEstimator::default();
        for i in 0..100 {
            steady.observe(10 * MS);
            jittery.observe(if i % 2 == 0 { 2 * MS } else { 18 * MS });
        }
        let (floor, ceiling) = (Duration::ZERO, Duration::from_secs(1));
        assert!(jittery.timeout(floor, ceiling) > steady.timeout(floor, ceiling) + 10 * MS);
    }

    #[test]
    fn absurd_samples_saturate() {
        let mut rtt = RttEstimator::default();
        rtt.observe(Duration::MAX);
        rtt.observe(Duration::ZERO);
        rtt.observe(Duration::MAX);
        assert_eq!(rtt.timeout(MS, 500 * MS), 500 * MS);
    }
}
