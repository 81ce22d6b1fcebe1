//! The classic Raft cases, each on a small in-memory cluster of cores.

mod support;

use kvraft_core::kv::{Op, Reply};
use kvraft_core::{Message, NodeId, Payload, ProposeError, Role};
use support::Cluster;

fn append(key: &str, value: &str) -> Op {
    Op::Append { key: key.into(), value: value.into() }
}

/// Raft paper, figure 7: a leader for term 8 repairs six followers whose
/// logs are missing entries, have extra uncommitted entries, or both.
#[test]
fn figure7_follower_logs_are_repaired_to_the_leaders() {
    let leader = vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers = [
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6],
        vec![1, 1, 1, 4],
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        vec![1, 1, 1, 4, 4, 4, 4],
        vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    let mut logs = vec![leader.clone()];
    logs.extend(followers);
    let mut c = Cluster::with_logs(7, &logs);
    c.designate(1, 8);
    // Followers learn the final commit index with the next tick.
    c.tick_all();
    let mut expected = leader;
    expected.push(8); // the leader's No-Op
    for id in c.ids() {
        assert_eq!(c.terms(id), expected, "node {id}");
        assert_eq!(c.node(id).commit_index(), 11, "node {id}");
    }
}

/// Raft paper, figure 8: an entry of an older term stored on a majority is
/// not committed by counting replicas; only an entry of the leader's own
/// term commits it.
#[test]
fn figure8_old_term_entry_on_majority_is_not_committed_by_counting() {
    // S1 led term 2 and wrote index 2 to S2; S5 led term 3 and wrote its own
    // index 2. Now S1 leads term 4 and replicates its index 2 to S3.
    let logs = [vec![1, 2], vec![1, 2], vec![1], vec![1], vec![1, 3]];
    let mut c = Cluster::with_logs(3, &logs);
    c.crash(5);
    // The No-Op at index 3 is lost on the way: only index 2 arrives.
    c.filter = Some(Box::new(|_, _, m: &mut Message| {
        if let Message::AppendEntries { entries, .. } = m {
            entries.retain(|e| e.index <= 2);
        }
        true
    }));
    c.designate(1, 4);
    let majority_has_2 = c.ids().iter().filter(|&&id| c.terms(id).get(1) == Some(&2)).count();
    assert!(majority_has_2 >= 3, "index 2 (term 2) is on a majority");
    assert_eq!(c.node(1).commit_index(), 0, "an old-term entry must not commit by counting");
    // Once the No-Op of term 4 reaches a majority (resent after the leader
    // notices the loss), both commit.
    c.filter = None;
    for _ in 0..=c.node(1).config().resend_ticks + c.node(1).config().heartbeat_ticks {
        c.tick_all();
    }
    assert_eq!(c.node(1).commit_index(), 3);
}

/// A follower with 50 entries of a term the leader never had is repaired in
/// a few round trips thanks to the conflict hint, not one index at a time.
#[test]
fn fifty_conflicting_entries_are_repaired_in_a_few_round_trips() {
    let mut leader = vec![1];
    leader.extend([3; 50]);
    let mut follower = vec![1];
    follower.extend([2; 50]);
    let mut c = Cluster::with_logs(3, &[leader.clone(), follower.clone(), leader.clone()]);
    c.designate(1, 4);
    let mut expected = leader;
    expected.push(4);
    assert_eq!(c.terms(2), expected);
    let delivered = c.appends_delivered[&2];
    assert!(delivered <= 4, "repair took {delivered} AppendEntries");
}

/// A leader cut off from the coord is fenced: once a majority has adopted a
/// higher term, nothing it proposes commits, and it steps down on the first
/// answer it gets.
#[test]
fn leader_is_fenced_by_a_higher_term() {
    let mut c = Cluster::new(3);
    c.designate(1, 1);
    c.propose(1, "c", 1, append("k", "a")).unwrap();
    c.run();
    assert_eq!(c.node(1).commit_index(), 2);

    // The coord selects a new leader without reaching node 1.
    for id in [2, 3] {
        c.node_mut(id).log_state_request(2);
    }
    c.run();
    // Node 1 still thinks it leads term 1 and proposes.
    let idx = c.propose(1, "c", 2, append("k", "b")).unwrap();
    c.run();
    assert!(c.node(1).commit_index() < idx, "a fenced leader must not commit");
    assert_eq!(c.node(1).role(), Role::Follower, "stepped down on the higher term");
    assert_eq!(c.node(1).term(), 2);
    assert_eq!(c.terms(2), vec![1, 1], "followers refused the stale entry");
    assert!(matches!(
        c.node_mut(1).propose(kvraft_core::kv::Command {
            client_id: "c".into(),
            session: 1,
            op_id: 3,
            first_unacked: 3,
            op: append("k", "c"),
        }),
        Err(ProposeError::NotLeader { .. })
    ));
}

/// A command retried after a failover (same client, same opId) appears twice
/// in the log but is applied once, and the retry gets the first result.
#[test]
fn duplicate_retry_after_failover_is_applied_once() {
    let mut c = Cluster::new(3);
    c.designate(1, 1);
    c.propose(1, "c", 1, append("k", "x")).unwrap();
    c.run();
    // The leader dies before the client hears back; node 2 takes over.
    c.crash(1);
    c.designate(2, 2);
    let idx = c.propose(2, "c", 1, append("k", "x")).unwrap();
    c.run();
    c.tick_all(); // the commit index reaches node 3
    assert_eq!(c.outcomes[&2][&idx], Ok(Reply::Done));
    for id in [2, 3] {
        assert_eq!(c.kv[&id].get("k"), Some("x"), "node {id}");
        assert!(c.node(id).commit_index() >= idx);
    }
    // The old leader restarts from its disk and catches up to the same state.
    c.start(1);
    c.tick_all();
    c.tick_all();
    assert_eq!(c.kv[&1].get("k"), Some("x"));
    let dup_entries =
        c.node(1).log().iter().filter(|e| matches!(&e.payload, Payload::Command(cmd) if cmd.op_id == 1)).count();
    assert_eq!(dup_entries, 2, "both copies are in the log, applied once");
}

#[test]
fn reads_are_served_after_a_heartbeat_round_and_refused_without_quorum() {
    let mut c = Cluster::new(3);
    c.designate(1, 1);
    c.node_mut(1).read(7);
    c.node_mut(1).read(8);
    c.run();
    assert_eq!(c.reads_served, vec![(1, 7), (1, 8)]);

    // Cut the leader off; after the quorum window it refuses reads.
    c.crash(2);
    c.crash(3);
    let window = c.node(1).config().quorum_window_ticks;
    for _ in 0..window + 1 {
        c.tick_all();
    }
    c.node_mut(1).read(9);
    c.run();
    assert!(c.reads_failed.contains(&(1, 9)));
    assert!(!c.reads_served.iter().any(|&(_, r)| r == 9));
}

#[test]
fn a_read_waits_while_the_leaders_own_term_has_nothing_committed() {
    let mut c = Cluster::new(3);
    c.designate(1, 1);
    // Node 2 becomes leader of term 2 but its No-Op cannot replicate.
    c.filter = Some(Box::new(|from: NodeId, _, _: &mut Message| from != 2));
    c.designate(2, 2);
    c.node_mut(2).read(1);
    c.run();
    assert!(c.reads_served.is_empty(), "served before its own term committed");
    c.filter = None;
    for _ in 0..4 {
        c.tick_all();
    }
    assert_eq!(c.reads_served, vec![(2, 1)]);
}

#[test]
fn followers_refuse_proposals_and_name_the_leader() {
    let mut c = Cluster::new(3);
    c.designate(1, 1);
    let err = c.node_mut(2).propose(kvraft_core::kv::Command {
        client_id: "c".into(),
        session: 1,
        op_id: 1,
        first_unacked: 1,
        op: append("k", "x"),
    });
    assert_eq!(err, Err(ProposeError::NotLeader { leader: Some(1) }));
}

#[test]
fn single_server_cluster_commits_alone() {
    let mut c = Cluster::new(1);
    c.designate(1, 1);
    let idx = c.propose(1, "c", 1, append("k", "x")).unwrap();
    c.run();
    assert_eq!(c.node(1).commit_index(), idx);
    assert_eq!(c.kv[&1].get("k"), Some("x"));
}

/// A designation delivered twice, the second time to the same server after
/// it restarted, must not make it lead the same term again with a new log.
#[test]
fn a_server_never_leads_one_term_twice() {
    let mut c = Cluster::new(3);
    c.designate(1, 1);
    c.propose(1, "c", 1, append("k", "x")).unwrap();
    c.run();
    c.crash(1);
    c.start(1);
    assert_eq!(c.node(1).term(), 1);
    c.to_coord.clear();
    c.node_mut(1).become_leader(1, &[1, 2, 3]);
    c.run();
    assert_eq!(c.node(1).role(), Role::Follower);
    assert!(c.to_coord.iter().any(|m| matches!(m, Message::BecomeLeaderResponse { accepted: false, .. })));
}

/// A new leader sends nothing before its No-Op is durable, so a crash
/// before that leaves no trace of its term anywhere.
#[test]
fn a_new_leader_sends_nothing_before_its_noop_is_durable() {
    let mut node = kvraft_core::RaftNode::new(kvraft_core::Config::new(1));
    node.log_state_request(1);
    let rd = node.ready();
    node.on_persisted(rd.persisted_marker.unwrap_or((0, 0)));
    node.become_leader(1, &[1, 2, 3]);
    let rd = node.ready();
    assert_eq!(rd.entries.len(), 1, "the No-Op is handed out to persist");
    assert!(rd.messages.is_empty(), "but nothing is sent yet");
    node.on_persisted(rd.persisted_marker.unwrap());
    let rd = node.ready();
    assert_eq!(rd.messages.len(), 2, "after persistence the followers hear of it");
}

/// A follower's ticks change nothing, which is what lets a shell leave a
/// follower unticked: one ticked a thousand times, then made leader, does
/// exactly what an unticked one does, tick for tick.
#[test]
fn a_followers_ticks_change_nothing() {
    use kvraft_core::RaftNode;
    let follower = |ticks: usize| {
        let mut node = RaftNode::new(kvraft_core::Config::new(1));
        node.log_state_request(1);
        let rd = node.ready();
        node.on_persisted(rd.persisted_marker.unwrap_or((0, 0)));
        for _ in 0..ticks {
            assert!(!node.needs_ticks());
            node.tick();
            assert!(!node.has_ready(), "a follower's tick made output");
        }
        node
    };
    let (mut ticked, mut unticked) = (follower(1000), follower(0));
    let trace = |node: &mut RaftNode| {
        let mut out = Vec::new();
        node.become_leader(2, &[1, 2, 3]);
        assert!(node.needs_ticks());
        let rd = node.ready();
        node.on_persisted(rd.persisted_marker.unwrap());
        out.push(format!("{rd:?}"));
        for t in 0..40 {
            node.tick();
            out.push(format!("{t} {:?} {}", node.ready(), node.has_recent_quorum()));
        }
        out
    };
    assert_eq!(trace(&mut ticked), trace(&mut unticked));
}

/// A leader says it lost its quorum only after hearing from no majority
/// for `LOST_QUORUM_WINDOWS` windows, and stops saying so as soon as a
/// majority answers again; a follower never says so.
#[test]
fn a_leader_cut_off_from_its_followers_says_it_lost_its_quorum() {
    use kvraft_core::{LOST_QUORUM_WINDOWS, RaftNode};
    let mut node = RaftNode::new(kvraft_core::Config::new(1));
    let window = kvraft_core::Config::new(1).quorum_window_ticks;
    node.log_state_request(1);
    let rd = node.ready();
    node.on_persisted(rd.persisted_marker.unwrap_or((0, 0)));
    assert!(!node.lost_quorum());
    node.become_leader(2, &[1, 2, 3]);
    let rd = node.ready();
    node.on_persisted(rd.persisted_marker.unwrap());
    let mut ticks = 0;
    while !node.lost_quorum() {
        node.tick();
        let _ = node.ready();
        ticks += 1;
        assert!(ticks <= LOST_QUORUM_WINDOWS * window + 1, "still no word after {ticks} ticks");
    }
    assert!(ticks >= LOST_QUORUM_WINDOWS * window - 1, "said so after {ticks} ticks");
    // One follower answers: with the leader, a majority of three.
    node.step(kvraft_core::Message::AppendEntriesResponse {
        term: 2,
        from: 2,
        result: kvraft_core::AppendResult::Success { match_index: 1 },
        read_ctx: 0,
    });
    assert!(!node.lost_quorum(), "a majority answered, yet it says it lost its quorum");
}

/// A snapshot the shell keeps on disk goes out by size (the shell reads the
/// bytes back before the wire); the bytes the node held come back once, and
/// only for the snapshot it holds.
#[test]
fn a_stored_snapshot_goes_to_a_lagging_follower_by_size() {
    use kvraft_core::{Snapshot, SnapshotData, SnapshotMeta};
    use std::cell::Cell;
    use std::rc::Rc;

    let mut c = Cluster::new(3);
    c.designate(1, 1);
    c.crash(3);
    for op_id in 1..=5 {
        c.propose(1, "a", op_id, append("k", "v"));
        c.run();
    }
    c.tick_all();
    let kv = &c.kv[&1];
    let meta = SnapshotMeta { index: kv.applied_index(), term: kv.applied_term() };
    let bytes = kv.snapshot();
    let len = bytes.len();
    let snap = Snapshot::new(meta, bytes);
    assert!(c.node_mut(1).compact(snap.clone()).snapshot.is_none());
    let other = SnapshotMeta { index: meta.index, term: meta.term + 1 };
    assert_eq!(c.node_mut(1).snapshot_stored(other), None, "not the snapshot it holds");
    assert_eq!(c.node_mut(1).snapshot_stored(meta), Some(snap.clone()));
    assert_eq!(c.node_mut(1).snapshot_stored(meta), None, "the bytes come back once");
    assert_eq!(c.node(1).snapshot().map(|s| s.data.clone()), Some(SnapshotData::Stored { len }));

    // Node 3 comes back with an empty log: only the snapshot can catch it up.
    let sent = Rc::new(Cell::new(0));
    let seen = sent.clone();
    c.filter = Some(Box::new(move |_, _, msg| {
        if let Message::InstallSnapshot { snapshot, .. } = msg {
            assert_eq!(snapshot.data, SnapshotData::Stored { len }, "sent by size");
            *snapshot = snap.clone(); // what the shell reads back from its disk
            seen.set(seen.get() + 1);
        }
        true
    }));
    c.start(3);
    for _ in 0..10 {
        c.tick_all();
    }
    assert!(sent.get() >= 1, "the leader sent its snapshot");
    assert_eq!(c.kv[&3].get("k"), Some("vvvvv"));
    assert_eq!(c.node(3).snapshot_meta(), meta);
}
