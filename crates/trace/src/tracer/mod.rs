//! The tracer: one per process, DistributedClocks style.
//!
//! A [`Tracer`] owns the process's vector clock. A [`Trace`] is a handle on
//! one trace id (one request's story across processes). Every recorded
//! action ticks the process clock and is stamped with it. Tokens carry the
//! trace id and the clock inside messages: the sender's
//! [`Trace::generate_token`] and the receiver's [`Tracer::receive_token`]
//! make the receiver's later events causally after the sender's.
//!
//! With tracing off ([`Tracer::disabled`], or an empty server address)
//! every call returns at once: no clock, no allocation, no serialization
//! (take [`Trace::record_with`] or check [`Trace::enabled`] to skip building
//! a body too).

mod queue;
mod sender;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::base64;
use crate::clock::VectorClock;
use crate::token::{self, Token, TokenError};
use queue::Shared;

/// What a process needs to trace (the prototype's config fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TracerConfig {
    /// This process's name in traces (ShiViz's host), e.g. `server1`.
    pub identity: String,
    /// The tracing server's `host:port`; empty turns tracing off.
    pub server_addr: String,
    /// Shared secret the tracing server checks.
    pub secret: String,
}

/// Tuning knobs; the defaults suit a KVRaft process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracerOptions {
    /// Most records waiting to be sent; beyond it new records are dropped.
    pub queue_records: usize,
    /// Most encoded bytes waiting to be sent (kept under the frame limit).
    pub queue_bytes: usize,
    /// Queued records are sent at least this often.
    pub flush_interval: Duration,
    /// A queue this long is sent at once, without waiting for the interval.
    pub batch_records: usize,
    /// Bound on connecting and on the hello exchange.
    pub connect_timeout: Duration,
    /// Longest wait between reconnection attempts (backoff doubles from 50 ms).
    pub max_backoff: Duration,
}

impl Default for TracerOptions {
    fn default() -> Self {
        TracerOptions {
            queue_records: 65_536,
            queue_bytes: 8 << 20,
            flush_interval: Duration::from_millis(10),
            batch_records: 4096,
            connect_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Counters of a tracer's records. `recorded - sent - dropped` are queued or
/// in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TracerStats {
    /// Records made by this process.
    pub recorded: u64,
    /// Records the tracing server acknowledged.
    pub sent: u64,
    /// Records lost: queue full, connection lost, refused, or abandoned.
    pub dropped: u64,
}

impl TracerStats {
    /// Records neither sent nor dropped yet.
    pub fn pending(&self) -> u64 {
        self.recorded.saturating_sub(self.sent + self.dropped)
    }
}

/// Why a tracer could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TracerError {
    #[error("tracer identity {0:?} must be non-empty, without whitespace or control characters")]
    BadIdentity(String),
    #[error("tracing is on but there is no tokio runtime to run the sender in")]
    NoRuntime,
    #[error("the tracing secret is {0} bytes, above the limit of {max}", max = crate::wire::MAX_SECRET_BYTES)]
    SecretTooLong(usize),
}

/// The most bytes the ids of a process's clock may take together. A real
/// cluster's clock names each process once (a few dozen bytes each); the
/// bound only stops tokens forged with ever new ids from growing the clock,
/// and with it every token the process makes, without end. Past it, a
/// token that names a process the clock does not know is refused.
pub const MAX_CLOCK_ID_BYTES: usize = 64 << 10;

/// Largest body kept as is; a larger one is replaced by its size so the
/// record still marks the event.
const MAX_BODY: usize = 1 << 20;

/// A process's tracer. Cheap to clone (one `Arc`); all clones share the
/// clock and the queue.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Handle>>,
}

/// Dropped with the last `Tracer` clone: tells the sender to drain and stop.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl Tracer {
    /// A tracer with default options; see [`Tracer::with_options`].
    pub fn new(cfg: TracerConfig) -> Result<Tracer, TracerError> {
        Self::with_options(cfg, TracerOptions::default())
    }

    /// A tracer that sends to `cfg.server_addr`, or a disabled one when that
    /// is empty. Spawns the sender on the current tokio runtime.
    pub fn with_options(cfg: TracerConfig, opts: TracerOptions) -> Result<Tracer, TracerError> {
        if cfg.server_addr.is_empty() {
            return Ok(Tracer::disabled());
        }
        if !valid_identity(&cfg.identity) {
            return Err(TracerError::BadIdentity(cfg.identity));
        }
        if cfg.secret.len() > crate::wire::MAX_SECRET_BYTES {
            return Err(TracerError::SecretTooLong(cfg.secret.len()));
        }
        let rt = tokio::runtime::Handle::try_current().map_err(|_| TracerError::NoRuntime)?;
        let mut opts = opts;
        opts.queue_records = opts.queue_records.max(1);
        opts.batch_records = opts.batch_records.max(1);
        // Leave room for the frame header under the frame limit.
        opts.queue_bytes = opts.queue_bytes.clamp(1 << 16, crate::wire::MAX_FRAME - 1024);
        let shared = Arc::new(Shared::new(cfg.identity, opts));
        rt.spawn(sender::run(shared.clone(), cfg.server_addr, cfg.secret));
        Ok(Tracer { inner: Some(Arc::new(Handle { shared })) })
    }

    /// A tracer that records nothing.
    pub const fn disabled() -> Tracer {
        Tracer { inner: None }
    }

    /// Whether records go anywhere.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The identity (empty when disabled).
    pub fn identity(&self) -> &str {
        self.shared().map_or("", |s| s.identity.as_str())
    }

    /// A snapshot of the counters (all zero when disabled).
    pub fn stats(&self) -> TracerStats {
        self.shared().map(|s| s.stats()).unwrap_or_default()
    }

    /// One line saying how many records never reached the tracing server,
    /// or `None` when all did: what a process prints as it exits, so lost
    /// records are reported, not hidden.
    pub fn unsent_report(&self) -> Option<String> {
        let st = self.stats();
        (st.recorded > st.sent).then(|| {
            format!("tracing: {} of {} records never reached the tracing server", st.recorded - st.sent, st.recorded)
        })
    }

    /// A copy of the process clock (empty when disabled).
    pub fn clock(&self) -> VectorClock {
        self.shared().map(|s| s.lock().clock().clone()).unwrap_or_default()
    }

    /// Starts a new trace with a random id and records `CreateTrace`.
    pub fn create_trace(&self) -> Trace {
        let Some(shared) = self.shared() else {
            return Trace::disabled();
        };
        let id = new_trace_id();
        let mut locked = shared.lock();
        locked.tick();
        locked.push(id, "CreateTrace", "{}");
        drop(locked);
        Trace { tracer: self.clone(), id }
    }

    /// Continues the trace a token carries: merges the token's clock into
    /// the process clock, ticks, and records `ReceiveTokenTrace` (body: the
    /// token in base64, as the sender's `GenerateTokenTrace` has it).
    ///
    /// The trace a received message continues: the sender's, through its
    /// token, or a new one when the token is missing or unreadable (the
    /// sender does not trace). Disabled tracers return a disabled trace.
    pub fn continue_or_create(&self, token: &[u8]) -> Trace {
        if !self.enabled() {
            return Trace::disabled();
        }
        self.receive_token(token).unwrap_or_else(|_| self.create_trace())
    }

    /// A disabled tracer ignores the token and returns a disabled trace. An
    /// empty token (the sender does not trace) is [`TokenError::Empty`];
    /// callers usually fall back to [`Tracer::create_trace`].
    pub fn receive_token(&self, token: &[u8]) -> Result<Trace, TokenError> {
        let Some(shared) = self.shared() else {
            return Ok(Trace::disabled());
        };
        let decoded = Token::decode(token)?;
        let body = token_body(token);
        let mut locked = shared.lock();
        if !locked.merge(&decoded.clock) {
            drop(locked);
            if !shared.clock_full_warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "tracing: the clock's ids reached {MAX_CLOCK_ID_BYTES} bytes; tokens naming other processes are refused from now on"
                );
            }
            return Err(TokenError::ClockFull);
        }
        locked.tick();
        locked.push(decoded.trace_id, "ReceiveTokenTrace", &body);
        drop(locked);
        Ok(Trace { tracer: self.clone(), id: decoded.trace_id })
    }

    /// Waits until every record made so far is sent or dropped, at most
    /// `timeout`; true if it got there. Call before a process exits so the
    /// last records reach the server.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let Some(shared) = self.shared() else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if shared.stats().pending() == 0 {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            shared.wake.notify_one();
            tokio::time::sleep_until(deadline.min(now + Duration::from_millis(5))).await;
        }
    }

    fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.as_ref().map(|h| &h.shared)
    }
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shared() {
            None => f.write_str("Tracer(disabled)"),
            Some(s) => f.debug_struct("Tracer").field("identity", &s.identity).field("stats", &s.stats()).finish(),
        }
    }
}

/// One trace (a request's story) within a process.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    tracer: Tracer,
    id: u64,
}

impl Trace {
    /// A trace that records nothing (id 0).
    pub const fn disabled() -> Trace {
        Trace { tracer: Tracer::disabled(), id: 0 }
    }

    /// The trace id (0 when disabled).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The tracer this trace records into.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// Whether records go anywhere; check it before building a costly body.
    pub fn enabled(&self) -> bool {
        self.tracer.enabled()
    }

    /// Records an action: ticks the process clock and queues
    /// `{TracerIdentity, TraceID, Tag, Body, VectorClock}`. The body should
    /// serialize to a JSON object; when disabled it is not serialized.
    pub fn record(&self, tag: &str, body: impl Serialize) {
        if let Some(shared) = self.tracer.shared() {
            let json = body_json(&body);
            let mut locked = shared.lock();
            locked.tick();
            locked.push(self.id, tag, &json);
        }
    }

    /// Like [`Trace::record`], building the body only when tracing is on.
    pub fn record_with<B: Serialize>(&self, tag: &str, body: impl FnOnce() -> B) {
        if self.enabled() {
            self.record(tag, body());
        }
    }

    /// Ticks, records `GenerateTokenTrace` and returns the token to put in
    /// the outgoing message (empty when disabled).
    pub fn generate_token(&self) -> Vec<u8> {
        let Some(shared) = self.tracer.shared() else {
            return Vec::new();
        };
        let mut locked = shared.lock();
        locked.tick();
        let mut bytes = Vec::with_capacity(16 + shared.identity.len() + locked.clock().len() * 12);
        token::encode_parts(&mut bytes, &shared.identity, self.id, locked.clock());
        let body = token_body(&bytes);
        locked.push(self.id, "GenerateTokenTrace", &body);
        bytes
    }
}

/// `{"Token":"<base64>"}` (base64 needs no JSON escaping).
fn token_body(token: &[u8]) -> String {
    format!("{{\"Token\":\"{}\"}}", base64::encode(token))
}

/// The body as compact JSON; never fails (an unserializable body becomes an
/// error object, an oversized one its size).
fn body_json(body: &impl Serialize) -> String {
    match serde_json::to_string(body) {
        Ok(s) if s.len() <= MAX_BODY => s,
        Ok(s) => format!("{{\"BodyTooLarge\":{}}}", s.len()),
        Err(e) => serde_json::json!({ "BodyError": e.to_string() }).to_string(),
    }
}

/// 63 random bits, never 0 (0 marks a disabled trace), so tools that read
/// ids as signed 64-bit integers (as the Go prototype did) agree.
fn new_trace_id() -> u64 {
    (rand::random::<u64>() >> 1).max(1)
}

/// Identities name ShiViz hosts (`\S*`) and log lines: no whitespace.
pub(crate) fn valid_identity(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}
