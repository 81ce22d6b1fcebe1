//! Outbound Raft messages: one long-lived client stream per peer, in order.
//! A peer that cannot be reached loses its messages (Raft resends), so a
//! slow or dead peer never blocks the event loop.
//!
//! Invariant: a peer's queue holds at most [`PEER_QUEUE_BYTES`] (plus one
//! message, so a snapshot larger than the budget can still go) and
//! [`PEER_QUEUE`] messages; a message that does not fit is dropped whole.
//! Counting bytes matters: snapshot chunks are 1 MiB each, and a queue
//! bounded by count alone let a slow follower pin gigabytes in the leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message as _;

use kvraft_core::{Message, NodeId};
use kvraft_proto as pb;
use kvraft_proto::peer_client::PeerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

use crate::convert::message_to_pb;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 8192;
/// Bytes queued per peer before new messages are dropped.
const PEER_QUEUE_BYTES: usize = 64 << 20;
/// Messages between the queue and the gRPC stream (small: the queue above
/// is where the budget is kept).
const STREAM_BUFFER: usize = 16;

struct PeerLink {
    addr: String,
    /// Each message with its encoded size.
    tx: mpsc::Sender<(pb::PeerMessage, usize)>,
    /// Encoded bytes in `tx` not yet taken by the link task.
    queued: Arc<AtomicUsize>,
}

pub struct Transport {
    me: NodeId,
    secret: String,
    peers: HashMap<NodeId, PeerLink>,
    tracer: kvraft_trace::Tracer,
}

/// Records a Raft message sent or received, as the prototype's trace did.
pub fn record_peer_message(trace: &kvraft_trace::Trace, msg: &Message, received: bool) {
    use kvraft_core::AppendResult;
    use serde_json::json;
    match msg {
        Message::AppendEntries { term, leader, prev_log_index, prev_log_term, entries, leader_commit, .. } => {
            let tag = if received { "AppendEntriesRequestRecvd" } else { "AppendEntriesRequestSent" };
            trace.record_with(tag, || {
                let shown: Vec<String> = entries.iter().take(8).map(|e| e.to_string()).collect();
                json!({"Term": term, "LeaderId": leader, "PrevLogIndex": prev_log_index,
                       "PrevLogTerm": prev_log_term, "Entries": shown, "EntryCount": entries.len(),
                       "LeaderCommit": leader_commit})
            });
        }
        Message::AppendEntriesResponse { term, from, result, .. } => {
            let tag = if received { "AppendEntriesResponseRecvd" } else { "AppendEntriesResponseSent" };
            let (success, match_index) = match result {
                AppendResult::Success { match_index } => (true, Some(*match_index)),
                _ => (false, None),
            };
            trace.record(tag, json!({"Term": term, "From": from, "Success": success, "MatchIndex": match_index}));
        }
        Message::InstallSnapshot { term, leader, snapshot, .. } => {
            let tag = if received { "InstallSnapshotRecvd" } else { "InstallSnapshotSent" };
            trace.record(tag, json!({"Term": term, "LeaderId": leader, "Index": snapshot.meta.index}));
        }
        Message::LogState(_) | Message::BecomeLeaderResponse { .. } => {}
    }
}

impl Transport {
    pub fn new(me: NodeId, secret: String, tracer: kvraft_trace::Tracer) -> Self {
        Transport { me, secret, peers: HashMap::new(), tracer }
    }

    /// Points `id` at `addr` (re)starting its link if the address changed.
    pub fn set_peer(&mut self, id: NodeId, addr: String) {
        if self.peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(peer_link(self.me, addr.clone(), self.secret.clone(), Queue { rx, queued: queued.clone() }));
        self.peers.insert(id, PeerLink { addr, tx, queued });
    }

    pub fn send(&mut self, to: NodeId, msg: Message) {
        let Some(link) = self.peers.get(&to) else {
            return;
        };
        // Heartbeats (empty AppendEntries, every few ticks) are not traced:
        // they would bury the story in noise.
        let heartbeat = matches!(&msg, Message::AppendEntries { entries, .. } if entries.is_empty());
        let token = if self.tracer.enabled() && !heartbeat {
            let trace = self.tracer.create_trace();
            record_peer_message(&trace, &msg, false);
            trace.generate_token()
        } else {
            Vec::new()
        };
        let mut parts = message_to_pb(msg);
        if let Some(first) = parts.first_mut() {
            first.trace = token;
        }
        // Each part's size, computed once: it is released by the link as is.
        let sized: Vec<(pb::PeerMessage, usize)> = parts
            .into_iter()
            .map(|m| {
                let len = m.encoded_len();
                (m, len)
            })
            .collect();
        let bytes: usize = sized.iter().map(|(_, len)| len).sum();
        let queued = link.queued.load(Ordering::Relaxed);
        if queued > 0 && queued + bytes > PEER_QUEUE_BYTES {
            return; // the peer is not keeping up: drop it whole; Raft will resend
        }
        for (m, len) in sized {
            link.queued.fetch_add(len, Ordering::Relaxed);
            // Full queue or closed link: drop; Raft will resend.
            if link.tx.try_send((m, len)).is_err() {
                link.queued.fetch_sub(len, Ordering::Relaxed);
            }
        }
    }
}

/// A link's end of its queue: taking a message releases its bytes.
struct Queue {
    rx: mpsc::Receiver<(pb::PeerMessage, usize)>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    async fn recv(&mut self) -> Option<pb::PeerMessage> {
        let (m, len) = self.rx.recv().await?;
        self.queued.fetch_sub(len, Ordering::Relaxed);
        Some(m)
    }
}

async fn peer_link(me: NodeId, addr: String, secret: String, mut rx: Queue) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true),
            Err(_) => {
                tracing::error!(peer = %addr, "invalid peer address; messages to it are dropped");
                while rx.recv().await.is_some() {}
                return;
            }
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(_) => {
                // Drop what queued up while the peer was away, then retry.
                let deadline = tokio::time::sleep(backoff);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        m = rx.recv() => if m.is_none() { return },
                        _ = &mut deadline => break,
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        let (tx2, rx2) = mpsc::channel(STREAM_BUFFER);
        let mut request = tonic::Request::new(ReceiverStream::new(rx2));
        if !secret.is_empty()
            && let Ok(v) = MetadataValue::try_from(secret.as_str())
        {
            request.metadata_mut().insert(crate::auth::SECRET_HEADER, v);
        }
        request.metadata_mut().insert("x-kvraft-from", MetadataValue::from(me));
        let mut client = PeerClient::new(channel);
        let mut call = tokio::spawn(async move { client.send(request).await });
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { call.abort(); return };
                    if tx2.send(m).await.is_err() {
                        break;
                    }
                }
                _ = &mut call => break,
            }
        }
    }
}
