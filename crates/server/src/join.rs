//! Joining the cluster through the coord: on start (and on every restart)
//! the server registers its id and addresses, retrying while the coord is
//! unreachable. A refusal (bad id, duplicate, wrong secret) is final.

use std::time::Duration;

use kvraft_proto as pb;
use kvraft_proto::coord_server_client::CoordServerClient;
use kvraft_proto::secret::with_secret;

use crate::config::ServerConfig;

/// Joins, and returns the coord's reason if it refuses.
/// This process's incarnation: its start time in nanoseconds since the
/// epoch, which differs between any two starts of a server (a restart takes
/// far longer than a nanosecond), read once.
fn incarnation() -> u64 {
    static AT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

pub async fn join(cfg: &ServerConfig, trace: &kvraft_trace::Trace) -> Result<(), String> {
    trace.record("ServerJoining", serde_json::json!({"ServerId": cfg.server_id}));
    let mut req = pb::JoinRequest {
        server_id: cfg.server_id,
        peer_addr: cfg.server_server_addr.to_string(),
        client_addr: cfg.client_listen_addr.to_string(),
        control_addr: cfg.server_listen_addr.to_string(),
        fcheck_addr: cfg.server_addr.to_string(),
        incarnation: incarnation(),
        trace: Vec::new(),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", cfg.coord_addr))
        .map_err(|e| format!("CoordAddr {:?} is not host:port: {e}", cfg.coord_addr))?
        .connect_timeout(Duration::from_secs(1));
    let mut backoff = Duration::from_millis(50);
    let mut warned = false;
    tracing::info!(server = cfg.server_id, "ServerJoining");
    loop {
        req.trace = if trace.enabled() { trace.generate_token() } else { Vec::new() };
        let attempt = async {
            let mut c = CoordServerClient::new(endpoint.connect().await.map_err(|e| e.to_string())?);
            c.join(with_secret(req.clone(), &cfg.secret)).await.map(|r| r.into_inner()).map_err(|s| {
                if s.code() == tonic::Code::Unauthenticated {
                    format!("FATAL{}", s.message())
                } else {
                    s.message().to_owned()
                }
            })
        };
        match attempt.await {
            Ok(r) if r.accepted => {
                tracing::info!(server = cfg.server_id, "ServerJoined");
                if trace.enabled()
                    && let Ok(t) = trace.tracer().receive_token(&r.trace)
                {
                    t.record("ServerJoined", serde_json::json!({"ServerId": cfg.server_id}));
                }
                return Ok(());
            }
            Ok(r) => {
                return Err(format!("the coord refused to let server {} join: {}", cfg.server_id, r.error));
            }
            Err(e) if e.starts_with("FATAL") => {
                return Err(format!("the coord refused server {}: {}", cfg.server_id, &e[5..]));
            }
            Err(e) => {
                if !warned {
                    eprintln!(
                        "kvraft server {}: coord at {} unreachable ({e}); retrying",
                        cfg.server_id, cfg.coord_addr
                    );
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
