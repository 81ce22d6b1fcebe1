//! Joining the cluster through the coord, and staying joined.
//!
//! On start (and on every restart) the server registers its id and
//! addresses, retrying while the coord is unreachable. A refusal of that
//! first join (bad id, duplicate, wrong secret) is final: the server stops.
//!
//! Once joined, it asks the coord about once a second whether it still
//! knows this server in this incarnation (`Known`). A coord restarted
//! without its state file knows nobody: the server joins again, in the
//! same incarnation and with its current term, so that the coord rebuilds
//! its membership and never hands out a term the servers already used,
//! without any server restarting. An unreachable coord is asked again
//! later; a refused rejoin is a one-line warning and a longer wait, never
//! a reason to stop serving.

use std::time::Duration;

use kvraft_proto as pb;
use kvraft_proto::coord_server_client::CoordServerClient;
use kvraft_proto::secret::with_secret;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use crate::config::ServerConfig;
use crate::node_loop::Input;

/// About how often a joined server asks whether the coord still knows it.
const KNOWN_EVERY: Duration = Duration::from_secs(1);
/// How long one call to the coord may take once the server is joined (a
/// join costs the coord a fsync).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest wait after a refused rejoin.
const MAX_REFUSED_BACKOFF: Duration = Duration::from_secs(30);

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

/// How one join attempt ended.
enum Attempt {
    Joined,
    /// The coord said no (`accepted: false`), with its reason.
    Refused(String),
    /// The coord refused the call itself: the wrong secret.
    Unauthenticated(String),
    /// No answer: the coord is down, restarting, or unreachable.
    Unreachable(String),
}

/// The server's side of the coord's membership.
pub struct Joiner {
    cfg: ServerConfig,
    trace: kvraft_trace::Trace,
    endpoint: Endpoint,
    inputs: mpsc::UnboundedSender<Input>,
}

impl Joiner {
    /// `inputs` is the event loop's, asked for the current term at each join.
    pub fn new(
        cfg: ServerConfig,
        trace: kvraft_trace::Trace,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(format!("http://{}", cfg.coord_addr))
            .map_err(|e| format!("CoordAddr {:?} is not host:port: {e}", cfg.coord_addr))?
            .connect_timeout(Duration::from_secs(1));
        Ok(Joiner { cfg, trace, endpoint, inputs })
    }

    /// Joins, retrying while the coord is unreachable; returns the coord's
    /// reason if it refuses.
    pub async fn join(&self) -> Result<(), String> {
        let id = self.cfg.server_id;
        let mut backoff = Duration::from_millis(50);
        let mut warned = false;
        tracing::info!(server = id, "ServerJoining");
        self.trace.record("ServerJoining", serde_json::json!({"ServerId": id}));
        loop {
            // A fresh connection each time: the coord may not be up yet.
            let channel = self.endpoint.connect().await.map_err(|e| e.to_string());
            let attempt = match channel {
                Ok(ch) => self.attempt(ch, None, false).await,
                Err(e) => Attempt::Unreachable(e),
            };
            match attempt {
                Attempt::Joined => return Ok(()),
                Attempt::Refused(error) => {
                    return Err(format!("the coord refused to let server {id} join: {error}"));
                }
                Attempt::Unauthenticated(error) => return Err(format!("the coord refused server {id}: {error}")),
                Attempt::Unreachable(e) => {
                    if !warned {
                        eprintln!("kvraft server {id}: coord at {} unreachable ({e}); retrying", self.cfg.coord_addr);
                        warned = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// After the first join: asks the coord about once a second whether
    /// it still knows this server, and joins again when it does not.
    /// Runs until the server stops.
    pub async fn stay_joined(&self) {
        let id = self.cfg.server_id;
        let channel = self.endpoint.clone().timeout(CALL_TIMEOUT).connect_lazy();
        let mut refused_backoff = KNOWN_EVERY;
        let mut known_members: Vec<pb::Member> = Vec::new();
        loop {
            tokio::time::sleep(around(KNOWN_EVERY)).await;
            // The term lets a coord that lost its state see a leader it
            // knows fenced by a term it lost (docs/protocol.md).
            let (current_term, lost_quorum) = self.term_and_quorum().await;
            let req = pb::KnownRequest { server_id: id, incarnation: incarnation(), current_term, lost_quorum };
            let mut c = CoordServerClient::new(channel.clone());
            match c.known(with_secret(req, &self.cfg.secret)).await {
                Ok(r) if r.get_ref().known => {
                    // The coord tells the membership with every answer: one
                    // missed Configure call would otherwise leave this
                    // server without the addresses of its peers, its
                    // replies to the leader dropped, for good. An answer
                    // overtaken by a newer Configure (a peer moved just
                    // then) is set right by the next one, a second later.
                    let members = r.into_inner().members;
                    if !members.is_empty() && members != known_members {
                        known_members = members.clone();
                        if self.inputs.send(Input::Configure(members)).is_err() {
                            return; // the loop is gone: stopping
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                // Unreachable, restarting, or a coord without `Known`:
                // nothing to do until it answers.
                Err(s) => {
                    tracing::debug!(server = id, "Known: {}", s.message());
                    continue;
                }
            }
            eprintln!("kvraft server {id}: the coord does not know this server (it lost its state?); joining again");
            self.trace.record("ServerJoining", serde_json::json!({"ServerId": id}));
            match self.attempt(channel.clone(), Some(CALL_TIMEOUT), true).await {
                Attempt::Joined => {
                    eprintln!("kvraft server {id}: joined the coord again");
                    refused_backoff = KNOWN_EVERY;
                }
                Attempt::Refused(e) | Attempt::Unauthenticated(e) => {
                    eprintln!(
                        "kvraft server {id}: the coord refused to let it join again: {e}; serving on, asking again in {}s",
                        refused_backoff.as_secs()
                    );
                    tokio::time::sleep(refused_backoff).await;
                    refused_backoff = (refused_backoff * 2).min(MAX_REFUSED_BACKOFF);
                }
                Attempt::Unreachable(e) => tracing::debug!(server = id, "rejoin: {e}"),
            }
        }
    }

    /// The event loop's current term (0 if the loop is gone).
    async fn current_term(&self) -> u64 {
        self.term_and_quorum().await.0
    }

    /// The event loop's current term, and whether it leads that term with
    /// no majority heard from for a while (0 and false if the loop is gone).
    async fn term_and_quorum(&self) -> (u64, bool) {
        let (tx, rx) = oneshot::channel();
        if self.inputs.send(Input::Status(tx)).is_err() {
            return (0, false);
        }
        rx.await.map_or((0, false), |s| (s.term, s.lost_quorum))
    }

    /// One join, in the trace of the caller's `ServerJoining`; an accepted
    /// one is the prototype's `ServerJoined`. `rejoin`: this process has
    /// been joined all along (see `JoinRequest.rejoin`).
    async fn attempt(&self, channel: Channel, timeout: Option<Duration>, rejoin: bool) -> Attempt {
        let id = self.cfg.server_id;
        let trace = &self.trace;
        let req = pb::JoinRequest {
            server_id: id,
            peer_addr: self.cfg.server_server_addr.to_string(),
            client_addr: self.cfg.client_listen_addr.to_string(),
            control_addr: self.cfg.server_listen_addr.to_string(),
            fcheck_addr: self.cfg.server_addr.to_string(),
            incarnation: incarnation(),
            current_term: self.current_term().await,
            rejoin,
            trace: if trace.enabled() { trace.generate_token() } else { Vec::new() },
        };
        let mut req = with_secret(req, &self.cfg.secret);
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        match CoordServerClient::new(channel).join(req).await.map(|r| r.into_inner()) {
            Ok(r) if r.accepted => {
                tracing::info!(server = id, "ServerJoined");
                if trace.enabled()
                    && let Ok(t) = trace.tracer().receive_token(&r.trace)
                {
                    t.record("ServerJoined", serde_json::json!({"ServerId": id}));
                }
                Attempt::Joined
            }
            Ok(r) => Attempt::Refused(r.error),
            Err(s) if s.code() == tonic::Code::Unauthenticated => Attempt::Unauthenticated(s.message().to_owned()),
            Err(s) => Attempt::Unreachable(s.message().to_owned()),
        }
    }
}

/// `d` give or take a fifth, at random: servers' polls spread out, not in
/// lockstep.
fn around(d: Duration) -> Duration {
    let fifth = u64::try_from((d / 5).as_micros()).unwrap_or(u64::MAX / 4);
    d - Duration::from_micros(fifth) + Duration::from_micros(rand::random_range(0..(2 * fifth).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        let d = Duration::from_secs(1);
        let all: Vec<Duration> = (0..1000).map(|_| around(d)).collect();
        assert!(all.iter().all(|x| *x >= d * 4 / 5 && *x < d * 6 / 5));
        assert!(all.iter().any(|x| *x < d) && all.iter().any(|x| *x > d), "spread both ways");
    }
}
