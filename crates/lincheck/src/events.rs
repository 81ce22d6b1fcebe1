//! Turning operations into one totally ordered list of call and return
//! events: the real-time order the search must respect.
//!
//! Ties matter, because harnesses often use coarse clocks:
//!
//! * An operation that returns at `t` and one that is called at `t` are
//!   **not** concurrent: the return sorts first, so the first must be
//!   linearized before the second. (A client that issues its next request at
//!   the instant it got a reply must see its own write.)
//! * An instantaneous operation (`call == ret`) still has its call before its
//!   return. Instantaneous operations at the same instant are treated as
//!   concurrent with each other: by the rule above each would have to precede
//!   the other, which is impossible, and picking an arbitrary order could
//!   report a violation that is only an artefact of clock resolution.
//!
//! So at equal times the order is: returns of non-instantaneous operations,
//! calls of instantaneous ones, returns of instantaneous ones, calls of
//! non-instantaneous ones. Unknown outcomes return at +infinity, after
//! everything. Remaining ties break by operation index, for determinism.

use std::borrow::Borrow;

use crate::history::Operation;

/// Whether an event starts or ends an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Call,
    Return,
}

/// A call or return of `ops[op]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub op: usize,
    pub kind: Kind,
}

/// A point in time; `Never` is the return time of an unknown outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Time {
    At(u64),
    Never,
}

/// Returns the `2 * ops.len()` events of `ops` in the order described in the
/// module docs. Each operation's call comes before its return provided
/// `call <= ret` (see [`Operation::validate`]).
pub(crate) fn ordered_events<O: Borrow<Operation>>(ops: &[O]) -> Vec<Event> {
    let mut keyed: Vec<((Time, u8, usize), Event)> = Vec::with_capacity(2 * ops.len());
    for (i, o) in ops.iter().enumerate() {
        let o: &Operation = o.borrow();
        let instant = o.ret == Some(o.call);
        let (call_rank, ret_rank) = if instant { (1, 2) } else { (3, 0) };
        let ret = o.ret.map_or(Time::Never, Time::At);
        keyed.push(((Time::At(o.call), call_rank, i), Event { op: i, kind: Kind::Call }));
        keyed.push(((ret, ret_rank, i), Event { op: i, kind: Kind::Return }));
    }
    keyed.sort_unstable_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Output};

    fn op(call: u64, ret: Option<u64>) -> Operation {
        Operation {
            client: 0,
            key: "k".into(),
            op: Op::Get,
            call,
            ret,
            output: ret.map(|_| Output::Value { value: None }),
        }
    }

    fn render(ops: &[Operation]) -> String {
        ordered_events(ops)
            .iter()
            .map(|e| match e.kind {
                Kind::Call => format!("c{}", e.op),
                Kind::Return => format!("r{}", e.op),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn return_at_t_precedes_call_at_t() {
        assert_eq!(render(&[op(10, Some(20)), op(20, Some(30))]), "c0 r0 c1 r1");
        assert_eq!(render(&[op(20, Some(30)), op(10, Some(20))]), "c1 r1 c0 r0");
    }

    #[test]
    fn instantaneous_ops_keep_call_before_return_and_overlap_each_other() {
        // op0 ends at 5, op1 and op2 are instantaneous at 5, op3 starts at 5.
        let ops = [op(1, Some(5)), op(5, Some(5)), op(5, Some(5)), op(5, Some(9))];
        assert_eq!(render(&ops), "c0 r0 c1 c2 r1 r2 c3 r3");
    }

    #[test]
    fn unknown_outcomes_return_after_everything() {
        let ops = [op(1, None), op(u64::MAX, Some(u64::MAX))];
        assert_eq!(render(&ops), "c0 c1 r1 r0");
    }
}
