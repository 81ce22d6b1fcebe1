//! `config/coord_config.json`: the prototype's fields plus a data directory
//! and the failure detector's settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kvraft_fcheck::MonitorConfig;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct CoordConfig {
    /// Where clients find the leader (CoordClient service).
    #[serde(rename = "ClientAPIListenAddr")]
    pub client_api_listen_addr: SocketAddr,
    /// Where servers join (CoordServer service).
    #[serde(rename = "ServerAPIListenAddr")]
    pub server_api_listen_addr: SocketAddr,
    /// A server is failed after this many heartbeats lost in a row.
    pub lost_msgs_thresh: u32,
    /// 1, 3, 5 or 7.
    pub num_servers: u64,
    #[serde(default)]
    pub tracing_server_addr: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub tracing_identity: String,
    /// Where the coord keeps its term and membership. Default: `data/coord`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Heartbeat period per server, in milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A heartbeat is lost after max(RTT estimate, this floor), in milliseconds.
    #[serde(default = "default_rtt_floor_ms")]
    pub rtt_floor_ms: u64,
    /// A coord that lost its state waits this long, once a majority of the
    /// servers have joined it again, for the rest, in milliseconds.
    #[serde(default = "default_rejoin_grace_ms")]
    pub rejoin_grace_ms: u64,
}

/// Every running server notices a coord that lost its state within about
/// a second (the server's `join.rs`): 3 s leaves room for a loaded machine,
/// and a server down for good holds the cluster up no longer than that.
pub const DEFAULT_REJOIN_GRACE_MS: u64 = 3000;

/// Bounds of `RejoinGraceMs`: below, running servers would be left out;
/// above, a dead one would hold the cluster without a leader too long.
const REJOIN_GRACE_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

fn default_rejoin_grace_ms() -> u64 {
    DEFAULT_REJOIN_GRACE_MS
}

// Detection takes about (LostMsgsThresh - 1) * HeartbeatMs + RttFloorMs:
// 200 ms with the defaults. A lower floor detects faster but fails healthy
// servers when a loaded machine delays a process by ~100 ms.
fn default_heartbeat_ms() -> u64 {
    25
}

fn default_rtt_floor_ms() -> u64 {
    150
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("invalid config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl CoordConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let cfg: CoordConfig =
            serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
        cfg.validate().map_err(|reason| ConfigError::Invalid { path: path.into(), reason })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.num_servers, 1 | 3 | 5 | 7) {
            return Err(format!("NumServers must be 1, 3, 5 or 7 (odd, at most 7), not {}", self.num_servers));
        }
        if self.lost_msgs_thresh == 0 {
            return Err("LostMsgsThresh must be at least 1".into());
        }
        if self.heartbeat_ms == 0 || self.rtt_floor_ms == 0 {
            return Err("HeartbeatMs and RttFloorMs must be at least 1".into());
        }
        let ceiling = MonitorConfig::default().rtt_ceiling;
        if Duration::from_millis(self.rtt_floor_ms) > ceiling {
            return Err(format!(
                "RttFloorMs must be at most {} (the failure detector's longest loss timeout), not {}",
                ceiling.as_millis(),
                self.rtt_floor_ms
            ));
        }
        if !REJOIN_GRACE_MS.contains(&self.rejoin_grace_ms) {
            return Err(format!(
                "RejoinGraceMs must be {} to {}, not {}",
                REJOIN_GRACE_MS.start(),
                REJOIN_GRACE_MS.end(),
                self.rejoin_grace_ms
            ));
        }
        if let Some(problem) = kvraft_proto::secret::secret_problem(&self.secret) {
            return Err(problem);
        }
        Ok(())
    }

    pub fn rejoin_grace(&self) -> Duration {
        Duration::from_millis(self.rejoin_grace_ms)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("data/coord"))
    }

    /// The failure detector's settings: this config's, the rest defaults.
    pub fn monitor_config(&self) -> MonitorConfig {
        MonitorConfig {
            lost_msgs_thresh: self.lost_msgs_thresh,
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
            rtt_floor: Duration::from_millis(self.rtt_floor_ms),
            ..MonitorConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_prototype_config_and_refuses_even_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let cfg = |n: u64| {
            format!(
                r#"{{"ClientAPIListenAddr": "127.0.0.1:23009", "ServerAPIListenAddr": "127.0.0.1:23002",
                   "LostMsgsThresh": 3, "NumServers": {n}, "TracingServerAddr": "127.0.0.1:23000",
                   "Secret": "", "TracingIdentity": "coord"}}"#
            )
        };
        std::fs::write(&path, cfg(5)).unwrap();
        let c = CoordConfig::load(&path).unwrap();
        assert_eq!((c.num_servers, c.lost_msgs_thresh, c.heartbeat_ms, c.rtt_floor_ms), (5, 3, 25, 150));
        assert_eq!(c.rejoin_grace_ms, DEFAULT_REJOIN_GRACE_MS);
        std::fs::write(&path, cfg(4)).unwrap();
        let e = CoordConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("NumServers must be"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    /// Every config `load` accepts starts a failure detector, and what it
    /// refuses is named by its config field.
    #[test]
    fn settings_the_detector_or_the_wire_would_refuse_are_named() {
        let base = r#"{"ClientAPIListenAddr": "127.0.0.1:23009", "ServerAPIListenAddr": "127.0.0.1:23002",
                       "LostMsgsThresh": 3, "NumServers": 3"#;
        let check = |extra: &str| {
            let cfg: CoordConfig = serde_json::from_str(&format!("{base}{extra}}}")).unwrap();
            cfg.validate().map(|()| cfg.monitor_config().validate().is_ok())
        };
        assert_eq!(check(r#", "RttFloorMs": 500"#), Ok(true));
        let e = check(r#", "RttFloorMs": 501"#).unwrap_err();
        assert!(e.starts_with("RttFloorMs must be at most 500"), "{e}");
        assert_eq!(check(r#", "RejoinGraceMs": 100"#), Ok(true));
        let e = check(r#", "RejoinGraceMs": 99"#).unwrap_err();
        assert!(e.starts_with("RejoinGraceMs must be 100 to 600000, not 99"), "{e}");
        let e = check(r#", "Secret": "two\nlines""#).unwrap_err();
        assert!(e.contains("printable ASCII"), "{e}");
        assert!(check(&format!(r#", "Secret": "{}""#, "s".repeat(1025))).unwrap_err().contains("1025 bytes"));
    }
}
