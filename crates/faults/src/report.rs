//! What a run found, for code (the fields) and for people (`Display`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The outcome of one harness run.
///
/// A run passed only if [`Report::passed`]: the history is linearizable,
/// the cluster recovered after healing, the servers' committed logs agree,
/// and no process died that the nemesis did not kill. `linearizable` alone
/// is not the verdict.
#[derive(Clone, Debug)]
pub struct Report {
    /// Operations the clients issued, and how they ended.
    pub ops: usize,
    pub ok: usize,
    /// Definitely not applied (BadRequest, Stale).
    pub failed: usize,
    /// Maybe applied (Timeout, QuorumImpossible).
    pub unknown: usize,
    /// Every nemesis action and phase, `t=<seconds>s <what>`.
    pub nemesis_actions: Vec<String>,
    /// The checker proved the history linearizable.
    pub linearizable: bool,
    /// The checker's verdict, with the failing operations if any.
    pub lincheck_summary: String,
    /// The checked history (JSON lines; `kvraft lincheck FILE` re-checks it).
    pub history_file: PathBuf,
    /// Faults injected, by kind (`kill-server`, `pause-server`,
    /// `partition`, `kill-coord`, `slow-disk`); skipped ones not counted.
    pub faults_by_kind: BTreeMap<String, usize>,
    /// Every client completed operations after the final heal, in time.
    pub recovered: bool,
    /// How recovery went, in one line.
    pub recovery: String,
    /// No two servers disagree on a committed entry.
    pub logs_consistent: bool,
    /// The log comparison, in one line.
    pub log_check: String,
    /// Snapshots leaders started sending to followers, and snapshots
    /// followers installed, counted in the servers' (info-level) logs.
    pub snapshots_sent: usize,
    pub snapshots_installed: usize,
    /// Coord or server processes that exited without the nemesis killing
    /// them (with their exit status): each one is a bug or an outside kill.
    pub unexpected_exits: Vec<String>,
    /// Operations in the checked history (failed ops and unknown reads are
    /// left out of it).
    pub checked_ops: usize,
    /// The command that replays this run's schedule and workload.
    pub replay: String,
    /// Configs, data, logs, history.
    pub work_dir: PathBuf,
    /// What this run's namespace names start with (all deleted by now).
    pub netns_prefix: String,
    /// Set when the run was on loopback: which faults it skipped, and why.
    pub skipped: Option<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.linearizable && self.recovered && self.logs_consistent && self.unexpected_exits.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<String> = self.faults_by_kind.iter().map(|(k, n)| format!("{k}={n}")).collect();
        writeln!(
            f,
            "operations: {} (ok {}, failed {}, unknown {}); {} checked",
            self.ops, self.ok, self.failed, self.unknown, self.checked_ops
        )?;
        writeln!(f, "faults: {}", kinds.join(" "))?;
        if let Some(skipped) = &self.skipped {
            writeln!(f, "note: {skipped}")?;
        }
        writeln!(f, "recovery: {}", self.recovery)?;
        if self.unexpected_exits.is_empty() {
            writeln!(f, "processes: none exited unless killed by the nemesis")?;
        }
        for exit in &self.unexpected_exits {
            writeln!(f, "UNEXPECTED EXIT: {exit}")?;
        }
        writeln!(f, "logs: {}", self.log_check)?;
        writeln!(
            f,
            "snapshots: {} sent to followers, {} installed by followers (counted in the servers' info-level logs)",
            self.snapshots_sent, self.snapshots_installed
        )?;
        writeln!(f, "linearizability: {}", self.lincheck_summary.trim_end())?;
        writeln!(f, "history: {}", self.history_file.display())?;
        writeln!(f, "files: {}", self.work_dir.display())?;
        writeln!(f, "verdict: {}", if self.passed() { "PASS" } else { "FAIL" })?;
        write!(f, "replay: {}", self.replay)
    }
}
