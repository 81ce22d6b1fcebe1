//! Differential test: on hundreds of seeded random single-key histories our
//! verdict must equal that of `todc-utils`' independent WGL checker.
//!
//! todc has no notion of an unknown outcome (every call needs a response),
//! but it can still express one: give the operation a response after every
//! other event and an unconstrained output. That is exactly the semantics we
//! implement (effect somewhere after the call; taking effect last is the same
//! as never, since nothing observes it), so unknown outcomes are cross-checked
//! too, including unknown gets, which we drop before searching and todc keeps.
//! The sequential specification todc checks against is written out below
//! independently of the crate's model, so the two checkers share nothing but
//! the event order, whose tie rules are tested separately in
//! `known_histories.rs`.

mod common;

use common::{Sim, Values, simulate};
use kvraft_lincheck::{Op, Operation, Output, Verdict, check};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::specifications::Specification;

/// A register of strings, as todc sees it. An operation carries its output
/// (`None` = unknown, anything goes).
struct KvSpec;

impl Specification for KvSpec {
    type State = Option<String>;
    type Operation = (Op, Option<Output>);

    fn init() -> Self::State {
        None
    }

    fn apply((op, output): &Self::Operation, state: &Self::State) -> (bool, Self::State) {
        let next = match op {
            Op::Get => state.clone(),
            Op::Put { value } => Some(value.clone()),
            Op::Delete => None,
            Op::Append { value } => Some(format!("{}{value}", state.as_deref().unwrap_or(""))),
            Op::Cas { expected, new } if expected == state => Some(new.clone()),
            Op::Cas { .. } => state.clone(),
        };
        let valid = match (op, output) {
            (_, None) => true,
            (Op::Get, Some(Output::Value { value })) => value == state,
            (Op::Put { .. } | Op::Delete | Op::Append { .. }, Some(Output::Ok)) => true,
            (Op::Cas { expected, .. }, Some(Output::Cas { swapped })) => *swapped == (expected == state),
            _ => false,
        };
        if valid { (true, next) } else { (false, state.clone()) }
    }
}

/// todc's verdict. Events are ordered as the crate documents: by time,
/// returns before calls at equal times except that instantaneous operations
/// at one instant overlap, unknown outcomes returning after everything.
fn todc_linearizable(history: &[Operation]) -> bool {
    // (time, rank, op index, is call); time None = +infinity.
    let mut events: Vec<((u64, u64, u8), usize, bool)> = Vec::new();
    for (i, o) in history.iter().enumerate() {
        let instant = o.ret == Some(o.call);
        events.push(((0, o.call, if instant { 1 } else { 3 }), i, true));
        let ret = match o.ret {
            Some(t) => (0, t, if instant { 2 } else { 0 }),
            None => (1, 0, 0),
        };
        events.push((ret, i, false));
    }
    events.sort_by_key(|&(key, i, _)| (key, i));
    let actions: Vec<_> = events
        .into_iter()
        .map(|(_, i, is_call)| {
            let o = &history[i];
            let payload = (o.op.clone(), o.output.clone());
            // One todc "process" per operation: todc pairs a process's calls
            // and responses in order, and our clients may abandon a request.
            let action = if is_call { Action::Call(payload) } else { Action::Response(payload) };
            (i, action)
        })
        .collect();
    WGLChecker::<KvSpec>::is_linearizable(History::from_actions(actions))
}

/// Corrupts the output of one random completed operation. Prefers gets and
/// cas, whose outputs carry information; otherwise (or sometimes) gives an
/// output of the wrong kind.
fn mutate(rng: &mut impl Rng, history: &mut [Operation]) {
    let completed: Vec<usize> = (0..history.len()).filter(|&i| history[i].ret.is_some()).collect();
    if completed.is_empty() {
        return;
    }
    let informative: Vec<usize> =
        completed.iter().copied().filter(|&i| matches!(history[i].op, Op::Get | Op::Cas { .. })).collect();
    let pool = if informative.is_empty() || rng.random_bool(0.1) { &completed } else { &informative };
    let target = &mut history[pool[rng.random_range(0..pool.len())]];
    let old = target.output.clone();
    let choices = [
        Output::Value { value: None },
        Output::Value { value: Some("a".into()) },
        Output::Value { value: Some("b".into()) },
        Output::Value { value: Some("ab".into()) },
        Output::Cas { swapped: true },
        Output::Cas { swapped: false },
        Output::Ok,
    ];
    let same_kind =
        |o: &Output| matches!((&target.op, o), (Op::Get, Output::Value { .. }) | (Op::Cas { .. }, Output::Cas { .. }));
    let candidates: Vec<&Output> =
        choices.iter().filter(|o| Some(*o) != old.as_ref()).filter(|o| same_kind(o) || rng.random_bool(0.05)).collect();
    if let Some(&new) = candidates.get(rng.random_range(0..candidates.len().max(1))) {
        target.output = Some(new.clone());
    }
}

#[test]
fn verdicts_match_todc_on_random_histories() {
    const HISTORIES: u64 = 1000;
    let mut disagreements = Vec::new();
    let (mut clean_lin, mut mutated_lin, mut mutated_not) = (0, 0, 0);
    for seed in 0..HISTORIES {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sim = Sim {
            clients: rng.random_range(2..=5),
            keys: vec!["k".into()],
            ops: rng.random_range(4..=16),
            pending: 0.15,
            max_gap: 3,
            max_duration: 6,
            values: Values::Small,
        };
        let mut history = simulate(&mut rng, &sim);
        let mutated = seed % 2 == 1;
        if mutated {
            mutate(&mut rng, &mut history);
        }

        let ours = check(&history).verdict;
        assert_ne!(ours, Verdict::Unknown, "seed {seed}: budget ran out");
        let theirs = todc_linearizable(&history);
        if ours.is_linearizable() != theirs {
            disagreements
                .push(format!("seed {seed}: ours={ours} todc={theirs}\n{}", kvraft_lincheck::to_jsonl(&history)));
        }
        match (mutated, ours.is_linearizable()) {
            (false, true) => clean_lin += 1,
            (false, false) => panic!("seed {seed}: simulated history rejected: {ours}"),
            (true, true) => mutated_lin += 1,
            (true, false) => mutated_not += 1,
        }
    }
    eprintln!("clean accepted {clean_lin}, mutated accepted {mutated_lin}, mutated rejected {mutated_not}");
    assert!(disagreements.is_empty(), "{} disagreements, first:\n{}", disagreements.len(), disagreements[0]);
    // Guard against a vacuous test: both verdicts must be well represented.
    assert_eq!(clean_lin, HISTORIES / 2);
    assert!(
        mutated_not >= HISTORIES / 4,
        "only {mutated_not} mutated histories were rejected ({mutated_lin} accepted)"
    );
}

#[test]
fn todc_adapter_agrees_on_a_known_violation() {
    // Sanity check of the adapter itself: a stale read must fail in todc.
    let h = vec![common::put(1, "k", "a", 0, 1), common::put(1, "k", "b", 2, 3), common::get(2, "k", Some("a"), 4, 5)];
    assert!(!todc_linearizable(&h));
    assert!(todc_linearizable(&h[..2]));
}
