//! The history types: what a client asked ([`Op`]), what it got back
//! ([`Output`]) and when ([`Operation`]).
//!
//! These types are the wire format too (see the crate docs), so their serde
//! shape is part of the public contract: change it only together with every
//! harness that writes histories.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Read the current value.
    Get,
    /// Set the value.
    Put {
        /// The value written.
        value: String,
    },
    /// Remove the key.
    Delete,
    /// Append to the current value (`""` if the key is absent).
    Append {
        /// The suffix appended.
        value: String,
    },
    /// Set the value to `new` iff the current value equals `expected`
    /// (`None` = the key is absent).
    Cas {
        /// The value the key must hold for the swap to happen.
        expected: Option<String>,
        /// The value written on a successful swap.
        new: String,
    },
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// Result of [`Op::Get`]: the value read, `None` if the key was absent.
    Value {
        /// The value read.
        value: Option<String>,
    },
    /// Result of [`Op::Put`], [`Op::Delete`] and [`Op::Append`].
    Ok,
    /// Result of [`Op::Cas`].
    Cas {
        /// Whether the swap happened.
        swapped: bool,
    },
}

/// One operation as a client saw it: invoked at `call`, answered at `ret`.
///
/// Invariant (checked by [`Operation::validate`]): `output` is `None` iff
/// `ret` is `None`, and `call <= ret`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client that issued it (informational: the checker orders
    /// operations by time only, so a client may have several in flight).
    pub client: u64,
    /// The key it touched.
    pub key: String,
    /// What it asked for.
    pub op: Op,
    /// Invocation time, in any monotone unit shared by all clients.
    pub call: u64,
    /// Return time; `None` = outcome unknown (timeout, crash).
    pub ret: Option<u64>,
    /// What it returned; `None` iff `ret` is `None`.
    pub output: Option<Output>,
}

/// Why an [`Operation`] is not a well-formed history entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOperation {
    /// It returned before it was called.
    #[error("returns at {ret}, before its call at {call}")]
    ReturnBeforeCall {
        /// Invocation time.
        call: u64,
        /// Return time.
        ret: u64,
    },
    /// It has a return time but no output.
    #[error("has a return time but no output (an unknown outcome has \"ret\":null)")]
    ReturnWithoutOutput,
    /// It has an output but no return time.
    #[error("has an output but no return time")]
    OutputWithoutReturn,
}

impl Operation {
    /// Checks the invariant that the checker relies on.
    pub fn validate(&self) -> Result<(), InvalidOperation> {
        match (self.ret, &self.output) {
            (Some(ret), Some(_)) if ret < self.call => Err(InvalidOperation::ReturnBeforeCall { call: self.call, ret }),
            (Some(_), None) => Err(InvalidOperation::ReturnWithoutOutput),
            (None, Some(_)) => Err(InvalidOperation::OutputWithoutReturn),
            _ => Ok(()),
        }
    }

    /// True if the outcome is unknown (the client never saw a reply).
    pub fn is_pending(&self) -> bool {
        self.ret.is_none()
    }
}

/// Writes `None` as `absent` and a value as a quoted string.
pub(crate) struct ValueDisplay<'a>(pub Option<&'a str>);

impl fmt::Display for ValueDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:?}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => f.write_str("get"),
            Op::Put { value } => write!(f, "put {value:?}"),
            Op::Delete => f.write_str("delete"),
            Op::Append { value } => write!(f, "append {value:?}"),
            Op::Cas { expected, new } => {
                write!(f, "cas expected={} new={new:?}", ValueDisplay(expected.as_deref()))
            }
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Value { value } => write!(f, "{}", ValueDisplay(value.as_deref())),
            Output::Ok => f.write_str("ok"),
            Output::Cas { swapped: true } => f.write_str("swapped"),
            Output::Cas { swapped: false } => f.write_str("not swapped"),
        }
    }
}

/// One line, e.g. `call=12 ret=20 client=2 key="k1" get -> "v1"`.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.line(true))
    }
}

impl Operation {
    /// The [`Display`](fmt::Display) line, optionally without the key (for
    /// listings that are all about one key).
    pub(crate) fn line(&self, with_key: bool) -> String {
        let ret = match self.ret {
            Some(ret) => ret.to_string(),
            None => "?".to_owned(),
        };
        let key = if with_key { format!(" key={:?}", self.key) } else { String::new() };
        let output = match &self.output {
            Some(out) => out.to_string(),
            None => "? (outcome unknown)".to_owned(),
        };
        format!("call={} ret={ret} client={}{key} {} -> {output}", self.call, self.client, self.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(ret: Option<u64>, output: Option<Output>) -> Operation {
        Operation { client: 1, key: "k".into(), op: Op::Get, call: 10, ret, output }
    }

    #[test]
    fn validate_accepts_well_formed_and_rejects_each_defect() {
        let val = || Some(Output::Value { value: None });
        assert_eq!(op(Some(10), val()).validate(), Ok(()));
        assert_eq!(op(None, None).validate(), Ok(()));
        assert_eq!(op(Some(9), val()).validate(), Err(InvalidOperation::ReturnBeforeCall { call: 10, ret: 9 }));
        assert_eq!(op(Some(11), None).validate(), Err(InvalidOperation::ReturnWithoutOutput));
        assert_eq!(op(None, val()).validate(), Err(InvalidOperation::OutputWithoutReturn));
    }

    #[test]
    fn display_is_one_readable_line() {
        let o = Operation {
            client: 3,
            key: "k1".into(),
            op: Op::Cas { expected: None, new: "v".into() },
            call: 5,
            ret: Some(7),
            output: Some(Output::Cas { swapped: false }),
        };
        assert_eq!(o.to_string(), r#"call=5 ret=7 client=3 key="k1" cas expected=absent new="v" -> not swapped"#);
    }
}
