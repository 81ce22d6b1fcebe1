//! fcheck: the coord's failure detector for KVRaft servers.
//!
//! The coord runs one [`Monitor`]; every server runs a [`Responder`] on its
//! configured address. The monitor sends each watched server a UDP
//! [`Heartbeat`](wire::Heartbeat) `{ epoch, seq }` every
//! `heartbeat_interval`; the responder echoes it back as an
//! [`Ack`](wire::Ack). The epoch is random per monitor start and the
//! sequence number unique within it, so an ack names exactly one heartbeat,
//! and acks for another epoch or for no outstanding heartbeat are ignored.
//!
//! # Losses and verdicts
//!
//! Each heartbeat times out on its own: it is lost if no ack arrives within
//! the server's loss timeout `rto = clamp(srtt + 4 * rttvar, rtt_floor,
//! rtt_ceiling)` (TCP-style estimate; the ceiling until the first sample).
//! Several heartbeats may be outstanding. `lost_msgs_thresh` losses in a row
//! turn an alive server failed ([`Event::Failed`], once); an ack for any
//! outstanding heartbeat resets the run and turns a failed server alive again
//! ([`Event::Recovered`]). Failed servers keep being probed, every
//! `failed_probe_interval`.
//!
//! # Detection time
//!
//! With `T = lost_msgs_thresh` and `I = heartbeat_interval`, a server that
//! dies is reported failed between `(T - 1) * I + rto` and `T * I + rto`
//! after its death (plus scheduling delay): the first unanswered heartbeat
//! leaves within `I`, the `T`-th one `(T - 1) * I` later, and it is declared
//! lost `rto` after leaving. With the defaults on a LAN (`rto` at the 40 ms
//! floor) that is 80–100 ms; at worst (`rto` at the 500 ms ceiling) 560 ms.
//! Recovery is reported within `failed_probe_interval + RTT` (≈ 200 ms) of
//! the server answering again. See [`MonitorConfig::detection_time`].
//!
//! # Cost
//!
//! One task and one socket for the monitor, one of each per responder. Sends
//! to all servers share timer ticks; the task sleeps until a datagram, the
//! next tick/deadline, or a `watch`. Nothing read from the network can panic:
//! malformed datagrams are dropped and counted ([`MonitorStats`],
//! [`ResponderStats`]).

mod config;
mod driver;
mod monitor;
mod peer;
mod report;
mod responder;
mod rtt;
mod stats;
mod table;
pub mod wire;

pub use config::{ConfigError, MonitorConfig};
pub use monitor::Monitor;
pub use report::{Event, ServerHealth};
pub use responder::Responder;
pub use stats::{MonitorStats, ResponderStats};
