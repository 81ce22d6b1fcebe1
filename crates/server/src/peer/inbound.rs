//! Inbound Raft messages: the `ServerServerAddr` listener. Each connection
//! starts with a hello naming the sender and carrying the cluster secret;
//! then every frame is decoded, checked, and handed to the event loop in
//! the order it came.
//!
//! A connection that says anything wrong (no hello, a wrong secret, a frame
//! too large or that does not decode, a message in another server's name
//! than its hello's) is closed with one warning; the
//! server goes on, and the sender reconnects and Raft resends. A message
//! that decodes but makes no sense (AppendEntries with gaps, say) is
//! dropped alone: the framing around it is intact. A bad snapshot (a chunk
//! out of order, a checksum that does not hold, a state that does not
//! decode) closes the connection, because the leader sends a snapshot once
//! per connection and term and only a new connection gets it again.
//!
//! A whole snapshot is decoded into a state machine here, on a blocking
//! thread, before the loop sees it: the loop does not stall for the decode
//! (a third of a second at a million keys), and a snapshot that does not
//! decode, or whose state is not at the index and term it claims, is
//! refused instead of being adopted by the core, so the follower goes on
//! serving from the state it has.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use kvraft_core::kv::KvStore;
use kvraft_core::{Message, SnapshotData};
use kvraft_proto as pb;

use super::frame;
use crate::api::LoopHandle;
use crate::convert::{MAX_RECEIVING_BYTES, SnapshotAssembler};
use crate::limits::{self, Gate, MAX_PEER_CONNECTIONS};
use crate::node_loop::Input;

/// A connection must say hello within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// While a snapshot is being assembled, a connection that brings nothing
/// for this long is closed and the snapshot given up (a chunk is 1 MiB; the
/// sender itself replaces a connection that takes nothing for a few
/// seconds).
const SNAPSHOT_STALL: Duration = Duration::from_secs(30);
/// Read buffer per connection: many small frames per read under load.
const READ_BUFFER: usize = 64 << 10;

/// What every inbound connection needs.
#[derive(Clone)]
pub struct Inbound {
    pub secret: String,
    pub inputs: LoopHandle,
    pub tracer: kvraft_trace::Tracer,
    /// The loop's commit index as of its last Ready: a snapshot at or below
    /// it would not be adopted, so it is passed on undecoded.
    pub commit: Arc<AtomicU64>,
    /// Bytes of snapshots being received by all connections together (see
    /// [`SnapshotAssembler`]).
    pub receiving: Arc<AtomicUsize>,
}

/// Accepts peer connections until `stop` turns true.
pub async fn serve(listener: TcpListener, inbound: Inbound, stop: watch::Receiver<bool>) {
    let gate = Gate::new(MAX_PEER_CONNECTIONS, "peer port");
    limits::accept(listener, gate, stop.clone(), |conn, from, permit| {
        let (inbound, stop) = (inbound.clone(), stop.clone());
        tokio::spawn(async move {
            connection(conn, from, inbound, stop).await;
            drop(permit);
        });
    })
    .await
}

async fn connection(conn: TcpStream, addr: SocketAddr, inbound: Inbound, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        reason = receive(conn, inbound) => {
            if let Err(reason) = reason {
                tracing::warn!("peer connection from {addr} closed: {reason}");
            }
        }
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Reads one connection to its end; `Err` says why it was cut short.
async fn receive(conn: TcpStream, inbound: Inbound) -> Result<(), String> {
    let mut r = BufReader::with_capacity(READ_BUFFER, conn);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, frame::read_hello(&mut r)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no hello in time".into()),
    };
    if !inbound.secret.is_empty() && hello.secret != inbound.secret {
        return Err(format!("server {} presented a wrong or missing cluster secret", hello.from));
    }
    let mut scratch = Vec::new();
    let mut snapshots = SnapshotAssembler::new(inbound.receiving.clone(), MAX_RECEIVING_BYTES);
    loop {
        let next = frame::read(&mut r, &mut scratch);
        let next = if snapshots.in_progress() {
            // A half-open connection (its leader gone without a word) would
            // otherwise hold a partial snapshot's bytes for good, against the
            // bound all connections share.
            match tokio::time::timeout(SNAPSHOT_STALL, next).await {
                Ok(next) => next,
                Err(_) => return Err(format!("server {}: a snapshot stalled for {SNAPSHOT_STALL:?}", hello.from)),
            }
        } else {
            next.await
        };
        let mut m = match next {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("server {}: {e}", hello.from)),
        };
        let token = std::mem::take(&mut m.trace);
        let chunk = matches!(m.msg, Some(pb::peer_message::Msg::Snapshot(_)));
        let msg = match snapshots.accept(m) {
            Ok(Some(msg)) => msg,
            Ok(None) => continue,
            // The leader sends a snapshot once per connection: only a new
            // connection gets it sent again.
            Err(e) if chunk => return Err(format!("server {}: {e}", hello.from)),
            Err(e) => {
                // Framing is intact, so the next message can still be read.
                tracing::warn!("dropping a message from server {}: {e}", hello.from);
                continue;
            }
        };
        let sender = match &msg {
            Message::AppendEntries { leader, .. } | Message::InstallSnapshot { leader, .. } => *leader,
            Message::AppendEntriesResponse { from, .. } => *from,
            Message::LogState(_) | Message::BecomeLeaderResponse { .. } => hello.from,
        };
        if sender != hello.from {
            // Each server speaks for itself on its own connections.
            return Err(format!("server {} sent a message as server {sender}", hello.from));
        }
        let store = match decode_snapshot(&msg, inbound.commit.load(Ordering::Relaxed)).await {
            Ok(store) => store,
            Err(e) => return Err(format!("server {}: a snapshot refused: {e}", hello.from)),
        };
        if inbound.tracer.enabled()
            && !token.is_empty()
            && let Ok(trace) = inbound.tracer.receive_token(&token)
        {
            super::record_message(&trace, &msg, true);
        }
        let input = match store {
            Some(store) => Input::PeerSnapshot { msg, store },
            None => Input::Peer(msg),
        };
        if inbound.inputs.send(input).is_err() {
            return Ok(()); // the loop is gone: shutting down
        }
    }
}

/// The state machine a received snapshot holds, decoded on a blocking
/// thread; `None` for any other message, and for a snapshot at or below
/// `commit` (the core answers it without adopting it: a copy that arrived
/// late, or a resend after a reconnect, costs no decode).
async fn decode_snapshot(msg: &Message, commit: u64) -> Result<Option<KvStore>, String> {
    let Message::InstallSnapshot { snapshot, .. } = msg else {
        return Ok(None);
    };
    if snapshot.meta.index <= commit {
        return Ok(None);
    }
    if !matches!(snapshot.data, SnapshotData::Bytes(_)) {
        return Err("a snapshot without its bytes".into());
    }
    let snapshot = snapshot.clone(); // the bytes are shared, not copied
    // A state at another index than the snapshot's would put the log and
    // the state out of step (and compacting would then drop entries the
    // state never applied): refused, as at recovery.
    match tokio::task::spawn_blocking(move || crate::snapshot::restore(&snapshot)).await {
        Ok(Ok(store)) => Ok(Some(store)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("decoding it failed: {e}")),
    }
}
