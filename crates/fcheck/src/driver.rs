//! The monitor's single task: the only code that touches its socket and its
//! timer. Each turn it reads every waiting ack, lets the table expire and
//! send, then sleeps until the earliest of: a datagram, the table's next
//! wake-up, or a `watch`/`unwatch`.
//!
//! No busy waiting: the table's next wake-up is always strictly in the
//! future, an idle table has none, a flood of datagrams is read in bounded
//! batches between timer checks, and a persistent socket error is retried
//! after a pause rather than in a tight loop.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;

use crate::report::Event;
use crate::table::{Outgoing, Table};
use crate::wire::{self, MAX_MESSAGE_LEN, Message};

/// Datagrams read per turn before timers get their say: a flood of garbage
/// cannot starve the heartbeats.
const MAX_READS_PER_TURN: usize = 64;
/// Pause after a receive error other than "would block", so a persistent
/// error costs a wake-up per pause, not a spinning core.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(5);
/// Receive buffer: larger than any valid message, so an oversized datagram
/// is seen as such (it decodes with trailing bytes) instead of truncated
/// into something valid-looking.
const RECV_BUF_LEN: usize = 2 * MAX_MESSAGE_LEN;

/// What the `Monitor` handle and the driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    table: Mutex<Table>,
    /// Poked by `watch`/`unwatch` so the driver recomputes its wake-up.
    pub(crate) changed: Notify,
}

impl Shared {
    pub(crate) fn new(table: Table) -> Shared {
        Shared { table: Mutex::new(table), changed: Notify::new() }
    }

    /// The table. Never held across an await. Poisoning is ignored: table
    /// methods leave it consistent at every step, so a panic elsewhere while
    /// holding the lock cannot have corrupted it.
    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the monitor until its task is aborted (by dropping the `Monitor`).
pub(crate) async fn run(socket: UdpSocket, shared: Arc<Shared>, events_tx: UnboundedSender<Event>) {
    let mut buf = [0u8; RECV_BUF_LEN];
    let mut sends: Vec<Outgoing> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        // Acks first: under load, an ack that arrived in time but was not yet
        // read must not be counted as a loss by the expiry below.
        let recv_failed = read_waiting(&socket, &shared, &mut buf, &mut events);
        let next_wake = {
            let mut table = shared.table();
            let now = Instant::now();
            // Woken long after the wake-up we asked for: this process (and
            // likely the whole machine) was starved. Heartbeats that expired
            // meanwhile prove nothing about the servers: give them that time.
            if let Some(at) = armed
                && now.saturating_duration_since(at) > table.stall_threshold()
            {
                table.postpone_all(now - at);
            }
            table.poll(now, &mut sends, &mut events);
            table.next_wake()
        };
        let send_errors = send_all(&socket, &mut sends).await;
        if send_errors > 0 {
            shared.table().stats_mut().send_errors += send_errors;
        }
        for event in events.drain(..) {
            match event {
                Event::Failed { id } => tracing::warn!(id, "fcheck: server failed"),
                Event::Recovered { id } => tracing::info!(id, "fcheck: server recovered"),
            }
            // The owner may have stopped listening; the view stays current.
            let _ = events_tx.send(event);
        }
        if recv_failed {
            tokio::time::sleep(RECV_ERROR_PAUSE).await;
            continue;
        }
        // Re-arming costs a trip through the timer wheel; most turns (an ack
        // read) leave the wake-up where it was.
        match next_wake {
            Some(at) if armed != Some(at) => {
                timer.as_mut().reset(tokio::time::Instant::from_std(at));
                armed = Some(at);
            }
            Some(_) => {}
            None => armed = None,
        }
        tokio::select! {
            _ = socket.readable() => {}
            // A fired timer must be re-armed even for the same instant.
            () = &mut timer, if armed.is_some() => armed = None,
            () = shared.changed.notified() => {}
        }
    }
}

/// Reads and applies up to [`MAX_READS_PER_TURN`] waiting datagrams without
/// blocking. Returns whether the socket reported an error.
fn read_waiting(socket: &UdpSocket, shared: &Shared, buf: &mut [u8], events: &mut Vec<Event>) -> bool {
    for _ in 0..MAX_READS_PER_TURN {
        let len = match socket.try_recv_from(buf) {
            Ok((len, _from)) => len,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                tracing::debug!(error = %e, "fcheck monitor: receive failed");
                shared.table().stats_mut().recv_errors += 1;
                return true;
            }
        };
        let now = Instant::now();
        match wire::decode(&buf[..len]) {
            Ok(Message::Ack(ack)) => shared.table().on_ack(ack, now, events),
            Ok(Message::Heartbeat(_)) | Err(_) => shared.table().stats_mut().malformed += 1,
        }
    }
    false
}

/// Puts every queued heartbeat on the wire. A heartbeat the socket refuses
/// is simply lost, like one dropped by the network; the count of those is
/// returned. Awaiting (rather than `try_send_to`) matters only until the
/// reactor first reports the fresh socket writable, and when the kernel's
/// send buffer is full: UDP sends otherwise complete at once.
async fn send_all(socket: &UdpSocket, sends: &mut Vec<Outgoing>) -> u64 {
    let mut errors = 0;
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    for out in sends.drain(..) {
        let sent = match wire::encode(&Message::Heartbeat(out.heartbeat), &mut buf) {
            Ok(datagram) => socket.send_to(datagram, out.addr).await,
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        if let Err(e) = sent {
            tracing::debug!(addr = %out.addr, error = %e, "fcheck monitor: heartbeat not sent");
            errors += 1;
        }
    }
    errors
}
