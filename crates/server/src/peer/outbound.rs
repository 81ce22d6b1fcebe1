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
//! directory, queueing a chunk at a time as the outbox drains (so its
//! chunks go between messages the loop sent later, which the receiver and
//! Raft tolerate), one such stream per peer at a time.
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

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kvraft_core::{Message, NodeId, SnapshotMeta};
use prost::Message as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use kvraft_proto as pb;
use kvraft_storage::{SnapshotFiles, StorageError};

use super::frame;
use crate::convert::{ChunkHead, SNAPSHOT_CHUNK_BYTES, chunk_ranges, message_to_pb};

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
                send_stored(self.snapshots.clone(), link.shared.clone(), msg, token);
                return;
            }
            snapshot_sent = Some((*term, snapshot.meta));
        }
        let mut outbox = link.shared.outbox();
        if enqueue(&mut outbox, message_to_pb(msg), token) {
            link.dirty = true;
            if snapshot_sent.is_some() {
                outbox.snapshot_sent = snapshot_sent;
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

/// Sends a snapshot the core holds only by size, streamed from its file:
/// opened on a blocking task (its checksum verified first), then one chunk
/// at a time read and framed on a blocking task and queued only once the
/// outbox holds less than a chunk. So at a million keys (100 MB) neither the
/// loop nor the outbox's lock carries the snapshot, and the leader holds a
/// few MiB of it per follower (under two chunks queued, one being framed),
/// however slowly the follower reads.
/// One that a later snapshot has replaced before it was opened is gone from
/// the disk and is not sent: the core, its patience out, sends the later
/// one. One that cannot be read, or is corrupt, stops the process
/// (fail-stop, as on any storage error: its durable state is no longer what
/// it acknowledged). The send is given up if the connection it started on
/// goes (the link task closes one that takes nothing for [`STALLED`]): the
/// follower would get a snapshot without its start on the next one, and
/// Raft resends.
fn send_stored(files: SnapshotFiles, shared: Arc<Shared>, msg: Message, token: Vec<u8>) {
    let Message::InstallSnapshot { term, leader, snapshot, read_ctx } = msg else {
        return;
    };
    // Weak: the link must be able to close it (a `Weak` also keeps its
    // address from being reused by a later connection).
    let Some(conn) = shared.outbox().conn.as_ref().map(Arc::downgrade) else {
        return; // unreachable: not worth reading 100 MB for
    };
    shared.sending_snapshot.store(true, Ordering::Release);
    let head = ChunkHead { term, leader, read_ctx, meta: snapshot.meta };
    tokio::spawn(async move {
        let sent = stream_stored(&files, &shared, &conn, head, token).await;
        shared.sending_snapshot.store(false, Ordering::Release);
        match sent {
            Ok(()) => {}
            // Replaced by a later snapshot since the core asked: not needed.
            Err(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            // The durable snapshot went bad on disk (or cannot be read): as
            // on any storage error, stop rather than go on without it.
            Err(e) => crate::disk::fail_stop(&e),
        }
    });
}

/// Queues the frames of a stored snapshot's chunks on `conn`'s outbox as it
/// drains, the first carrying `token`. `Ok` also when given up (see
/// [`send_stored`]).
async fn stream_stored(
    files: &SnapshotFiles,
    shared: &Shared,
    conn: &Weak<TcpStream>,
    head: ChunkHead,
    token: Vec<u8>,
) -> Result<(), StorageError> {
    let files = files.clone();
    let Some(stored) = blocking(move || files.open(head.meta)).await? else {
        return Ok(());
    };
    let stored = Arc::new(stored);
    let len = usize::try_from(stored.len()).unwrap_or(usize::MAX);
    let mut token = Some(token);
    for (from, to, last) in chunk_ranges(len) {
        let stored = stored.clone();
        let token = token.take().unwrap_or_default();
        let framed = blocking(move || {
            let mut data = vec![0u8; to - from];
            stored.read_at(from as u64, &mut data)?;
            let mut m = head.chunk(from, data, last);
            m.trace = token;
            let mut frame = BytesMut::new();
            frame::push(&mut frame, &m, m.encoded_len());
            Ok(frame)
        })
        .await?;
        let Some(frame) = framed else { return Ok(()) };
        if !queue_when_drained(shared, conn, frame, last.then_some((head.term, head.meta))).await {
            return Ok(());
        }
    }
    Ok(())
}

/// Runs `f` on a blocking thread (file reads must not stall the loop's).
/// `None` if the runtime is shutting down (`f` cannot panic).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<Option<T>, StorageError> {
    tokio::task::spawn_blocking(f).await.ok().transpose()
}

/// Queues `frame` once the outbox holds less than a chunk, and hands the
/// writing to the link task; with `whole`, the snapshot's last chunk, it
/// notes that snapshot as sent on this connection. False if `conn` went
/// meanwhile, or nothing was written for twice [`STALLED`] (a backstop:
/// the link task replaces a connection stalled for one).
async fn queue_when_drained(
    shared: &Shared,
    conn: &Weak<TcpStream>,
    frame: BytesMut,
    whole: Option<(u64, SnapshotMeta)>,
) -> bool {
    loop {
        let drained = shared.drained.notified();
        {
            let mut outbox = shared.outbox();
            if !outbox.conn.as_ref().is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), conn.as_ptr())) {
                return false;
            }
            if outbox.buf.len() < SNAPSHOT_CHUNK_BYTES {
                if outbox.buf.is_empty() {
                    outbox.buf = frame;
                } else {
                    outbox.buf.extend_from_slice(&frame);
                }
                outbox.backlogged = true;
                if whole.is_some() {
                    outbox.snapshot_sent = whole;
                }
                drop(outbox);
                shared.wake.notify_one();
                return true;
            }
        }
        if tokio::time::timeout(2 * STALLED, drained).await.is_err() {
            return false;
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use kvraft_core::Snapshot;
    use kvraft_storage::{Storage, StorageOptions};
    use tokio::net::{TcpListener, TcpSocket};

    use super::*;
    use crate::convert::SnapshotAssembler;

    /// Small socket buffers, so that what the follower has not read stays
    /// in the leader's outbox rather than in the kernel.
    const SOCKET_BUFFER: u32 = 64 << 10;
    const META: SnapshotMeta = SnapshotMeta { index: 40, term: 2 };

    /// A data directory holding a stored snapshot of `len` bytes at [`META`].
    fn stored(len: usize) -> (tempfile::TempDir, Storage, Snapshot) {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let snapshot = Snapshot::new(META, (0..len).map(|i| (i % 251) as u8).collect());
        storage.snapshot_files().write(&snapshot).unwrap();
        (dir, storage, snapshot)
    }

    /// A listener whose connections take little before they are read.
    fn slow_listener() -> TcpListener {
        let listening = TcpSocket::new_v4().unwrap();
        listening.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        listening.listen(4).unwrap()
    }

    /// A connection whose far end reads only when told to.
    async fn slow_pair() -> (TcpStream, TcpStream) {
        let listener = slow_listener();
        let sending = TcpSocket::new_v4().unwrap();
        sending.set_send_buffer_size(SOCKET_BUFFER).unwrap();
        let (near, far) = tokio::join!(sending.connect(listener.local_addr().unwrap()), listener.accept());
        (near.unwrap(), far.unwrap().0)
    }

    /// Waits up to 10 s for `done`.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads frames from `far` until a whole snapshot has come (10 s at most).
    async fn receive_snapshot(far: &mut TcpStream) -> (Message, Vec<u8>) {
        let read = async {
            let mut scratch = Vec::new();
            let mut assembler = SnapshotAssembler::default();
            let mut first_token = None;
            loop {
                let m = frame::read(far, &mut scratch).await.unwrap().expect("a frame");
                first_token.get_or_insert_with(|| m.trace.clone());
                if let Some(msg) = assembler.accept(m).unwrap() {
                    return (msg, first_token.unwrap_or_default());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read).await.expect("the snapshot came within 10 s")
    }

    /// Waits until a stream to a follower that reads nothing has stopped
    /// (the outbox unchanged for 300 ms, something left in it); returns the
    /// most the outbox held meanwhile.
    async fn settled(shared: &Shared) -> usize {
        let (mut most, mut last, mut since) = (0, usize::MAX, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(20);
        while since.elapsed() < Duration::from_millis(300) {
            assert!(Instant::now() < deadline, "the stream never settled");
            tokio::time::sleep(Duration::from_millis(5)).await;
            let queued = shared.outbox().buf.len();
            most = most.max(queued);
            if queued != last {
                (last, since) = (queued, Instant::now());
            }
        }
        assert!(last > 0, "nothing left queued: the socket took it all, so this proves nothing");
        most
    }

    fn install(snapshot: &Snapshot) -> Message {
        Message::InstallSnapshot { term: 3, leader: 1, read_ctx: 7, snapshot: snapshot.stored() }
    }

    #[tokio::test]
    async fn a_stored_snapshot_is_streamed_as_the_follower_reads_it() {
        let (_dir, storage, snapshot) = stored(24 * SNAPSHOT_CHUNK_BYTES + 123);
        let (near, mut far) = slow_pair().await;
        let near = Arc::new(near);
        let shared = Arc::new(Shared::default());
        shared.outbox().conn = Some(near.clone());
        let link = tokio::spawn({
            let shared = shared.clone();
            async move { tend(&shared, &near).await }
        });
        send_stored(storage.snapshot_files(), shared.clone(), install(&snapshot), b"token".to_vec());

        // The follower reads nothing: the stream must stop with under two
        // chunks queued, not the whole 24 MiB.
        let most = settled(&shared).await;
        assert!(most < 2 * SNAPSHOT_CHUNK_BYTES + 1024, "{most} bytes queued at once");
        assert!(shared.sending_snapshot.load(Ordering::Acquire), "the stream ended early");

        // Once read, the chunks make up the snapshot, in order.
        let (received, token) = receive_snapshot(&mut far).await;
        assert_eq!(token, b"token", "the first chunk carries the trace token");
        let Message::InstallSnapshot { term, leader, read_ctx, snapshot: got } = received else {
            panic!("not a snapshot: {received:?}");
        };
        assert_eq!((term, leader, read_ctx, got.meta), (3, 1, 7, META));
        assert_eq!(got.data.bytes(), snapshot.data.bytes());
        until("the stream ends", || !shared.sending_snapshot.load(Ordering::Acquire)).await;
        assert!(shared.outbox().buf.is_empty());
        assert_eq!(shared.outbox().snapshot_sent, Some((3, META)));
        link.abort();
    }

    /// The transport as the loop uses it, its link connected to `listener`.
    async fn transport_to(listener: &TcpListener, files: SnapshotFiles) -> (Transport, TcpStream) {
        let mut transport = Transport::new(1, String::new(), kvraft_trace::Tracer::disabled(), files);
        transport.set_peer(2, listener.local_addr().unwrap().to_string());
        let (mut far, _) = listener.accept().await.unwrap();
        frame::read_hello(&mut far).await.unwrap();
        let shared = transport.peers[&2].shared.clone();
        until("the link publishes its connection", || shared.outbox().conn.is_some()).await;
        (transport, far)
    }

    #[tokio::test]
    async fn a_stream_gives_up_when_its_connection_goes() {
        let (_dir, storage, snapshot) = stored(16 * SNAPSHOT_CHUNK_BYTES);
        let listener = slow_listener();
        let (mut transport, far) = transport_to(&listener, storage.snapshot_files()).await;
        let shared = transport.peers[&2].shared.clone();
        transport.send(2, install(&snapshot));
        settled(&shared).await;

        // The follower goes away: the link task sees its connection closed,
        // and the stream must not go on, on the next connection or at all.
        drop(far);
        let dropped = Instant::now();
        until("the stream gives up", || !shared.sending_snapshot.load(Ordering::Acquire)).await;
        assert!(dropped.elapsed() < STALLED, "gave up only at the backstop, {:?} later", dropped.elapsed());
        let (mut far, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.unwrap().unwrap();
        frame::read_hello(&mut far).await.unwrap();
        until("the link reconnects", || shared.outbox().conn.is_some()).await;
        assert_eq!(shared.outbox().snapshot_sent, None, "a new connection has been sent nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(shared.outbox().buf.is_empty(), "a chunk went on the next connection");

        // On the new connection the snapshot goes again, whole.
        transport.send(2, install(&snapshot));
        let (received, _) = receive_snapshot(&mut far).await;
        assert!(matches!(received, Message::InstallSnapshot { snapshot: s, .. } if s.meta == META));
    }

    #[tokio::test]
    async fn a_snapshot_goes_once_per_connection() {
        let (_dir, storage, snapshot) = stored(3 * SNAPSHOT_CHUNK_BYTES);
        let listener = slow_listener();
        let (mut transport, mut far) = transport_to(&listener, storage.snapshot_files()).await;
        let shared = transport.peers[&2].shared.clone();
        transport.send(2, install(&snapshot));
        receive_snapshot(&mut far).await;
        until("the stream ends", || !shared.sending_snapshot.load(Ordering::Acquire)).await;

        // Asked again (heartbeats that overtook it were refused): not resent,
        // whether stored or in memory, but a heartbeat still goes.
        transport.send(2, install(&snapshot));
        transport.send(2, Message::InstallSnapshot { term: 3, leader: 1, read_ctx: 7, snapshot: snapshot.clone() });
        let heartbeat = Message::AppendEntries {
            term: 3,
            leader: 1,
            prev_log_index: 40,
            prev_log_term: 2,
            entries: Vec::new(),
            leader_commit: 40,
            read_ctx: 8,
        };
        transport.send(2, heartbeat);
        transport.flush();
        let mut scratch = Vec::new();
        let next = tokio::time::timeout(Duration::from_secs(10), frame::read(&mut far, &mut scratch))
            .await
            .expect("a frame within 10 s")
            .unwrap()
            .expect("a frame");
        assert!(matches!(next.msg, Some(pb::peer_message::Msg::Append(_))), "resent: {next:?}");
        assert!(!shared.sending_snapshot.load(Ordering::Acquire), "a second stream started");

        // The same one from a later term does go (the follower may have
        // refused the first as stale), and so does a later snapshot.
        transport.send(2, Message::InstallSnapshot { term: 4, leader: 1, read_ctx: 9, snapshot: snapshot.stored() });
        let (received, _) = receive_snapshot(&mut far).await;
        assert!(matches!(received, Message::InstallSnapshot { term: 4, snapshot: s, .. } if s.meta == META));
        until("the stream ends", || !shared.sending_snapshot.load(Ordering::Acquire)).await;
        let later = Snapshot::new(SnapshotMeta { index: 50, term: 2 }, vec![1; 10]);
        transport.send(2, Message::InstallSnapshot { term: 3, leader: 1, read_ctx: 9, snapshot: later });
        transport.flush();
        let (received, _) = receive_snapshot(&mut far).await;
        assert!(matches!(received, Message::InstallSnapshot { snapshot: s, .. } if s.meta.index == 50));
    }
}
