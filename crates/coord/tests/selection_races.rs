//! The coord's selection races, made to happen on purpose: the designee
//! accepts, but by the time its answer is handled it has restarted, has
//! been declared failed, or has been fenced by a later term. Each time the
//! coord must not name it leader of that term (nothing would ever report it
//! again), and must select anew.
//!
//! The real coord runs in-process, against three fake servers that answer
//! the ServerControl calls like a server's core would, heartbeat through the
//! real fcheck responder, and hold their answer to `BecomeLeader` until the
//! test has set the race up. The simulation (crates/sim) covers the same
//! paths in its model of the coord; these run the coord itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvraft_coord::CoordConfig;
use kvraft_proto as pb;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Every test ends within this, pass or fail.
const LIMIT: Duration = Duration::from_secs(20);

/// What a fake server holds, as its core would: the current term and the
/// last entry of its log.
#[derive(Default)]
struct Held {
    term: u64,
    last_log: (u64, u64),
    /// The next `BecomeLeader` waits for [`Fake::release`].
    hold_next: bool,
    /// The terms of every `BecomeLeader` whose answer was handed back to
    /// the coord's connection.
    answered: Vec<u64>,
}

#[derive(Clone)]
struct Fake {
    id: u64,
    held: Arc<Mutex<Held>>,
    release: Arc<Notify>,
    /// (server, term) of each `BecomeLeader` as it arrives.
    arrived: mpsc::UnboundedSender<(u64, u64)>,
    /// A held `BecomeLeader` was dropped unanswered.
    cancelled: Arc<AtomicBool>,
}

/// Marks a held `BecomeLeader` whose future was dropped (the coord's call
/// timed out) instead of answered: the race did not happen as set up.
struct Cancelled(Arc<AtomicBool>, bool);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl pb::server_control_server::ServerControl for Fake {
    async fn log_state(&self, req: Request<pb::LogStateRequest>) -> Result<Response<pb::LogStateReply>, Status> {
        let term = req.into_inner().term;
        let mut h = self.held.lock().unwrap();
        // As the core: a term above its own is adopted and granted, once.
        let granted = term > h.term;
        h.term = h.term.max(term);
        Ok(Response::new(pb::LogStateReply {
            server_id: self.id,
            term,
            granted,
            current_term: h.term,
            last_log_term: h.last_log.0,
            last_log_index: h.last_log.1,
            trace: Vec::new(),
        }))
    }

    async fn become_leader(
        &self,
        req: Request<pb::BecomeLeaderRequest>,
    ) -> Result<Response<pb::BecomeLeaderReply>, Status> {
        let term = req.into_inner().term;
        let _ = self.arrived.send((self.id, term));
        let hold = std::mem::take(&mut self.held.lock().unwrap().hold_next);
        let mut guard = Cancelled(self.cancelled.clone(), !hold);
        if hold {
            self.release.notified().await;
            guard.1 = true;
        }
        let mut h = self.held.lock().unwrap();
        let accepted = term >= h.term;
        if accepted {
            // The term's No-Op, durable before the answer.
            h.term = term;
            h.last_log = (term, h.last_log.1 + 1);
            h.answered.push(term);
        }
        Ok(Response::new(pb::BecomeLeaderReply { accepted, current_term: h.term, trace: Vec::new() }))
    }

    async fn configure(&self, _: Request<pb::Membership>) -> Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }

    async fn notify(&self, _: Request<pb::ClusterNotice>) -> Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }
}

/// A fake server, serving: its addresses, and its heartbeat responder's
/// mute switch.
struct Running {
    fake: Fake,
    control_addr: SocketAddr,
    fcheck_addr: SocketAddr,
    mute: Arc<AtomicBool>,
}

async fn start_fake(id: u64, arrived: mpsc::UnboundedSender<(u64, u64)>) -> Running {
    let fake =
        Fake { id, held: Default::default(), release: Arc::new(Notify::new()), arrived, cancelled: Default::default() };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_addr = l.local_addr().unwrap();
    let svc = pb::server_control_server::ServerControlServer::new(fake.clone());
    tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(TcpIncoming::from(l)));
    let responder = kvraft_fcheck::Responder::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fcheck_addr = responder.local_addr();
    let mute = responder.mute_handle();
    tokio::spawn(responder.run());
    Running { fake, control_addr, fcheck_addr, mute }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Cluster {
    fakes: Vec<Running>,
    joins: pb::coord_server_client::CoordServerClient<tonic::transport::Channel>,
    view: pb::coord_client_client::CoordClientClient<tonic::transport::Channel>,
    arrived: mpsc::UnboundedReceiver<(u64, u64)>,
    _dir: tempfile::TempDir,
}

/// The coord with three fake servers, not yet joined. `detector`: the
/// failure detector's (LostMsgsThresh, HeartbeatMs, RttFloorMs).
async fn start(detector: (u32, u64, u64)) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CoordConfig {
        client_api_listen_addr: free_addr(),
        server_api_listen_addr: free_addr(),
        lost_msgs_thresh: detector.0,
        num_servers: 3,
        tracing_server_addr: String::new(),
        secret: String::new(),
        tracing_identity: String::new(),
        data_dir: Some(dir.path().join("coord")),
        heartbeat_ms: detector.1,
        rtt_floor_ms: detector.2,
        rejoin_grace_ms: kvraft_coord::config::DEFAULT_REJOIN_GRACE_MS,
    };
    let (servers, clients) = (cfg.server_api_listen_addr, cfg.client_api_listen_addr);
    tokio::spawn(async move {
        if let Err(e) = kvraft_coord::run(cfg, std::future::pending()).await {
            panic!("the coord stopped: {e}");
        }
    });
    let (tx, arrived) = mpsc::unbounded_channel();
    let mut fakes = Vec::new();
    for id in 1..=3 {
        fakes.push(start_fake(id, tx.clone()).await);
    }
    let joins = connect(servers, pb::coord_server_client::CoordServerClient::connect).await;
    let view = connect(clients, pb::coord_client_client::CoordClientClient::connect).await;
    Cluster { fakes, joins, view, arrived, _dir: dir }
}

async fn connect<C, F, Fut>(addr: SocketAddr, f: F) -> C
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<C, tonic::transport::Error>>,
{
    loop {
        if let Ok(c) = f(format!("http://{addr}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Cluster {
    fn fake(&self, id: u64) -> &Running {
        &self.fakes[id as usize - 1]
    }

    /// Server `id` joins (again) in `incarnation`.
    async fn join(&mut self, id: u64, incarnation: u64) {
        let f = self.fake(id);
        let term = f.fake.held.lock().unwrap().term;
        let req = pb::JoinRequest {
            server_id: id,
            peer_addr: format!("127.0.0.1:{}", 40000 + id),
            client_addr: format!("127.0.0.1:{}", 41000 + id),
            control_addr: f.control_addr.to_string(),
            fcheck_addr: f.fcheck_addr.to_string(),
            incarnation,
            current_term: term,
            ..Default::default()
        };
        let reply = self.joins.join(req).await.unwrap().into_inner();
        assert!(reply.accepted, "server {id}'s join refused: {}", reply.error);
    }

    async fn cluster(&mut self) -> pb::ClusterView {
        self.view.cluster(pb::Empty {}).await.unwrap().into_inner()
    }

    /// Waits for the next `BecomeLeader` to arrive at a fake.
    async fn designated(&mut self) -> (u64, u64) {
        self.arrived.recv().await.unwrap()
    }

    /// Waits until the coord names a leader with a term of at least `term`.
    async fn leader_from(&mut self, term: u64) -> pb::ClusterView {
        loop {
            let v = self.cluster().await;
            if v.leader_id != 0 && v.term >= term {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Releases server `id`'s held `BecomeLeader` and checks that its
    /// acceptance reached the coord's connection (not cut off by the call's
    /// timeout, which would make this test prove nothing).
    async fn release(&mut self, id: u64, term: u64) {
        self.fake(id).fake.release.notify_one();
        loop {
            if self.fake(id).fake.held.lock().unwrap().answered.contains(&term) {
                break;
            }
            assert!(
                !self.fake(id).fake.cancelled.load(Ordering::SeqCst),
                "the coord gave up on the held designation: too slow a machine"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn bounded(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(LIMIT, f).await.expect("the test ran out of time");
}

/// The three fakes join; server 1 (equal empty logs: the lowest id) is
/// designated for term 1 and holds its answer.
async fn first_selection_held(detector: (u32, u64, u64)) -> Cluster {
    let mut c = start(detector).await;
    c.fake(1).fake.held.lock().unwrap().hold_next = true;
    for id in 1..=3 {
        c.join(id, 1).await;
    }
    assert_eq!(c.designated().await, (1, 1), "server 1 is designated for term 1");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_designee_that_restarted_before_its_answer_was_handled_is_not_named_leader() {
    bounded(async {
        let mut c = first_selection_held((3, 25, 150)).await;
        // Server 1 restarts (a new incarnation joins) while its designation
        // is on the way: it will come back up as a follower.
        c.join(1, 2).await;
        c.release(1, 1).await;
        // Named for a new term: server 1 again if its answer (the most
        // up-to-date log, term 1's No-Op) comes within the selection's
        // grace, another otherwise.
        let v = c.leader_from(2).await;
        assert!(v.term >= 2, "{v:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_designee_failed_before_its_answer_was_handled_is_not_named_leader() {
    bounded(async {
        // A quick detector: server 1 is failed well within the selection
        // call's 500-ms timeout.
        let mut c = first_selection_held((2, 10, 60)).await;
        c.fake(1).mute.store(true, Ordering::SeqCst);
        while c.cluster().await.servers.iter().any(|s| s.id == 1 && s.alive) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.release(1, 1).await;
        let v = c.leader_from(2).await;
        // Only the live servers are asked (2 wins the tie with 3, unless
        // the quick detector has failed one of them too for a moment).
        assert_ne!(v.leader_id, 1, "{v:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_designee_fenced_before_its_answer_was_handled_is_not_named_leader() {
    bounded(async {
        let mut c = first_selection_held((3, 25, 150)).await;
        // Server 2 reports a term the coord never handed out (one a coord
        // that lost its state did): term 1 is over before it is named.
        c.fake(2).fake.held.lock().unwrap().term = 7;
        let known = pb::KnownRequest { server_id: 2, incarnation: 1, current_term: 7, lost_quorum: false };
        assert!(c.joins.known(known).await.unwrap().into_inner().known);
        c.release(1, 1).await;
        // Named for a term above the one it heard of (which server depends
        // on whose answers come within the selection's grace).
        let v = c.leader_from(2).await;
        assert!(v.term >= 8, "{v:?}");
    })
    .await;
}
