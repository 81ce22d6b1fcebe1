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
//! a snapshot the core holds only by size: a blocking task reads it back
//! from the data directory, frames it, and queues it when done (so it may
//! go after messages the loop sent later, which Raft tolerates), one such
//! task per peer at a time.
//!
//! Invariants:
//! - the outbox holds whole frames, in the order they were queued, and
//!   only while a connection is up: a message sent while the peer is
//!   unreachable is dropped (Raft resends), and a connection that breaks
//!   takes its unwritten frames with it, so a new one starts at a frame;
//! - the outbox holds at most [`PEER_QUEUE_BYTES`] (plus one message, so a
//!   snapshot larger than the budget can still go); a message that does
//!   not fit is dropped whole. Counting bytes matters: a slow follower must
//!   not pin gigabytes of snapshot chunks in the leader; and an outbox that
//!   empties gives a snapshot's worth of capacity back;
//! - bytes are written only under the outbox's lock, so the loop and the
//!   link task never interleave frames.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kvraft_core::{Message, NodeId};
use prost::Message as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use kvraft_proto as pb;
use kvraft_storage::{SnapshotFiles, StorageError};

use super::frame;
use crate::convert::{ChunkHead, chunk_ranges, message_to_pb};

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

#[derive(Default)]
struct Outbox {
    /// Whole frames not yet written.
    buf: BytesMut,
    /// The connection, once its hello is written.
    conn: Option<Arc<TcpStream>>,
    /// The socket refused bytes and the link task is finishing them: the
    /// loop leaves writing to it until the outbox is empty again.
    backlogged: bool,
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
    }
}

/// What the loop and a link task share.
#[derive(Default)]
struct Shared {
    outbox: Mutex<Outbox>,
    /// The loop left work for the link task: bytes, or a broken connection.
    wake: Notify,
    /// A stored snapshot is being read back for this peer: another one is
    /// not started meanwhile (each holds the whole snapshot's frames).
    reading_snapshot: AtomicBool,
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
        if let Message::InstallSnapshot { snapshot, .. } = &msg
            && snapshot.data.bytes().is_none()
        {
            send_stored(self.snapshots.clone(), link.shared.clone(), msg, token);
            return;
        }
        if enqueue(&mut link.shared.outbox(), message_to_pb(msg), token) {
            link.dirty = true;
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

/// Sends a snapshot the core holds only by size: a blocking task opens it
/// (its checksum verified first), frames it a chunk at a time straight from
/// the file (at a million keys, 100 MB: neither on the loop, nor under the
/// outbox's lock, which the loop takes for every message, nor held twice),
/// queues the frames, and leaves the writing to the link task. One that a
/// later snapshot has replaced meanwhile is gone from the disk and is not
/// sent: the core, its patience out, sends the later one. One that cannot
/// be read, or is corrupt, stops the process (fail-stop, as on any storage
/// error: its durable state is no longer what it acknowledged).
fn send_stored(files: SnapshotFiles, shared: Arc<Shared>, msg: Message, token: Vec<u8>) {
    let Message::InstallSnapshot { term, leader, snapshot, read_ctx } = msg else {
        return;
    };
    if shared.outbox().conn.is_none() {
        return; // unreachable: not worth reading 100 MB for
    }
    if shared.reading_snapshot.swap(true, Ordering::AcqRel) {
        return; // one is on its way already; Raft resends if it is lost
    }
    let head = ChunkHead { term, leader, read_ctx, meta: snapshot.meta };
    tokio::task::spawn_blocking(move || {
        let framed = frame_stored(&files, head, token);
        shared.reading_snapshot.store(false, Ordering::Release);
        let frames = match framed {
            Ok(f) => f,
            // Replaced by a later snapshot since the core asked: not needed.
            Err(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return,
            // The durable snapshot went bad on disk (or cannot be read): as
            // on any storage error, stop rather than go on without it.
            Err(e) => crate::disk::fail_stop(&e),
        };
        let mut outbox = shared.outbox();
        if !room_for(&outbox, frames.len()) {
            return;
        }
        if outbox.buf.is_empty() {
            outbox.buf = frames;
        } else {
            outbox.buf.extend_from_slice(&frames);
        }
        outbox.backlogged = true;
        drop(outbox);
        shared.wake.notify_one();
    });
}

/// The frames of a stored snapshot's chunks, the first carrying `token`.
fn frame_stored(files: &SnapshotFiles, head: ChunkHead, token: Vec<u8>) -> Result<BytesMut, StorageError> {
    let stored = files.open(head.meta)?;
    let len = usize::try_from(stored.len()).unwrap_or(usize::MAX);
    let mut frames = BytesMut::with_capacity(len.saturating_add(len / 1000 + 64));
    let mut token = Some(token);
    for (from, to, last) in chunk_ranges(len) {
        let mut data = vec![0u8; to - from];
        stored.read_at(from as u64, &mut data)?;
        let mut m = head.chunk(from, data, last);
        m.trace = token.take().unwrap_or_default();
        frame::push(&mut frames, &m, m.encoded_len());
    }
    Ok(frames)
}

/// A peer's link: connects, says hello, publishes the connection to the
/// loop, finishes writes the loop could not, and starts over when the
/// connection breaks.
async fn link(addr: String, hello: Vec<u8>, shared: Arc<Shared>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Ok(conn) = connect(&addr, &hello).await {
            backoff = FIRST_BACKOFF;
            let conn = Arc::new(conn);
            shared.outbox().conn = Some(conn.clone());
            tend(&shared, &conn).await;
            let mut outbox = shared.outbox();
            if outbox.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                outbox.close();
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
            if !outbox.write_some() {
                return false;
            }
            if outbox.buf.is_empty() {
                outbox.backlogged = false;
                return true;
            }
        }
        match tokio::time::timeout(STALLED, conn.writable()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}
