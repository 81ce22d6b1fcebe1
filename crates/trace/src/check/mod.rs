//! The trace checker: properties every KVRaft trace must have.
//!
//! Safety findings are errors; completeness findings (something started
//! and never finished, records missing) are warnings, since a process may
//! be killed mid-operation or a tracer may drop records under load. The
//! checks, by file:
//!
//! - [`clocks`]: along each host no clock entry decreases and the host's
//!   own entry strictly grows (gaps and restarts are warnings).
//! - [`tokens`]: every `ReceiveTokenTrace` follows its `GenerateTokenTrace`
//!   (same `Body.Token`) in clock order and trace id.
//! - [`cluster`]: one leader per term, `AllServersJoined` only after every
//!   member's join was received, `LeaderFailOver` only after the previous
//!   leader's `ServerFail`.
//! - [`kv`]: no read returns a value no put wrote, nor a value a completed
//!   later put had overwritten before the read began (stale read); puts,
//!   gets and server-side requests that never finished (warnings).
//!
//! "Happened before" is always judged by vector clocks, never by file
//! order: the tracing server writes records in arrival order, which is
//! causal only along each host.

mod clocks;
mod cluster;
mod kv;
pub(crate) mod tokens;

use std::collections::BTreeSet;
use std::fmt;

use crate::record::Record;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// A safety property is violated.
    Error,
    /// Something is incomplete; fails the check only in strict mode.
    Warning,
}

/// A record a finding is about, as a reader finds it in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// 1-based line in the trace file (or position in the slice).
    pub line: usize,
    pub host: String,
    pub tag: String,
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} ({} {})", self.line, self.host, self.tag)
    }
}

/// One violated property, with the records involved (the offending one
/// first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Short name of the property, e.g. `clock-monotonic`.
    pub check: &'static str,
    pub message: String,
    pub records: Vec<RecordRef>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}[{}]", self.check)?;
        if let Some((first, rest)) = self.records.split_first() {
            write!(f, " {first}")?;
            write!(f, ": {}", self.message)?;
            if !rest.is_empty() {
                f.write_str(" (see ")?;
                for (i, r) in rest.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{r}")?;
                }
                f.write_str(")")?;
            }
            Ok(())
        } else {
            write!(f, ": {}", self.message)
        }
    }
}

/// Everything [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    /// Records checked.
    pub records: usize,
    /// Distinct hosts (tracer identities) seen.
    pub hosts: usize,
    /// Whether warnings fail the check.
    pub strict: bool,
}

impl CheckReport {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    /// Errors always fail; warnings fail only in strict mode.
    pub fn passed(&self) -> bool {
        self.errors() == 0 && (!self.strict || self.warnings() == 0)
    }

    /// Findings of one property (e.g. `"stale-read"`).
    pub fn of(&self, check: &str) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.check == check)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }
}

impl fmt::Display for CheckReport {
    /// One finding per line, then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        write!(
            f,
            "checked {} records from {} hosts: {} errors, {} warnings{}: {}",
            self.records,
            self.hosts,
            self.errors(),
            self.warnings(),
            if self.strict { " (strict)" } else { "" },
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// Checks a trace (records in file order). With `strict`, warnings fail
/// the report too.
pub fn check(records: &[Record], strict: bool) -> CheckReport {
    let mut ctx = Ctx { records, findings: Vec::new() };
    clocks::check(&mut ctx);
    tokens::check(&mut ctx);
    cluster::check(&mut ctx);
    kv::check(&mut ctx);
    let mut findings = ctx.findings;
    // Stable: errors first, then by the offending record's line.
    findings.sort_by_key(|f| (f.severity, f.records.first().map_or(0, |r| r.line)));
    let hosts: BTreeSet<&str> = records.iter().map(|r| r.tracer_identity.as_str()).collect();
    CheckReport { findings, records: records.len(), hosts: hosts.len(), strict }
}

/// What the individual checks share.
pub(crate) struct Ctx<'a> {
    pub records: &'a [Record],
    pub findings: Vec<Finding>,
}

impl Ctx<'_> {
    /// `records[a]` happened before `records[b]` (by their clocks).
    pub fn hb(&self, a: usize, b: usize) -> bool {
        self.records[a].vector_clock.happened_before(&self.records[b].vector_clock)
    }

    /// Indices of the records with `tag`, in file order.
    pub fn tagged<'s>(&'s self, tag: &'s str) -> impl Iterator<Item = usize> + 's {
        self.records.iter().enumerate().filter(move |(_, r)| r.tag == tag).map(|(i, _)| i)
    }

    pub fn error(&mut self, check: &'static str, at: &[usize], message: String) {
        self.push(Severity::Error, check, at, message);
    }

    pub fn warning(&mut self, check: &'static str, at: &[usize], message: String) {
        self.push(Severity::Warning, check, at, message);
    }

    fn push(&mut self, severity: Severity, check: &'static str, at: &[usize], message: String) {
        let records = at
            .iter()
            .map(|&i| {
                let r = &self.records[i];
                RecordRef { line: r.line_or(i), host: r.tracer_identity.clone(), tag: r.tag.clone() }
            })
            .collect();
        self.findings.push(Finding { severity, check, message, records });
    }
}
