//! The state a tracer shares with its background sender: the process's
//! vector clock, the bounded queue of encoded records, and the counters.
//!
//! Invariants:
//! - The clock is ticked and the record appended under one lock, so queue
//!   order is clock order: a host's records reach the server (and the log)
//!   with its own clock entry strictly increasing.
//! - `recorded == sent + dropped + queued + in flight` at all times; every
//!   record ends up counted as sent or dropped.
//! - The queue never holds more than `queue_records` records or
//!   `queue_bytes` bytes; a record that does not fit is dropped and counted,
//!   never waited for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::{TracerOptions, TracerStats};
use crate::clock::VectorClock;
use crate::wire::{WireRecordRef, append_record};

/// Shared between every clone of a tracer and its sender task.
pub(crate) struct Shared {
    pub identity: String,
    pub opts: TracerOptions,
    state: Mutex<State>,
    recorded: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    /// Wakes the sender: a batch is ready, a flush is wanted, or closing.
    pub wake: Notify,
    /// Set when the last `Tracer` handle is gone: drain, then stop.
    closed: AtomicBool,
    /// The refusal of a token for want of room in the clock was reported.
    pub clock_full_warned: AtomicBool,
}

struct State {
    clock: VectorClock,
    /// Postcard-encoded records back to back (a batch body minus its count).
    queue: Vec<u8>,
    queued: u32,
}

/// What the caller of [`Shared::with_clock`] does under the lock.
pub(crate) struct Locked<'a> {
    shared: &'a Shared,
    state: MutexGuard<'a, State>,
}

impl Locked<'_> {
    /// Ticks the own entry (the record about to be appended is an event).
    pub fn tick(&mut self) {
        let id = &self.shared.identity;
        self.state.clock.tick(id);
    }

    /// Merges a received clock into the process clock, unless it would
    /// take the clock past [`super::MAX_CLOCK_ID_BYTES`] (then false).
    pub fn merge(&mut self, other: &VectorClock) -> bool {
        self.state.clock.merge_within(other, super::MAX_CLOCK_ID_BYTES)
    }

    /// The current clock.
    pub fn clock(&self) -> &VectorClock {
        &self.state.clock
    }

    /// Appends a record stamped with the current clock, or drops it (and
    /// counts it) when the queue is full.
    pub fn push(&mut self, trace_id: u64, tag: &str, body_json: &str) {
        let shared = self.shared;
        shared.recorded.fetch_add(1, Ordering::SeqCst);
        let State { clock, queue, queued } = &mut *self.state;
        if *queued as usize >= shared.opts.queue_records {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let start = queue.len();
        append_record(queue, &WireRecordRef { trace_id, tag, body: body_json, clock });
        if queue.len() > shared.opts.queue_bytes {
            queue.truncate(start);
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        *queued += 1;
        if *queued as usize == shared.opts.batch_records {
            shared.wake.notify_one();
        }
    }
}

impl Shared {
    pub fn new(identity: String, opts: TracerOptions) -> Self {
        Shared {
            identity,
            opts,
            state: Mutex::new(State { clock: VectorClock::new(), queue: Vec::new(), queued: 0 }),
            recorded: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            clock_full_warned: AtomicBool::new(false),
        }
    }

    /// Locks the clock and queue. Poisoning is ignored: nothing under the
    /// lock leaves the state half-updated.
    pub fn lock(&self) -> Locked<'_> {
        Locked { shared: self, state: self.state.lock().unwrap_or_else(|e| e.into_inner()) }
    }

    /// Moves the queued records into `spare` (cleared first; the queue keeps
    /// spare's old allocation) and returns how many there are.
    pub fn take_batch(&self, spare: &mut Vec<u8>) -> u32 {
        let mut locked = self.lock();
        let st = &mut *locked.state;
        if st.queued == 0 {
            return 0;
        }
        spare.clear();
        std::mem::swap(&mut st.queue, spare);
        std::mem::take(&mut st.queued)
    }

    /// Discards everything queued, counting it as dropped.
    pub fn drop_queued(&self) {
        let mut locked = self.lock();
        let st = &mut *locked.state;
        st.queue.clear();
        let n = std::mem::take(&mut st.queued);
        self.count_dropped(u64::from(n));
    }

    pub fn queued(&self) -> u32 {
        self.lock().state.queued
    }

    pub fn count_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::SeqCst);
    }

    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::SeqCst);
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> TracerStats {
        // Read `recorded` last so that sent + dropped <= recorded holds in
        // the snapshot even while records are being made.
        let sent = self.sent.load(Ordering::SeqCst);
        let dropped = self.dropped.load(Ordering::SeqCst);
        let recorded = self.recorded.load(Ordering::SeqCst);
        TracerStats { recorded, sent, dropped }
    }
}
