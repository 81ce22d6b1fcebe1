//! Operations, their values, and what can go wrong.

use std::fmt;
use std::time::Duration;

/// One key-value operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Appends to the current value (the empty string if absent).
    Append {
        key: String,
        value: String,
    },
    /// Sets `new` only if the current value is `expected` (`None`: absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Append { key, .. }
            | Op::Cas { key, .. } => key,
        }
    }
}

/// The prototype's form: `Put(k13,val13)`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get { key } => write!(f, "Get({key})"),
            Op::Put { key, value } => write!(f, "Put({key},{value})"),
            Op::Delete { key } => write!(f, "Delete({key})"),
            Op::Append { key, value } => write!(f, "Append({key},{value})"),
            Op::Cas { key, expected, new } => {
                write!(f, "Cas({key},{},{new})", expected.as_deref().unwrap_or("<absent>"))
            }
        }
    }
}

/// What a successful operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A Get's value (`None`: absent).
    Value(Option<String>),
    /// Put, Delete and Append succeeded.
    Done,
    /// Whether a CompareAndSwap swapped.
    Cas { swapped: bool },
}

/// Why an operation (or the client) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Fewer than a majority of servers answer the coord: no leader can be
    /// designated. The operation may or may not take effect later.
    #[error("quorum impossible: {0}")]
    QuorumImpossible(String),
    /// No result within the deadline. The operation may or may not take effect.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The server refused the request as malformed or too large.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The server saw this operation as older than what the client acknowledged.
    #[error("stale request")]
    Stale,
    /// The cluster forgot this client's session (it keeps only its most
    /// recently active clients'). The operation may or may not have taken
    /// effect; the client registers a new session for the next ones.
    #[error("the operation may or may not have taken effect: {0}")]
    SessionExpired(String),
    /// The client was stopped.
    #[error("the client is stopped")]
    Stopped,
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The cluster refused this client's Secret (wrong, or missing where the
    /// cluster has one). Nothing was applied.
    #[error("refused by the cluster: {0}")]
    Unauthenticated(String),
}

/// One operation's outcome, as delivered on the results channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpResult {
    pub op_id: u64,
    pub op: Op,
    pub result: Result<Value, ClientError>,
}
