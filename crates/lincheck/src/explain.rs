//! Turning "key k has no linearization" into something a person can debug:
//! the shortest failing prefix of the key's history, and where the search
//! got stuck in it.
//!
//! Prefixes are taken in event order. In the prefix of the first `k` events,
//! an operation whose call is inside but whose return is not becomes an
//! unknown outcome (a get is dropped). Such a *relaxed* prefix is implied by
//! the full history: restrict any linearization of the full history to the
//! prefix's operations and it linearizes the relaxed prefix too (operations
//! cut off were all called after everything that returned inside it, and the
//! relaxed ones may go last with any output). So if a relaxed prefix fails,
//! every longer one fails, and a binary search finds the shortest. Its
//! operations with their real outcomes are a failing history on their own,
//! since restoring outcomes only adds constraints.

use crate::events::{Kind, ordered_events};
use crate::history::{Op, Operation, ValueDisplay};
use crate::wgl::{Outcome, search};

/// How many operations of the longest partial linearization to name.
const SHOWN_TAIL: usize = 10;

/// A failing relaxed prefix and what the search found in it.
struct Failing {
    /// Number of events in the prefix.
    len: usize,
    /// Index into the key's operations of each relaxed operation.
    origin: Vec<usize>,
    /// Longest partial linearization, as indices into the relaxed operations.
    longest: Vec<usize>,
    /// Register value after it.
    state: Option<String>,
}

/// Shrinks a failing key history (`ops`, ordered by call time; the full
/// search found `longest`/`state`) and explains it. Returns the operations of
/// the shortest failing prefix, in the order of `ops`, and a one-line
/// explanation whose `[i]` refer to positions in that list.
pub(crate) fn explain(
    ops: &[&Operation],
    longest: Vec<usize>,
    state: Option<String>,
    max_states: usize,
) -> (Vec<Operation>, String) {
    let events = ordered_events(ops);
    let mut call_pos = vec![0; ops.len()];
    let mut ret_pos = vec![0; ops.len()];
    for (pos, e) in events.iter().enumerate() {
        match e.kind {
            Kind::Call => call_pos[e.op] = pos,
            Kind::Return => ret_pos[e.op] = pos,
        }
    }

    let mut failing = Failing { len: events.len(), origin: (0..ops.len()).collect(), longest, state };
    // Invariant: the prefix of `lo` events is not known to fail, the prefix of
    // `hi` events fails. (With an exhausted budget "not known to fail" may
    // hide a failure, so the result is then short but maybe not shortest.)
    let (mut lo, mut hi) = (0, events.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let (relaxed, origin) = relaxed_prefix(ops, &call_pos, &ret_pos, mid);
        match search(&relaxed, max_states) {
            Outcome::Violation { longest, state } => {
                hi = mid;
                failing = Failing { len: mid, origin, longest, state };
            }
            Outcome::Linearizable | Outcome::Unknown => lo = mid,
        }
    }

    // Positions in the shown list, for the ops inside the prefix.
    let mut shown_pos = vec![usize::MAX; ops.len()];
    let mut shown = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if call_pos[i] < failing.len {
            shown_pos[i] = shown.len();
            shown.push((*op).clone());
        }
    }
    let order: Vec<usize> = failing.longest.iter().map(|&r| shown_pos[failing.origin[r]]).collect();
    let last = failing.len.checked_sub(1).map(|pos| events[pos]);
    let blocker = last.filter(|e| e.kind == Kind::Return).map(|e| (shown_pos[e.op], ops[e.op]));

    let mut text = format!("these {} ops admit no linearization", shown.len());
    if let Some((at, op)) = blocker {
        let ret = op.ret.map_or_else(|| "?".to_owned(), |t| t.to_string());
        let out = op.output.as_ref().map_or_else(|| "?".to_owned(), |o| o.to_string());
        text.push_str(&format!(" once [{at}] ({} -> {out}) returns at t={ret}", op.op));
    }
    text.push_str(&format!(
        "; the longest linearizable prefix found has {} ops ({}), leaving the key {}",
        order.len(),
        list(&order),
        ValueDisplay(failing.state.as_deref()),
    ));
    (shown, text)
}

/// The relaxed prefix of the first `len` events (see the module docs), with
/// the index in `ops` of each operation kept.
fn relaxed_prefix(
    ops: &[&Operation],
    call_pos: &[usize],
    ret_pos: &[usize],
    len: usize,
) -> (Vec<Operation>, Vec<usize>) {
    let mut relaxed = Vec::new();
    let mut origin = Vec::new();
    for (i, &op) in ops.iter().enumerate() {
        if call_pos[i] >= len {
            continue;
        }
        if ret_pos[i] < len {
            relaxed.push(op.clone());
        } else if op.op != Op::Get {
            relaxed.push(Operation { ret: None, output: None, ..op.clone() });
        } else {
            continue;
        }
        origin.push(i);
    }
    (relaxed, origin)
}

/// `[0] [2] [1]`, or `... [40] [41]` keeping the last few.
fn list(order: &[usize]) -> String {
    if order.is_empty() {
        return "none".to_owned();
    }
    let skip = order.len().saturating_sub(SHOWN_TAIL);
    let mut parts: Vec<String> = order[skip..].iter().map(|i| format!("[{i}]")).collect();
    if skip > 0 {
        parts.insert(0, "...".to_owned());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Output;

    fn op(call: u64, ret: u64, op: Op, output: Output) -> Operation {
        Operation { client: 0, key: "k".into(), op, call, ret: Some(ret), output: Some(output) }
    }

    #[test]
    fn shrinks_to_the_ops_called_before_the_stuck_return() {
        let put = |v: &str| Op::Put { value: v.into() };
        let read = |v: &str| Output::Value { value: Some(v.into()) };
        let ops = [
            op(0, 10, put("a"), Output::Ok),
            op(20, 30, put("b"), Output::Ok),
            op(40, 50, Op::Get, read("a")), // stale
            op(45, 100, put("c"), Output::Ok),
            op(60, 70, Op::Get, read("c")),
            op(80, 90, Op::Get, read("c")),
        ];
        let refs: Vec<&Operation> = ops.iter().collect();
        let Outcome::Violation { longest, state } = search(&refs, 1000) else {
            panic!("history should fail");
        };
        let (shown, text) = explain(&refs, longest, state, 1000);
        // The get at 40..50 fails; the put called at 45 is inside the prefix.
        assert_eq!(shown, ops[..4].to_vec());
        assert!(text.contains("once [2] (get -> \"a\") returns at t=50"), "{text}");
        assert!(text.starts_with("these 4 ops"), "{text}");
    }

    #[test]
    fn list_keeps_the_tail() {
        assert_eq!(list(&[]), "none");
        assert_eq!(list(&[0, 2, 1]), "[0] [2] [1]");
        let long: Vec<usize> = (0..12).collect();
        assert_eq!(list(&long), "... [2] [3] [4] [5] [6] [7] [8] [9] [10] [11]");
    }
}
