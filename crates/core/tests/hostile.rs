//! Messages no correct peer sends (a buggy or hostile server on the peer
//! port) are refused without a panic, and the log and commit index stay
//! as they were. Found by a panic audit: each of these used to panic the
//! leader or the follower at its next heartbeat or Ready.

mod support;

use kvraft_core::kv::Op;
use kvraft_core::{AppendResult, Entry, Message, Payload};
use support::Cluster;

fn put(v: &str) -> Op {
    Op::Put { key: "k".into(), value: v.into() }
}

/// A three-server cluster led by 1 in term 1, one write committed.
fn cluster() -> Cluster {
    let mut c = Cluster::new(3);
    c.designate(1, 1);
    c.propose(1, "c", 1, put("a")).unwrap();
    c.run();
    assert_eq!(c.node(1).commit_index(), 2);
    c
}

/// The leader goes on: heartbeats, and a new write commits everywhere.
fn still_works(c: &mut Cluster) {
    for _ in 0..20 {
        c.tick_all();
    }
    let index = c.propose(1, "c", 2, put("b")).unwrap();
    c.run();
    for _ in 0..5 {
        c.tick_all();
    }
    for id in 1..=3 {
        assert_eq!(c.node(id).commit_index(), index, "server {id}");
    }
}

#[test]
fn a_success_past_the_leaders_log_is_ignored() {
    let mut c = cluster();
    let last = c.node(1).log().last_index();
    c.node_mut(1).step(Message::AppendEntriesResponse {
        term: 1,
        from: 2,
        result: AppendResult::Success { match_index: 1_000_000 },
        read_ctx: 0,
    });
    c.run();
    assert_eq!(c.node(1).commit_index(), 2, "committed past its own log");
    assert_eq!(c.node(1).log().last_index(), last);
    // Without the guard the leader panicked here, at its next heartbeat to
    // server 2 (its progress pointed past the log).
    still_works(&mut c);
}

#[test]
fn conflict_hints_past_the_leaders_log_are_bounded_by_it() {
    let mut c = cluster();
    c.node_mut(1).step(Message::AppendEntriesResponse {
        term: 1,
        from: 2,
        result: AppendResult::Conflict { rejected_prev: 1 << 40, hint_term: None, hint_index: 1 << 40 },
        read_ctx: 0,
    });
    c.run();
    still_works(&mut c);
}

#[test]
fn an_entry_that_would_replace_a_committed_one_is_refused() {
    let mut c = cluster();
    for _ in 0..5 {
        c.tick_all(); // the followers learn the commit index
    }
    assert_eq!(c.node(2).commit_index(), 2);
    let before = c.terms(2);
    // Term 1 from leader 1, but entry 1 of another term: it would truncate
    // the follower's log below what it has committed.
    c.node_mut(2).step(Message::AppendEntries {
        term: 1,
        leader: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![Entry { term: 7, index: 1, payload: Payload::Noop }],
        leader_commit: 2,
        read_ctx: 0,
    });
    let rd = c.node_mut(2).ready();
    assert!(rd.entries.is_empty(), "the refused entry went to disk: {:?}", rd.entries);
    for out in &rd.persisted_messages {
        assert!(
            matches!(out.msg, Message::AppendEntriesResponse { result: AppendResult::Conflict { .. }, .. }),
            "answered {:?}",
            out.msg
        );
    }
    assert_eq!(c.terms(2), before, "the committed log changed");
    assert_eq!(c.node(2).commit_index(), 2);
    still_works(&mut c);
}

/// A follower at a newer term refuses a delayed AppendEntries of this
/// leader's previous leadership, echoing that message's read ctx, stamped
/// with the leader's current term. That is no acknowledgment of the current
/// leadership: counted as one, it confirmed the new leadership's first read
/// rounds (whose ctx starts again at 0) with no heartbeat answered, and a
/// deposed leader could serve a stale read.
#[test]
fn a_refusal_of_an_older_term_confirms_no_read() {
    let mut c = cluster();
    // Rounds of the first leadership: its ctx climbs.
    for r in 1..=5 {
        c.node_mut(1).read(r);
        c.run();
    }
    assert_eq!(c.reads_served.len(), 5);
    // 1 leads again, in term 2: a new leadership, its ctx from 0.
    c.designate(1, 2);
    c.tick_all();
    // The delayed term-1 message reaches 2, which is at term 2 and refuses it.
    c.node_mut(1).step(Message::AppendEntriesResponse {
        term: 2,
        from: 2,
        result: AppendResult::StaleTerm,
        read_ctx: 5,
    });
    // Now nobody answers 1 any more (as if it were cut off and deposed).
    c.crash(2);
    c.crash(3);
    c.node_mut(1).read(100);
    c.run();
    assert!(!c.reads_served.contains(&(1, 100)), "a read confirmed by no heartbeat of this leadership");
}

/// A leader cut off from every follower appends no more writes once the
/// quorum window has passed: none could commit, and it would go on growing
/// its log for as long as clients reach it.
#[test]
fn a_leader_without_a_recent_quorum_appends_no_writes() {
    let mut c = cluster();
    c.crash(2);
    c.crash(3);
    let last = c.node(1).log().last_index();
    let window = (c.config)(1).quorum_window_ticks * kvraft_core::WRITE_QUORUM_WINDOWS;
    for _ in 0..window - 1 {
        c.tick_all();
    }
    // Past the reads' window, not yet the writes': a slow follower disk
    // does not turn writes away.
    assert!(!c.node(1).has_recent_quorum());
    let early =
        kvraft_core::kv::Command { client_id: "c".into(), session: 1, op_id: 8, first_unacked: 8, op: put("w") };
    assert!(c.node_mut(1).propose(early).is_ok());
    let last = last + 1;
    c.tick_all();
    let cmd = kvraft_core::kv::Command { client_id: "c".into(), session: 1, op_id: 9, first_unacked: 9, op: put("z") };
    assert_eq!(c.node_mut(1).propose(cmd), Err(kvraft_core::ProposeError::NoQuorum));
    assert_eq!(c.node(1).log().last_index(), last, "appended without a quorum");
    // Heard from again, it takes writes.
    c.start(2);
    for _ in 0..5 {
        c.tick_all();
    }
    assert!(c.node(1).has_recent_quorum());
    assert!(c.propose(1, "c", 10, put("y")).is_some());
}

/// A coord whose state went back (a state file restored from an old copy)
/// asks a term again. A server that already holds it refuses: granted
/// twice, the term could get a second leader while its first still leads.
#[test]
fn a_term_is_granted_once() {
    let mut c = cluster(); // 1 leads term 1
    c.to_coord.clear();
    c.node_mut(2).log_state_request(1);
    c.run();
    let answers: Vec<_> =
        c.to_coord.iter().filter_map(|m| if let Message::LogState(ls) = m { Some(ls) } else { None }).collect();
    assert_eq!(answers.len(), 1, "{:?}", c.to_coord);
    assert!(!answers[0].granted, "term 1 granted again: {:?}", answers[0]);
    assert_eq!(answers[0].current_term, 1);
    // A term above it is granted, as always.
    c.node_mut(2).log_state_request(2);
    c.run();
    assert!(c.to_coord.iter().any(|m| matches!(m, Message::LogState(ls) if ls.term == 2 && ls.granted)));
}
