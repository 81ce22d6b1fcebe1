//! The actor's decisions taken one input at a time, in orders the network
//! makes rare: a failure verdict overtaken by a join, a leader found by
//! rediscovery that the detector had already failed, a join the coord
//! cannot persist, a term heard while a cluster that ran before rejoins.

use std::net::SocketAddr;
use std::time::Duration;

use kvraft_fcheck::{Event, Monitor, MonitorConfig, Responder};
use kvraft_proto as pb;
use tokio::sync::{mpsc, watch};

use super::{Coord, Input, Parts};
use crate::controls::Controls;
use crate::state_file::StateFile;

/// A coord of `n` servers in a fresh folder, each server's heartbeats
/// answered by a live responder (so the detector keeps them alive).
struct Fixture {
    coord: Coord,
    fcheck: Vec<SocketAddr>,
    dir: tempfile::TempDir,
    _inputs: mpsc::UnboundedReceiver<Input>,
}

async fn fixture(n: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (file, state) = StateFile::open(dir.path()).unwrap();
    let (monitor, _events) = Monitor::start(MonitorConfig::default()).await.unwrap();
    let (me, inputs) = mpsc::unbounded_channel();
    let (leader_tx, _) = watch::channel(pb::LeaderInfo::default());
    let coord = Coord::new(Parts {
        num_servers: n,
        rejoin_grace: Duration::from_secs(3),
        file,
        state,
        monitor,
        controls: Controls::new(String::new()),
        leader_tx,
        me,
        tracer: kvraft_trace::Tracer::disabled(),
    });
    let mut fcheck = Vec::new();
    for _ in 0..n {
        let r = Responder::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        fcheck.push(r.local_addr());
        tokio::spawn(r.run());
    }
    Fixture { coord, fcheck, dir, _inputs: inputs }
}

impl Fixture {
    fn join(&mut self, id: u64, incarnation: u64, term: u64) -> Result<pb::JoinReply, tonic::Status> {
        self.coord.on_join(pb::JoinRequest {
            server_id: id,
            peer_addr: format!("127.0.0.1:{}", 40000 + id),
            client_addr: format!("127.0.0.1:{}", 41000 + id),
            // Nothing listens there: the calls the actor starts fail.
            control_addr: format!("127.0.0.1:{}", 42000 + id),
            fcheck_addr: self.fcheck[id as usize - 1].to_string(),
            incarnation,
            current_term: term,
            ..Default::default()
        })
    }

    fn joined(&mut self, id: u64, incarnation: u64, term: u64) {
        let r = self.join(id, incarnation, term).unwrap();
        assert!(r.accepted, "{}", r.error);
    }

    fn alive(&self, id: u64) -> bool {
        self.coord.view().servers.iter().any(|s| s.id == id && s.alive)
    }
}

/// A verdict the detector reached before a server's rejoin, handled after
/// it, must not mark the server failed: the join restarted its watch
/// (alive), so no `Recovered` would ever follow, and the coord would leave
/// a live server out of every selection for good.
#[tokio::test]
async fn a_failure_verdict_overtaken_by_a_rejoin_is_ignored() {
    let mut f = fixture(3).await;
    for id in 1..=3 {
        f.joined(id, 1, 0);
    }
    f.joined(2, 2, 0); // server 2 restarted
    f.coord.on_fcheck(Event::Failed { id: 2 });
    assert!(f.alive(2), "a live server was left marked failed");
    // A verdict the detector stands by is still taken: server 3 moves to
    // where nothing answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    f.coord.monitor.watch(3, silent.local_addr().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.coord.monitor.health(3).is_some_and(|h| h.alive) {
        assert!(tokio::time::Instant::now() < deadline, "the detector never failed server 3");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.coord.on_fcheck(Event::Failed { id: 3 });
    assert!(!f.alive(3));
}

/// After a restart the coord asks who leads; a leader the detector has
/// already failed would never be reported failed again, so it is not kept.
#[tokio::test]
async fn rediscovery_does_not_keep_a_leader_the_detector_failed() {
    let mut f = fixture(3).await;
    for id in 1..=3 {
        f.joined(id, 1, 4);
    }
    f.coord.on_rediscovered(None); // the join's own rediscovery: nobody leads
    f.coord.selecting = false;
    f.coord.leader = None;
    f.coord.monitor.unwatch(1);
    f.coord.on_fcheck(Event::Failed { id: 1 });
    assert!(!f.alive(1));
    f.coord.rediscover();
    let term = f.coord.state.term;
    f.coord.on_rediscovered(Some((1, term)));
    assert_ne!(f.coord.leader, Some(1), "a failed server was kept as leader");
    // A live one is kept.
    f.coord.selecting = false;
    f.coord.rediscover();
    let term = f.coord.state.term;
    f.coord.on_rediscovered(Some((2, term)));
    assert_eq!(f.coord.leader, Some(2));
}

/// A join the coord cannot persist is an error the server retries on,
/// not a refusal (which a starting server takes as final, and stops).
#[tokio::test]
async fn a_join_the_coord_cannot_persist_is_retried_not_refused() {
    let mut f = fixture(3).await;
    // The state file's temporary copy cannot be created.
    let blocker = f.dir.path().join("coord_state.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let err = f.join(1, 1, 0).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(f.coord.view().servers.is_empty(), "an unpersisted join was kept");
    std::fs::remove_dir(&blocker).unwrap();
    f.joined(1, 1, 0);
    assert_eq!(f.coord.view().servers.len(), 1);
}

/// A coord that lost its state, joined at term 0 by a majority, learns
/// from a `Known` poll that the cluster ran before: the rest get the
/// rejoin grace, not an endless wait.
#[tokio::test]
async fn a_term_heard_after_a_majority_rejoined_arms_the_grace() {
    let mut f = fixture(3).await;
    f.joined(1, 1, 0);
    f.joined(2, 1, 0);
    assert!(!f.coord.rejoin_grace_armed, "no term yet: a first start waits for all");
    f.coord.heard_term(1, 5);
    assert!(f.coord.rejoin_grace_armed);
}

/// A known server's poll carries the membership (a Configure call it
/// missed is made up for); an unknown one's carries nothing.
#[tokio::test]
async fn a_known_servers_poll_carries_the_membership() {
    let mut f = fixture(3).await;
    for id in 1..=3 {
        f.joined(id, 1, 0);
    }
    let r = f.coord.on_known(&pb::KnownRequest { server_id: 2, incarnation: 1, current_term: 0, lost_quorum: false });
    assert!(r.known);
    let ids: Vec<u64> = r.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(r.members[0].peer_addr, "127.0.0.1:40001");
    let r = f.coord.on_known(&pb::KnownRequest { server_id: 2, incarnation: 9, current_term: 0, lost_quorum: false });
    assert!(!r.known && r.members.is_empty());
}

/// Three servers joined, server 1 leading the coord's current term (no
/// selection under way); and that term.
async fn led_by_server_1() -> (Fixture, u64) {
    let mut f = fixture(3).await;
    for id in 1..=3 {
        f.joined(id, 1, 0);
    }
    f.coord.selecting = false;
    f.coord.leader = Some(1);
    let term = f.coord.state.term;
    (f, term)
}

/// A leader that says it lost its quorum is failed over, and passed over
/// in the selection that follows; the same word from a follower, or from a
/// leader of an older term, changes nothing.
#[tokio::test]
async fn a_leader_that_lost_its_quorum_is_failed_over_and_passed_over() {
    let (mut f, term) = led_by_server_1().await;
    let known = |id: u64, current_term: u64| pb::KnownRequest {
        server_id: id,
        incarnation: 1,
        current_term,
        lost_quorum: true,
    };
    f.coord.on_known(&known(2, term));
    assert_eq!(f.coord.leader, Some(1), "a follower's word failed the leader over");
    f.coord.on_known(&known(1, term.saturating_sub(1)));
    assert_eq!(f.coord.leader, Some(1), "a word about an older term failed the leader over");
    f.coord.on_known(&known(1, term));
    assert_eq!(f.coord.leader, None);
    assert_eq!(f.coord.passed_over, Some(1));
    assert!(f.coord.selecting && f.coord.state.term == term + 1, "no selection started");
    // A selection superseded keeps passing it over; one that names a
    // leader ends that.
    f.coord.on_selected(crate::selection::Outcome::Refused { term: term + 1, current_term: term + 1 });
    assert_eq!(f.coord.passed_over, Some(1));
    f.coord.selecting = false;
    f.coord.on_selected(crate::selection::Outcome::Leader { id: 2, term: f.coord.state.term });
    assert_eq!((f.coord.leader, f.coord.passed_over), (Some(2), None));
}

/// Passing a leader over helps only if the others make a majority without
/// it: with one of its two followers failed, it is kept.
#[tokio::test]
async fn a_leader_is_not_passed_over_when_the_others_make_no_majority() {
    let (mut f, term) = led_by_server_1().await;
    f.coord.monitor.unwatch(3);
    f.coord.on_fcheck(Event::Failed { id: 3 });
    f.coord.on_known(&pb::KnownRequest { server_id: 1, incarnation: 1, current_term: term, lost_quorum: true });
    assert_eq!((f.coord.leader, f.coord.passed_over), (Some(1), None));
}
