//! The tracer's one background task: connects to the tracing server, ships
//! the queue in batches, and reconnects with backoff.
//!
//! Recording never waits on this task. While the server is down the queue
//! holds records (so a short restart loses nothing) until it is full; a
//! refused hello (wrong secret) drops what is queued. Records written to a
//! connection that dies before the server acknowledged them are counted as
//! dropped, even if the server did write some of them: the counters err on
//! the side of reporting loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::time::{sleep, timeout};

use super::queue::Shared;
use crate::wire::{self, Ack, Hello, HelloReply, KIND_ACK, KIND_BATCH, KIND_HELLO_REPLY};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// A write that takes this long means the server stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// In-flight records with no ack for this long mean the server is stuck.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Io(String),
    #[error("refused by the tracing server: {0}")]
    Refused(String),
}

/// Runs until the last tracer handle is dropped and the queue is drained
/// (or cannot be).
pub(crate) async fn run(shared: Arc<Shared>, addr: String, secret: String) {
    let mut backoff = MIN_BACKOFF;
    let mut warned_refused = false;
    let mut warned_down = false;
    loop {
        match connect(&shared, &addr, &secret).await {
            Ok(stream) => {
                if warned_down {
                    tracing::info!(identity = %shared.identity, "tracing server {addr} reachable again");
                    warned_down = false;
                }
                backoff = MIN_BACKOFF;
                match session(&shared, stream).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(identity = %shared.identity, "connection to tracing server {addr} lost: {e}");
                    }
                }
            }
            Err(ConnectError::Refused(reason)) => {
                if !warned_refused {
                    tracing::warn!(identity = %shared.identity, "tracing server {addr} refused this tracer: {reason}; records are dropped");
                    warned_refused = true;
                }
                shared.drop_queued();
            }
            Err(ConnectError::Io(e)) => {
                if !warned_down {
                    tracing::warn!(identity = %shared.identity, "tracing server {addr} unreachable: {e}; records wait in the queue and are dropped when it is full");
                    warned_down = true;
                }
            }
        }
        if shared.is_closed() {
            // Nobody holds the tracer any more and the server cannot be
            // reached: what is left will never be sent.
            shared.drop_queued();
            return;
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(shared.opts.max_backoff);
    }
}

async fn connect(shared: &Shared, addr: &str, secret: &str) -> Result<TcpStream, ConnectError> {
    let io = |e: &dyn std::fmt::Display| ConnectError::Io(e.to_string());
    let t = shared.opts.connect_timeout;
    let mut stream = timeout(t, TcpStream::connect(addr)).await.map_err(|e| io(&e))?.map_err(|e| io(&e))?;
    let _ = stream.set_nodelay(true);
    let hello = Hello { version: wire::WIRE_VERSION, identity: shared.identity.clone(), secret: secret.to_owned() };
    let exchange = async {
        wire::write_frame(&mut stream, wire::KIND_HELLO, &wire::encode(&hello)).await?;
        wire::read_frame(&mut stream).await
    };
    match timeout(t, exchange).await.map_err(|e| io(&e))? {
        Ok(Some((KIND_HELLO_REPLY, payload))) => match wire::decode::<HelloReply>(&payload) {
            Ok(HelloReply::Welcome) => Ok(stream),
            Ok(HelloReply::Refused(reason)) => Err(ConnectError::Refused(reason)),
            Err(e) => Err(io(&e)),
        },
        Ok(Some((kind, _))) => Err(io(&wire::WireError::Kind(kind))),
        Ok(None) => Err(ConnectError::Io("closed during hello".into())),
        Err(e) => Err(io(&e)),
    }
}

/// Acks are read by their own task (frame reads are not cancel-safe);
/// it reports through these.
struct AckState {
    in_flight: AtomicU64,
    acked: AtomicU64,
    done: AtomicBool,
    notify: Notify,
}

/// Ships batches over one connection. `Ok` once the tracer is closed and
/// everything was acknowledged; `Err` when the connection failed.
async fn session(shared: &Arc<Shared>, stream: TcpStream) -> Result<(), String> {
    let (rd, mut wr) = stream.into_split();
    let acks = Arc::new(AckState {
        in_flight: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        done: AtomicBool::new(false),
        notify: Notify::new(),
    });
    let reader = tokio::spawn(read_acks(rd, shared.clone(), acks.clone()));
    let result = ship(shared, &mut wr, &acks).await;
    reader.abort();
    let _ = reader.await;
    let lost = acks.in_flight.swap(0, Ordering::SeqCst);
    shared.count_dropped(lost);
    let _ = wr.shutdown().await;
    result
}

async fn ship(shared: &Shared, wr: &mut OwnedWriteHalf, acks: &AckState) -> Result<(), String> {
    let mut spare = Vec::new();
    let mut last_acked = 0;
    let mut last_progress = Instant::now();
    loop {
        if acks.done.load(Ordering::SeqCst) {
            return Err("server closed the connection".into());
        }
        let in_flight = acks.in_flight.load(Ordering::SeqCst);
        let acked = acks.acked.load(Ordering::SeqCst);
        if acked != last_acked || in_flight == 0 {
            last_acked = acked;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > ACK_TIMEOUT {
            return Err(format!("no ack for {in_flight} records in {ACK_TIMEOUT:?}"));
        }
        let room = in_flight < shared.opts.queue_records as u64;
        let count = if room { shared.take_batch(&mut spare) } else { 0 };
        if count > 0 {
            acks.in_flight.fetch_add(u64::from(count), Ordering::SeqCst);
            let len = (spare.len() + 5) as u32;
            let mut head = [0u8; 9];
            head[..4].copy_from_slice(&len.to_le_bytes());
            head[4] = KIND_BATCH;
            head[5..].copy_from_slice(&count.to_le_bytes());
            let write = async {
                wr.write_all(&head).await?;
                wr.write_all(&spare).await
            };
            match timeout(WRITE_TIMEOUT, write).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("write stalled for {WRITE_TIMEOUT:?}")),
            }
        }
        if shared.is_closed() && in_flight == 0 && shared.queued() == 0 {
            return Ok(());
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = acks.notify.notified() => {}
            _ = sleep(shared.opts.flush_interval) => {}
        }
    }
}

async fn read_acks(mut rd: OwnedReadHalf, shared: Arc<Shared>, acks: Arc<AckState>) {
    while let Ok(Some((KIND_ACK, payload))) = wire::read_frame(&mut rd).await {
        let Ok(ack) = wire::decode::<Ack>(&payload) else {
            break;
        };
        let n = u64::from(ack.accepted) + u64::from(ack.rejected);
        // Never count more than is in flight: a confused server must not
        // make `sent + dropped` exceed `recorded`.
        let before =
            acks.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(v.saturating_sub(n))).unwrap_or(0);
        let n = n.min(before);
        let accepted = u64::from(ack.accepted).min(n);
        acks.acked.fetch_add(n, Ordering::SeqCst);
        shared.count_sent(accepted);
        shared.count_dropped(n - accepted);
        acks.notify.notify_one();
    }
    // End of stream, an error, or a frame that is not an ack.
    acks.done.store(true, Ordering::SeqCst);
    acks.notify.notify_one();
}
