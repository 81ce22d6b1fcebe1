//! A connection a port's gate admitted (see `limits.rs`), as tonic takes
//! it: it holds its place under the port's bound until tonic drops it, and
//! any bytes read before tonic saw it (to tell the client port's two wires
//! apart) are read again first.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::limits::{self, Gate};

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

/// A connection must show its first bytes within this (a client-wire
/// magic or HTTP/2's preface): one that stays silent gives back its place.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection's first four bytes (fewer if it ends first), within
/// [`SNIFF_TIMEOUT`]; `None` if it fails, ends at once or stays silent.
pub async fn first_bytes(stream: &mut TcpStream) -> Option<([u8; 4], usize)> {
    let mut first = [0u8; 4];
    let read = async {
        let mut n = 0;
        while n < first.len() {
            match stream.read(&mut first[n..]).await? {
                0 => break,
                k => n += k,
            }
        }
        Ok::<_, std::io::Error>(n)
    };
    match tokio::time::timeout(SNIFF_TIMEOUT, read).await {
        Ok(Ok(n)) if n > 0 => Some((first, n)),
        _ => None,
    }
}

/// A gRPC-only port: accepts on `listener` until `stop` through `gate`,
/// and hands tonic each connection that says something within
/// [`SNIFF_TIMEOUT`].
pub fn grpc_port(
    listener: TcpListener,
    gate: Gate,
    stop: watch::Receiver<bool>,
) -> UnboundedReceiverStream<std::io::Result<Admitted>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(limits::accept(listener, gate, stop, move |mut stream, _, permit| {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some((first, n)) = first_bytes(&mut stream).await {
                let _ = tx.send(Ok(Admitted::new(stream, &first[..n], permit)));
            }
        });
    }));
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
