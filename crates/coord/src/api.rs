//! The coord's gRPC services: servers join (and ask whether the coord
//! still knows them); clients find the leader.

use std::pin::Pin;
use std::time::Duration;

use kvraft_proto as pb;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::coord::Input;

fn gone() -> Status {
    Status::unavailable("the coord is shutting down")
}

pub struct ServerApi {
    pub inputs: mpsc::UnboundedSender<Input>,
}

#[tonic::async_trait]
impl pb::coord_server_server::CoordServer for ServerApi {
    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Join(req.into_inner(), tx)).map_err(|_| gone())?;
        Ok(Response::new(rx.await.map_err(|_| gone())??))
    }

    /// Asked by every server about once a second: not traced.
    async fn known(&self, req: Request<pb::KnownRequest>) -> Result<Response<pb::KnownReply>, Status> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Known(req.into_inner(), tx)).map_err(|_| gone())?;
        Ok(Response::new(rx.await.map_err(|_| gone())?))
    }
}

pub struct ClientApi {
    pub inputs: mpsc::UnboundedSender<Input>,
    pub leader: watch::Receiver<pb::LeaderInfo>,
    pub tracer: kvraft_trace::Tracer,
}

/// A client id goes into the coord's trace: no longer than a server takes.
fn check_client_id(id: &str) -> Result<(), Status> {
    if id.len() > pb::MAX_CLIENT_ID_BYTES {
        return Err(Status::invalid_argument(format!("client_id is over {} bytes", pb::MAX_CLIENT_ID_BYTES)));
    }
    Ok(())
}

/// Longest a GetLeader call may wait.
const MAX_WAIT: Duration = Duration::from_secs(30);

type LeaderStream = Pin<Box<dyn Stream<Item = Result<pb::LeaderInfo, Status>> + Send>>;

#[tonic::async_trait]
impl pb::coord_client_server::CoordClient for ClientApi {
    /// The leader now, or, with `wait_ms`, as soon as there is one (the join
    /// incomplete or a selection under way), or what stands in the way.
    async fn get_leader(&self, req: Request<pb::LeaderRequest>) -> Result<Response<pb::LeaderInfo>, Status> {
        let r = req.into_inner();
        check_client_id(&r.client_id)?;
        let trace = self.tracer.continue_or_create(&r.trace);
        trace.record("LeaderReqRecvd", json!({"ClientId": r.client_id}));
        let wait = Duration::from_millis(r.wait_ms as u64).min(MAX_WAIT);
        let mut rx = self.leader.clone();
        let found = tokio::time::timeout(wait, rx.wait_for(|l| l.leader_id != 0)).await;
        let found = match found {
            Ok(Ok(l)) => Some(l.clone()),
            _ => None,
        };
        let mut info = found.unwrap_or_else(|| self.leader.borrow().clone());
        trace.record("LeaderRes", json!({"ClientId": r.client_id, "ServerId": info.leader_id, "Term": info.term}));
        if trace.enabled() {
            info.trace = trace.generate_token();
        }
        Ok(Response::new(info))
    }

    type WatchLeaderStream = LeaderStream;

    /// The leader now, then every change; each answer is a `LeaderRes` in
    /// the watcher's trace and carries the coord's clock.
    async fn watch_leader(&self, req: Request<pb::LeaderRequest>) -> Result<Response<Self::WatchLeaderStream>, Status> {
        let r = req.into_inner();
        check_client_id(&r.client_id)?;
        let trace = self.tracer.continue_or_create(&r.trace);
        trace.record("LeaderReqRecvd", json!({"ClientId": r.client_id}));
        Ok(Response::new(async_stream_from_watch(self.leader.clone(), trace, r.client_id)))
    }

    async fn cluster(&self, _: Request<pb::Empty>) -> Result<Response<pb::ClusterView>, Status> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::View(tx)).map_err(|_| gone())?;
        Ok(Response::new(rx.await.map_err(|_| gone())?))
    }
}

/// The current value, then every change, each recorded in `trace` as a
/// `LeaderRes` to `client_id` and carrying its token.
fn async_stream_from_watch(
    mut rx: watch::Receiver<pb::LeaderInfo>,
    trace: kvraft_trace::Trace,
    client_id: String,
) -> LeaderStream {
    let (tx, out) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut next = rx.borrow_and_update().clone();
        loop {
            trace.record("LeaderRes", json!({"ClientId": client_id, "ServerId": next.leader_id, "Term": next.term}));
            if trace.enabled() {
                next.trace = trace.generate_token();
            }
            if tx.send(Ok(next)).await.is_err() {
                return;
            }
            // Ends with its watcher, not at the next change after it left.
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            next = rx.borrow_and_update().clone();
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
}
