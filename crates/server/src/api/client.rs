//! KvClient: Get, Put, Delete, Append, CompareAndSwap as unary calls, and a
//! session stream with many operations in flight.

use std::pin::Pin;
use std::sync::Arc;

use kvraft_proto as pb;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::LoopHandle;
use crate::convert::command_from_pb;
use crate::node_loop::{Input, ReplyTo};
use kvraft_core::kv::Command;

pub struct ClientApi {
    pub inputs: LoopHandle,
}

/// Commands of one session taken but not yet answered on its reply stream:
/// the client library's largest window. A client that sends without reading
/// its replies is then held back by the transport's flow control instead of
/// piling replies (and log entries) up in this server.
pub(crate) const SESSION_IN_FLIGHT: usize = 4_096;

pub(crate) fn bad_request(c: &pb::Command, message: String) -> pb::Reply {
    pb::Reply {
        session: c.session,
        op_id: c.op_id,
        result: Some(pb::reply::Result::Error(pb::Error {
            code: pb::ErrorCode::BadRequest as i32,
            message,
            leader_id: 0,
            leader_addr: String::new(),
        })),
        trace: Vec::new(),
    }
}

/// A client's command ready for the loop, with its tracing token, or the
/// error reply it gets instead. It takes the command whole: a value of up
/// to 1 MiB is not copied on the way in.
pub(crate) fn admit(mut c: pb::Command) -> Result<(Command, Vec<u8>), pb::Reply> {
    let token = std::mem::take(&mut c.trace);
    let (session, op_id) = (c.session, c.op_id);
    command_from_pb(c).map(|cmd| (cmd, token)).map_err(|e| {
        let c = pb::Command { session, op_id, ..Default::default() };
        bad_request(&c, e.to_string())
    })
}

impl ClientApi {
    async fn unary(
        &self,
        req: Request<pb::Command>,
        expect: fn(&pb::command::Op) -> bool,
    ) -> Result<Response<pb::Reply>, Status> {
        let c = req.into_inner();
        if !c.op.as_ref().is_some_and(expect) {
            return Ok(Response::new(bad_request(&c, "the operation does not match the call".into())));
        }
        let (cmd, token) = match admit(c) {
            Ok(admitted) => admitted,
            Err(reply) => return Ok(Response::new(reply)),
        };
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Client { cmd, reply: ReplyTo::Once(tx), token })?;
        let reply = rx.await.map_err(|_| Status::unavailable("server is shutting down"))?;
        Ok(Response::new(reply))
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::Reply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::kv_client_server::KvClient for ClientApi {
    async fn get(&self, req: Request<pb::Command>) -> Result<Response<pb::Reply>, Status> {
        self.unary(req, |op| matches!(op, pb::command::Op::Get(_))).await
    }
    async fn put(&self, req: Request<pb::Command>) -> Result<Response<pb::Reply>, Status> {
        self.unary(req, |op| matches!(op, pb::command::Op::Put(_))).await
    }
    async fn delete(&self, req: Request<pb::Command>) -> Result<Response<pb::Reply>, Status> {
        self.unary(req, |op| matches!(op, pb::command::Op::Delete(_))).await
    }
    async fn append(&self, req: Request<pb::Command>) -> Result<Response<pb::Reply>, Status> {
        self.unary(req, |op| matches!(op, pb::command::Op::Append(_))).await
    }
    async fn compare_and_swap(&self, req: Request<pb::Command>) -> Result<Response<pb::Reply>, Status> {
        self.unary(req, |op| matches!(op, pb::command::Op::Cas(_))).await
    }

    async fn register(&self, req: Request<pb::Command>) -> Result<Response<pb::Reply>, Status> {
        self.unary(req, |op| matches!(op, pb::command::Op::Register(_))).await
    }

    type SessionStream = ReplyStream;

    async fn session(&self, req: Request<Streaming<pb::Command>>) -> Result<Response<Self::SessionStream>, Status> {
        let mut commands = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let inputs = self.inputs.clone();
        // One permit per command taken, given back as its reply leaves.
        let in_flight = Arc::new(Semaphore::new(SESSION_IN_FLIGHT));
        let taken = in_flight.clone();
        tokio::spawn(async move {
            loop {
                // A client gone while its replies were unread would leave
                // this task waiting for a permit for good.
                let permit = tokio::select! {
                    p = taken.acquire() => p,
                    () = tx.closed() => return,
                };
                let Ok(permit) = permit else { return };
                let Ok(Some(c)) = commands.message().await else { return };
                permit.forget();
                match admit(c) {
                    Ok((cmd, token)) => {
                        let input = Input::Client { cmd, reply: ReplyTo::Stream(tx.clone()), token };
                        if inputs.send(input).is_err() {
                            return;
                        }
                    }
                    Err(reply) => {
                        let _ = tx.send(Ok(reply));
                    }
                }
            }
        });
        let replies = UnboundedReceiverStream::new(rx).map(move |r| {
            in_flight.add_permits(1);
            r
        });
        Ok(Response::new(Box::pin(replies)))
    }
}
