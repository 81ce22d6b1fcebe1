//! ServerControl: the coord's calls on a server.

use kvraft_proto as pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::LoopHandle;
use crate::node_loop::Input;

pub struct ControlApi {
    pub inputs: LoopHandle,
}

fn gone() -> Status {
    Status::unavailable("server is shutting down")
}

/// A term from the coord, if it is one a message may carry.
fn term(t: u64) -> Result<u64, Status> {
    crate::convert::bounded(t, "term").map_err(|e| Status::invalid_argument(e.0))
}

#[tonic::async_trait]
impl pb::server_control_server::ServerControl for ControlApi {
    /// Answered only once the term is durable (the core holds the answer
    /// until the disk thread reports it).
    async fn log_state(&self, req: Request<pb::LogStateRequest>) -> Result<Response<pb::LogStateReply>, Status> {
        let r = req.into_inner();
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::LogState { term: term(r.term)?, reply: tx, token: r.trace })?;
        let (ls, token) = rx.await.map_err(|_| gone())?;
        Ok(Response::new(pb::LogStateReply {
            server_id: ls.from,
            term: ls.term,
            granted: ls.granted,
            current_term: ls.current_term,
            last_log_term: ls.last_log_term,
            last_log_index: ls.last_log_index,
            trace: token,
        }))
    }

    async fn become_leader(
        &self,
        req: Request<pb::BecomeLeaderRequest>,
    ) -> Result<Response<pb::BecomeLeaderReply>, Status> {
        let r = req.into_inner();
        if r.members.is_empty() || r.members.len() > 7 {
            return Err(Status::invalid_argument("members must list 1 to 7 servers"));
        }
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::BecomeLeader { term: term(r.term)?, members: r.members, reply: tx, token: r.trace })?;
        Ok(Response::new(rx.await.map_err(|_| gone())?))
    }

    async fn configure(&self, req: Request<pb::Membership>) -> Result<Response<pb::Empty>, Status> {
        let members = req.into_inner().members;
        if members.len() > 7 {
            return Err(Status::invalid_argument("at most 7 servers"));
        }
        self.inputs.send(Input::Configure(members))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn notify(&self, req: Request<pb::ClusterNotice>) -> Result<Response<pb::Empty>, Status> {
        let n = req.into_inner();
        self.inputs.send(Input::Notice {
            leader: n.leader_id,
            term: term(n.term)?,
            failed: n.failed,
            token: n.trace,
        })?;
        Ok(Response::new(pb::Empty {}))
    }
}
