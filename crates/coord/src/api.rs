//! The coord's gRPC services: servers join; clients find the leader.

use std::pin::Pin;
use std::time::Duration;

use kvraft_proto as pb;
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
        Ok(Response::new(rx.await.map_err(|_| gone())?))
    }
}

pub struct ClientApi {
    pub inputs: mpsc::UnboundedSender<Input>,
    pub leader: watch::Receiver<pb::LeaderInfo>,
    pub tracer: kvraft_trace::Tracer,
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
        let trace = self.tracer.continue_or_create(&r.trace);
        trace.record("LeaderReqRecvd", serde_json::json!({}));
        let wait = Duration::from_millis(r.wait_ms as u64).min(MAX_WAIT);
        let mut rx = self.leader.clone();
        let found = tokio::time::timeout(wait, rx.wait_for(|l| l.leader_id != 0)).await;
        let found = match found {
            Ok(Ok(l)) => Some(l.clone()),
            _ => None,
        };
        let mut info = found.unwrap_or_else(|| self.leader.borrow().clone());
        trace.record("LeaderRes", serde_json::json!({"ServerId": info.leader_id, "Term": info.term}));
        if trace.enabled() {
            info.trace = trace.generate_token();
        }
        Ok(Response::new(info))
    }

    type WatchLeaderStream = LeaderStream;

    async fn watch_leader(&self, _: Request<pb::LeaderRequest>) -> Result<Response<Self::WatchLeaderStream>, Status> {
        let mut rx = self.leader.clone();
        let stream = async_stream_from_watch(&mut rx);
        Ok(Response::new(stream))
    }

    async fn cluster(&self, _: Request<pb::Empty>) -> Result<Response<pb::ClusterView>, Status> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::View(tx)).map_err(|_| gone())?;
        Ok(Response::new(rx.await.map_err(|_| gone())?))
    }
}

/// The current value, then every change.
fn async_stream_from_watch(rx: &mut watch::Receiver<pb::LeaderInfo>) -> LeaderStream {
    let (tx, out) = mpsc::channel(16);
    let mut rx = rx.clone();
    tokio::spawn(async move {
        let first = rx.borrow_and_update().clone();
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        while rx.changed().await.is_ok() {
            let v = rx.borrow_and_update().clone();
            if tx.send(Ok(v)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
}
