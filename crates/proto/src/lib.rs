//! KVRaft's wire protocol, generated from `proto/kvraft.proto`.
//!
//! The `.proto` file is the contract: a client in another language can be
//! generated from it. Conversions to and from the core's types live with
//! the server, which owns both sides.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("kvraft.v1");
}

pub use v1::*;

pub mod frame;
pub mod secret;

/// The largest term or log index any message may carry: beyond anything a
/// cluster reaches (a term a microsecond for 290,000 years), with room left
/// so that `+ 1` never overflows on either side. Receivers refuse more.
pub const MAX_TERM_OR_INDEX: u64 = u64::MAX / 2;

/// The longest client id a server or the coord accepts.
pub const MAX_CLIENT_ID_BYTES: usize = 256;
