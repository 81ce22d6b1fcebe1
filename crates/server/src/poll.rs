//! A leader's poll while it waits for a quorum, and for its clients' next
//! command.
//!
//! Why: on a virtual machine, waking a thread whose CPU has halted costs
//! about half a loopback round trip (tens of microseconds), and a leader
//! waiting for its followers' acks sleeps through most of each write. So
//! while a write waits to commit (or a read to be confirmed), the loop
//! polls its input queue before it sleeps ([`QuorumPoll`]); and after a
//! commit, while clients have been sending their next command within a
//! short while of their last answer, it polls for that command too
//! ([`ClientPoll`]). docs/perf-log.md has the measurements.
//!
//! Bounds, so that the poll only runs where it pays:
//! - it polls at most `budget` after the last progress (a commit, a read
//!   answered) or after it began to wait, not `budget` per wake-up: a
//!   leader cut off from its followers, or with a proposal stuck, polls
//!   once and then sleeps, whatever wakes it (ticks, heartbeat answers);
//! - when the last progress took longer than `budget` (a slow disk), it
//!   does not poll at all, until progress comes within `budget` again.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::node_loop::Input;

/// Whether, and until when, the loop polls before it sleeps.
pub struct QuorumPoll {
    budget: Duration,
    /// The last progress came within `budget` of the one before (or of the
    /// start of the wait).
    pays: bool,
    /// Waiting for a quorum since then, without progress.
    since: Option<Instant>,
    /// The progress marker seen last (see [`QuorumPoll::until`]).
    mark: u64,
}

impl QuorumPoll {
    /// A zero `budget` never polls.
    pub fn new(budget: Duration) -> Self {
        QuorumPoll { budget, pays: true, since: None, mark: 0 }
    }

    /// Until when the loop, about to wait at `now`, polls; `None` to sleep
    /// at once. `awaiting`: a quorum is awaited; `mark`: a number that
    /// grows with every commit and every read answered.
    pub fn until(&mut self, awaiting: bool, mark: u64, now: Instant) -> Option<Instant> {
        let progressed = mark != self.mark;
        self.mark = mark;
        if let Some(since) = self.since
            && progressed
        {
            self.pays = now.saturating_duration_since(since) <= self.budget;
            self.since = None;
        }
        if !awaiting {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let until = since + self.budget;
        (self.pays && until > now).then_some(until)
    }
}

/// Whether, and until when, a leader with nothing awaited polls for its
/// clients' next command: up to `budget` after the last progress (a
/// commit, a read answered), as long as the last client command judged
/// came within `budget` of the progress before it. A client in a closed
/// loop sends its next command a round trip after its answer; one that
/// sends now and then does not keep the leader busy: its commands come
/// late, so the poll stops until one comes soon again.
pub struct ClientPoll {
    budget: Duration,
    /// The last progress, and whether a client command has been judged
    /// against it yet.
    after: Option<(Instant, bool)>,
    pays: bool,
    mark: u64,
}

impl ClientPoll {
    /// A zero `budget` never polls.
    pub fn new(budget: Duration) -> Self {
        ClientPoll { budget, after: None, pays: true, mark: 0 }
    }

    /// Until when the loop, about to wait at `now`, polls; `None` to sleep.
    /// `idle_leader`: a leader with no quorum awaited (else
    /// [`QuorumPoll`] decides); `mark` as for [`QuorumPoll::until`].
    pub fn until(&mut self, idle_leader: bool, mark: u64, now: Instant) -> Option<Instant> {
        if mark != self.mark {
            self.mark = mark;
            self.after = Some((now, false));
        }
        let (at, _) = self.after?;
        let until = at + self.budget;
        (idle_leader && self.pays && until > now).then_some(until)
    }

    /// A client's command came at `at`: the first one after a progress
    /// says whether polling for it pays.
    pub fn command_came(&mut self, at: Instant) {
        if let Some((progress, judged @ false)) = &mut self.after {
            self.pays = at.saturating_duration_since(*progress) <= self.budget;
            *judged = true;
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

    /// Nanoseconds this thread has run on a CPU (Linux's schedstat).
    fn thread_cpu_ns() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_poll_stops_at_its_deadline_and_then_sleeps() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (input, _reply) = status_input();
        // From another thread, 300 ms on: nothing on this runtime wakes the
        // loop before it, so only the poll could keep this thread busy.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = tx.send(input);
        });
        let cpu = thread_cpu_ns();
        let until = Some(Instant::now() + Duration::from_millis(20));
        assert!(matches!(next_input(&mut rx, until).await, Some(Input::Status(_))));
        let busy = Duration::from_nanos(thread_cpu_ns() - cpu);
        sender.join().unwrap();
        // About 20 ms of polling; a poll that ignored its deadline would
        // have spun through all 300.
        assert!(busy < Duration::from_millis(150), "busy for {busy:?} waiting 300 ms");
    }

    #[test]
    fn polls_within_the_budget_after_progress_and_not_after_slow_progress() {
        let budget = Duration::from_micros(1000);
        let us = |n: u64| Duration::from_micros(n);
        let t0 = Instant::now();
        let mut p = QuorumPoll::new(budget);
        assert_eq!(p.until(false, 0, t0), None, "nothing awaited: sleep");
        assert_eq!(p.until(true, 0, t0), Some(t0 + budget));
        // Woken again without progress: the same deadline, not a new budget.
        assert_eq!(p.until(true, 0, t0 + us(400)), Some(t0 + budget));
        // Past it (a cut-off leader woken by a tick): sleep.
        assert_eq!(p.until(true, 0, t0 + us(10_000)), None);
        // Progress after 10 ms: too slow to pay, so no poll for the next write.
        assert_eq!(p.until(true, 1, t0 + us(10_000)), None);
        assert_eq!(p.until(false, 1, t0 + us(10_100)), None);
        assert_eq!(p.until(true, 1, t0 + us(10_200)), None);
        // That write commits within the budget: polling pays again.
        assert_eq!(p.until(true, 2, t0 + us(10_700)), Some(t0 + us(11_700)));
        assert_eq!(QuorumPoll::new(Duration::ZERO).until(true, 0, t0), None, "0 never polls");
    }

    #[test]
    fn polls_for_the_next_command_while_commands_come_soon_after_progress() {
        let budget = Duration::from_micros(300);
        let us = |n: u64| Duration::from_micros(n);
        let t0 = Instant::now();
        let mut p = ClientPoll::new(budget);
        assert_eq!(p.until(true, 0, t0), None, "no progress yet: sleep");
        // A commit: poll up to the budget after it, whatever else comes.
        assert_eq!(p.until(true, 1, t0), Some(t0 + budget));
        assert_eq!(p.until(true, 1, t0 + us(100)), Some(t0 + budget));
        assert_eq!(p.until(true, 1, t0 + us(400)), None, "past the budget: sleep");
        // A follower (or a leader awaiting a quorum) never polls for commands.
        assert_eq!(p.until(false, 2, t0 + us(1000)), None);
        // Progress, then a command 2 ms later: polling did not pay, so the
        // next progress sleeps at once...
        p.command_came(t0 + us(3000));
        assert_eq!(p.until(true, 3, t0 + us(3500)), None);
        // ...until a command comes soon after a progress again.
        p.command_came(t0 + us(3600));
        assert_eq!(p.until(true, 4, t0 + us(4000)), Some(t0 + us(4300)));
        // Only the first command after a progress is judged.
        p.command_came(t0 + us(4100));
        p.command_came(t0 + us(9000));
        assert_eq!(p.until(true, 5, t0 + us(9100)), Some(t0 + us(9400)));
        let mut zero = ClientPoll::new(Duration::ZERO);
        assert_eq!(zero.until(true, 1, t0), None, "0 never polls");
    }
}
