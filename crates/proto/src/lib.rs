//! KVRaft's wire protocol, generated from `proto/kvraft.proto`.
//!
//! The `.proto` file is the contract: a client in another language can be
//! generated from it. Conversions to and from the core's types live with
//! the server, which owns both sides.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("kvraft.v1");
}

pub use v1::*;
