//! What a check concludes, in a form both code and people can read.

use std::fmt;

use crate::history::Operation;

/// The conclusion about a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key has a linearization.
    Linearizable,
    /// Some key has none; this is the first such key in key order.
    NotLinearizable(Violation),
    /// No key is known to be violated, but the search budget ran out on at
    /// least one, so nothing is proven. Never reported as linearizable.
    Unknown,
}

impl Verdict {
    /// True only for a proven [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// The violation, if one was found.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Verdict::NotLinearizable(v) => Some(v),
            _ => None,
        }
    }
}

/// A key whose operations admit no linearization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// A failing sub-history of that key, ordered by call time: every
    /// operation of the key called before the shortest failing prefix of its
    /// real-time history ends (see the crate docs). On its own it already
    /// admits no linearization.
    pub ops: Vec<Operation>,
    /// One line saying where the search got stuck; `[i]` refers to `ops[i]`.
    pub explanation: String,
}

/// The result of [`check`](crate::check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The conclusion.
    pub verdict: Verdict,
    /// Operations in the input history (unknown-outcome gets included).
    pub ops_checked: usize,
    /// Distinct keys in the input history.
    pub keys: usize,
}

/// `linearizable`, `NOT linearizable on key "k1": …`, or `unknown …`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable(v) => {
                write!(f, "NOT linearizable on key {:?}: {}", v.key, v.explanation)
            }
            Verdict::Unknown => f.write_str("unknown (search budget exhausted)"),
        }
    }
}

/// One line, e.g. `keys=3 ops=120 linearizable`.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::NotLinearizable(_) => write!(f, "{}", self.verdict),
            _ => write!(f, "keys={} ops={} {}", self.keys, self.ops_checked, self.verdict),
        }
    }
}

/// The explanation, then the operations one per line with their times.
impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?}: {}", self.key, self.explanation)?;
        let width = self.ops.len().saturating_sub(1).to_string().len();
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  [{i:>width$}] {}", op.line(false))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Output};

    #[test]
    fn report_lines() {
        let mut r = Report { verdict: Verdict::Linearizable, ops_checked: 120, keys: 3 };
        assert_eq!(r.to_string(), "keys=3 ops=120 linearizable");
        r.verdict = Verdict::Unknown;
        assert_eq!(r.to_string(), "keys=3 ops=120 unknown (search budget exhausted)");
        r.verdict = Verdict::NotLinearizable(Violation { key: "k1".into(), ops: vec![], explanation: "stuck".into() });
        assert_eq!(r.to_string(), r#"NOT linearizable on key "k1": stuck"#);
    }

    #[test]
    fn violation_lists_ops_one_per_line() {
        let op = |call, ret: Option<u64>| Operation {
            client: 7,
            key: "k1".into(),
            op: Op::Put { value: "v".into() },
            call,
            ret,
            output: ret.map(|_| Output::Ok),
        };
        let v = Violation { key: "k1".into(), ops: vec![op(1, Some(2)), op(3, None)], explanation: "why".into() };
        assert_eq!(
            v.to_string(),
            "key \"k1\": why\n  \
             [0] call=1 ret=2 client=7 put \"v\" -> ok\n  \
             [1] call=3 ret=? client=7 put \"v\" -> ? (outcome unknown)\n"
        );
    }
}
