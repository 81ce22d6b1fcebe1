//! The client wire: a session's Commands and Replies in plain frames on the
//! client port, beside gRPC (see `kvraft_proto::frame` and the proto's
//! `ClientHello`).
//!
//! Why a second way in: one client's write crosses the client's hop twice,
//! and HTTP/2 on both sides cost one client's put about 50 us of its 0.4
//! ms here (docs/perf-log.md, thirteenth session); kvslib speaks this
//! wire, clients in other languages keep the KvClient service. Both end in
//! the same place: an `Input::Client` with a `ReplyTo::Stream`, so a
//! command means the same whichever way it came.
//!
//! One listener serves both: each accepted connection's first four bytes
//! tell them apart (the client wire starts with its magic, HTTP/2 with its
//! preface), and the gRPC ones go on to tonic with those bytes put back. A
//! connection that says anything wrong (a bad hello, a frame too large or
//! that does not decode) is closed, as is one that takes too long to say
//! which wire it speaks or to finish its hello; a command that decodes but
//! is invalid gets an error reply, as on the gRPC session, and the
//! connection goes on. Memory follows what a connection sends, not what
//! it claims: no read buffer before the secret is checked, frames grown as
//! their bytes arrive, a reply batch bounded in bytes. And the port holds
//! at most `MaxClientConnections` connections at once, on both wires,
//! those still being sorted included: one more is closed as it is
//! accepted, so clients cannot take the file descriptors the log needs.

use std::sync::Arc;
use std::time::Duration;

use kvraft_proto as pb;
use kvraft_proto::frame::{self, CLIENT_WIRE as WIRE, FrameError};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::LoopHandle;
use super::admitted::{Admitted, first_bytes};
use super::client::{SESSION_IN_FLIGHT, admit};
use crate::limits::{self, Gate};
use crate::node_loop::{Input, ReplyTo};

/// The largest hello: the secret and little else.
const MAX_HELLO: usize = 4 << 10;
/// The largest command, as gRPC's default limit: a compare-and-swap with
/// two values at the server's limit and a key fits, with room to spare.
const MAX_COMMAND: usize = 4 << 20;
const _: () = assert!(2 * crate::convert::MAX_VALUE_BYTES + crate::convert::MAX_KEY_BYTES + (64 << 10) < MAX_COMMAND);
/// On the client wire, a connection must finish its hello within this
/// (and show its first bytes within `admitted::SNIFF_TIMEOUT`).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's replies still due when its client stops sending are
/// written for at most this long.
const REPLY_GRACE: Duration = Duration::from_secs(10);
/// A batch of replies the client takes none of for this long closes the
/// connection: its place under `MaxClientConnections` is not held for good.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Read buffer per connection: many small frames per read under load.
const READ_BUFFER: usize = 64 << 10;
/// Replies gathered into one write, at most about this many bytes.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Accepts on the client port until `stop`: client-wire connections are
/// served here, every other one is handed to the returned stream (tonic's
/// incoming connections) with the bytes read to tell them apart put back.
/// At most as many as `gate` admits are open at once; each holds its place
/// until it closes, whichever wire serves it.
pub fn split(
    listener: TcpListener,
    inputs: LoopHandle,
    secret: String,
    gate: Gate,
    stop: watch::Receiver<bool>,
) -> UnboundedReceiverStream<std::io::Result<Admitted>> {
    let (grpc_tx, grpc_rx) = mpsc::unbounded_channel();
    let stopped = stop.clone();
    tokio::spawn(limits::accept(listener, gate, stopped, move |mut stream, _, permit| {
        let (inputs, secret, grpc_tx, mut stop) = (inputs.clone(), secret.clone(), grpc_tx.clone(), stop.clone());
        tokio::spawn(async move {
            match first_bytes(&mut stream).await {
                Some((first, 4)) if &first == WIRE.magic => {
                    let _permit = permit;
                    tokio::select! {
                        r = serve(stream, inputs, &secret) => {
                            if let Err(e) = r {
                                tracing::debug!("client wire connection closed: {e}");
                            }
                        }
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
                // Not ours: gRPC's to judge, from its first byte.
                Some((first, n)) => {
                    let _ = grpc_tx.send(Ok(Admitted::new(stream, &first[..n], permit)));
                }
                None => {} // closed, failed, or silent: dropped
            }
        });
    }));
    UnboundedReceiverStream::new(grpc_rx)
}

/// One client-wire connection: the hello, then commands in and replies out.
async fn serve(stream: TcpStream, inputs: LoopHandle, secret: &str) -> Result<(), FrameError> {
    let (mut r, mut w) = stream.into_split();
    let hello: pb::ClientHello =
        match tokio::time::timeout(HELLO_TIMEOUT, WIRE.read_hello_rest(&mut r, MAX_HELLO)).await {
            Ok(hello) => hello?,
            Err(_) => return Err(FrameError::Io(std::io::ErrorKind::TimedOut.into())),
        };
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
    // Only now, past the secret, does the connection get a buffer.
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<pb::Reply, tonic::Status>>();
    // One permit per command taken, given back as its reply is written: a
    // client that sends without reading is held back by TCP, not by this
    // server's memory.
    let in_flight = Arc::new(Semaphore::new(SESSION_IN_FLIGHT));
    let writer_permits = in_flight.clone();
    let mut writer = AbortOnDrop(tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(first) = rx.recv().await {
            buf.clear();
            let mut n = 0;
            let mut next = Some(first);
            while let Some(reply) = next.take() {
                n += 1;
                if let Ok(reply) = reply {
                    frame::push(&mut buf, &reply);
                }
                if buf.len() < MAX_BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            // A client that stops reading holds its replies in TCP's
            // buffers and then this write; after WRITE_STALL it is closed.
            if !matches!(tokio::time::timeout(WRITE_STALL, w.write_all(&buf)).await, Ok(Ok(()))) {
                break;
            }
            writer_permits.add_permits(n);
            if buf.capacity() > 4 * MAX_BATCH_BYTES {
                buf = Vec::new(); // a batch of large values does not stay
            }
        }
        // The reader must not wait for permits that will never come back.
        writer_permits.close();
    }));
    let mut scratch = Vec::new();
    let result = loop {
        let Ok(permit) = in_flight.acquire().await else { break Ok(()) };
        let c = match frame::read::<pb::Command, _>(&mut r, &mut scratch, MAX_COMMAND).await {
            Ok(Some(c)) => c,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        permit.forget();
        match admit(c) {
            Ok((cmd, token)) => {
                if inputs.send(Input::Client { cmd, reply: ReplyTo::Stream(tx.clone()), token }).is_err() {
                    break Ok(()); // shutting down
                }
            }
            Err(reply) => {
                let _ = tx.send(Ok(reply));
            }
        }
    };
    // The writer sends the replies still due, then ends with the last
    // sender (the loop holds one per command it has not answered); a
    // client that does not take them gets REPLY_GRACE, then the socket
    // closes, and the connection's place is given back.
    drop(tx);
    if tokio::time::timeout(REPLY_GRACE, &mut writer.0).await.is_err() {
        tracing::debug!("client wire: replies not taken within {REPLY_GRACE:?}, closing");
    }
    result
}

/// A task aborted when its handle is dropped: the writer's socket half
/// closes with the connection's future, on the server's stop too.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
