//! Admin: status and the log, for `kvraft ctl` and people.

use kvraft_proto as pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::LoopHandle;
use crate::node_loop::Input;

pub struct AdminApi {
    pub inputs: LoopHandle,
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminApi {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Status(tx))?;
        Ok(Response::new(rx.await.map_err(|_| Status::unavailable("server is shutting down"))?))
    }

    async fn log(&self, req: Request<pb::LogRequest>) -> Result<Response<pb::LogReply>, Status> {
        let r = req.into_inner();
        let limit = if r.limit == 0 { 10_000 } else { r.limit.min(100_000) } as usize;
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Log { from: r.from, limit, reply: tx })?;
        Ok(Response::new(rx.await.map_err(|_| Status::unavailable("server is shutting down"))?))
    }
}
