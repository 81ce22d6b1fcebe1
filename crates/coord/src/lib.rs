//! The KVRaft coord: membership (join), failure detection (fcheck), safe
//! leader selection, and leader discovery for clients. It is not on the data
//! path: while it is down, the cluster goes on serving through its leader;
//! only failover waits for it.
//!
//! Layout: `config` (the JSON config), `state_file` (term and membership on
//! disk), `controls` (connections to the servers), `selection` (the
//! protocol's leader selection), `coord` (the actor deciding everything),
//! `api` (the gRPC services).

pub mod api;
pub mod config;
mod controls;
mod coord;
pub mod selection;
pub mod state_file;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use kvraft_fcheck::Monitor;
use kvraft_proto as pb;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

pub use config::{ConfigError, CoordConfig};

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] state_file::StateError),
    #[error("cannot start the failure detector: {0}")]
    Fcheck(std::io::Error),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { addr: SocketAddr, what: &'static str, source: std::io::Error },
    #[error("tracing: {0}")]
    Tracing(String),
    #[error("{what} service failed: {source}")]
    Serve { what: &'static str, source: tonic::transport::Error },
}

/// Binds `addr`; accepted connections have Nagle's algorithm off (tonic's
/// `Server::tcp_nodelay` applies only to listeners it binds itself; without
/// it, a reply written in two pieces waited for the client's delayed ACK:
/// the 40-ms stalls once seen as the max latency of nearly every bench run).
async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpIncoming, CoordError> {
    let l = TcpListener::bind(addr).await.map_err(|source| CoordError::Bind { addr, what, source })?;
    Ok(TcpIncoming::from(l).with_nodelay(Some(true)))
}

/// Runs the coord until `shutdown` completes.
pub async fn run(cfg: CoordConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), CoordError> {
    let (file, state) = state_file::StateFile::open(&cfg.data_dir())?;
    let server_l = bind(cfg.server_api_listen_addr, "ServerAPIListenAddr").await?;
    let client_l = bind(cfg.client_api_listen_addr, "ClientAPIListenAddr").await?;
    let (monitor, mut events) = Monitor::start(cfg.monitor_config()).await.map_err(CoordError::Fcheck)?;

    let tracer = if cfg.tracing_server_addr.is_empty() {
        kvraft_trace::Tracer::disabled()
    } else {
        let identity = if cfg.tracing_identity.is_empty() { "coord".to_string() } else { cfg.tracing_identity.clone() };
        kvraft_trace::Tracer::new(kvraft_trace::TracerConfig {
            identity,
            server_addr: cfg.tracing_server_addr.clone(),
            secret: cfg.secret.clone(),
        })
        .map_err(|e| CoordError::Tracing(e.to_string()))?
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(pb::LeaderInfo::default());
    let actor = coord::Coord::new(coord::Parts {
        num_servers: cfg.num_servers,
        rejoin_grace: cfg.rejoin_grace(),
        file,
        state,
        monitor,
        controls: controls::Controls::new(cfg.secret.clone()),
        leader_tx,
        me: tx.clone(),
        tracer: tracer.clone(),
    });
    let fwd = tx.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if fwd.send(coord::Input::Fcheck(ev)).is_err() {
                return;
            }
        }
    });
    let actor_task = tokio::spawn(actor.run(rx));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stop_rx_deadline = stop_rx.clone();
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let check = kvraft_proto::secret::SecretCheck::new(cfg.secret.clone());
    let servers = tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            pb::coord_server_server::CoordServerServer::new(api::ServerApi { inputs: tx.clone() }),
            check.clone(),
        ))
        .serve_with_incoming_shutdown(server_l, stopped(stop_rx.clone()));
    let clients = tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            pb::coord_client_server::CoordClientServer::new(api::ClientApi {
                inputs: tx,
                leader: leader_rx,
                tracer: tracer.clone(),
            }),
            check,
        ))
        .serve_with_incoming_shutdown(client_l, stopped(stop_rx));
    let mut deadline_rx = stop_rx_deadline;
    let deadline = async move {
        let _ = deadline_rx.wait_for(|s| *s).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (a, b) = tokio::select! {
        r = async { tokio::join!(servers, clients) } => r,
        _ = deadline => (Ok(()), Ok(())),
    };
    actor_task.abort();
    tracer.flush(Duration::from_millis(500)).await;
    if let Some(line) = tracer.unsent_report() {
        eprintln!("kvraft coord: {line}");
    }
    a.map_err(|source| CoordError::Serve { what: "server API", source })?;
    b.map_err(|source| CoordError::Serve { what: "client API", source })?;
    Ok(())
}
