//! Streaming a snapshot the core holds only by size (its bytes are in
//! its file) to one peer: a chunk at a time, as the peer's outbox drains,
//! at most one stream per peer. The outbox, the connection and the rules
//! this keeps are the parent module's.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::BytesMut;
use kvraft_core::{Message, NodeId, SnapshotMeta};
use kvraft_storage::{SnapshotFiles, StorageError};
use prost::Message as _;
use tokio::net::TcpStream;

use super::{STALLED, Shared, frame};
use crate::convert::{ChunkHead, SNAPSHOT_CHUNK_BYTES, chunk_ranges};

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
pub(super) fn send_stored(files: SnapshotFiles, shared: Arc<Shared>, msg: Message, token: Vec<u8>, to: NodeId) {
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
        let sent = stream_stored(&files, &shared, &conn, head, token, to).await;
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
    to: NodeId,
) -> Result<(), StorageError> {
    let files = files.clone();
    let Some(stored) = blocking(move || files.open(head.meta)).await? else {
        return Ok(());
    };
    super::log_sending(to, head.meta);
    let stored = Arc::new(stored);
    let len = usize::try_from(stored.len()).unwrap_or(usize::MAX);
    let crc = stored.data_crc();
    let mut token = Some(token);
    for (from, to, last) in chunk_ranges(len) {
        let stored = stored.clone();
        let token = token.take().unwrap_or_default();
        let framed = blocking(move || {
            let mut data = vec![0u8; to - from];
            stored.read_at(from as u64, &mut data)?;
            let mut m = head.chunk(from, data, last.then_some(crc));
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use kvraft_core::Snapshot;
    use kvraft_storage::{Storage, StorageOptions};
    use tokio::net::{TcpListener, TcpSocket};

    use super::super::{SnapshotFiles, Transport, tend};
    use super::*;
    use crate::convert::SnapshotAssembler;
    use kvraft_proto as pb;

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

    /// A stored snapshot of 24 chunks and a bit, being streamed with
    /// `token` to a follower that reads nothing yet.
    struct Streaming {
        dir: tempfile::TempDir,
        _storage: Storage,
        snapshot: Snapshot,
        shared: Arc<Shared>,
        far: TcpStream,
        link: tokio::task::JoinHandle<()>,
    }

    async fn streaming(token: &[u8]) -> Streaming {
        let (dir, storage, snapshot) = stored(24 * SNAPSHOT_CHUNK_BYTES + 123);
        let (near, far) = slow_pair().await;
        let near = Arc::new(near);
        let shared = Arc::new(Shared::default());
        shared.outbox().conn = Some(near.clone());
        let link = tokio::spawn({
            let shared = shared.clone();
            async move { tend(&shared, &near).await }
        });
        send_stored(storage.snapshot_files(), shared.clone(), install(&snapshot), token.to_vec(), 2);
        Streaming { dir, _storage: storage, snapshot, shared, far, link }
    }

    #[tokio::test]
    async fn a_stored_snapshot_is_streamed_as_the_follower_reads_it() {
        // (`_dir` and `_storage` bound, not dropped: the stream reads the file.)
        let Streaming { dir: _dir, _storage, snapshot, shared, mut far, link } = streaming(b"token").await;

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

    #[tokio::test]
    async fn a_snapshot_file_changed_after_its_check_is_refused_by_the_follower() {
        let Streaming { dir, _storage, shared, mut far, link, .. } = streaming(b"").await;
        // The file was opened and verified; the stream waits for the
        // follower. Now a byte near the end of the data goes bad on disk.
        settled(&shared).await;
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "snap"))
            .expect("the snapshot file");
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let at = file.metadata().unwrap().len() - 4 - 100; // before the 4-byte trailer
        let mut byte = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x40], at).unwrap();

        let refused = async {
            let mut scratch = Vec::new();
            let mut assembler = SnapshotAssembler::default();
            loop {
                let m = frame::read(&mut far, &mut scratch).await.unwrap().expect("a frame");
                match assembler.accept(m) {
                    Ok(None) => {}
                    Ok(Some(_)) => panic!("the follower took the changed snapshot"),
                    Err(e) => return e.to_string(),
                }
            }
        };
        let err = tokio::time::timeout(Duration::from_secs(10), refused).await.expect("the last chunk within 10 s");
        assert!(err.contains("checksum mismatch"), "{err}");
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
