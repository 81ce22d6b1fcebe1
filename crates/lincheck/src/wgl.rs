//! The search: Wing & Gong's backtracking linearizability check with Lowe's
//! memoisation, in the shape Porcupine uses, for the operations of one key.
//!
//! The history is a doubly-linked list of call and return events in
//! real-time order (see [`crate::events`]). Walking it from the head:
//!
//! * at a call, try to linearize that operation now: if the model accepts its
//!   output and the resulting (set of linearized operations, register value)
//!   has not been seen before, push it on the stack, unlink its call and
//!   return from the list and restart from the head;
//! * at a return, the operation it ends was not linearized although it must
//!   have taken effect by now: undo the most recent linearization (pop, relink)
//!   and try the call after it instead. With nothing to undo there is no
//!   linearization.
//!
//! The list empties exactly when every operation has been linearized.
//! Unknown outcomes return at +infinity with an unconstrained output, so the
//! search may place them anywhere after their call; placing one after all
//! others is the same as it never taking effect, since nothing observes it.
//!
//! The memo is what keeps this from being exponential in practice: two paths
//! that linearized the same set of operations and reached the same register
//! value have the same future, so the second is pruned. Its size is the
//! search budget.

use std::borrow::{Borrow, Cow};
use std::collections::{HashMap, HashSet};

use crate::events::{Event, Kind, ordered_events};
use crate::history::Operation;
use crate::model::{Effect, step};

/// What the search concluded about one key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Linearizable,
    /// The budget ran out first.
    Unknown,
    /// No linearization exists.
    Violation {
        /// The longest sequence of operations (indices into the input) the
        /// search managed to linearize: where a human should start looking.
        longest: Vec<usize>,
        /// The register value after `longest`.
        state: Option<String>,
    },
}

/// Identifier of an interned register value; [`ABSENT`] is the absent key.
type StateId = usize;
const ABSENT: StateId = 0;

/// Register values seen so far, numbered, so that the memo and the stack hold
/// an integer rather than a string. Equal ids iff equal values, so memo
/// comparisons stay exact.
struct States {
    values: Vec<Option<Box<str>>>,
    ids: HashMap<Box<str>, StateId>,
}

impl States {
    fn new() -> Self {
        States { values: vec![None], ids: HashMap::new() }
    }

    fn value(&self, id: StateId) -> Option<&str> {
        self.values[id].as_deref()
    }

    fn intern(&mut self, value: Cow<'_, str>) -> StateId {
        if let Some(&id) = self.ids.get(value.as_ref()) {
            return id;
        }
        let id = self.values.len();
        let boxed: Box<str> = value.into_owned().into_boxed_str();
        self.values.push(Some(boxed.clone()));
        self.ids.insert(boxed, id);
        id
    }
}

/// A memo entry: which operations are linearized, and the register value.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Config {
    linearized: Vec<u64>,
    state: StateId,
}

impl Config {
    fn set(&mut self, op: usize) {
        self.linearized[op / 64] |= 1 << (op % 64);
    }
    fn clear(&mut self, op: usize) {
        self.linearized[op / 64] &= !(1 << (op % 64));
    }
}

/// Event list with O(1) unlink and relink ("dancing links"). Nodes
/// `0..len` are events; `head` and `tail` are sentinels.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    tail: usize,
}

impl EventList {
    fn new(len: usize) -> Self {
        let head = len;
        let tail = len + 1;
        let mut next = vec![0; len + 2];
        let mut prev = vec![0; len + 2];
        // head -> 0 -> 1 -> ... -> len-1 -> tail
        for node in 0..len {
            prev[node] = if node == 0 { head } else { node - 1 };
            next[node] = if node + 1 == len { tail } else { node + 1 };
        }
        next[head] = if len == 0 { tail } else { 0 };
        prev[tail] = if len == 0 { head } else { len - 1 };
        EventList { next, prev, head, tail }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn is_empty(&self) -> bool {
        self.first() == self.tail
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    /// Undoes [`unlink`](Self::unlink); valid only in reverse (LIFO) order.
    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }
}

/// Checks one key's operations, exploring at most `max_states` distinct
/// configurations. The operations must be [valid](Operation::validate).
pub(crate) fn search<O: Borrow<Operation>>(ops: &[O], max_states: usize) -> Outcome {
    let events = ordered_events(ops);
    let mut ret_node = vec![0; ops.len()];
    for (node, e) in events.iter().enumerate() {
        if e.kind == Kind::Return {
            ret_node[e.op] = node;
        }
    }

    let mut list = EventList::new(events.len());
    let mut states = States::new();
    let mut config = Config { linearized: vec![0; ops.len().div_ceil(64)], state: ABSENT };
    let mut memo: HashSet<Config> = HashSet::new();
    // (call node, register value before it was linearized)
    let mut stack: Vec<(usize, StateId)> = Vec::new();
    let mut longest = Longest::default();

    let mut entry = list.first();
    while !list.is_empty() {
        let event = events[entry];
        match event.kind {
            Kind::Call => {
                let op: &Operation = ops[event.op].borrow();
                let Some(effect) = step(states.value(config.state), &op.op, op.output.as_ref()) else {
                    entry = list.next[entry];
                    continue;
                };
                let before = config.state;
                config.state = match effect {
                    Effect::Keep => before,
                    Effect::Remove => ABSENT,
                    Effect::Set(value) => states.intern(value),
                };
                config.set(event.op);
                if memo.contains(&config) {
                    config.clear(event.op);
                    config.state = before;
                    entry = list.next[entry];
                    continue;
                }
                if memo.len() >= max_states {
                    return Outcome::Unknown;
                }
                memo.insert(config.clone());
                stack.push((entry, before));
                longest.pushed(&stack, &events, op.ret.is_none(), config.state);
                list.unlink(entry);
                list.unlink(ret_node[event.op]);
                entry = list.first();
            }
            Kind::Return => {
                let Some((call, before)) = stack.pop() else {
                    let state = states.value(longest.state).map(str::to_owned);
                    return Outcome::Violation { longest: longest.ops, state };
                };
                let op = events[call].op;
                longest.popped(stack.len(), ops[op].borrow().ret.is_none());
                config.clear(op);
                config.state = before;
                list.relink(ret_node[op]);
                list.relink(call);
                entry = list.next[call];
            }
        }
    }
    Outcome::Linearizable
}

/// The best partial linearization seen so far, kept incrementally.
///
/// "Best" counts completed operations only: the search eagerly linearizes
/// unknown-outcome operations wherever it can, and a record inflated by those
/// would mostly show a person where they were tried, not where it got stuck.
/// `ops[..common]` is always a prefix of the current stack, so a new record
/// copies only the part that changed, not the whole stack.
#[derive(Default)]
struct Longest {
    ops: Vec<usize>,
    state: StateId,
    score: usize,
    common: usize,
    /// Completed operations on the current stack.
    completed: usize,
}

impl Longest {
    fn pushed(&mut self, stack: &[(usize, StateId)], events: &[Event], pending: bool, state: StateId) {
        let depth = stack.len();
        let top = events[stack[depth - 1].0].op;
        if self.common == depth - 1 && self.ops.get(depth - 1) == Some(&top) {
            self.common = depth;
        }
        if !pending {
            self.completed += 1;
        }
        if self.completed > self.score {
            self.ops.truncate(self.common);
            self.ops.extend(stack[self.common..].iter().map(|&(node, _)| events[node].op));
            self.common = depth;
            self.score = self.completed;
            self.state = state;
        }
    }

    fn popped(&mut self, depth: usize, pending: bool) {
        self.common = self.common.min(depth);
        if !pending {
            self.completed -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Output};

    fn put(call: u64, ret: u64, v: &str) -> Operation {
        Operation {
            client: 0,
            key: "k".into(),
            op: Op::Put { value: v.into() },
            call,
            ret: Some(ret),
            output: Some(Output::Ok),
        }
    }
    fn get(call: u64, ret: u64, v: Option<&str>) -> Operation {
        Operation {
            client: 1,
            key: "k".into(),
            op: Op::Get,
            call,
            ret: Some(ret),
            output: Some(Output::Value { value: v.map(str::to_owned) }),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(search::<Operation>(&[], 10), Outcome::Linearizable);
    }

    #[test]
    fn reports_the_longest_partial_linearization() {
        // put a; put b; get -> a (stale). The search linearizes both puts,
        // then cannot place the get.
        let ops = [put(0, 1, "a"), put(2, 3, "b"), get(4, 5, Some("a"))];
        assert_eq!(search(&ops, 100), Outcome::Violation { longest: vec![0, 1], state: Some("b".into()) });
    }

    #[test]
    fn zero_budget_is_unknown_never_linearizable() {
        let ops = [put(0, 1, "a")];
        assert_eq!(search(&ops, 0), Outcome::Unknown);
        assert_eq!(search(&ops, 1), Outcome::Linearizable);
    }

    #[test]
    fn more_than_64_ops_use_several_bitset_words() {
        let mut ops = Vec::new();
        for i in 0..100u64 {
            ops.push(put(10 * i, 10 * i + 5, &i.to_string()));
        }
        ops.push(get(2000, 2001, Some("99")));
        assert_eq!(search(&ops, 1000), Outcome::Linearizable);
        ops.push(get(2002, 2003, Some("98")));
        assert!(matches!(search(&ops, 1000), Outcome::Violation { .. }));
    }
}
