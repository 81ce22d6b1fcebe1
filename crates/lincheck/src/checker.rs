//! The entry points: split a history by key and check each key on its own.
//!
//! Splitting is sound because linearizability is compositional (Herlihy &
//! Wing's locality): a history is linearizable iff each object's
//! sub-history is, and each key is an independent register. It is also
//! what makes the search cheap: its cost grows with the concurrency and the
//! length of one key's history, not of the whole.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Error;
use crate::explain::explain;
use crate::history::{Op, Operation};
use crate::jsonl::parse_jsonl;
use crate::report::{Report, Verdict, Violation};
use crate::wgl::{Outcome, search};

/// The budget [`check`] uses: distinct (linearized set, value) configurations
/// explored per key before giving up with [`Verdict::Unknown`]. Each costs
/// about `ops_of_that_key / 8` bytes of memo, so a million is a few hundred
/// MB only for keys with thousands of operations.
pub const DEFAULT_MAX_STATES_PER_KEY: usize = 1_000_000;

/// Checks `history` with [`DEFAULT_MAX_STATES_PER_KEY`].
pub fn check(history: &[Operation]) -> Report {
    check_with_budget(history, DEFAULT_MAX_STATES_PER_KEY)
}

/// Checks `history`, exploring at most `max_states_per_key` configurations
/// per key.
///
/// Keys are checked in lexicographic order and the first violated one is
/// reported (a violation outranks an exhausted budget on another key). An
/// ill-formed operation (see [`Operation::validate`]) cannot be part of any
/// real history, so it is reported as a violation of its key naming the
/// defect, rather than silently ignored.
pub fn check_with_budget(history: &[Operation], max_states_per_key: usize) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let report = |verdict| Report { verdict, ops_checked: history.len(), keys: by_key.len() };

    if let Some((op, err)) = history.iter().find_map(|op| op.validate().err().map(|e| (op, e))) {
        return report(Verdict::NotLinearizable(Violation {
            key: op.key.clone(),
            ops: vec![op.clone()],
            explanation: format!("ill-formed operation: it {err}"),
        }));
    }

    let mut exhausted = false;
    for (key, ops) in &by_key {
        let ops = relevant(ops);
        match search(&ops, max_states_per_key) {
            Outcome::Linearizable => {}
            Outcome::Unknown => exhausted = true,
            Outcome::Violation { longest, state } => {
                let (ops, explanation) = explain(&ops, longest, state, max_states_per_key);
                return report(Verdict::NotLinearizable(Violation { key: (*key).to_owned(), ops, explanation }));
            }
        }
    }
    report(if exhausted { Verdict::Unknown } else { Verdict::Linearizable })
}

/// Reads, parses and checks a JSON-lines history file.
pub fn check_file(path: &Path) -> Result<Report, Error> {
    let text = std::fs::read_to_string(path).map_err(|cause| Error::Io { path: path.to_owned(), cause })?;
    let history = parse_jsonl(&text).map_err(|cause| Error::Parse { path: path.to_owned(), cause })?;
    Ok(check(&history))
}

/// One key's operations as the search wants them: gets with unknown outcome
/// dropped (they change nothing and constrain nothing, but would multiply the
/// states explored), the rest ordered by call time so that reports read
/// chronologically.
fn relevant<'a>(ops: &[&'a Operation]) -> Vec<&'a Operation> {
    let mut kept: Vec<&Operation> = ops.iter().copied().filter(|op| !(op.is_pending() && op.op == Op::Get)).collect();
    // Stable sort: equal call times keep input order.
    kept.sort_by_key(|op| (op.call, op.ret.is_none(), op.ret));
    kept
}
