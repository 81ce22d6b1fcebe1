//! The server's side: echo every heartbeat back as an ack, from the same
//! socket, to whoever sent it. Stateless, so a restarted server answers the
//! running monitor at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::stats::ResponderStats;
use crate::wire::{self, Ack, MAX_MESSAGE_LEN, Message};

/// Pause after a receive error, so a persistent one cannot spin a core.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(5);
/// Larger than any valid message: an oversized datagram shows up as
/// trailing bytes rather than being truncated into a valid-looking one.
const RECV_BUF_LEN: usize = 2 * MAX_MESSAGE_LEN;

/// Answers heartbeats on one UDP socket until its task is dropped/aborted.
#[derive(Debug)]
pub struct Responder {
    socket: UdpSocket,
    local_addr: SocketAddr,
    muted: Arc<AtomicBool>,
    stats: Arc<ResponderStats>,
}

impl Responder {
    /// Binds `addr` (the server config's ServerAddr; port 0 for an ephemeral
    /// one). Nothing is answered until [`Responder::run`] or
    /// [`Responder::spawn`].
    pub async fn bind(addr: SocketAddr) -> io::Result<Responder> {
        let socket = UdpSocket::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        Ok(Responder {
            socket,
            local_addr,
            muted: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(ResponderStats::default()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// **Test-only switch.** While it is `true`, every datagram is silently
    /// ignored, simulating a partition between the coord and this server.
    pub fn mute_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.muted)
    }

    /// Counters, readable while the responder runs.
    pub fn stats(&self) -> Arc<ResponderStats> {
        Arc::clone(&self.stats)
    }

    /// Runs on the current runtime; abort the handle (or drop the runtime)
    /// to stop it and close the socket.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Answers heartbeats forever, one datagram at a time on this one task
    /// (no task per heartbeat).
    pub async fn run(self) {
        let mut buf = [0u8; RECV_BUF_LEN];
        loop {
            match self.socket.recv_from(&mut buf).await {
                Ok((len, from)) => self.answer(&buf[..len], from).await,
                Err(e) => {
                    tracing::debug!(error = %e, "fcheck responder: receive failed");
                    ResponderStats::bump(&self.stats.recv_errors);
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Acks `datagram` if it is a heartbeat. The send only waits if the
    /// kernel's send buffer is full, in which case the monitor is not
    /// hearing us anyway.
    async fn answer(&self, datagram: &[u8], from: SocketAddr) {
        if self.muted.load(Ordering::Relaxed) {
            ResponderStats::bump(&self.stats.muted);
            return;
        }
        let hb = match wire::decode(datagram) {
            Ok(Message::Heartbeat(hb)) => hb,
            Ok(Message::Ack(_)) | Err(_) => {
                ResponderStats::bump(&self.stats.malformed);
                return;
            }
        };
        let ack = Message::Ack(Ack { epoch: hb.epoch, seq: hb.seq });
        let mut out = [0u8; MAX_MESSAGE_LEN];
        let sent = match wire::encode(&ack, &mut out) {
            Ok(datagram) => self.socket.send_to(datagram, from).await,
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        match sent {
            Ok(_) => ResponderStats::bump(&self.stats.answered),
            Err(e) => {
                tracing::debug!(%from, error = %e, "fcheck responder: ack not sent");
                ResponderStats::bump(&self.stats.send_errors);
            }
        }
    }
}
