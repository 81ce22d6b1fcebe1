//! The monitor's knobs, their defaults, and the detection time they imply.

use std::time::Duration;

/// How aggressively the monitor probes and how much silence it tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Heartbeats lost in a row before a server is declared failed (the
    /// prototype's `LostMsgsThresh`). Default 3.
    pub lost_msgs_thresh: u32,
    /// How often each alive server is probed. Default 20 ms.
    pub heartbeat_interval: Duration,
    /// Minimum loss timeout, whatever the RTT estimate: absorbs scheduling
    /// delays on a loaded machine. Default 40 ms.
    pub rtt_floor: Duration,
    /// Maximum loss timeout, and the timeout before the first RTT sample.
    /// Default 500 ms.
    pub rtt_ceiling: Duration,
    /// How often a failed server is probed for recovery. Default 200 ms.
    pub failed_probe_interval: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            lost_msgs_thresh: 3,
            heartbeat_interval: Duration::from_millis(20),
            rtt_floor: Duration::from_millis(40),
            rtt_ceiling: Duration::from_millis(500),
            failed_probe_interval: Duration::from_millis(200),
        }
    }
}

/// A configuration the monitor refuses: each would make it spin or never
/// decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("lost_msgs_thresh must be at least 1")]
    ZeroThreshold,
    #[error("heartbeat_interval and failed_probe_interval must be positive")]
    ZeroInterval,
    #[error("rtt_floor must be positive and at most rtt_ceiling")]
    BadTimeoutRange,
}

impl MonitorConfig {
    /// Checks the invariants the monitor's loop relies on: positive periods
    /// and a positive loss timeout guarantee that every wake-up is strictly
    /// in the future, so the loop can never spin.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lost_msgs_thresh == 0 {
            return Err(ConfigError::ZeroThreshold);
        }
        if self.heartbeat_interval.is_zero() || self.failed_probe_interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        if self.rtt_floor.is_zero() || self.rtt_floor > self.rtt_ceiling {
            return Err(ConfigError::BadTimeoutRange);
        }
        Ok(())
    }

    /// Upper bound on the time from a server's death to its `Failed` event,
    /// given its current loss timeout `rto`: `lost_msgs_thresh *
    /// heartbeat_interval + rto` (plus scheduling delay). The first
    /// unanswered heartbeat leaves within one interval of the death, the
    /// `lost_msgs_thresh`-th one `lost_msgs_thresh - 1` intervals later, and
    /// it is declared lost `rto` after it left. Defaults on a LAN (rto at the
    /// 40 ms floor): 3 * 20 + 40 = 100 ms.
    pub fn detection_time(&self, rto: Duration) -> Duration {
        self.heartbeat_interval.saturating_mul(self.lost_msgs_thresh).saturating_add(rto)
    }

    /// [`detection_time`](Self::detection_time) for the worst RTT estimate
    /// (the ceiling). Defaults: 3 * 20 + 500 = 560 ms.
    pub fn worst_detection_time(&self) -> Duration {
        self.detection_time(self.rtt_ceiling)
    }

    /// Upper bound on the time from a failed server answering again to its
    /// `Recovered` event: the next slow probe plus its round trip.
    pub fn recovery_time(&self, rtt: Duration) -> Duration {
        self.failed_probe_interval.saturating_add(rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_detect_within_100ms_on_a_lan() {
        let cfg = MonitorConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.detection_time(cfg.rtt_floor), Duration::from_millis(100));
        assert_eq!(cfg.worst_detection_time(), Duration::from_millis(560));
    }

    #[test]
    fn rejects_configs_that_would_spin() {
        let ok = MonitorConfig::default();
        let cases = [
            MonitorConfig { lost_msgs_thresh: 0, ..ok },
            MonitorConfig { heartbeat_interval: Duration::ZERO, ..ok },
            MonitorConfig { failed_probe_interval: Duration::ZERO, ..ok },
            MonitorConfig { rtt_floor: Duration::ZERO, ..ok },
            MonitorConfig { rtt_floor: Duration::from_secs(1), ..ok },
        ];
        for cfg in cases {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }
}
