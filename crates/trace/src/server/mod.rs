//! The tracing server: accepts tracers and writes `trace_output.log` and
//! `shiviz_output.log`.
//!
//! Shape: an accept loop, one task per tracer connection ([`conn`]), and one
//! writer thread ([`writer`]) that owns both files. The files are created
//! afresh at start (the ShiViz one with its header) and always end on a
//! line boundary, also when the server is shut down or its task aborted.

mod config;
mod conn;
mod stats;
mod writer;

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

pub use config::{ConfigError, TracingServerConfig};
pub use stats::{StatsHandle, TracingServerStats};

/// Chunks (one per received batch) waiting for the writer; when full,
/// connection tasks wait, and so, through TCP, do the tracers' senders.
const WRITER_QUEUE: usize = 256;

/// Why the tracing server could not run.
#[derive(Debug, thiserror::Error)]
pub enum TracingServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot create output file {path}: {source}")]
    Output { path: PathBuf, source: std::io::Error },
    #[error("cannot start the output writer thread: {0}")]
    Thread(std::io::Error),
}

/// A bound tracing server, not yet serving. Binding first lets a caller
/// learn the port (`ServerBind` may say port 0) before tracers start.
pub struct TracingServer {
    listener: TcpListener,
    secret: Arc<str>,
    trace: File,
    shiviz: File,
    stats: Arc<StatsHandle>,
}

impl TracingServer {
    /// Listens on `cfg.server_bind` and creates both output files.
    pub async fn bind(cfg: &TracingServerConfig) -> Result<TracingServer, TracingServerError> {
        let listener = TcpListener::bind(&cfg.server_bind)
            .await
            .map_err(|source| TracingServerError::Bind { addr: cfg.server_bind.clone(), source })?;
        let trace = create(&cfg.output_file, "")?;
        let shiviz = create(&cfg.shiviz_output_file, &crate::shiviz::header())?;
        Ok(TracingServer {
            listener,
            secret: cfg.secret.as_str().into(),
            trace,
            shiviz,
            stats: Arc::new(StatsHandle::new()),
        })
    }

    /// The address tracers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address; the fallback is unreachable.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Live counters (records absorbed, records/s, refusals, ...).
    pub fn stats(&self) -> Arc<StatsHandle> {
        self.stats.clone()
    }

    /// Serves until `shutdown` completes, then closes every connection,
    /// waits for the writer to write all it received, and returns the final
    /// counters.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<TracingServerStats, TracingServerError> {
        let TracingServer { listener, secret, trace, shiviz, stats } = self;
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || {
                writer::run(trace, shiviz, rx, writer_stats);
                let _ = done_tx.send(());
            })
            .map_err(TracingServerError::Thread)?;

        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        conns.spawn(conn::serve(stream, secret.clone(), tx.clone(), stats.clone()));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: pause, do not spin.
                        tracing::warn!("tracing server accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        conns.shutdown().await;
        drop(tx);
        // The writer exits once every sender is gone and the queue is empty.
        let _ = done_rx.await;
        Ok(stats.snapshot())
    }
}

/// Binds, serves until `shutdown` completes, and returns the final counters.
pub async fn run_tracing_server(
    cfg: TracingServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<TracingServerStats, TracingServerError> {
    TracingServer::bind(&cfg).await?.run(shutdown).await
}

fn create(path: &Path, header: &str) -> Result<File, TracingServerError> {
    let err = |source| TracingServerError::Output { path: path.to_owned(), source };
    let mut file = File::create(path).map_err(err)?;
    file.write_all(header.as_bytes()).map_err(err)?;
    Ok(file)
}
