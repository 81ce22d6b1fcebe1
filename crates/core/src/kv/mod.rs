//! The key-value state machine that the replicated log drives.

mod cautious;
mod command;
mod expiry;
mod store;

pub use command::{ApplyError, Command, MAX_VALUE_BYTES, Op, Outcome, REGISTERED_BASE, Reply};
pub use expiry::{MAX_SESSIONS, is_marker as is_session_bound_marker, marker as session_bound_marker};
pub use store::{KvStore, SnapshotError};
