//! The sequential specification of one key: a register that is either
//! absent or holds a string.

use std::borrow::Cow;

use crate::history::{Op, Output};

/// How a linearized operation changes the register.
///
/// Borrowing from the operation where possible keeps the search from
/// allocating a string for every `put` or `cas` it tries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect<'a> {
    /// The value stays as it is.
    Keep,
    /// The key now holds this value.
    Set(Cow<'a, str>),
    /// The key is now absent.
    Remove,
}

/// Applies `op` to a register holding `current`.
///
/// `output` is what the operation returned, or `None` when the outcome is
/// unknown: then any output is accepted and only the effect matters.
/// Returns `None` when the operation cannot have returned `output` from this
/// state, including when the output is of the wrong kind for the operation
/// (such an operation is linearizable nowhere).
pub(crate) fn step<'a>(current: Option<&str>, op: &'a Op, output: Option<&Output>) -> Option<Effect<'a>> {
    match (op, output) {
        (Op::Get, None) => Some(Effect::Keep),
        (Op::Get, Some(Output::Value { value })) => (value.as_deref() == current).then_some(Effect::Keep),
        (Op::Put { value }, None | Some(Output::Ok)) => Some(Effect::Set(Cow::Borrowed(value))),
        (Op::Delete, None | Some(Output::Ok)) => Some(Effect::Remove),
        (Op::Append { value }, None | Some(Output::Ok)) => {
            let mut joined = String::with_capacity(current.map_or(0, str::len) + value.len());
            joined.push_str(current.unwrap_or(""));
            joined.push_str(value);
            Some(Effect::Set(Cow::Owned(joined)))
        }
        (Op::Cas { expected, new }, output) => {
            let swaps = expected.as_deref() == current;
            match output {
                None => {}
                Some(Output::Cas { swapped }) if *swapped == swaps => {}
                Some(_) => return None,
            }
            Some(if swaps { Effect::Set(Cow::Borrowed(new)) } else { Effect::Keep })
        }
        (Op::Get | Op::Put { .. } | Op::Delete | Op::Append { .. }, Some(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> Option<Effect<'static>> {
        Some(Effect::Set(Cow::Owned(s.to_owned())))
    }
    fn value(v: Option<&str>) -> Output {
        Output::Value { value: v.map(str::to_owned) }
    }

    #[test]
    fn get_must_match_the_current_value() {
        assert_eq!(step(Some("a"), &Op::Get, Some(&value(Some("a")))), Some(Effect::Keep));
        assert_eq!(step(Some("a"), &Op::Get, Some(&value(Some("b")))), None);
        assert_eq!(step(Some("a"), &Op::Get, Some(&value(None))), None);
        assert_eq!(step(None, &Op::Get, Some(&value(None))), Some(Effect::Keep));
        assert_eq!(step(None, &Op::Get, None), Some(Effect::Keep));
    }

    #[test]
    fn writes_set_remove_and_append() {
        let put = Op::Put { value: "v".into() };
        assert_eq!(step(None, &put, Some(&Output::Ok)), set("v"));
        assert_eq!(step(Some("x"), &Op::Delete, None), Some(Effect::Remove));
        let app = Op::Append { value: "b".into() };
        assert_eq!(step(None, &app, Some(&Output::Ok)), set("b"));
        assert_eq!(step(Some("a"), &app, Some(&Output::Ok)), set("ab"));
    }

    #[test]
    fn cas_swaps_iff_expected_is_current_and_output_must_agree() {
        let cas = |e: Option<&str>| Op::Cas { expected: e.map(str::to_owned), new: "n".into() };
        let yes = Output::Cas { swapped: true };
        let no = Output::Cas { swapped: false };
        assert_eq!(step(Some("a"), &cas(Some("a")), Some(&yes)), set("n"));
        assert_eq!(step(Some("a"), &cas(Some("a")), Some(&no)), None);
        assert_eq!(step(Some("a"), &cas(Some("b")), Some(&no)), Some(Effect::Keep));
        assert_eq!(step(Some("a"), &cas(Some("b")), Some(&yes)), None);
        assert_eq!(step(None, &cas(None), Some(&yes)), set("n"));
        assert_eq!(step(Some("a"), &cas(None), None), Some(Effect::Keep));
        assert_eq!(step(None, &cas(None), None), set("n"));
    }

    #[test]
    fn mismatched_output_kinds_are_never_valid() {
        let put = Op::Put { value: "v".into() };
        assert_eq!(step(None, &Op::Get, Some(&Output::Ok)), None);
        assert_eq!(step(None, &put, Some(&value(None))), None);
        assert_eq!(step(None, &Op::Delete, Some(&Output::Cas { swapped: true })), None);
        let cas = Op::Cas { expected: None, new: "n".into() };
        assert_eq!(step(None, &cas, Some(&Output::Ok)), None);
    }
}
