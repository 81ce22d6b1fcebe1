//! A leader's poll while it waits for a quorum.
//!
//! Why: on a virtual machine, waking a thread whose CPU has halted costs
//! about half a loopback round trip (tens of microseconds), and a leader
//! waiting for its followers' acks sleeps through most of each write. So
//! while a write waits to commit (or a read to be confirmed), the loop
//! polls its input queue for up to `CommitPollMicros` before it sleeps.
//! Measured on the 2-core VM: one client's write p50 0.51 against 0.62 ms,
//! the 64-client throughput unchanged, at the price of CPU
//! (docs/operations.md).
//!
//! A poll only pays when the wait is shorter than it. When the last wait
//! for a quorum took longer than the budget (a slow disk, a leader cut off
//! from its followers, whose only inputs are its ticks), the next wait
//! sleeps at once; a wait that ends within the budget turns polling back on.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::node_loop::Input;

/// Whether, and until when, the loop polls before it sleeps.
pub struct QuorumPoll {
    budget: Duration,
    /// The last wait for a quorum ended within `budget`.
    pays: bool,
}

impl QuorumPoll {
    /// A zero `budget` never polls.
    pub fn new(budget: Duration) -> Self {
        QuorumPoll { budget, pays: true }
    }

    /// Until when the loop, starting to wait at `now`, polls; `None` to
    /// sleep at once. `awaiting`: a quorum is awaited.
    pub fn until(&self, awaiting: bool, now: Instant) -> Option<Instant> {
        (awaiting && self.pays && !self.budget.is_zero()).then(|| now + self.budget)
    }

    /// The loop woke `waited` after it started to wait.
    pub fn woke(&mut self, awaiting: bool, waited: Duration) {
        if awaiting {
            self.pays = waited <= self.budget;
        }
    }
}

/// The next input; until `poll_until`, by polling instead of sleeping.
/// Each `yield_now` lets the runtime poll the sockets without blocking and
/// run the connections' tasks, so an ack is read as soon as it lands.
/// Cancel-safe: an input is only taken when it is returned.
pub async fn next_input(inputs: &mut mpsc::UnboundedReceiver<Input>, poll_until: Option<Instant>) -> Option<Input> {
    if let Some(until) = poll_until {
        while Instant::now() < until {
            match inputs.try_recv() {
                Ok(input) => return Some(input),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::task::yield_now().await,
            }
        }
    }
    inputs.recv().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvraft_proto as pb;
    use tokio::sync::oneshot;

    fn status_input() -> (Input, oneshot::Receiver<pb::StatusReply>) {
        let (tx, rx) = oneshot::channel();
        (Input::Status(tx), rx)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polling_takes_an_input_sent_by_another_task_while_it_polls() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (input, _reply) = status_input();
        // Sent from a task of the same runtime: it only runs if polling
        // yields to the runtime.
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(input);
        });
        let until = Instant::now() + Duration::from_secs(5);
        let got = tokio::time::timeout(Duration::from_secs(10), next_input(&mut rx, Some(until))).await;
        assert!(matches!(got, Ok(Some(Input::Status(_)))));
        assert!(Instant::now() < until, "the input was not taken while polling");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn after_the_poll_it_sleeps_until_the_next_input_and_sees_the_end() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (input, _reply) = status_input();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(input);
            // tx dropped here: the queue ends after this input.
        });
        let until = Some(Instant::now() + Duration::from_micros(200));
        assert!(matches!(next_input(&mut rx, until).await, Some(Input::Status(_))));
        assert!(next_input(&mut rx, Some(Instant::now() + Duration::from_secs(5))).await.is_none());
    }

    #[test]
    fn polls_only_while_a_quorum_is_awaited_and_the_last_wait_was_short() {
        let budget = Duration::from_micros(1000);
        let now = Instant::now();
        let mut p = QuorumPoll::new(budget);
        assert_eq!(p.until(true, now), Some(now + budget));
        assert_eq!(p.until(false, now), None, "nothing awaited: sleep");
        // A wait longer than the budget (a cut-off leader's tick): sleep next time.
        p.woke(true, Duration::from_millis(10));
        assert_eq!(p.until(true, now), None);
        // Waits while nothing was awaited say nothing about quorums.
        p.woke(false, Duration::from_micros(10));
        assert_eq!(p.until(true, now), None);
        // A short wait for a quorum: poll again.
        p.woke(true, Duration::from_micros(400));
        assert_eq!(p.until(true, now), Some(now + budget));
        assert_eq!(QuorumPoll::new(Duration::ZERO).until(true, now), None, "0 never polls");
    }
}
