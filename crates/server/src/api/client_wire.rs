//! The client wire: a session's Commands and Replies in plain frames on the
//! client port, beside gRPC (see `kvraft_proto::frame` and the proto's
//! `ClientHello`).
//!
//! Why a second way in: one client's write crosses the client's hop twice,
//! and gRPC's HTTP/2 costs each crossing about 8-10 us of CPU on both
//! sides (docs/perf-log.md, thirteenth session); kvslib speaks this wire,
//! clients in other languages keep the KvClient service. Both end in the
//! same place: an `Input::Client` with a `ReplyTo::Stream`, so a command
//! means the same whichever way it came.
//!
//! One listener serves both: each accepted connection's first bytes tell
//! them apart (the client wire starts with its magic, HTTP/2 with its
//! preface), and the gRPC ones go on to tonic untouched. A connection that
//! says anything wrong (a bad hello, a frame too large or that does not
//! decode) is closed; a command that decodes but is invalid gets an error
//! reply, as on the gRPC session, and the connection goes on.

use std::sync::Arc;
use std::time::Duration;

use kvraft_proto as pb;
use kvraft_proto::frame::{self, CLIENT_WIRE as WIRE, FrameError};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::LoopHandle;
use super::client::{SESSION_IN_FLIGHT, bad_request};
use crate::convert::command_from_pb;
use crate::node_loop::{Input, ReplyTo};

/// The largest hello: the secret and little else.
const MAX_HELLO: usize = 4 << 10;
/// The largest command: a key and a value within the server's limits,
/// with room to spare (a larger one could never be valid).
const MAX_COMMAND: usize = 16 << 20;
/// A connection must show what it speaks within this.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer per connection: many small frames per read under load.
const READ_BUFFER: usize = 64 << 10;

/// Accepts on the client port until `stop`: client-wire connections are
/// served here, every other one is handed to the returned stream (tonic's
/// incoming connections).
pub fn split(
    listener: TcpListener,
    inputs: LoopHandle,
    secret: String,
    mut stop: watch::Receiver<bool>,
) -> UnboundedReceiverStream<std::io::Result<TcpStream>> {
    let (grpc_tx, grpc_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("client port: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (inputs, secret, grpc_tx) = (inputs.clone(), secret.clone(), grpc_tx.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 4];
                let peeked = tokio::time::timeout(SNIFF_TIMEOUT, peek_full(&stream, &mut first)).await;
                match peeked {
                    Ok(Ok(())) if &first == WIRE.magic => {
                        if let Err(e) = serve(stream, inputs, &secret).await {
                            tracing::debug!("client wire connection closed: {e}");
                        }
                    }
                    // Not ours (or too short to tell): gRPC's to judge.
                    Ok(_) => {
                        let _ = grpc_tx.send(Ok(stream));
                    }
                    Err(_) => {} // said nothing: dropped
                }
            });
        }
    });
    UnboundedReceiverStream::new(grpc_rx)
}

/// Waits until `buf.len()` bytes have arrived (without taking them), or the
/// connection ends first (then `Ok` too, with fewer: the caller tells).
async fn peek_full(stream: &TcpStream, buf: &mut [u8; 4]) -> std::io::Result<()> {
    loop {
        let n = stream.peek(buf).await?;
        if n == 0 || n >= buf.len() {
            return Ok(());
        }
        // A first segment shorter than the magic: look again shortly
        // (peek would return at once with the same bytes).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One client-wire connection: the hello, then commands in and replies out.
async fn serve(stream: TcpStream, inputs: LoopHandle, secret: &str) -> Result<(), FrameError> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    let hello: pb::ClientHello = WIRE.read_hello(&mut r, MAX_HELLO).await?;
    let accepted = secret.is_empty() || hello.secret == secret;
    let welcome = pb::ClientWelcome {
        accepted,
        error: if accepted { String::new() } else { "wrong or missing cluster secret".into() },
    };
    let mut out = Vec::new();
    frame::push(&mut out, &welcome);
    w.write_all(&out).await?;
    if !accepted {
        return Ok(());
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<pb::Reply, tonic::Status>>();
    // One permit per command taken, given back as its reply is written: a
    // client that sends without reading is held back by TCP, not by this
    // server's memory.
    let in_flight = Arc::new(Semaphore::new(SESSION_IN_FLIGHT));
    let writer_permits = in_flight.clone();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(first) = rx.recv().await {
            buf.clear();
            let mut n = 0;
            for reply in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                n += 1;
                if let Ok(reply) = reply {
                    frame::push(&mut buf, &reply);
                }
            }
            if w.write_all(&buf).await.is_err() {
                break;
            }
            writer_permits.add_permits(n);
        }
        // The reader must not wait for permits that will never come back.
        writer_permits.close();
    });
    let mut scratch = Vec::new();
    let result = loop {
        let Ok(permit) = in_flight.acquire().await else { break Ok(()) };
        let c = match frame::read::<pb::Command, _>(&mut r, &mut scratch, MAX_COMMAND).await {
            Ok(Some(c)) => c,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        permit.forget();
        match command_from_pb(c.clone()) {
            Ok(cmd) => {
                let input = Input::Client { cmd, reply: ReplyTo::Stream(tx.clone()), token: c.trace };
                if inputs.send(input).is_err() {
                    break Ok(()); // shutting down
                }
            }
            Err(e) => {
                let _ = tx.send(Ok(bad_request(&c, e.to_string())));
            }
        }
    };
    // The writer sends the replies still due, then ends with the last
    // sender (the loop holds one per command it has not answered).
    drop((tx, writer));
    result
}
