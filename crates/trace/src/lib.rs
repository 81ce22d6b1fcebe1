//! Vector-clock tracing for KVRaft, in the DistributedClocks style of the Go
//! prototype, plus the tools that read the traces.
//!
//! - [`Tracer`] / [`Trace`]: the library every process links. One vector
//!   clock per process; records are tagged actions with a JSON body; tokens
//!   carry the clock inside messages. Recording never waits on the network:
//!   records go to the tracing server in batches from one background task,
//!   and what cannot be sent is counted ([`TracerStats`]).
//! - [`run_tracing_server`]: receives records from every tracer and writes
//!   `trace_output.log` (JSON lines) and `shiviz_output.log` (for ShiViz).
//! - [`check()`]: safety and completeness properties of a recorded trace.
//! - [`render_html`]: a self-contained space-time diagram of a trace.
//!
//! The formats are the prototype's, byte for byte where it matters: see
//! [`record`] and [`shiviz`], and the reference traces under `tests/data/`.
//!
//! ```no_run
//! use kvraft_trace::{Tracer, TracerConfig};
//! # async fn example(msg_token: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
//! let tracer = Tracer::new(TracerConfig {
//!     identity: "server1".into(),
//!     server_addr: "127.0.0.1:23000".into(), // "" turns tracing off
//!     secret: String::new(),
//! })?;
//! // A request arrives with a token: continue its trace.
//! let trace = tracer
//!     .receive_token(&msg_token)
//!     .unwrap_or_else(|_| tracer.create_trace());
//! trace.record("PutRecvd", serde_json::json!({"ClientId": "1", "OpId": 7, "Key": "k"}));
//! // Bodies that cost something to build: only when tracing is on.
//! trace.record_with("AppendEntriesRequestSent", || serde_json::json!({"Term": 3}));
//! let reply_token = trace.generate_token(); // goes inside the reply
//! # let _ = reply_token;
//! // Before exiting, let the last records reach the tracing server.
//! tracer.flush(std::time::Duration::from_secs(2)).await;
//! # Ok(())
//! # }
//! ```

pub mod base64;
pub mod check;
pub mod clock;
pub mod record;
pub mod server;
pub mod shiviz;
pub mod token;
mod tracer;
pub mod view;
pub mod wire;

pub use check::{CheckReport, Finding, Severity, check};
pub use clock::{Causality, VectorClock};
pub use record::{ParseError, Record, parse_trace, parse_trace_file};
pub use server::{
    StatsHandle, TracingServer, TracingServerConfig, TracingServerError, TracingServerStats, run_tracing_server,
};
pub use token::{Token, TokenError};
pub use tracer::{MAX_CLOCK_ID_BYTES, Trace, Tracer, TracerConfig, TracerError, TracerOptions, TracerStats};
pub use view::render_html;
