//! Peer: Raft messages from other servers, one stream per sender.

use kvraft_proto as pb;
use tonic::{Request, Response, Status, Streaming};

use super::LoopHandle;
use crate::convert::SnapshotAssembler;
use crate::node_loop::Input;

pub struct PeerApi {
    pub inputs: LoopHandle,
    pub tracer: kvraft_trace::Tracer,
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerApi {
    async fn send(&self, req: Request<Streaming<pb::PeerMessage>>) -> Result<Response<pb::Empty>, Status> {
        let mut stream = req.into_inner();
        let mut snapshots = SnapshotAssembler::default();
        while let Some(m) = stream.message().await? {
            let token = m.trace.clone();
            match snapshots.accept(m) {
                Ok(Some(msg)) => {
                    if self.tracer.enabled()
                        && !token.is_empty()
                        && let Ok(trace) = self.tracer.receive_token(&token)
                    {
                        crate::transport::record_peer_message(&trace, &msg, true);
                    }
                    self.inputs.send(Input::Peer(msg))?
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("dropping a peer message: {e}"),
            }
        }
        Ok(Response::new(pb::Empty {}))
    }
}
