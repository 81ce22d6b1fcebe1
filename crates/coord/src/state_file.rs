//! What the coord keeps on disk: the highest term it has used (so a
//! restarted coord never reuses one), the membership (so it can rebuild
//! its view without waiting for joins) and each member's incarnation (so a
//! restarted coord tells a server it still knows from one it must hear
//! from again, and a retried join from a restart).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub control_addr: String,
    pub fcheck_addr: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub term: u64,
    pub members: Vec<Member>,
    pub join_complete: bool,
    /// Each member's incarnation (`JoinRequest.incarnation`) as of its last
    /// join. Absent from files written before it was kept: such a coord
    /// knows no incarnation, and every server joins again once.
    #[serde(default)]
    pub incarnations: BTreeMap<u64, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("coord state {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("coord state {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("coord state {path} is corrupt: term {term} is out of range")]
    TermOutOfRange { path: PathBuf, term: u64 },
}

pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn open(dir: &Path) -> Result<(Self, Persisted), StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io { path: dir.into(), source })?;
        let path = dir.join("coord_state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: Persisted = serde_json::from_slice(&bytes)
                    .map_err(|source| StateError::Corrupt { path: path.clone(), source })?;
                if state.term > kvraft_proto::MAX_TERM_OR_INDEX {
                    return Err(StateError::TermOutOfRange { path, term: state.term });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        Ok((StateFile { dir: dir.into() }, state))
    }

    /// Durable on return: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, state: &Persisted) -> Result<(), StateError> {
        let path = self.dir.join("coord_state.json");
        let tmp = self.dir.join("coord_state.json.tmp");
        let io = |source| StateError::Io { path: path.clone(), source };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&serde_json::to_vec_pretty(state).expect("plain data serializes")).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (f, s) = StateFile::open(dir.path()).unwrap();
        assert_eq!(s, Persisted::default());
        let s = Persisted {
            term: 7,
            members: vec![Member { id: 1, ..Default::default() }],
            join_complete: true,
            incarnations: BTreeMap::from([(1, 1_700_000_000_000_000_000)]),
        };
        f.save(&s).unwrap();
        assert_eq!(StateFile::open(dir.path()).unwrap().1, s);
        std::fs::write(dir.path().join("coord_state.json"), "{").unwrap();
        assert!(matches!(StateFile::open(dir.path()), Err(StateError::Corrupt { .. })));
        // A term the coord could not step past.
        let huge = Persisted { term: u64::MAX, ..s };
        std::fs::write(dir.path().join("coord_state.json"), serde_json::to_vec(&huge).unwrap()).unwrap();
        let err = StateFile::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("out of range"), "{err}");
    }

    /// A file written before incarnations were kept still loads: no
    /// incarnation is known, the rest is as it was.
    #[test]
    fn a_state_file_without_incarnations_loads() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{
  "term": 4,
  "members": [
    {"id": 1, "peer_addr": "127.0.0.1:1", "client_addr": "127.0.0.1:2",
     "control_addr": "127.0.0.1:3", "fcheck_addr": "127.0.0.1:4"}
  ],
  "join_complete": true
}"#;
        std::fs::write(dir.path().join("coord_state.json"), old).unwrap();
        let (f, s) = StateFile::open(dir.path()).unwrap();
        assert_eq!((s.term, s.members.len(), s.join_complete), (4, 1, true));
        assert_eq!(s.members[0].fcheck_addr, "127.0.0.1:4");
        assert!(s.incarnations.is_empty());
        // Saved again, it keeps them from then on.
        let s = Persisted { incarnations: BTreeMap::from([(1, 9)]), ..s };
        f.save(&s).unwrap();
        assert_eq!(StateFile::open(dir.path()).unwrap().1, s);
    }
}
