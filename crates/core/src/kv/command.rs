//! Client commands and their replies, as they travel in the log.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One key-value operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Appends to the current value (the empty string if absent). A command
    /// applied twice shows up twice in the value, which is why the tests use it.
    Append {
        key: String,
        value: String,
    },
    /// Sets `new` only if the current value equals `expected` (`None`: absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    /// Asks the cluster for a session number (see [`REGISTERED_BASE`]). It
    /// changes no state; the command's opId is a random nonce that tells
    /// this registration's reply from another's.
    Register,
}

/// A registration applied at log index `i` returns the session
/// `REGISTERED_BASE + i`. Log indexes only grow, and a client registers
/// before its first operation, so every incarnation of a client gets a
/// larger session than the one before, whatever the clocks say. The base
/// puts these sessions above any start time in nanoseconds (the sessions
/// clients picked before registration existed) until the year 2262.
pub const REGISTERED_BASE: u64 = 1 << 63;

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Append { key, .. }
            | Op::Cas { key, .. } => key,
            Op::Register => "",
        }
    }

    /// Gets change nothing; the rest do.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }

    fn approx_size(&self) -> usize {
        match self {
            Op::Get { key } | Op::Delete { key } => key.len(),
            Op::Put { key, value } | Op::Append { key, value } => key.len() + value.len(),
            Op::Cas { key, expected, new } => key.len() + expected.as_ref().map_or(0, String::len) + new.len(),
            Op::Register => 0,
        }
    }
}

/// The prototype's form: `Put(k13,val13)`, `Get(k12)`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get { key } => write!(f, "Get({key})"),
            Op::Put { key, value } => write!(f, "Put({key},{value})"),
            Op::Delete { key } => write!(f, "Delete({key})"),
            Op::Append { key, value } => write!(f, "Append({key},{value})"),
            Op::Cas { key, expected, new } => match expected {
                Some(e) => write!(f, "Cas({key},{e},{new})"),
                None => write!(f, "Cas({key},<absent>,{new})"),
            },
            Op::Register => write!(f, "Register"),
        }
    }
}

/// A command as it is stored in the log: the operation plus what makes it
/// exactly-once.
///
/// `session` names one incarnation of a client: a restarted client gets a
/// larger one from the cluster ([`Op::Register`]), which resets the
/// client's op numbering without being mistaken for a stale retry.
/// `first_unacked` is the lowest opId whose result the client has not yet
/// received; results below it may be forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Command {
    pub client_id: String,
    pub session: u64,
    pub op_id: u64,
    pub first_unacked: u64,
    pub op: Op,
}

impl Command {
    pub fn approx_size(&self) -> usize {
        self.client_id.len() + 24 + self.op.approx_size()
    }
}

/// What an applied command returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reply {
    /// A Get's value (`None`: absent).
    Value(Option<String>),
    /// Put, Delete and Append succeeded.
    Done,
    /// Whether a CompareAndSwap swapped.
    Cas { swapped: bool },
    /// The session a registration was given.
    Registered { session: u64 },
    /// An Append that would have made the value `len` bytes, over
    /// [`MAX_VALUE_BYTES`]: nothing changed. (Without the bound a key grown
    /// by appends could outgrow what a reply may carry, and no Get of it
    /// would ever be answered.)
    TooLarge { len: usize },
}

/// The longest value a key may hold: what a Put may bring, and what
/// Appends may grow a value to.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Why a command was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// The opId is older than what the client has acknowledged, or belongs to
    /// an older session of the client: a late duplicate, never applied.
    #[error("stale request: op {op_id} of session {session} is older than the client's current state")]
    Stale { session: u64, op_id: u64 },
    /// The client has no session in the table, and its session number is
    /// at or below the largest one forgotten (see `kv/expiry.rs`): this may
    /// be a late retry of an op applied before its session was forgotten.
    /// Nothing was applied now; whether it was before is unknown. The
    /// client registers anew.
    #[error(
        "session {session} expired: the cluster keeps only its most recently active clients' sessions, \
         and has forgotten sessions up to {forgotten_through}; register a new one"
    )]
    SessionExpired { session: u64, forgotten_through: u64 },
    /// A session at or above [`REGISTERED_BASE`] that no registration
    /// before this entry issued. Once forgotten it would raise the
    /// watermark of `kv/expiry.rs` above every session the cluster will
    /// ever issue, locking every new client out: refused, nothing applied.
    /// (Only once the session bound has started, so that servers that
    /// applied such a command before it stay in step.)
    #[error("session {session} was not issued by this cluster (a registered session is below {below})")]
    Unissued { session: u64, below: u64 },
}

/// The outcome a client sees for a command.
pub type Outcome = Result<Reply, ApplyError>;
