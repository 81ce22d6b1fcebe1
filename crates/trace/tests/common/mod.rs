//! Shared test helpers: a tracing server on an ephemeral loopback port in a
//! temporary directory, tracers pointed at it, and output-file checks.

#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kvraft_trace::{
    Record, StatsHandle, Tracer, TracerConfig, TracerOptions, TracingServer, TracingServerConfig, TracingServerStats,
    parse_trace_file, shiviz,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Fails the test instead of hanging it.
pub async fn bounded<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<StatsHandle>,
    pub trace_path: PathBuf,
    pub shiviz_path: PathBuf,
    pub task: JoinHandle<TracingServerStats>,
    shutdown: Option<oneshot::Sender<()>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(secret: &str) -> TestServer {
        Self::start_at("127.0.0.1:0", secret, tempfile::tempdir().unwrap()).await
    }

    /// Starts on `bind` (e.g. the port of a server that was stopped).
    pub async fn start_at(bind: &str, secret: &str, dir: tempfile::TempDir) -> TestServer {
        let cfg = TracingServerConfig {
            server_bind: bind.into(),
            secret: secret.into(),
            output_file: dir.path().join("trace_output.log"),
            shiviz_output_file: dir.path().join("shiviz_output.log"),
        };
        let server = TracingServer::bind(&cfg).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let addr = server.local_addr();
        let stats = server.stats();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap()
        });
        TestServer {
            addr,
            stats,
            trace_path: cfg.output_file,
            shiviz_path: cfg.shiviz_output_file,
            task,
            shutdown: Some(tx),
            dir,
        }
    }

    /// Graceful shutdown; the final counters.
    pub async fn stop(&mut self) -> TracingServerStats {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap()
    }

    pub fn tracer(&self, identity: &str, secret: &str) -> Tracer {
        tracer_at(&self.addr.to_string(), identity, secret, TracerOptions::default())
    }
}

pub fn tracer_at(addr: &str, identity: &str, secret: &str, opts: TracerOptions) -> Tracer {
    Tracer::with_options(
        TracerConfig { identity: identity.into(), server_addr: addr.into(), secret: secret.into() },
        opts,
    )
    .unwrap()
}

/// Asserts both output files are well-formed and agree; returns the records.
pub fn read_outputs(trace: &PathBuf, shiviz_path: &PathBuf) -> Vec<Record> {
    let text = std::fs::read_to_string(trace).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "trace ends mid-line");
    let records = parse_trace_file(trace).unwrap();
    assert_eq!(records.len(), text.lines().count(), "blank lines in trace");

    let sv = std::fs::read_to_string(shiviz_path).unwrap();
    let header = shiviz::header();
    assert!(sv.starts_with(&header), "shiviz header missing");
    assert!(sv.ends_with('\n'), "shiviz ends mid-line");
    let lines: Vec<&str> = sv[header.len()..].lines().collect();
    assert_eq!(lines.len(), 2 * records.len(), "two shiviz lines per event");
    for (pair, r) in lines.chunks(2).zip(&records) {
        let (host, clock) = pair[0].split_once(' ').expect("host and clock");
        assert_eq!(host, r.tracer_identity);
        assert!(clock.starts_with('{') && clock.ends_with('}'), "{clock}");
        assert_eq!(clock, r.vector_clock.to_shiviz());
        let mut parts = pair[1].splitn(3, ' ');
        assert_eq!(parts.next().unwrap(), r.trace_id.to_string());
        assert_eq!(parts.next().unwrap(), r.tag);
        let body: serde_json::Value = serde_json::from_str(parts.next().unwrap()).unwrap();
        assert_eq!(body, r.body);
    }
    records
}

/// Polls `cond` every 10 ms until it holds (the caller bounds the time).
pub async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
