//! A connection a port's gate admitted (see `limits.rs`), as tonic takes
//! it: it holds its place under the port's bound until tonic drops it, and
//! any bytes read before tonic saw it (to tell the client port's two wires
//! apart) are read again first.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::limits::Gate;

pub struct Admitted {
    first: [u8; 4],
    len: usize,
    taken: usize,
    inner: TcpStream,
    /// The connection's place under the port's bound.
    _permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// `read` (at most four bytes) is what was already read from `inner`.
    pub fn new(inner: TcpStream, read: &[u8], permit: OwnedSemaphorePermit) -> Self {
        let mut first = [0u8; 4];
        let len = read.len().min(first.len());
        first[..len].copy_from_slice(&read[..len]);
        Admitted { first, len, taken: 0, inner, _permit: permit }
    }
}

/// Accepts on `listener` until `stop`, through `gate`: the connections for
/// tonic (`serve_with_incoming_shutdown`), with Nagle's algorithm off.
pub fn accept(
    listener: TcpListener,
    mut gate: Gate,
    mut stop: watch::Receiver<bool>,
) -> UnboundedReceiverStream<std::io::Result<Admitted>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let Some(permit) = gate.admit() else { continue };
                    // tonic's `tcp_nodelay` covers only listeners it binds
                    // itself; with Nagle on, a reply written in two pieces
                    // waited for the client's delayed ACK (40-ms stalls).
                    let _ = stream.set_nodelay(true);
                    if tx.send(Ok(Admitted::new(stream, &[], permit))).is_err() {
                        return; // tonic has stopped serving
                    }
                }
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    UnboundedReceiverStream::new(rx)
}

impl AsyncRead for Admitted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.taken < self.len {
            let rest = &self.first[self.taken..self.len];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.taken += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}
