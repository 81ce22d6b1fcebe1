//! `config/server_config{id}.json`: the prototype's fields, plus the data
//! directory and tuning, all with sane defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How Gets are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// ReadIndex: a heartbeat round confirms leadership; no log write.
    #[default]
    ReadIndex,
    /// Gets go through the log, as in the prototype.
    Log,
}

/// Whether writes are fsynced before they count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    #[default]
    Always,
    /// UNSAFE: an acknowledged write can be lost in a power failure. Tests only.
    Never,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ServerConfig {
    #[serde(rename = "ServerID")]
    pub server_id: u64,
    /// The coord's server-facing address (its ServerAPIListenAddr).
    pub coord_addr: String,
    /// This server's UDP address for the coord's failure-detector heartbeats.
    pub server_addr: SocketAddr,
    /// Where other servers reach this one (the peer wire's TCP listener).
    pub server_server_addr: SocketAddr,
    /// Where the coord reaches this one (the ServerControl service).
    pub server_listen_addr: SocketAddr,
    /// Where clients and tools reach this one (KvClient and Admin services).
    pub client_listen_addr: SocketAddr,
    #[serde(default)]
    pub tracing_server_addr: String,
    /// When set, every request must present it.
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub tracing_identity: String,
    /// Default: `data/server{id}`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub fsync: Fsync,
    /// A snapshot is taken, and the log before it deleted, every this many entries.
    #[serde(default = "default_snapshot_entries")]
    pub snapshot_entries: u64,
    #[serde(default)]
    pub read_mode: ReadMode,
    /// WAL segment size; compaction frees whole segments.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Milliseconds per tick of the core.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// While a leader waits for a quorum (a write to commit, a read to be
    /// confirmed), its loop polls for up to this many microseconds after
    /// the last progress before it sleeps, and not at all while progress
    /// takes longer; 0 never polls. See `poll.rs`.
    #[serde(default = "default_commit_poll_micros")]
    pub commit_poll_micros: u64,
    /// After a commit or a read answered, a leader polls for up to this
    /// many microseconds for its clients' next command before it sleeps,
    /// as long as their commands have been coming that soon; 0 never
    /// polls. See `poll.rs`.
    #[serde(default = "default_client_poll_micros")]
    pub client_poll_micros: u64,
    /// Connections the client port holds at once, on both wires; one more
    /// is closed as it is accepted. Lowered at start to what the process's
    /// file-descriptor limit leaves beside the log and the peers.
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
}

/// As etcd's `--snapshot-count`. Each snapshot encodes the whole map (off
/// the event loop now, but it still costs CPU), so with 10,000 (the old
/// default) a store of a million keys spent most of its time snapshotting,
/// and a follower a fraction of a second behind needed a whole snapshot
/// (`kvraft bench scale`).
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 100_000;

fn default_snapshot_entries() -> u64 {
    DEFAULT_SNAPSHOT_ENTRIES
}

fn default_segment_bytes() -> u64 {
    64 << 20
}

fn default_tick_ms() -> u64 {
    10
}

/// About one fdatasync plus a round trip on a LAN: polling longer than a
/// commit usually takes only burns CPU.
pub const DEFAULT_COMMIT_POLL_MICROS: u64 = 1000;

/// A client in a closed loop on loopback or a fast LAN sends its next
/// command a round trip after its answer: 100 us caught only some of them
/// here, 200-500 all (docs/perf-log.md).
pub const DEFAULT_CLIENT_POLL_MICROS: u64 = 300;

fn default_client_poll_micros() -> u64 {
    DEFAULT_CLIENT_POLL_MICROS
}

/// A poll is meant to bridge a wait, not to replace sleeping.
const MAX_POLL_MICROS: u64 = 10_000;

fn default_commit_poll_micros() -> u64 {
    DEFAULT_COMMIT_POLL_MICROS
}

/// Far more than a small cluster's clients (kvslib keeps one connection
/// per client), far less than the memory it would take to fill.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 1024;

fn default_max_client_connections() -> usize {
    DEFAULT_MAX_CLIENT_CONNECTIONS
}

/// A config that cannot be used, with the reason in one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("invalid config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let cfg: ServerConfig =
            serde_json::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
        cfg.validate().map_err(|reason| ConfigError::Invalid { path: path.into(), reason })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.server_id == 0 || self.server_id > 7 {
            return Err(format!("ServerID must be 1..=7, not {}", self.server_id));
        }
        if self.snapshot_entries == 0 {
            return Err("SnapshotEntries must be at least 1".into());
        }
        if self.segment_bytes < 4096 {
            return Err(format!("SegmentBytes must be at least 4096, not {}", self.segment_bytes));
        }
        if self.tick_ms == 0 {
            return Err("TickMs must be at least 1".into());
        }
        if self.commit_poll_micros > MAX_POLL_MICROS {
            return Err(format!("CommitPollMicros must be at most {MAX_POLL_MICROS}, not {}", self.commit_poll_micros));
        }
        if self.client_poll_micros > MAX_POLL_MICROS {
            return Err(format!("ClientPollMicros must be at most {MAX_POLL_MICROS}, not {}", self.client_poll_micros));
        }
        // Each takes a file descriptor; no process gets more than this.
        const MAX_CONNECTIONS: usize = 1 << 20;
        if !(1..=MAX_CONNECTIONS).contains(&self.max_client_connections) {
            return Err(format!(
                "MaxClientConnections must be from 1 to {MAX_CONNECTIONS}, not {}",
                self.max_client_connections
            ));
        }
        // It travels in the peer hello, capped before it is checked, and
        // as a gRPC header.
        if let Some(problem) = kvraft_proto::secret::secret_problem(&self.secret) {
            return Err(problem);
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("data/server{}", self.server_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_the_prototype_config() {
        let (_d, path) = write(
            r#"{"ServerID": 1, "CoordAddr": "127.0.0.1:23002", "ServerAddr": "127.0.0.1:21001",
                "ServerServerAddr": "127.0.0.1:21011", "ServerListenAddr": "127.0.0.1:21021",
                "ClientListenAddr": "127.0.0.1:21031", "TracingServerAddr": "127.0.0.1:23000",
                "Secret": "", "TracingIdentity": "server1"}"#,
        );
        let c = ServerConfig::load(&path).unwrap();
        assert_eq!(c.server_id, 1);
        assert_eq!(c.fsync, Fsync::Always);
        assert_eq!(c.read_mode, ReadMode::ReadIndex);
        assert_eq!(c.data_dir(), PathBuf::from("data/server1"));
        assert_eq!(c.commit_poll_micros, DEFAULT_COMMIT_POLL_MICROS);
        assert_eq!(c.max_client_connections, DEFAULT_MAX_CLIENT_CONNECTIONS);
        assert_eq!(c.client_poll_micros, DEFAULT_CLIENT_POLL_MICROS);
    }

    #[test]
    fn bad_configs_give_one_line_errors() {
        let (_d, path) = write(r#"{"ServerID": 1}"#);
        let e = ServerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
        assert_eq!(e.lines().count(), 1);
        let (_d, path) = write(
            r#"{"ServerID": 9, "CoordAddr": "x", "ServerAddr": "127.0.0.1:1", "ServerServerAddr": "127.0.0.1:2",
                "ServerListenAddr": "127.0.0.1:3", "ClientListenAddr": "127.0.0.1:4"}"#,
        );
        assert!(ServerConfig::load(&path).unwrap_err().to_string().contains("ServerID must be 1..=7"));
        let long = format!(
            r#"{{"ServerID": 1, "CoordAddr": "x", "ServerAddr": "127.0.0.1:1", "ServerServerAddr": "127.0.0.1:2",
                "ServerListenAddr": "127.0.0.1:3", "ClientListenAddr": "127.0.0.1:4", "Secret": "{}"}}"#,
            "s".repeat(crate::peer::frame::MAX_SECRET_BYTES + 1)
        );
        let (_d, path) = write(&long);
        let e = ServerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("Secret is 1025 bytes, above the limit of 1024"), "{e}");
        // A valid config but for one field: the error names it.
        let with = |field: &str| {
            let (_d, path) = write(&format!(
                r#"{{"ServerID": 1, "CoordAddr": "x", "ServerAddr": "127.0.0.1:1", "ServerServerAddr": "127.0.0.1:2",
                    "ServerListenAddr": "127.0.0.1:3", "ClientListenAddr": "127.0.0.1:4", {field}}}"#
            ));
            ServerConfig::load(&path).unwrap_err().to_string()
        };
        for (field, error) in [
            (r#""CommitPollMicros": 10001"#, "CommitPollMicros must be at most 10000, not 10001"),
            (r#""ClientPollMicros": 20000"#, "ClientPollMicros must be at most 10000, not 20000"),
            (r#""MaxClientConnections": 0"#, "MaxClientConnections must be from 1 to 1048576, not 0"),
            (r#""MaxClientConnections": 4000000000000000000"#, "MaxClientConnections must be from 1 to 1048576"),
        ] {
            let e = with(field);
            assert!(e.contains(error), "{field}: {e}");
        }
        let e = ServerConfig::load(Path::new("/nonexistent.json")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read config"), "{e}");
    }
}
