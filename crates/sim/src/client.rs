//! Simulated clients: one operation at a time, retried after timeouts and
//! redirects with the same opId, recorded as a history for the checker.
//! Each incarnation first registers for its session, as kvslib does.

use kvraft_core::NodeId;
use kvraft_core::kv::{Command, Op, Reply};
use kvraft_lincheck as lin;
use rand::Rng;

use crate::net::{ClientError, Event, Msg, Net, Proc};

const TIMEOUT_MS: u64 = 120;
/// After this many attempts the client gives up: the outcome stays unknown.
const MAX_ATTEMPTS: u32 = 40;

struct Pending {
    cmd: Command,
    /// `None` for a registration, which is not in the history.
    history_index: Option<usize>,
    attempts: u32,
    /// The next wake-up is a redirect (keep the leader hint), not a timeout.
    redirect: bool,
}

pub struct SimClient {
    pub id: u64,
    /// Given by the cluster; `None` until this incarnation registered.
    session: Option<u64>,
    /// The last session the cluster gave: each must be larger.
    last_session: u64,
    /// Counts restarts; it names the values written (so that the Cas
    /// guesses below can match them), where the session is a log index.
    incarnation: u64,
    next_op: u64,
    ops_left: u64,
    keys: u64,
    servers: u64,
    read_index: bool,
    leader: Option<NodeId>,
    pending: Option<Pending>,
    /// Only the wake-up with the latest timer number counts.
    timer: u64,
    written: u64,
    pub gave_up: u64,
    /// Operations answered that the session was forgotten.
    pub expired: u64,
    pub unexpected: Vec<String>,
}

impl SimClient {
    pub fn new(id: u64, ops: u64, keys: u64, servers: u64, read_index: bool) -> Self {
        SimClient {
            id,
            session: None,
            last_session: 0,
            incarnation: 1,
            next_op: 1,
            ops_left: ops,
            keys,
            servers,
            read_index,
            leader: None,
            pending: None,
            timer: 0,
            written: 0,
            gave_up: 0,
            expired: 0,
            unexpected: Vec::new(),
        }
    }

    pub fn done(&self) -> bool {
        self.ops_left == 0 && self.pending.is_none()
    }

    fn me(&self) -> Proc {
        Proc::Client(self.id)
    }

    fn wake_in(&mut self, net: &mut Net, ms: u64) {
        self.timer += 1;
        net.schedule(net.now + ms, Event::ClientWake { id: self.id, timer: self.timer });
    }

    pub fn on_wake(&mut self, timer: u64, net: &mut Net, history: &mut Vec<lin::Operation>) {
        if timer != self.timer {
            return;
        }
        match &mut self.pending {
            None => self.start_next(net, history),
            Some(p) => {
                p.attempts += 1;
                if p.attempts > MAX_ATTEMPTS {
                    if p.history_index.is_none() {
                        // A registration given up costs an op, so that a
                        // client facing a dead cluster still finishes.
                        self.ops_left = self.ops_left.saturating_sub(1);
                    }
                    self.gave_up += 1;
                    self.pending = None; // its history entry stays open: unknown outcome
                    self.start_next(net, history);
                } else {
                    if !std::mem::take(&mut p.redirect) {
                        // Timed out: ask the coord, and try some server meanwhile.
                        self.leader = None;
                        net.send(self.me(), Proc::Coord, Msg::LeaderQuery);
                    }
                    self.send_pending(net);
                }
            }
        }
    }

    fn start_next(&mut self, net: &mut Net, history: &mut Vec<lin::Operation>) {
        if self.ops_left == 0 {
            return;
        }
        let Some(session) = self.session else {
            let op_id = net.rng.random::<u64>().max(1);
            let cmd = Command {
                client_id: format!("client{}", self.id),
                session: 0,
                op_id,
                first_unacked: 0,
                op: Op::Register,
            };
            self.pending = Some(Pending { cmd, history_index: None, attempts: 0, redirect: false });
            return self.send_pending(net);
        };
        self.ops_left -= 1;
        let key = format!("k{}", net.rng.random_range(0..self.keys));
        self.written += 1;
        let value = format!("c{}.{}.{}", self.id, self.incarnation, self.written);
        let (op, lop) = match net.rng.random_range(0..100) {
            0..30 => (Op::Get { key: key.clone() }, lin::Op::Get),
            30..55 => (Op::Put { key: key.clone(), value: value.clone() }, lin::Op::Put { value }),
            55..75 => (Op::Append { key: key.clone(), value: value.clone() }, lin::Op::Append { value }),
            75..85 => (Op::Delete { key: key.clone() }, lin::Op::Delete),
            _ => {
                // Expect a value some client may have written, or absence.
                let expected = if net.rng.random_bool(0.3) {
                    None
                } else {
                    let c = net.rng.random_range(0..=self.id + 1);
                    Some(format!("c{c}.1.{}", net.rng.random_range(1..=self.written.max(1))))
                };
                let op = Op::Cas { key: key.clone(), expected: expected.clone(), new: value.clone() };
                (op, lin::Op::Cas { expected, new: value })
            }
        };
        let cmd = Command {
            client_id: format!("client{}", self.id),
            session,
            op_id: self.next_op,
            first_unacked: self.next_op,
            op,
        };
        self.next_op += 1;
        history.push(lin::Operation { client: self.id, key, op: lop, call: net.now, ret: None, output: None });
        self.pending = Some(Pending { cmd, history_index: Some(history.len() - 1), attempts: 0, redirect: false });
        self.send_pending(net);
    }

    fn send_pending(&mut self, net: &mut Net) {
        let Some(p) = &self.pending else { return };
        let to = self.leader.unwrap_or_else(|| net.rng.random_range(1..=self.servers));
        let msg = Msg::Request { cmd: p.cmd.clone(), read_index: self.read_index };
        net.send(self.me(), Proc::Server(to), msg);
        self.wake_in(net, TIMEOUT_MS);
    }

    pub fn on_message(&mut self, msg: Msg, net: &mut Net, history: &mut [lin::Operation]) {
        match msg {
            Msg::LeaderAnswer { leader: Some(leader) } => self.leader = Some(leader),
            Msg::Response { session, op_id, result } => {
                let Some(p) = &mut self.pending else { return };
                if session != p.cmd.session || op_id != p.cmd.op_id {
                    return; // an answer to an earlier attempt of an earlier op
                }
                match result {
                    Ok(Reply::Registered { session }) if p.history_index.is_none() => {
                        if session <= self.last_session {
                            let last = self.last_session;
                            self.unexpected.push(format!("client {} registered {session} after {last}", self.id));
                        }
                        self.last_session = session;
                        self.session = Some(session);
                        self.pending = None;
                        self.wake_in(net, 0);
                    }
                    Ok(reply) => {
                        let output = match (reply, p.history_index) {
                            (Reply::Value(value), Some(_)) => lin::Output::Value { value },
                            (Reply::Done, Some(_)) => lin::Output::Ok,
                            (Reply::Cas { swapped }, Some(_)) => lin::Output::Cas { swapped },
                            (r, _) => {
                                self.unexpected.push(format!("client {} got {r:?} for {}", self.id, p.cmd.op));
                                self.pending = None;
                                return self.wake_in(net, 1);
                            }
                        };
                        if let Some(i) = p.history_index {
                            history[i].ret = Some(net.now);
                            history[i].output = Some(output);
                        }
                        self.pending = None;
                        let think = net.rng.random_range(0..5);
                        self.wake_in(net, think);
                    }
                    Err(ClientError::NotLeader(hint)) => {
                        // Resend soon; counting it as an attempt bounds the ping-pong.
                        p.redirect = true;
                        self.leader = hint;
                        if hint.is_none() {
                            net.send(self.me(), Proc::Coord, Msg::LeaderQuery);
                        }
                        self.wake_in(net, 5);
                    }
                    Err(ClientError::NoQuorum) => {
                        p.redirect = true;
                        self.wake_in(net, 20);
                    }
                    Err(ClientError::SessionExpired) if p.history_index.is_some() => {
                        // As kvslib: the op may have been applied before
                        // (its outcome stays unknown in the history), and
                        // the client registers a new session.
                        self.expired += 1;
                        self.pending = None;
                        self.session = None;
                        self.wake_in(net, 1);
                    }
                    Err(e @ (ClientError::Stale | ClientError::SessionExpired)) => {
                        let what = format!("client {} got {e:?} for its current op {}", self.id, p.cmd.op_id);
                        // The outcome stays unknown in the history.
                        self.unexpected.push(what);
                        self.pending = None;
                        self.wake_in(net, 1);
                    }
                }
            }
            _ => {}
        }
    }

    /// The client process restarts: its pending op's outcome is unknown, and
    /// it registers a new session with opIds from 1 (it must not be locked
    /// out).
    pub fn restart(&mut self, net: &mut Net) {
        self.pending = None;
        self.session = None;
        self.incarnation += 1;
        self.next_op = 1;
        self.leader = None;
        self.wake_in(net, 1);
    }
}
