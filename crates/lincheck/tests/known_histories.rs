//! Hand-written histories whose verdict is known, each small enough to reason
//! about by hand. Times are chosen so that the comment above each history is
//! the whole argument.

mod common;

use common::*;
use kvraft_lincheck::{Op, Operation, Output, Verdict, check, check_with_budget};

fn assert_linearizable(history: &[Operation]) {
    let report = check(history);
    assert_eq!(report.verdict, Verdict::Linearizable, "expected linearizable: {report}");
}

/// Asserts the history is not linearizable because of `key`, and returns
/// the rendered violation for further checks.
fn assert_violation(history: &[Operation], key: &str) -> String {
    let report = check(history);
    let Some(violation) = report.verdict.violation() else {
        panic!("expected a violation on {key:?}, got: {report}");
    };
    assert_eq!(violation.key, key, "{violation}");
    // The reported ops alone must already fail: they are a failing prefix.
    let again = check(&violation.ops);
    assert!(matches!(again.verdict, Verdict::NotLinearizable(_)), "reported ops do not fail on their own: {violation}");
    violation.to_string()
}

// ---- linearizable ----------------------------------------------------------

#[test]
fn sequential_history_of_every_kind_of_op() {
    let k = "k";
    assert_linearizable(&[
        get(1, k, None, 0, 1),
        put(1, k, "a", 2, 3),
        get(2, k, Some("a"), 4, 5),
        append(1, k, "b", 6, 7),
        get(2, k, Some("ab"), 8, 9),
        delete(1, k, 10, 11),
        get(2, k, None, 12, 13),
        append(1, k, "x", 14, 15),
        get(2, k, Some("x"), 16, 17),
        cas(1, k, None, "y", false, 18, 19),
        cas(1, k, Some("x"), "y", true, 20, 21),
        get(2, k, Some("y"), 22, 23),
    ]);
}

#[test]
fn reads_overlapping_a_put_may_see_either_side() {
    // put a spans [0,10]; one read inside sees the old value, a later one
    // (also inside) sees the new one: put linearized between them.
    assert_linearizable(&[put(1, "k", "a", 0, 10), get(2, "k", None, 1, 3), get(3, "k", Some("a"), 4, 6)]);
}

#[test]
fn concurrent_puts_may_land_in_either_order() {
    for winner in ["a", "b"] {
        assert_linearizable(&[put(1, "k", "a", 0, 10), put(2, "k", "b", 0, 10), get(3, "k", Some(winner), 11, 12)]);
    }
}

#[test]
fn concurrent_ops_linearized_in_reverse_call_order() {
    // Three puts called at 0,1,2 all span past three reads that see them in
    // reverse order: c, then b, then a.
    assert_linearizable(&[
        put(1, "k", "a", 0, 100),
        put(2, "k", "b", 1, 100),
        put(3, "k", "c", 2, 100),
        get(4, "k", Some("c"), 10, 11),
        get(4, "k", Some("b"), 20, 21),
        get(4, "k", Some("a"), 30, 31),
    ]);
}

#[test]
fn unknown_put_that_must_have_taken_effect() {
    // Only the timed-out put can explain the read of "a".
    assert_linearizable(&[
        pending(1, "k", put_op("a"), 0),
        get(2, "k", None, 1, 2),
        get(2, "k", Some("a"), 5, 6),
        get(2, "k", Some("a"), 7, 8),
    ]);
}

#[test]
fn unknown_put_that_never_took_effect() {
    assert_linearizable(&[
        pending(1, "k", put_op("a"), 0),
        get(2, "k", None, 5, 6),
        put(2, "k", "b", 7, 8),
        get(2, "k", Some("b"), 9, 10),
        get(2, "k", Some("b"), 100, 101),
    ]);
}

#[test]
fn unknown_cas_and_append_may_apply_late() {
    // The timed-out append lands after the put of "b" (long after its
    // call), the timed-out cas after that.
    assert_linearizable(&[
        put(1, "k", "a", 0, 1),
        pending(2, "k", append_op("x"), 2),
        pending(3, "k", cas_op(Some("bx"), "z"), 2),
        get(1, "k", Some("a"), 3, 4),
        put(1, "k", "b", 5, 6),
        get(1, "k", Some("bx"), 7, 8),
        get(1, "k", Some("z"), 9, 10),
    ]);
}

#[test]
fn unknown_get_is_ignored() {
    assert_linearizable(&[put(1, "k", "a", 0, 1), pending(2, "k", Op::Get, 2), get(1, "k", Some("a"), 3, 4)]);
}

#[test]
fn cas_success_and_failure() {
    assert_linearizable(&[
        put(1, "k", "a", 0, 1),
        cas(1, "k", Some("a"), "b", true, 2, 3),
        cas(2, "k", Some("a"), "c", false, 4, 5),
        cas(2, "k", None, "c", false, 6, 7),
        get(1, "k", Some("b"), 8, 9),
        delete(1, "k", 10, 11),
        cas(2, "k", None, "d", true, 12, 13),
        get(1, "k", Some("d"), 14, 15),
    ]);
}

#[test]
fn concurrent_cas_exactly_one_wins() {
    assert_linearizable(&[
        cas(1, "k", None, "x", false, 0, 10),
        cas(2, "k", None, "y", true, 0, 10),
        get(3, "k", Some("y"), 11, 12),
    ]);
}

#[test]
fn concurrent_appends_in_either_order() {
    assert_linearizable(&[append(1, "k", "x", 0, 10), append(2, "k", "y", 0, 10), get(3, "k", Some("yx"), 11, 12)]);
}

#[test]
fn return_at_t_then_call_at_t_is_sequential() {
    assert_linearizable(&[put(1, "k", "a", 0, 10), get(2, "k", Some("a"), 10, 12)]);
}

#[test]
fn instantaneous_ops_at_the_same_instant_are_concurrent() {
    // The get is listed first but may still be linearized after the put.
    assert_linearizable(&[get(2, "k", Some("a"), 5, 5), put(1, "k", "a", 5, 5)]);
}

#[test]
fn keys_are_independent() {
    assert_linearizable(&[
        put(1, "k1", "a", 0, 1),
        put(1, "k2", "b", 2, 3),
        get(2, "k1", Some("a"), 4, 5),
        get(2, "k2", Some("b"), 4, 5),
        get(2, "k3", None, 4, 5),
    ]);
}

// ---- not linearizable ------------------------------------------------------

#[test]
fn stale_read_after_completed_put() {
    let shown = assert_violation(
        &[
            put(1, "k0", "z", 0, 1),
            get(1, "k0", Some("z"), 4, 5),
            put(1, "k1", "a", 0, 1),
            put(1, "k1", "b", 2, 3),
            get(2, "k1", Some("a"), 4, 5),
            put(1, "k2", "c", 0, 1),
        ],
        "k1",
    );
    // The stale read and the puts it contradicts are listed with times.
    assert!(shown.contains(r#"call=4 ret=5 client=2 get -> "a""#), "{shown}");
    assert!(shown.contains(r#"call=2 ret=3 client=1 put "b""#), "{shown}");
}

#[test]
fn read_of_a_value_never_written() {
    assert_violation(&[put(1, "k", "a", 0, 10), get(2, "k", Some("zzz"), 2, 4)], "k");
}

#[test]
fn lost_append() {
    assert_violation(&[append(1, "k", "x", 0, 5), append(2, "k", "y", 1, 6), get(3, "k", Some("x"), 7, 8)], "k");
}

#[test]
fn cas_swapped_although_expected_could_not_be_current() {
    assert_violation(&[put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 3), cas(2, "k", Some("a"), "c", true, 4, 5)], "k");
}

#[test]
fn cas_failed_although_expected_was_current() {
    assert_violation(&[put(1, "k", "a", 0, 1), cas(2, "k", Some("a"), "c", false, 4, 5)], "k");
}

#[test]
fn read_of_deleted_value_after_delete_completed() {
    assert_violation(&[put(1, "k", "a", 0, 1), delete(1, "k", 2, 3), get(2, "k", Some("a"), 4, 5)], "k");
}

#[test]
fn read_of_old_value_in_call_order_reversal() {
    // Sequentially consistent but not linearizable: the read of "a" ends
    // before the read of the initial value starts, both inside the put.
    assert_violation(&[put(1, "k", "a", 0, 100), get(2, "k", Some("a"), 10, 20), get(3, "k", None, 30, 40)], "k");
}

#[test]
fn return_at_t_then_call_at_t_is_not_concurrent() {
    // Had the ops been treated as concurrent, the get could go first.
    assert_violation(&[put(1, "k", "a", 0, 10), get(2, "k", None, 10, 12)], "k");
}

#[test]
fn unknown_put_cannot_take_effect_before_its_call() {
    assert_violation(&[pending(1, "k", put_op("a"), 10), get(2, "k", Some("a"), 0, 5)], "k");
}

#[test]
fn output_of_the_wrong_kind_never_fits() {
    assert_violation(&[done(1, "k", Op::Get, 0, 1, Output::Ok)], "k");
}

#[test]
fn first_violated_key_is_reported_even_if_another_key_is_unknown() {
    // k1 needs more than one state; k2 fails on its first operation.
    let history = [put(1, "k1", "a", 0, 1), put(1, "k1", "b", 2, 3), get(1, "k2", Some("x"), 0, 1)];
    let report = check_with_budget(&history, 1);
    assert_eq!(report.verdict.violation().map(|v| v.key.as_str()), Some("k2"));
}

#[test]
fn ill_formed_op_is_a_violation_not_a_panic() {
    let mut bad = put(1, "k", "a", 10, 5);
    let report = check(std::slice::from_ref(&bad));
    let v = report.verdict.violation().expect("ill-formed must be flagged");
    assert!(v.explanation.contains("ill-formed"), "{v}");
    bad.ret = Some(20);
    bad.output = None;
    assert!(check(&[bad]).verdict.violation().is_some());
}

// ---- budget ----------------------------------------------------------------

#[test]
fn exhausted_budget_is_unknown_never_linearizable() {
    // Ten overlapping puts and a read: linearizable, but needs more than a
    // handful of states.
    let mut history: Vec<Operation> = (0..10).map(|i| put(i, "k", &i.to_string(), 0, 100)).collect();
    history.push(get(99, "k", Some("0"), 101, 102));
    assert_eq!(check_with_budget(&history, 5).verdict, Verdict::Unknown);
    assert_eq!(check(&history).verdict, Verdict::Linearizable);
    let report = check_with_budget(&history, 5);
    assert_eq!(report.to_string(), "keys=1 ops=11 unknown (search budget exhausted)");
}

#[test]
fn report_counts_keys_and_ops() {
    let report = check(&[put(1, "a", "1", 0, 1), put(1, "b", "1", 0, 1), pending(2, "c", Op::Get, 0)]);
    assert_eq!(report.to_string(), "keys=3 ops=3 linearizable");
}
