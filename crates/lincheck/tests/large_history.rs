//! Scale: 10,000 operations over 16 keys from 8 concurrent clients.
//!
//! "Fast" is asserted through the search budget rather than the clock, so the
//! test is deterministic on a loaded machine: the histories must be decided
//! within a budget far below the default.

mod common;

use std::time::Instant;

use common::{Sim, Values, simulate};
use kvraft_lincheck::{Op, Operation, Output, Verdict, check_with_budget};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// States per key the checks below may explore. Roughly 625 operations per
/// key are decided within it; a search that lost its memo would not be.
const BUDGET: usize = 50_000;

fn history() -> Vec<Operation> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    simulate(
        &mut rng,
        &Sim {
            clients: 8,
            keys: (0..16).map(|k| format!("key{k}")).collect(),
            ops: 10_000,
            pending: 0.005,
            max_gap: 4,
            max_duration: 20,
            values: Values::Unique,
        },
    )
}

/// Turns one completed get into a stale read, provably: it now returns the
/// value of a put `p1` although another put `p2` began after `p1` returned
/// and returned before the get began. Puts write unique values that no
/// other operation can recreate (see `Values::Unique`), so only `p1` could
/// explain the read, and `p1 < p2 < get` in real time. Returns the key and
/// the index of the get.
fn inject_stale_read(history: &mut [Operation]) -> (String, usize) {
    let done_put = |o: &Operation| matches!(o.op, Op::Put { .. }) && o.output.is_some();
    // From the middle on, so that the failing prefix is a real shrink.
    for g in history.len() / 2..history.len() {
        let get = &history[g];
        if get.op != Op::Get || get.ret.is_none() {
            continue;
        }
        let same_key = |o: &&Operation| o.key == get.key;
        let Some(p2) =
            history.iter().filter(same_key).filter(|o| done_put(o) && o.ret < Some(get.call)).max_by_key(|o| o.call)
        else {
            continue;
        };
        let Some(p1) = history.iter().filter(same_key).find(|o| done_put(o) && o.ret < Some(p2.call)) else {
            continue;
        };
        let Op::Put { value } = &p1.op else { continue };
        let stale = Some(Output::Value { value: Some(value.clone()) });
        if get.output == stale {
            continue;
        }
        let key = get.key.clone();
        history[g].output = stale;
        return (key, g);
    }
    panic!("no get can be made stale");
}

#[test]
fn ten_thousand_linearizable_ops_pass_and_one_stale_read_fails() {
    let mut history = history();
    assert_eq!(history.len(), 10_000);

    let start = Instant::now();
    let report = check_with_budget(&history, BUDGET);
    let clean = start.elapsed();
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert_eq!((report.keys, report.ops_checked), (16, 10_000));

    let (key, stale_at) = inject_stale_read(&mut history);
    let start = Instant::now();
    let report = check_with_budget(&history, BUDGET);
    let broken = start.elapsed();
    let Verdict::NotLinearizable(violation) = &report.verdict else {
        panic!("stale read not detected: {report}");
    };
    assert_eq!(violation.key, key);
    let key_ops = history.iter().filter(|o| o.key == key).count();
    assert!(
        violation.ops.len() < key_ops * 3 / 4,
        "the failing prefix ({} ops) should stop near the stale read, mid-way through the key's {key_ops}",
        violation.ops.len()
    );
    assert!(violation.ops.contains(&history[stale_at]));
    eprintln!("clean: {clean:?}, with stale read: {broken:?}\n{report}");
}

#[test]
fn one_hot_key_with_eight_clients_and_unknown_outcomes() {
    // All concurrency on one key, colliding values, 2% unknown outcomes: the
    // hard case for the search, which locality cannot split up.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let history = simulate(
        &mut rng,
        &Sim {
            clients: 8,
            keys: vec!["hot".into()],
            ops: 3_000,
            pending: 0.02,
            max_gap: 4,
            max_duration: 20,
            values: Values::Small,
        },
    );
    let start = Instant::now();
    let report = check_with_budget(&history, 4 * BUDGET);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    eprintln!("hot key: {:?}", start.elapsed());
}
