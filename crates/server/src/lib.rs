//! The KVRaft server process: a thin shell around the replication core.
//!
//! It owns what the core may not: sockets (gRPC services in `api/`, Raft
//! messages between servers in `peer/`), the disk (`disk`: a leader's
//! writes batched on a disk thread, one sync per batch, a follower's
//! written inline when that thread is idle; `snapshot`, encoding off the loop)
//! and the clock (the ticker of `node_loop`). The event loop (`node_loop`)
//! is the one owner of the core and the state machine; a leader's loop
//! polls briefly while it waits for a quorum, and for its clients' next
//! command (`poll`).

pub mod api;
pub mod config;
pub mod convert;
mod disk;
mod join;
mod limits;
mod node_loop;
mod peer;
mod poll;
mod snapshot;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvraft_core::kv::KvStore;
use kvraft_core::{Config, RaftNode, Restored};
use kvraft_proto as pb;
use kvraft_storage::{FsyncPolicy, Storage, StorageOptions};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

pub use config::{ConfigError, ServerConfig};

use crate::api::LoopHandle;
use crate::limits::{Gate, MAX_CONTROL_CONNECTIONS};
use crate::node_loop::{LoopParts, NodeLoop};
use kvraft_proto::secret::SecretCheck;

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("data directory {dir}: {source}")]
    Storage { dir: String, source: kvraft_storage::StorageError },
    #[error("data directory {dir}: {source}")]
    Snapshot { dir: String, source: snapshot::RestoreError },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { addr: SocketAddr, what: &'static str, source: std::io::Error },
    #[error("cannot listen on {addr} (ServerAddr, UDP heartbeats): {source}")]
    Fcheck { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    JoinRefused(String),
    #[error("tracing: {0}")]
    Tracing(String),
    #[error("{what} service failed: {source}")]
    Serve { what: &'static str, source: tonic::transport::Error },
}

/// A gRPC connection is pinged this often, and closed when a ping goes
/// unanswered this long: one nobody answers on gives back its place under
/// the port's bound (see limits.rs).
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(20);

async fn bind_tcp(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, what, source })
}

/// Starts the heartbeat responder on a thread (and runtime) of its own: the
/// event loop may be busy for a while (a follower's inline fsync, a
/// snapshot being encoded), and the coord must not take that for a crash.
/// Returns its mute switch, and its stop (the socket closes with it).
async fn start_responder(
    addr: SocketAddr,
) -> Result<(Arc<std::sync::atomic::AtomicBool>, tokio::sync::oneshot::Sender<()>), ServerError> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let fail = |source| ServerError::Fcheck { addr, source };
    std::thread::Builder::new()
        .name("kvraft-fcheck".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match kvraft_fcheck::Responder::bind(addr).await {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(r.mute_handle()));
                        tokio::select! {
                            () = r.run() => {}
                            _ = stop_rx => {}
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(fail)?;
    let mute =
        ready_rx.await.map_err(|_| fail(std::io::Error::other("the responder thread stopped")))?.map_err(fail)?;
    Ok((mute, stop_tx))
}

/// Test-only: with `KVRAFT_TEST_FCHECK_MUTE_FILE` set, the heartbeat
/// responder stays silent while that file exists, which looks to the coord
/// exactly like a partition between it and this server.
fn mute_for_tests(mute: Arc<std::sync::atomic::AtomicBool>) {
    let Some(path) = std::env::var_os("KVRAFT_TEST_FCHECK_MUTE_FILE") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    tokio::spawn(async move {
        loop {
            mute.store(path.exists(), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// Runs a server until `shutdown` completes.
pub async fn run(cfg: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    let dir = cfg.data_dir();
    let opts = StorageOptions {
        fsync: match cfg.fsync {
            config::Fsync::Always => FsyncPolicy::Always,
            config::Fsync::Never => FsyncPolicy::Never,
        },
        segment_bytes: cfg.segment_bytes,
    };
    let (storage, mut recovered) =
        Storage::open(&dir, opts).map_err(|source| ServerError::Storage { dir: dir.display().to_string(), source })?;
    if let Some(torn) = &recovered.torn_tail {
        eprintln!("kvraft server {}: recovered after a torn write: {torn}", cfg.server_id);
    }
    let kv = match &recovered.snapshot {
        // Recovery reads the bytes into memory; they are dropped below.
        Some(s) => {
            snapshot::restore(s).map_err(|source| ServerError::Snapshot { dir: dir.display().to_string(), source })?
        }
        None => KvStore::new(),
    };
    let tracer = if cfg.tracing_server_addr.is_empty() {
        kvraft_trace::Tracer::disabled()
    } else {
        let identity = if cfg.tracing_identity.is_empty() {
            format!("server{}", cfg.server_id)
        } else {
            cfg.tracing_identity.clone()
        };
        kvraft_trace::Tracer::new(kvraft_trace::TracerConfig {
            identity,
            server_addr: cfg.tracing_server_addr.clone(),
            secret: cfg.secret.clone(),
        })
        .map_err(|e| ServerError::Tracing(e.to_string()))?
    };
    let trace = tracer.create_trace();
    trace.record("ServerStart", serde_json::json!({"ServerId": cfg.server_id}));
    let node = RaftNode::restore(
        Config::new(cfg.server_id),
        // The core gets only the snapshot's size: its bytes stay on disk, read
        // back to be sent (at a million keys, 110 MB less kept in memory).
        Restored {
            term: recovered.term,
            snapshot: recovered.snapshot.take().map(|s| s.stored()),
            entries: recovered.entries,
        },
    );

    // Bind everything first, so a port in use fails before anything runs.
    let peer_l = bind_tcp(cfg.server_server_addr, "ServerServerAddr").await?;
    let control_l = bind_tcp(cfg.server_listen_addr, "ServerListenAddr").await?;
    let client_l = bind_tcp(cfg.client_listen_addr, "ClientListenAddr").await?;
    let (mute, stop_responder) = start_responder(cfg.server_addr).await?;
    mute_for_tests(mute);

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let disk = disk::Disk::start(storage, tx.clone());
    let snapshots = disk.snapshot_files();
    let commit = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(node.commit_index()));
    let nl = NodeLoop::new(LoopParts {
        node,
        kv,
        read_mode: cfg.read_mode,
        snapshot_entries: cfg.snapshot_entries,
        transport: peer::outbound::Transport::new(cfg.server_id, cfg.secret.clone(), tracer.clone(), snapshots),
        disk,
        tracer: tracer.clone(),
        trace: trace.clone(),
        inputs: tx.clone(),
        commit: commit.clone(),
    });
    let tick = Duration::from_millis(cfg.tick_ms);
    let polls = node_loop::Polls {
        quorum: Duration::from_micros(cfg.commit_poll_micros),
        client: Duration::from_micros(cfg.client_poll_micros),
    };
    let max_client_connections = limits::client_connections(cfg.max_client_connections);
    let loop_task = tokio::spawn(nl.run(rx, tick, polls));

    let h = LoopHandle(tx);
    let check = SecretCheck::new(cfg.secret.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel();
    let joiner = join::Joiner::new(cfg.clone(), trace.clone(), h.0.clone());
    let mut join_stop = stop_rx.clone();
    tokio::spawn(async move {
        let joined = match joiner {
            Ok(j) => j.join().await.map(|()| j),
            Err(reason) => Err(reason),
        };
        match joined {
            // Only a refusal of the first join stops the server.
            Ok(j) => {
                drop(refused_tx);
                // Until the server stops: a server run in-process must not
                // leave a task behind that would join in its name.
                tokio::select! {
                    _ = j.stay_joined() => {}
                    _ = join_stop.wait_for(|s| *s) => {}
                }
            }
            Err(reason) => {
                let _ = refused_tx.send(reason);
            }
        }
    });
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None));
    let refused_w = refused.clone();
    tokio::spawn(async move {
        // A successful join drops the sender: then only shutdown stops us.
        let refusal = async {
            match refused_rx.await {
                Ok(reason) => reason,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => {}
            reason = refusal => *refused_w.lock().expect("not poisoned") = Some(reason),
        }
        let _ = stop_tx.send(true);
    });
    let stop_rx_deadline = stop_rx.clone();
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let inbound = peer::inbound::Inbound {
        secret: cfg.secret.clone(),
        inputs: h.clone(),
        tracer: tracer.clone(),
        commit,
        receiving: Default::default(),
    };
    let peer_stop = stop_rx.clone();
    let peer = async move {
        peer::inbound::serve(peer_l, inbound, peer_stop).await;
        Ok::<(), tonic::transport::Error>(())
    };
    let client_gate = Gate::new(max_client_connections, "client port (MaxClientConnections)");
    let client_refused = client_gate.refused();
    // Admin on both ports: the coord (and `kvraft ctl`) read a server's
    // status on the control port, whose places are kept for them, so that
    // a full client port hides nothing from them.
    let admin = || {
        InterceptedService::new(
            pb::admin_server::AdminServer::new(api::admin::AdminApi {
                inputs: h.clone(),
                refused: client_refused.clone(),
            }),
            check.clone(),
        )
    };
    let control = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE))
        .add_service(InterceptedService::new(
            pb::server_control_server::ServerControlServer::new(api::control::ControlApi { inputs: h.clone() }),
            check.clone(),
        ))
        .add_service(admin())
        .serve_with_incoming_shutdown(
            api::admitted::grpc_port(control_l, Gate::new(MAX_CONTROL_CONNECTIONS, "control port"), stop_rx.clone()),
            stopped(stop_rx.clone()),
        );
    let client = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE))
        .add_service(InterceptedService::new(
            pb::kv_client_server::KvClientServer::new(api::client::ClientApi { inputs: h.clone() }),
            check.clone(),
        ))
        .add_service(admin())
        .serve_with_incoming_shutdown(
            api::client_wire::split(client_l, h.clone(), cfg.secret.clone(), client_gate, stop_rx.clone()),
            stopped(stop_rx),
        );
    drop(h);

    // Long-lived streams would hold a graceful shutdown open forever:
    // after the signal, connections get a moment to finish, no more.
    let mut deadline_rx = stop_rx_deadline;
    let deadline = async move {
        let _ = deadline_rx.wait_for(|s| *s).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (a, b, c) = tokio::select! {
        r = async { tokio::join!(peer, control, client) } => r,
        _ = deadline => (Ok(()), Ok(()), Ok(())),
    };
    a.map_err(|source| ServerError::Serve { what: "peer", source })?;
    b.map_err(|source| ServerError::Serve { what: "control", source })?;
    c.map_err(|source| ServerError::Serve { what: "client", source })?;
    loop_task.abort();
    let _ = stop_responder.send(());
    // Let the last trace records reach the tracing server.
    tracer.flush(Duration::from_millis(500)).await;
    if let Some(line) = tracer.unsent_report() {
        eprintln!("kvraft server: {line}");
    }
    if let Some(reason) = refused.lock().expect("not poisoned").take() {
        return Err(ServerError::JoinRefused(reason));
    }
    Ok(())
}
