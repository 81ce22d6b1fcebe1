//! Admin: status, the log and a digest of the state, for `kvraft ctl`, the
//! fault harness and people.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kvraft_proto as pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::LoopHandle;
use crate::node_loop::Input;

pub struct AdminApi {
    pub inputs: LoopHandle,
    /// The client port's refused connections (see `limits::Gate`).
    pub refused: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminApi {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Status(tx))?;
        let mut status = rx.await.map_err(|_| Status::unavailable("server is shutting down"))?;
        status.client_connections_refused = self.refused.load(Ordering::Relaxed);
        Ok(Response::new(status))
    }

    async fn digest(&self, _: Request<pb::DigestRequest>) -> Result<Response<pb::DigestReply>, Status> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::State(tx))?;
        // A clone of the persistent maps: the loop goes on while it is encoded.
        let kv = rx.await.map_err(|_| Status::unavailable("server is shutting down"))?;
        let digest = tokio::task::spawn_blocking(move || pb::DigestReply {
            applied_index: kv.applied_index(),
            crc32c: crc32c::crc32c(&kv.snapshot()),
            keys: kv.len() as u64,
        });
        Ok(Response::new(digest.await.map_err(|e| Status::internal(format!("digest: {e}")))?))
    }

    async fn log(&self, req: Request<pb::LogRequest>) -> Result<Response<pb::LogReply>, Status> {
        let r = req.into_inner();
        let limit = if r.limit == 0 { 10_000 } else { r.limit.min(100_000) } as usize;
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Log { from: r.from, limit, reply: tx })?;
        let (entries, snapshot_index) = rx.await.map_err(|_| Status::unavailable("server is shutting down"))?;
        // Formatting 100,000 lines takes tens of milliseconds: not on the loop.
        let reply = tokio::task::spawn_blocking(move || pb::LogReply {
            lines: entries.iter().map(|e| pb::LogLine { index: e.index, term: e.term, entry: e.to_string() }).collect(),
            snapshot_index,
        });
        Ok(Response::new(reply.await.map_err(|e| Status::internal(format!("log: {e}")))?))
    }
}
