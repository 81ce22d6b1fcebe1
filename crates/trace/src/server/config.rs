//! The tracing server's config file, with the prototype's field names
//! (`config/tracing_server_config.json`):
//!
//! ```json
//! {"ServerBind": "127.0.0.1:23000", "Secret": "", "OutputFile": "trace_output.log",
//!  "ShivizOutputFile": "shiviz_output.log"}
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where to listen, the secret tracers must present, and the two outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingServerConfig {
    /// `host:port` to listen on (port 0 picks a free one).
    pub server_bind: String,
    /// Tracers presenting another secret are refused.
    #[serde(default)]
    pub secret: String,
    /// The JSON-lines trace (`trace_output.log`).
    pub output_file: PathBuf,
    /// The ShiViz log (`shiviz_output.log`).
    pub shiviz_output_file: PathBuf,
}

/// Why the config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read tracing server config {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid tracing server config {path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("invalid tracing server config {path}: the Secret is {len} bytes, above the limit of {max}", max = crate::wire::MAX_SECRET_BYTES)]
    SecretTooLong { path: PathBuf, len: usize },
}

impl TracingServerConfig {
    /// Reads the config from a JSON file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        let cfg: Self =
            serde_json::from_str(&text).map_err(|source| ConfigError::Json { path: path.to_owned(), source })?;
        if cfg.secret.len() > crate::wire::MAX_SECRET_BYTES {
            return Err(ConfigError::SecretTooLong { path: path.to_owned(), len: cfg.secret.len() });
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_config() {
        let cfg: TracingServerConfig = serde_json::from_str(
            r#"{
                "ServerBind": "127.0.0.1:23000",
                "Secret": "",
                "OutputFile": "trace_output.log",
                "ShivizOutputFile": "shiviz_output.log"
            }"#,
        )
        .unwrap();
        assert_eq!(cfg.server_bind, "127.0.0.1:23000");
        assert_eq!(cfg.shiviz_output_file, PathBuf::from("shiviz_output.log"));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\"ServerBind\": 3}").unwrap();
        let err = TracingServerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
        assert!(!err.contains('\n'));
        let err = TracingServerConfig::from_file(dir.path().join("none.json")).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        let long = format!(
            r#"{{"ServerBind": "127.0.0.1:1", "Secret": "{}", "OutputFile": "a", "ShivizOutputFile": "b"}}"#,
            "s".repeat(crate::wire::MAX_SECRET_BYTES + 1)
        );
        std::fs::write(&path, long).unwrap();
        let err = TracingServerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("above the limit"), "{err}");
    }
}
