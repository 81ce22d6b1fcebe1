//! Outbound Raft messages: one long-lived client stream per peer, in order.
//! A peer that cannot be reached loses its messages (Raft resends), so a
//! slow or dead peer never blocks the event loop.

use std::collections::HashMap;
use std::time::Duration;

use kvraft_core::{Message, NodeId};
use kvraft_proto as pb;
use kvraft_proto::peer_client::PeerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

use crate::convert::message_to_pb;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 8192;

struct PeerLink {
    addr: String,
    tx: mpsc::Sender<pb::PeerMessage>,
}

pub struct Transport {
    me: NodeId,
    secret: String,
    peers: HashMap<NodeId, PeerLink>,
}

impl Transport {
    pub fn new(me: NodeId, secret: String) -> Self {
        Transport {
            me,
            secret,
            peers: HashMap::new(),
        }
    }

    /// Points `id` at `addr` (re)starting its link if the address changed.
    pub fn set_peer(&mut self, id: NodeId, addr: String) {
        if self.peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        tokio::spawn(peer_link(self.me, addr.clone(), self.secret.clone(), rx));
        self.peers.insert(id, PeerLink { addr, tx });
    }

    pub fn send(&mut self, to: NodeId, msg: Message) {
        let Some(link) = self.peers.get(&to) else {
            return;
        };
        for m in message_to_pb(msg) {
            // Full queue or closed link: drop; Raft will resend.
            let _ = link.tx.try_send(m);
        }
    }
}

async fn peer_link(
    me: NodeId,
    addr: String,
    secret: String,
    mut rx: mpsc::Receiver<pb::PeerMessage>,
) {
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
        let (tx2, rx2) = mpsc::channel(PEER_QUEUE);
        let mut request = tonic::Request::new(ReceiverStream::new(rx2));
        if !secret.is_empty()
            && let Ok(v) = MetadataValue::try_from(secret.as_str())
        {
            request.metadata_mut().insert(crate::auth::SECRET_HEADER, v);
        }
        request
            .metadata_mut()
            .insert("x-kvraft-from", MetadataValue::from(me));
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
