//! The client's side of the wire: commands, replies, the session stream to
//! the leader, and the watch on the coord.

use std::time::Duration;

use kvraft_proto as pb;
use kvraft_proto::coord_client_client::CoordClientClient;
use kvraft_proto::frame::CLIENT_WIRE as WIRE;
use kvraft_proto::kv_client_client::KvClientClient;
use kvraft_proto::secret::with_secret;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::driver::Event;
use crate::op::{ClientError, Op, Value};

pub fn command(client_id: &str, session: u64, op_id: u64, op: &Op) -> pb::Command {
    use pb::command::Op as P;
    let op = match op.clone() {
        Op::Get { key } => P::Get(pb::GetOp { key }),
        Op::Put { key, value } => P::Put(pb::PutOp { key, value }),
        Op::Delete { key } => P::Delete(pb::DeleteOp { key }),
        Op::Append { key, value } => P::Append(pb::AppendOp { key, value }),
        Op::Cas { key, expected, new } => P::Cas(pb::CasOp { key, expected, new_value: new }),
    };
    pb::Command {
        client_id: client_id.to_owned(),
        session,
        op_id,
        first_unacked: op_id,
        op: Some(op),
        trace: Vec::new(),
    }
}

/// A registration (see the core's `Op::Register`): session 0 and a random,
/// non-zero opId that tells its reply from any other.
pub fn registration(client_id: &str) -> pb::Command {
    pb::Command {
        client_id: client_id.to_owned(),
        session: 0,
        op_id: rand::random::<u64>().max(1),
        first_unacked: 0,
        op: Some(pb::command::Op::Register(pb::RegisterOp {})),
        trace: Vec::new(),
    }
}

/// What a reply means for the operation.
pub enum Outcome {
    /// Finished, one way or the other.
    Done(Result<Value, ClientError>),
    /// Send it again to the leader named (if any).
    NotLeader { leader_id: u64, leader_addr: String },
    /// Send it again after a pause (the leader lacks a quorum for now).
    Retry,
    /// The cluster forgot the session: register anew (see the driver).
    Expired(String),
}

pub fn outcome(r: pb::Reply) -> Outcome {
    use pb::reply::Result as R;
    match r.result {
        Some(R::Value(v)) => Outcome::Done(Ok(Value::Value(v.value))),
        Some(R::Done(_)) => Outcome::Done(Ok(Value::Done)),
        Some(R::Cas(c)) => Outcome::Done(Ok(Value::Cas { swapped: c.swapped })),
        // Only a registration is answered so, and it is handled before.
        Some(R::Registered(_)) => {
            Outcome::Done(Err(ClientError::BadRequest("a session where a result was due".into())))
        }
        Some(R::Error(e)) => match pb::ErrorCode::try_from(e.code) {
            Ok(pb::ErrorCode::NotLeader) => Outcome::NotLeader { leader_id: e.leader_id, leader_addr: e.leader_addr },
            Ok(pb::ErrorCode::NoQuorum) | Ok(pb::ErrorCode::Unavailable) => Outcome::Retry,
            Ok(pb::ErrorCode::StaleRequest) => Outcome::Done(Err(ClientError::Stale)),
            Ok(pb::ErrorCode::SessionExpired) => Outcome::Expired(e.message),
            Ok(pb::ErrorCode::BadRequest) => Outcome::Done(Err(ClientError::BadRequest(e.message))),
            _ => Outcome::Retry,
        },
        None => Outcome::Retry,
    }
}

async fn channel(addr: &str) -> Option<tonic::transport::Channel> {
    let e = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?;
    e.connect_timeout(Duration::from_millis(500)).tcp_nodelay(true).connect().await.ok()
}

/// The largest reply taken: a value within the servers' limits, with room.
const MAX_REPLY: usize = 16 << 20;
/// How long a server may take to answer the client wire's hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(2);

/// One session to a leader over the client wire; reports every reply,
/// then its end.
pub async fn session_framed(
    addr: String,
    secret: String,
    epoch: u64,
    mut commands: mpsc::UnboundedReceiver<pb::Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    use kvraft_proto::frame;
    use tokio::io::AsyncWriteExt;
    let mut served = false;
    let connected = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(&addr)).await;
    if let Ok(Ok(stream)) = connected {
        let _ = stream.set_nodelay(true);
        let (r, mut w) = stream.into_split();
        let mut r = tokio::io::BufReader::with_capacity(64 << 10, r);
        let mut out = WIRE.hello(&pb::ClientHello { secret });
        let mut scratch = Vec::new();
        let welcome = async {
            w.write_all(&out).await.ok()?;
            frame::read::<pb::ClientWelcome, _>(&mut r, &mut scratch, MAX_REPLY).await.ok()?
        };
        // A leader that stopped (SIGSTOP, a partition) takes the hello into
        // its socket buffer and never answers: give up and let the driver
        // try again, as after any closed connection.
        match tokio::time::timeout(WELCOME_TIMEOUT, welcome).await.ok().flatten() {
            Some(wl) if wl.accepted => {
                served = true;
                // Replies are read by a task of their own: a read cut off
                // halfway (by a command to send) would lose its bytes.
                let replies = events.clone();
                let mut reader = tokio::spawn(async move {
                    while let Ok(Some(reply)) = frame::read::<pb::Reply, _>(&mut r, &mut scratch, MAX_REPLY).await {
                        if replies.send(Event::Reply { epoch, reply }).is_err() {
                            return;
                        }
                    }
                });
                loop {
                    let c = tokio::select! {
                        c = commands.recv() => c,
                        _ = &mut reader => break,
                    };
                    let Some(c) = c else { break };
                    out.clear();
                    frame::push(&mut out, &c);
                    while let Ok(c) = commands.try_recv() {
                        frame::push(&mut out, &c);
                    }
                    if w.write_all(&out).await.is_err() {
                        break;
                    }
                }
                reader.abort();
            }
            Some(wl) => {
                let _ = events.send(Event::Refused { epoch: Some(epoch), why: format!("server {addr}: {}", wl.error) });
            }
            None => {}
        }
    }
    // Give a dead leader's address a moment before the driver tries again.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = events.send(Event::Closed { epoch, served });
}

/// One session stream to a leader; reports every reply, then its end.
pub async fn session(
    addr: String,
    secret: String,
    epoch: u64,
    commands: mpsc::UnboundedReceiver<pb::Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut served = false;
    if let Some(ch) = channel(&addr).await {
        let mut kv = KvClientClient::new(ch);
        let req = with_secret(UnboundedReceiverStream::new(commands), &secret);
        match kv.session(req).await {
            Ok(resp) => {
                served = true;
                let mut replies = resp.into_inner();
                while let Ok(Some(reply)) = replies.message().await {
                    if events.send(Event::Reply { epoch, reply }).is_err() {
                        return;
                    }
                }
            }
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                let _ =
                    events.send(Event::Refused { epoch: Some(epoch), why: format!("server {addr}: {}", s.message()) });
            }
            Err(_) => {}
        }
    }
    // Give a dead leader's address a moment before the driver tries again.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = events.send(Event::Closed { epoch, served });
}

/// Follows the coord's leader announcements for as long as the client lives.
pub async fn watch_coord(
    addr: String,
    secret: String,
    events: mpsc::UnboundedSender<Event>,
    trace: kvraft_trace::Trace,
    client_id: String,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if let Some(ch) = channel(&addr).await {
            backoff = Duration::from_millis(50);
            let mut coord = CoordClientClient::new(ch);
            trace.record("LeaderReq", serde_json::json!({"ClientId": client_id}));
            let token = if trace.enabled() { trace.generate_token() } else { Vec::new() };
            let req =
                with_secret(pb::LeaderRequest { wait_ms: 0, client_id: client_id.clone(), trace: token }, &secret);
            let answer = coord.watch_leader(req).await;
            if let Err(s) = &answer
                && s.code() == tonic::Code::Unauthenticated
            {
                if events.send(Event::Refused { epoch: None, why: format!("coord {addr}: {}", s.message()) }).is_err() {
                    return;
                }
                // Asked again now and then, slowly: nothing but a new client
                // changes the Secret.
                backoff = Duration::from_secs(1);
            }
            if let Ok(resp) = answer {
                let mut stream = resp.into_inner();
                let mut first = true;
                while let Ok(Some(info)) = stream.message().await {
                    if trace.enabled()
                        && let Ok(t) = trace.tracer().receive_token(&info.trace)
                    {
                        let tag = if first { "LeaderResRecvd" } else { "LeaderNodeUpdateRecvd" };
                        t.record(tag, serde_json::json!({"ClientId": client_id, "ServerId": info.leader_id}));
                    }
                    first = false;
                    if events.send(Event::Leader(info)).is_err() {
                        return;
                    }
                }
            }
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
