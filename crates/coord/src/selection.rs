//! Leader selection, exactly as the protocol fixes it:
//! 1. the term (already incremented and persisted by the caller);
//! 2. log-state requests for it to every server, which makes each that
//!    answers adopt the term and fence any older leader;
//! 3. answers from a majority of the whole cluster, or no leader;
//! 4. the most up-to-date answer (last term, then last index, then lowest id)
//!    is designated, and starts the term with a No-Op.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kvraft_proto as pb;

use crate::controls::Controls;

/// After a majority has answered, wait this much longer for the rest, so
/// the choice is among as many logs as answer promptly.
const GRACE: Duration = Duration::from_millis(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Leader {
        id: u64,
        term: u64,
    },
    /// Fewer than a majority answered for the term.
    QuorumImpossible {
        term: u64,
        answered: Vec<u64>,
        needed: usize,
    },
    /// A server is already past this term (or refused the designation):
    /// start again above `current_term`.
    Refused {
        term: u64,
        current_term: u64,
    },
}

/// The log states that answered: `(last_log_term, last_log_index, id)`.
pub fn choose(answers: &[pb::LogStateReply]) -> Option<u64> {
    answers
        .iter()
        .max_by(|a, b| {
            (a.last_log_term, a.last_log_index)
                .cmp(&(b.last_log_term, b.last_log_index))
                .then(b.server_id.cmp(&a.server_id))
        })
        .map(|a| a.server_id)
}

/// The answers a leader may be chosen from: all of them but the one passed
/// over, if they still make a quorum. Any quorum of answers holds every
/// committed entry (it meets the majority each was committed on), so the
/// most up-to-date of them does too; the one passed over (a leader cut off
/// from its followers) is left out because its longer log, of entries it
/// could not commit, would win again.
pub fn eligible(
    answers: &[pb::LogStateReply],
    passed_over: Option<u64>,
    quorum: usize,
) -> Option<Vec<pb::LogStateReply>> {
    let eligible: Vec<_> = answers.iter().filter(|a| Some(a.server_id) != passed_over).cloned().collect();
    (eligible.len() >= quorum).then_some(eligible)
}

/// One selection: its term, who is asked, and who may not win.
pub struct Round {
    pub term: u64,
    pub num_servers: usize,
    /// All servers, for the new leader.
    pub members: Vec<pb::Member>,
    pub asked: Vec<u64>,
    /// Wait (up to a second) for every answer, not only a quorum's.
    pub wait_for_all: bool,
    /// Asked (so it adopts the term and steps down) but not chosen: a
    /// leader that reported it lost its quorum.
    pub passed_over: Option<u64>,
}

/// Runs one selection round.
pub async fn run(round: Round, controls: Controls, trace: &kvraft_trace::Trace) -> Outcome {
    let Round { term, num_servers, members, asked, wait_for_all, passed_over } = round;
    let tok = || if trace.enabled() { trace.generate_token() } else { Vec::new() };
    let quorum = num_servers / 2 + 1;
    let mut calls: FuturesUnordered<_> = asked
        .iter()
        .filter_map(|&id| controls.control(id).map(|c| (id, c)))
        .map(|(id, mut c)| {
            let req = controls.request(pb::LogStateRequest { term, trace: tok() });
            async move { (id, c.log_state(req).await) }
        })
        .collect();
    let mut answers: Vec<pb::LogStateReply> = Vec::new();
    let mut highest = term;
    // A server that refuses the term holds it or a later one: designating
    // anyone in it could make a second leader of a term that has one.
    let mut refused = false;
    let grace = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(grace);
    let mut grace_armed = false;
    loop {
        tokio::select! {
            next = calls.next() => {
                let Some((id, res)) = next else { break };
                match res {
                    Ok(r) => {
                        let r = r.into_inner();
                        if trace.enabled() {
                            let _ = trace.tracer().receive_token(&r.trace);
                        }
                        if r.granted && r.term == term && r.server_id == id {
                            answers.push(r);
                        } else {
                            refused |= r.term == term && r.server_id == id;
                            highest = highest.max(r.current_term);
                        }
                    }
                    Err(e) => tracing::debug!(server = id, "no log state for term {term}: {}", e.message()),
                }
                if !grace_armed && eligible(&answers, passed_over, quorum).is_some() {
                    grace_armed = true;
                    let wait = if wait_for_all { Duration::from_secs(1) } else { GRACE };
                    grace.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            _ = &mut grace, if grace_armed => break,
        }
    }
    if refused || highest > term {
        return Outcome::Refused { term, current_term: highest };
    }
    let Some(eligible) = eligible(&answers, passed_over, quorum) else {
        return Outcome::QuorumImpossible {
            term,
            answered: answers.iter().map(|a| a.server_id).filter(|&id| Some(id) != passed_over).collect(),
            needed: quorum,
        };
    };
    let id = choose(&eligible).expect("a quorum is not empty");
    let Some(mut c) = controls.control(id) else {
        return Outcome::QuorumImpossible { term, answered: vec![], needed: quorum };
    };
    let req = controls.request(pb::BecomeLeaderRequest { term, members, trace: tok() });
    match c.become_leader(req).await {
        Ok(r) if r.get_ref().accepted => Outcome::Leader { id, term },
        Ok(r) => Outcome::Refused { term, current_term: r.get_ref().current_term.max(term) },
        // The chosen server died meanwhile: try again with a new term.
        Err(_) => Outcome::Refused { term, current_term: term },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(id: u64, t: u64, i: u64) -> pb::LogStateReply {
        pb::LogStateReply { server_id: id, last_log_term: t, last_log_index: i, granted: true, ..Default::default() }
    }

    /// A leader passed over is left out of the choice, and the others must
    /// still make a quorum.
    #[test]
    fn a_passed_over_leader_is_not_chosen() {
        let answers = [ls(1, 2, 9), ls(2, 2, 5), ls(3, 2, 4)];
        assert_eq!(choose(&answers), Some(1));
        let others = eligible(&answers, Some(1), 2).unwrap();
        assert_eq!(choose(&others), Some(2));
        assert!(eligible(&answers[..2], Some(1), 2).is_none(), "one other is no quorum of three");
        assert_eq!(eligible(&answers, None, 2).unwrap().len(), 3);
    }

    #[test]
    fn most_up_to_date_wins_ties_to_the_lowest_id() {
        assert_eq!(choose(&[ls(1, 1, 9), ls(2, 2, 3), ls(3, 2, 3)]), Some(2));
        assert_eq!(choose(&[ls(4, 2, 5), ls(2, 2, 4)]), Some(4));
        assert_eq!(choose(&[ls(3, 0, 0), ls(1, 0, 0), ls(2, 0, 0)]), Some(1));
        assert_eq!(choose(&[]), None);
    }
}
