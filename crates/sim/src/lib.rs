//! Deterministic simulation of whole KVRaft clusters.
//!
//! One seed fixes everything: the cluster size (3, 5 or 7 cores), the
//! clients and their operations, the network's loss, duplication, delay and
//! reordering, partitions of any processes (the coord included), crashes and
//! restarts that lose what was not yet durable, client restarts, and crashes
//! of the coord, restarting with or without its state file. After
//! every step of every server the safety invariants are checked
//! ([`invariants`]); at the end the clients' history is checked for
//! linearizability by `kvraft-lincheck`, and the servers must have converged.
//!
//! The cores are the real `kvraft-core`; the coord is a model that follows
//! the brief's selection protocol step by step, and the real coord's joins,
//! restarts and rediscovery ([`coord`]).

pub mod client;
pub mod config;
pub mod coord;
pub mod invariants;
pub mod net;
pub mod server;
mod world;

pub use config::{ReadMode, SimConfig};
pub use world::{SeedReport, run_seed};
