//! Outbound Raft messages: one TCP connection per peer, written by the
//! event loop itself.
//!
//! [`Transport::send`] appends a message's frames to the peer's outbox;
//! [`Transport::flush`], called by the loop before it blocks on a write
//! and at the end of each turn, hands the outbox to the socket with a
//! non-blocking write. So a message is on the wire before the loop's own
//! fsync starts, with no task hand-off in between. Whatever the socket does
//! not take at once is finished by the peer's link task, which also
//! (re)connects and notices a connection the peer closed. The exception is
//! a snapshot the core holds only by size: a task streams it from the data
//! directory ([`snapshot_stream`]), queueing a chunk at a time as the
//! outbox drains (so its chunks go between messages the loop sent later,
//! which the receiver and Raft tolerate), one such stream per peer at a
//! time.
//!
//! Invariants:
//! - the outbox holds whole frames, in the order they were queued, and
//!   only while a connection is up: a message sent while the peer is
//!   unreachable is dropped (Raft resends), and a connection that breaks
//!   takes its unwritten frames with it, so a new one starts at a frame;
//! - the outbox holds at most [`PEER_QUEUE_BYTES`] (plus one message, so a
//!   snapshot in memory larger than the budget can still go); a message
//!   that does not fit is dropped whole. Counting bytes matters: a slow
//!   follower must not pin gigabytes of snapshot chunks in the leader; and
//!   an outbox that empties gives a snapshot's worth of capacity back. A
//!   streamed snapshot adds a chunk only while the outbox holds less than
//!   one, so it stays under two chunks however large the snapshot;
//! - the chunks of one snapshot are never interleaved with another's: no
//!   snapshot is queued for a peer while one is being streamed to it;
//! - a snapshot goes at most once per connection and leader term: the core
//!   asks for it again whenever a heartbeat that overtook it is refused,
//!   and the follower gets the copy already on its way;
//! - bytes are written only under the outbox's lock, so the loop and the
//!   link task never interleave frames.

mod snapshot_stream;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kvraft_core::{Message, NodeId, SnapshotMeta};
use prost::Message as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use kvraft_proto as pb;
use kvraft_storage::SnapshotFiles;

use super::frame;
use crate::convert::message_to_pb;
use snapshot_stream::send_stored;

/// Bytes queued per peer before new messages are dropped.
const PEER_QUEUE_BYTES: usize = 64 << 20;
/// An emptied outbox larger than this gives its memory back.
const KEEP_CAPACITY: usize = 4 << 20;
/// A connection whose socket takes nothing for this long is replaced: after
/// a long partition TCP's retransmission timer may have backed off to tens
/// of seconds, while a new connection goes as soon as the network is back.
const STALLED: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A connection that lasted this long was taken: the next dial after it
/// breaks starts over at [`FIRST_BACKOFF`]. One closed sooner (a peer with
/// another secret, or its connection limit reached, takes the connection
/// and closes it at once) backs off as a refused one does.
const TAKEN_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Outbox {
    /// Whole frames not yet written.
    buf: BytesMut,
    /// The connection, once its hello is written.
    conn: Option<Arc<TcpStream>>,
    /// The socket refused bytes and the link task is finishing them: the
    /// loop leaves writing to it until the outbox is empty again.
    backlogged: bool,
    /// The snapshot last queued whole on this connection, with the term of
    /// the leader that sent it. The follower has it or will (TCP keeps
    /// order), so it is not queued again here for that term: while one is
    /// on its way the core, answered by heartbeats that reached the
    /// follower before it, asks for it again and again (a copy of 100 MB
    /// each at a million keys). A later term sends it afresh (the follower
    /// may have refused it as stale).
    snapshot_sent: Option<(u64, SnapshotMeta)>,
}

impl Outbox {
    /// Writes what the socket takes now. False if the connection broke
    /// (then it is gone, with its unwritten frames).
    fn write_some(&mut self) -> bool {
        let Some(conn) = &self.conn else { return false };
        while !self.buf.is_empty() {
            match conn.try_write(&self.buf) {
                Ok(n) => self.buf.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => {
                    self.close();
                    return false;
                }
            }
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            // A snapshot went: do not keep its 100 MB for small messages.
            self.buf = BytesMut::new();
        }
        true
    }

    fn close(&mut self) {
        self.conn = None;
        self.buf = BytesMut::new();
        self.backlogged = false;
        self.snapshot_sent = None;
    }
}

/// What the loop and a link task share.
#[derive(Default)]
struct Shared {
    outbox: Mutex<Outbox>,
    /// The loop left work for the link task: bytes, or a broken connection.
    wake: Notify,
    /// The link task wrote some of the outbox, or the connection went: a
    /// snapshot being streamed may queue its next chunk (or give up).
    drained: Notify,
    /// A snapshot is being streamed to this peer: another one is not
    /// started meanwhile (its chunks would interleave with this one's).
    sending_snapshot: AtomicBool,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct PeerLink {
    addr: String,
    shared: Arc<Shared>,
    task: AbortHandle,
    /// Frames were added since the last flush.
    dirty: bool,
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.task.abort();
        // Its connection goes now, and a snapshot being streamed gives up.
        self.shared.outbox().close();
        self.shared.drained.notify_one();
    }
}

pub struct Transport {
    me: NodeId,
    secret: String,
    peers: HashMap<NodeId, PeerLink>,
    tracer: kvraft_trace::Tracer,
    /// Where a snapshot the core holds only by size is read back from.
    snapshots: SnapshotFiles,
}

impl Transport {
    pub fn new(me: NodeId, secret: String, tracer: kvraft_trace::Tracer, snapshots: SnapshotFiles) -> Self {
        Transport { me, secret, peers: HashMap::new(), tracer, snapshots }
    }

    /// Points `id` at `addr`, (re)starting its link if the address changed.
    pub fn set_peer(&mut self, id: NodeId, addr: String) {
        if self.peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let shared = Arc::new(Shared::default());
        let hello = frame::hello(self.me, &self.secret);
        let task = tokio::spawn(link(addr.clone(), hello, shared.clone())).abort_handle();
        self.peers.insert(id, PeerLink { addr, shared, task, dirty: false });
    }

    /// Queues `msg` for `to`; it goes at the next [`flush`](Self::flush).
    pub fn send(&mut self, to: NodeId, msg: Message) {
        let Some(link) = self.peers.get_mut(&to) else {
            return;
        };
        // Heartbeats (empty AppendEntries, every few ticks) are not traced:
        // they would bury the story in noise.
        let heartbeat = matches!(&msg, Message::AppendEntries { entries, .. } if entries.is_empty());
        let token = if self.tracer.enabled() && !heartbeat {
            let trace = self.tracer.create_trace();
            super::record_message(&trace, &msg, false);
            trace.generate_token()
        } else {
            Vec::new()
        };
        let mut snapshot_sent = None;
        if let Message::InstallSnapshot { term, snapshot, .. } = &msg {
            if link.shared.sending_snapshot.load(Ordering::Acquire) {
                return; // its chunks would interleave with those being streamed; Raft resends
            }
            if link.shared.outbox().snapshot_sent == Some((*term, snapshot.meta)) {
                return; // on its way on this connection already
            }
            if snapshot.data.bytes().is_none() {
                send_stored(self.snapshots.clone(), link.shared.clone(), msg, token, to);
                return;
            }
            snapshot_sent = Some((*term, snapshot.meta));
        }
        let mut outbox = link.shared.outbox();
        if enqueue(&mut outbox, message_to_pb(msg), token) {
            link.dirty = true;
            if let Some((_, meta)) = snapshot_sent {
                outbox.snapshot_sent = snapshot_sent;
                log_sending(to, meta);
            }
        }
    }

    /// Writes every peer's new frames to its socket, as far as the socket
    /// takes them without blocking; the link tasks finish the rest.
    pub fn flush(&mut self) {
        for link in self.peers.values_mut().filter(|l| l.dirty) {
            link.dirty = false;
            let mut outbox = link.shared.outbox();
            if outbox.backlogged {
                continue;
            }
            if !outbox.write_some() {
                drop(outbox);
                link.shared.wake.notify_one(); // broken: reconnect
            } else if !outbox.buf.is_empty() {
                outbox.backlogged = true;
                drop(outbox);
                link.shared.wake.notify_one();
            }
        }
    }
}

/// Appends a message's frames to `outbox`, the first one carrying the trace
/// `token`, if they fit (see the module's invariants). False if dropped.
fn enqueue(outbox: &mut Outbox, mut parts: Vec<pb::PeerMessage>, token: Vec<u8>) -> bool {
    if let Some(first) = parts.first_mut() {
        first.trace = token;
    }
    let sized: Vec<_> = parts.into_iter().map(|m| (m.encoded_len(), m)).collect();
    let bytes = sized.iter().map(|(len, _)| 4 + len).sum();
    if !room_for(outbox, bytes) {
        return false;
    }
    for (len, m) in &sized {
        frame::push(&mut outbox.buf, m, *len);
    }
    true
}

/// Whether `bytes` more may be queued. Not while the peer is unreachable,
/// nor beyond the budget unless the outbox is empty: the message is then
/// dropped whole, and Raft resends.
fn room_for(outbox: &Outbox, bytes: usize) -> bool {
    outbox.conn.is_some() && (outbox.buf.is_empty() || outbox.buf.len() + bytes <= PEER_QUEUE_BYTES)
}

/// A peer's link: connects, says hello, publishes the connection to the
/// loop, finishes writes the loop could not, and starts over when the
/// connection breaks.
async fn link(addr: String, hello: Vec<u8>, shared: Arc<Shared>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Ok(conn) = connect(&addr, &hello).await {
            let since = std::time::Instant::now();
            let conn = Arc::new(conn);
            {
                let mut outbox = shared.outbox();
                outbox.close(); // a fresh start: nothing of an earlier connection
                outbox.conn = Some(conn.clone());
            }
            tend(&shared, &conn).await;
            {
                let mut outbox = shared.outbox();
                if outbox.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                    outbox.close();
                }
            }
            shared.drained.notify_one(); // a snapshot being streamed gives up
            if since.elapsed() >= TAKEN_AFTER {
                backoff = FIRST_BACKOFF;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(addr: &str, hello: &[u8]) -> std::io::Result<TcpStream> {
    let attempt = async {
        let mut conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        conn.write_all(hello).await?;
        Ok(conn)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.map_err(|_| std::io::Error::from(ErrorKind::TimedOut))?
}

/// Serves one connection until it breaks: finishes the writes the loop
/// left, and watches for the peer closing it (peers never write back).
async fn tend(shared: &Shared, conn: &TcpStream) {
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {
                if !finish_writes(shared, conn).await {
                    return;
                }
            }
            ready = conn.readable() => {
                if ready.is_err() {
                    return;
                }
                match conn.try_read(&mut probe) {
                    Ok(0) => return,
                    Err(e) if e.kind() != ErrorKind::WouldBlock => return,
                    _ => {}
                }
            }
        }
    }
}

/// Writes the outbox out as the socket drains. False if the connection
/// broke, was replaced, or took nothing for [`STALLED`].
async fn finish_writes(shared: &Shared, conn: &TcpStream) -> bool {
    loop {
        {
            let mut outbox = shared.outbox();
            if !outbox.conn.as_ref().is_some_and(|c| std::ptr::eq(c.as_ref(), conn)) {
                return false;
            }
            let before = outbox.buf.len();
            if !outbox.write_some() {
                return false;
            }
            if outbox.buf.is_empty() {
                outbox.backlogged = false;
                drop(outbox);
                shared.drained.notify_one();
                return true;
            }
            if outbox.buf.len() < before {
                drop(outbox);
                shared.drained.notify_one(); // progress: a stream may queue its next chunk
            }
        }
        match tokio::time::timeout(STALLED, conn.writable()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}

/// A snapshot going to `to` on a live connection: rare, large, and worth
/// finding when reading a log (`kvraft faults` counts these lines).
fn log_sending(to: NodeId, meta: SnapshotMeta) {
    tracing::info!(to, index = meta.index, term = meta.term, "sending a snapshot to server {to}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that takes each connection and closes it at once is dialled
    /// with a growing wait, not every 20 ms for ever (a flood of
    /// connections, each a warning in the peer's log).
    #[tokio::test]
    async fn a_peer_that_closes_at_once_is_dialled_with_backoff() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepts.clone();
        let closer = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        let link = tokio::spawn(link(addr, frame::hello(1, ""), Arc::new(Shared::default())));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        link.abort();
        closer.abort();
        // Waits of 20, 40, 80... ms: at most 7 dials in 1.5 s, however
        // fast the machine (every 20 ms would be about 70).
        let n = accepts.load(Ordering::SeqCst);
        assert!((1..=8).contains(&n), "{n} connections in 1.5 s");
    }
}
