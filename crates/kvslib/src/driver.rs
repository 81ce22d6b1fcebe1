//! The session driver: one task per client that owns the operations in
//! flight, the stream to the leader, and the order of results.
//!
//! Invariants:
//! - operations are numbered 1, 2, 3... in the order issued, and their
//!   results are delivered in that order;
//! - at most `window` operations are on the wire at once;
//! - no operation goes out before the cluster has given this incarnation its
//!   session (a registration through the log): a restarted client so
//!   outranks the one before, and that one's late duplicates are refused;
//! - an operation is resent (same session, same opId) after a failover, so
//!   the servers' sessions apply it at most once;
//! - `first_unacked` sent with every command is the oldest operation whose
//!   result has not been delivered, so the servers may forget older results.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kvraft_proto as pb;
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Redial;
use crate::op::{ClientError, Op, OpResult, Value};
use crate::wire;

/// Operations queued in the driver, in windows: past this many the driver
/// reads no more requests, so `submit` waits (see `KvClient::submit`).
const QUEUED_WINDOWS: usize = 4;

/// A registration is sent again after this long unanswered at the least,
/// however short the operation timeout: the dial (0.5 s), the hello (2 s)
/// and a commit must fit, or a client with a short timeout would redial
/// for ever and never get a session.
const MIN_REGISTRATION_WAIT: Duration = Duration::from_secs(3);

/// What the API hands the driver.
pub enum Request {
    Submit { op: Op, op_id: u64, reply: Option<oneshot::Sender<OpResult>> },
    Stop(oneshot::Sender<()>),
}

/// What the connection and coord tasks report.
pub enum Event {
    Reply {
        epoch: u64,
        reply: pb::Reply,
    },
    /// A connection ended; `served`: its server had taken it (a welcome,
    /// or the gRPC stream opened), so the next dial need not wait.
    Closed {
        epoch: u64,
        served: bool,
    },
    Leader(pb::LeaderInfo),
    /// The coord (no epoch) or the server of a connection refused the
    /// Secret; a refused connection took nothing.
    Refused {
        epoch: Option<u64>,
        why: String,
    },
}

struct Pending {
    /// This operation's own trace (a new one per operation).
    trace: kvraft_trace::Trace,
    op_id: u64,
    op: Op,
    cmd: pb::Command,
    sent: bool,
    /// The connections it was put on (`sent` is reset when one drops): a
    /// refusal proves it was not applied only if every one was refused.
    sent_on: Vec<u64>,
    since: Instant,
    result: Option<Result<Value, ClientError>>,
    reply: Option<oneshot::Sender<OpResult>>,
}

struct Conn {
    epoch: u64,
    leader: u64,
    tx: mpsc::UnboundedSender<pb::Command>,
    /// When it last brought a reply (or was made), as of the last tick:
    /// a reply only sets `answered`, which the tick turns into a time, so
    /// that the reply path reads no clock.
    heard: Instant,
    answered: bool,
}

pub struct Driver {
    pub client_id: String,
    /// Given by the cluster; `None` until the registration is answered.
    pub session: Option<u64>,
    /// The registration: session 0 and a random opId, so that its reply is
    /// told from any other.
    registration: pb::Command,
    /// When the registration went out on the current connection, if it did.
    registration_sent_at: Option<Instant>,
    pub secret: String,
    pub window: usize,
    pub op_timeout: Duration,
    transport: crate::Transport,
    pub results: Option<mpsc::Sender<OpResult>>,
    pub events_tx: mpsc::UnboundedSender<Event>,
    queue: VecDeque<Pending>,
    conn: Option<Conn>,
    next_epoch: u64,
    /// Where operations go: the coord's answer, or a server's hint since.
    leader: pb::LeaderInfo,
    /// The coord's latest answer: the way back from a hint that led to a
    /// server that does not take connections.
    coord_leader: pb::LeaderInfo,
    /// A hint given up that way, not followed again until the coord's
    /// next answer (two servers, one naming the other, a dead one, would
    /// otherwise be dialled in turn with no wait).
    dead_hint: Option<(u64, String)>,
    /// Resend after this instant (a NoQuorum answer asks for a pause).
    hold_until: Option<Instant>,
    /// When the leader may be dialled again after connections it closed
    /// unserved.
    redial: Redial,
    /// Why the cluster refused this client's Secret, until a server or the
    /// coord answers: operations fail at once while the pause after the
    /// refusal lasts (see [`Driver::refused_now`]).
    refused: Option<String>,
    /// Connections whose server refused the Secret.
    refused_epochs: std::collections::BTreeSet<u64>,
    stop: Option<oneshot::Sender<()>>,
    /// The client's own trace (KvslibStart, KvslibStop).
    trace: kvraft_trace::Trace,
}

/// The prototype's trace tags for an operation and its result.
fn op_tags(op: &Op) -> (&'static str, &'static str) {
    match op {
        Op::Get { .. } => ("Get", "GetResultRecvd"),
        Op::Put { .. } => ("Put", "PutResultRecvd"),
        Op::Append { .. } => ("Append", "AppendResultRecvd"),
        Op::Delete { .. } => ("Delete", "DeleteResultRecvd"),
        Op::Cas { .. } => ("Cas", "CasResultRecvd"),
    }
}

/// What a driver is started with.
pub struct Settings {
    pub client_id: String,
    pub secret: String,
    pub window: usize,
    pub op_timeout: Duration,
    pub trace: kvraft_trace::Trace,
    pub transport: crate::Transport,
}

impl Driver {
    pub fn new(s: Settings, results: mpsc::Sender<OpResult>, events_tx: mpsc::UnboundedSender<Event>) -> Self {
        let Settings { client_id, secret, window, op_timeout, trace, transport } = s;
        Driver {
            registration: wire::registration(&client_id),
            registration_sent_at: None,
            client_id,
            session: None,
            secret,
            window: window.max(1),
            op_timeout,
            transport,
            results: Some(results),
            events_tx,
            queue: VecDeque::new(),
            conn: None,
            next_epoch: 0,
            leader: pb::LeaderInfo::default(),
            coord_leader: pb::LeaderInfo::default(),
            dead_hint: None,
            hold_until: None,
            redial: Redial::default(),
            refused: None,
            refused_epochs: Default::default(),
            stop: None,
            trace,
        }
    }

    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut requests_open = true;
        loop {
            tokio::select! {
                r = requests.recv(), if requests_open && self.stop.is_none()
                    && self.queue.len() < QUEUED_WINDOWS * self.window => match r {
                    Some(Request::Submit { op, op_id, reply }) => self.submit(op, op_id, reply),
                    Some(Request::Stop(done)) => self.stop = Some(done),
                    None => requests_open = false,
                },
                Some(ev) = events.recv() => self.on_event(ev),
                _ = tick.tick() => self.on_tick(),
            }
            self.pump();
            self.deliver().await;
            if (self.stop.is_some() || !requests_open) && self.queue.is_empty() {
                // Operations handed over after the stop (by another clone of
                // the client) were numbered: each gets its answer.
                requests.close();
                let mut stops = Vec::new();
                while let Ok(r) = requests.try_recv() {
                    if let Request::Stop(done) = r {
                        stops.push(done);
                    } else if let Request::Submit { op, op_id, reply } = r {
                        self.hand_out(OpResult { op_id, op, result: Err(ClientError::Stopped) }, reply).await;
                    }
                }
                self.trace.record("KvslibStop", serde_json::json!({"ClientId": self.client_id}));
                let _ = self.trace.tracer().flush(Duration::from_millis(500)).await;
                self.results = None; // closes the results channel
                for done in self.stop.take().into_iter().chain(stops) {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    fn submit(&mut self, op: Op, op_id: u64, reply: Option<oneshot::Sender<OpResult>>) {
        // The session is filled in when it goes out (see `pump`).
        let mut cmd = wire::command(&self.client_id, 0, op_id, &op);
        let trace = self.trace.tracer().create_trace();
        if trace.enabled() {
            let mut body = serde_json::json!({"ClientId": self.client_id, "OpId": op_id, "Key": op.key()});
            match &op {
                Op::Put { value, .. } | Op::Append { value, .. } => body["Value"] = serde_json::json!(value),
                Op::Cas { expected, new, .. } => {
                    body["Expected"] = serde_json::json!(expected);
                    body["Value"] = serde_json::json!(new);
                }
                Op::Get { .. } | Op::Delete { .. } => {}
            }
            trace.record(op_tags(&op).0, body);
            cmd.trace = trace.generate_token();
        }
        self.queue.push_back(Pending {
            trace,
            op_id,
            op,
            cmd,
            sent: false,
            sent_on: Vec::new(),
            since: Instant::now(),
            result: self.refused_now().map(|why| Err(ClientError::Unauthenticated(why))),
            reply,
        });
    }

    /// Why the cluster refused this client's Secret, while that is fresh:
    /// for the pause after a refusal, operations fail at once. After it they
    /// go out again (one refused connection fails them as quickly), so a
    /// cluster that takes the Secret again (a coord restarted with its
    /// right config, say) is served again without a restart of the client.
    fn refused_now(&self) -> Option<String> {
        self.refused.clone().filter(|_| self.hold_until.is_some_and(|t| Instant::now() < t))
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Leader(info) => {
                self.refused = None; // the coord took the Secret
                let changed = info.leader_id != self.leader.leader_id || info.client_addr != self.leader.client_addr;
                // The same server chosen again (a new term) is worth a dial
                // at once too: it may be back from an outage.
                let reelected = info.term != self.leader.term;
                self.coord_leader = info.clone();
                self.dead_hint = None;
                self.leader = info;
                if self.leader.quorum_impossible {
                    let why = self.leader.status.clone();
                    for p in self.queue.iter_mut().filter(|p| p.result.is_none()) {
                        p.result = Some(Err(ClientError::QuorumImpossible(why.clone())));
                    }
                }
                // Only another leader, named, ends the stream to this one. A
                // coord that names none (it restarted, or waits for servers
                // to join again) knows no better than the stream, which
                // goes on until the leader itself says or shows otherwise
                // (NotLeader, the connection closed).
                let moved = self.leader.leader_id != 0;
                if (changed || reelected) && moved {
                    self.redial.reset();
                }
                if changed && moved && self.conn.as_ref().is_some_and(|c| c.leader != self.leader.leader_id) {
                    self.drop_conn();
                }
            }
            Event::Closed { epoch, served } => {
                // Counted even when the connection was already dropped here
                // (a send that failed first): a served one at any time says
                // the leader takes us; the latest dial failing, that it does not.
                if served {
                    self.redial.reset();
                } else if epoch == self.next_epoch {
                    self.redial.failed(Instant::now());
                    // A hint that led nowhere: back to the coord's answer,
                    // which names no other leader until leadership moves.
                    let hinted = (self.leader.leader_id, &self.leader.client_addr)
                        != (self.coord_leader.leader_id, &self.coord_leader.client_addr);
                    if hinted && self.coord_leader.leader_id != 0 {
                        self.dead_hint = Some((self.leader.leader_id, self.leader.client_addr.clone()));
                        self.leader = self.coord_leader.clone();
                    }
                }
                if self.conn.as_ref().is_some_and(|c| c.epoch == epoch) {
                    self.drop_conn();
                }
            }
            Event::Refused { epoch, why } => {
                // Operations that reached no server taking the Secret fail
                // at once, with the cause, instead of timing out; so do later
                // ones, until a server answers. One sent on a connection that
                // was not refused may have been applied: it keeps waiting for
                // its result or its timeout, which says so.
                if let Some(e) = epoch {
                    self.refused_epochs.insert(e);
                }
                let refused = &self.refused_epochs;
                for p in self.queue.iter_mut().filter(|p| p.result.is_none()) {
                    if p.sent_on.iter().all(|e| refused.contains(e)) {
                        p.result = Some(Err(ClientError::Unauthenticated(why.clone())));
                    }
                }
                self.refused = Some(why);
                // No reconnecting in a tight loop to a server that refuses.
                self.hold_until = Some(Instant::now() + Duration::from_secs(1));
            }
            Event::Reply { epoch, reply } => {
                match &mut self.conn {
                    Some(c) if c.epoch == epoch => c.answered = true,
                    _ => return,
                }
                let Some(session) = self.session else {
                    return self.on_registration(reply);
                };
                if reply.session != session {
                    return;
                }
                self.refused = None; // a server took the Secret
                let Some(p) = self.queue.iter_mut().find(|p| p.op_id == reply.op_id) else {
                    return;
                };
                if p.result.is_some() {
                    return;
                }
                let token = reply.trace.clone();
                match wire::outcome(reply) {
                    wire::Outcome::Done(r) => {
                        if p.trace.enabled()
                            && let Ok(t) = p.trace.tracer().receive_token(&token)
                        {
                            let mut body = serde_json::json!({"OpId": p.op_id, "Key": p.op.key()});
                            if let Ok(Value::Value(v)) = &r {
                                body["Value"] = serde_json::json!(v);
                            }
                            t.record(op_tags(&p.op).1, body);
                        }
                        p.result = Some(r)
                    }
                    wire::Outcome::NotLeader { leader_id, leader_addr } => {
                        p.sent = false;
                        self.redirect(leader_id, leader_addr);
                    }
                    wire::Outcome::Retry => {
                        p.sent = false;
                        self.hold_until = Some(Instant::now() + Duration::from_millis(50));
                    }
                    wire::Outcome::Expired(why) => self.session_expired(why),
                }
            }
        }
    }

    /// The cluster forgot this session. Every operation sent in it may
    /// have been applied before, and a resend in a new session could apply
    /// it twice: each fails with the cause. The rest go out once a new
    /// session is registered.
    fn session_expired(&mut self, why: String) {
        for p in self.queue.iter_mut().filter(|p| p.result.is_none() && !p.sent_on.is_empty()) {
            p.result = Some(Err(ClientError::SessionExpired(why.clone())));
        }
        self.session = None;
        self.registration = wire::registration(&self.client_id);
        self.registration_sent_at = None;
    }

    /// The answer to the registration (or to something older, ignored).
    fn on_registration(&mut self, reply: pb::Reply) {
        if reply.session != 0 || reply.op_id != self.registration.op_id {
            return;
        }
        self.refused = None; // a server took the Secret
        if let Some(pb::reply::Result::Registered(r)) = &reply.result {
            self.session = Some(r.session);
            return;
        }
        self.registration_sent_at = None;
        match wire::outcome(reply) {
            wire::Outcome::NotLeader { leader_id, leader_addr } => self.redirect(leader_id, leader_addr),
            wire::Outcome::Retry => self.hold_until = Some(Instant::now() + Duration::from_millis(50)),
            // A registration is never answered so; taken as a refusal.
            o @ (wire::Outcome::Done(_) | wire::Outcome::Expired(_)) => {
                // A server that cannot register (say, one that predates
                // registration): the operations waiting fail with its reason
                // rather than time out, and the next one tries again.
                let why = match o {
                    wire::Outcome::Done(Err(e)) => e,
                    wire::Outcome::Expired(why) => ClientError::SessionExpired(why),
                    _ => ClientError::BadRequest("the server answered the registration with no session".into()),
                };
                for p in self.queue.iter_mut().filter(|p| p.result.is_none()) {
                    p.result = Some(Err(why.clone()));
                }
                self.hold_until = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// A server said it does not lead: off to the one it names, or, if it
    /// names none, a pause before asking again (the coord may still name
    /// the server that just said no, and it would say so at once).
    fn redirect(&mut self, leader_id: u64, leader_addr: String) {
        let dead = self.dead_hint.as_ref().is_some_and(|(id, addr)| (*id, addr) == (leader_id, &leader_addr));
        if leader_id != 0 && !leader_addr.is_empty() && !dead {
            self.leader.leader_id = leader_id;
            self.leader.client_addr = leader_addr;
            self.redial.reset();
        } else {
            self.hold_until = Some(Instant::now() + Duration::from_millis(50));
        }
        self.drop_conn();
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // A registration unanswered for a whole operation timeout (a leader
        // cut off from its followers holds it) is sent again, elsewhere if
        // the coord now names another leader.
        let wait = self.op_timeout.max(MIN_REGISTRATION_WAIT);
        if self.session.is_none() && self.registration_sent_at.is_some_and(|t| now.duration_since(t) >= wait) {
            self.drop_conn();
        }
        if let Some(c) = self.conn.as_mut().filter(|c| c.answered) {
            (c.heard, c.answered) = (now, false);
        }
        // The current connection, if it has brought nothing for a whole
        // operation timeout.
        let silent = self.conn.as_ref().filter(|c| now.duration_since(c.heard) >= self.op_timeout).map(|c| c.epoch);
        let mut suspect = false;
        for p in self.queue.iter_mut().filter(|p| p.result.is_none()) {
            if now.duration_since(p.since) >= self.op_timeout {
                p.result = Some(Err(ClientError::Timeout(self.op_timeout)));
                suspect |= p.sent && silent.is_some_and(|e| p.sent_on.last() == Some(&e));
            }
        }
        // An operation that timed out on a connection silent that long
        // makes it suspect: a half-open one (its leader cut off from this
        // client alone, a lost reset) would otherwise time every operation
        // out until TCP gave up. The next operation dials again. One that
        // answers, however slowly, is kept.
        if suspect {
            self.drop_conn();
        }
    }

    /// Every operation on the wire goes back to the queue: it will be resent
    /// to the next leader with the same opId.
    fn drop_conn(&mut self) {
        self.conn = None;
        self.registration_sent_at = None;
        for p in self.queue.iter_mut() {
            p.sent = false;
        }
    }

    fn connect(&mut self) {
        if self.leader.leader_id == 0 || self.leader.client_addr.is_empty() || !self.redial.may_dial(Instant::now()) {
            return;
        }
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        let (tx, rx) = mpsc::unbounded_channel();
        let addr = self.leader.client_addr.clone();
        let (secret, events) = (self.secret.clone(), self.events_tx.clone());
        match self.transport {
            crate::Transport::Frames => tokio::spawn(wire::session_framed(addr, secret, epoch, rx, events)),
            crate::Transport::Grpc => tokio::spawn(wire::session(addr, secret, epoch, rx, events)),
        };
        self.conn = Some(Conn { epoch, leader: self.leader.leader_id, tx, heard: Instant::now(), answered: false });
    }

    /// Puts queued operations on the wire, up to the window.
    fn pump(&mut self) {
        if self.hold_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.hold_until = None;
        // Registering starts at once, before the first operation is issued.
        let register = self.session.is_none() && self.registration_sent_at.is_none();
        if !register && !self.queue.iter().any(|p| !p.sent && p.result.is_none()) {
            return;
        }
        if self.conn.is_none() {
            self.connect();
        }
        let Some(conn) = &self.conn else { return };
        let Some(session) = self.session else {
            if register {
                if conn.tx.send(self.registration.clone()).is_ok() {
                    self.registration_sent_at = Some(Instant::now());
                } else {
                    self.drop_conn();
                }
            }
            return;
        };
        let first_unacked = self.queue.front().map_or(0, |p| p.op_id);
        let mut on_wire = self.queue.iter().filter(|p| p.sent && p.result.is_none()).count();
        let mut broken = false;
        for p in self.queue.iter_mut() {
            if on_wire >= self.window {
                break;
            }
            if p.sent || p.result.is_some() {
                continue;
            }
            p.cmd.session = session;
            p.cmd.first_unacked = first_unacked;
            if conn.tx.send(p.cmd.clone()).is_err() {
                broken = true;
                break;
            }
            p.sent = true;
            if p.sent_on.last() != Some(&conn.epoch) {
                p.sent_on.push(conn.epoch);
            }
            on_wire += 1;
        }
        if broken {
            self.drop_conn();
        }
    }

    /// Hands out finished operations from the front, in order.
    async fn deliver(&mut self) {
        while self.queue.front().is_some_and(|p| p.result.is_some()) {
            let p = self.queue.pop_front().expect("front exists");
            let r = OpResult { op_id: p.op_id, op: p.op, result: p.result.expect("checked") };
            self.hand_out(r, p.reply).await;
        }
    }

    /// Gives `r` to whoever waits for it: its `execute` call, or the
    /// results channel.
    async fn hand_out(&self, r: OpResult, reply: Option<oneshot::Sender<OpResult>>) {
        match reply {
            Some(tx) => {
                let _ = tx.send(r);
            }
            None => {
                if let Some(results) = &self.results {
                    // Backpressure: an application that does not read its
                    // results slows the client down.
                    let _ = results.send(r).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(window: usize) -> (Driver, mpsc::Receiver<OpResult>, mpsc::UnboundedReceiver<Event>) {
        let (results, results_rx) = mpsc::channel(16);
        let (events, events_rx) = mpsc::unbounded_channel();
        let settings = Settings {
            client_id: "c".into(),
            secret: String::new(),
            window,
            op_timeout: Duration::from_secs(10),
            trace: kvraft_trace::Trace::disabled(),
            transport: crate::Transport::Frames,
        };
        let mut d = Driver::new(settings, results, events);
        d.session = Some(7);
        (d, results_rx, events_rx)
    }

    fn put(d: &mut Driver, op_id: u64) {
        d.submit(Op::Put { key: "k".into(), value: "v".into() }, op_id, None);
    }

    fn result(d: &Driver, op_id: u64) -> Option<&Result<Value, ClientError>> {
        d.queue.iter().find(|p| p.op_id == op_id)?.result.as_ref()
    }

    /// A refusal fails operations at once for its pause, not for ever: a
    /// cluster that takes the Secret again is served again.
    #[test]
    fn a_refusal_does_not_fail_every_later_operation() {
        let (mut d, _r, _e) = driver(1);
        d.on_event(Event::Refused { epoch: None, why: "wrong secret".into() });
        put(&mut d, 1);
        assert!(matches!(result(&d, 1), Some(Err(ClientError::Unauthenticated(_)))));
        // The pause is over: the next one goes out (and fails as fast if
        // it is refused again).
        d.hold_until = Instant::now().checked_sub(Duration::from_millis(1));
        put(&mut d, 2);
        assert!(result(&d, 2).is_none(), "an operation failed on an old refusal");
        // The coord answering ends the refusal at once.
        d.on_event(Event::Refused { epoch: None, why: "wrong secret".into() });
        d.on_event(Event::Leader(pb::LeaderInfo {
            leader_id: 1,
            client_addr: "127.0.0.1:1".into(),
            ..Default::default()
        }));
        put(&mut d, 3);
        assert!(result(&d, 3).is_none());
    }

    /// A short operation timeout does not resend the registration before a
    /// dial, a hello and a commit could have answered it.
    #[test]
    fn a_registration_gets_time_to_be_answered() {
        let (mut d, _r, _e) = driver(1);
        d.session = None;
        d.op_timeout = Duration::from_millis(300);
        let (tx, _rx) = mpsc::unbounded_channel();
        d.conn = Some(Conn { epoch: 1, leader: 1, tx, heard: Instant::now(), answered: false });
        d.registration_sent_at = Instant::now().checked_sub(Duration::from_secs(1));
        d.on_tick();
        assert!(d.conn.is_some(), "the registration was given up after 1 s");
        d.registration_sent_at = Instant::now().checked_sub(MIN_REGISTRATION_WAIT);
        d.on_tick();
        assert!(d.conn.is_none());
    }

    /// An operation that times out on a connection silent for a whole
    /// operation timeout drops it: a half-open connection must not time out
    /// every operation after it. One that answers is kept.
    #[test]
    fn a_timeout_on_a_silent_connection_drops_it() {
        let (mut d, _r, _e) = driver(4);
        d.op_timeout = Duration::from_millis(200);
        let (tx, _rx) = mpsc::unbounded_channel();
        let long_ago = Instant::now().checked_sub(Duration::from_millis(300)).unwrap();
        d.conn = Some(Conn { epoch: 3, leader: 1, tx, heard: long_ago, answered: false });
        // Not sent: a timeout says nothing about the connection.
        put(&mut d, 1);
        d.queue[0].since = long_ago;
        d.on_tick();
        assert!(d.conn.is_some());
        // Sent on it, but it answered lately (a slow cluster): kept.
        put(&mut d, 2);
        let sent_on = |d: &mut Driver| {
            let p = d.queue.back_mut().unwrap();
            (p.sent, p.sent_on, p.since) = (true, vec![3], long_ago);
        };
        sent_on(&mut d);
        d.conn.as_mut().unwrap().answered = true;
        d.on_tick();
        assert!(d.conn.is_some(), "a connection that answers was dropped");
        // Sent on it, and nothing heard for the whole timeout: dropped.
        put(&mut d, 3);
        sent_on(&mut d);
        d.conn.as_mut().unwrap().heard = long_ago;
        d.on_tick();
        assert!(d.conn.is_none(), "an operation timed out on a silent connection, which was kept");
        assert!(matches!(result(&d, 3), Some(Err(ClientError::Timeout(_)))));
    }

    /// A server's hint naming a leader that takes no connection is given
    /// up for the coord's answer (the coord says nothing new until
    /// leadership moves, so the client would otherwise dial the dead hint
    /// until then), and not followed again until the coord answers anew: a
    /// server naming a dead one would otherwise send the client back and
    /// forth with no wait.
    #[test]
    fn a_hint_that_leads_nowhere_is_given_up_for_the_coords_answer() {
        let (mut d, _r, _e) = driver(1);
        let coord = pb::LeaderInfo { leader_id: 1, client_addr: "127.0.0.1:1".into(), term: 3, ..Default::default() };
        d.on_event(Event::Leader(coord.clone()));
        d.redirect(2, "127.0.0.1:2".into());
        assert_eq!(d.leader.leader_id, 2);
        d.next_epoch = 5;
        d.on_event(Event::Closed { epoch: 5, served: false });
        assert_eq!((d.leader.leader_id, d.leader.client_addr.as_str()), (1, "127.0.0.1:1"));
        d.redirect(2, "127.0.0.1:2".into());
        assert_eq!(d.leader.leader_id, 1, "the dead hint was followed again");
        assert!(d.hold_until.is_some(), "no pause before asking the coord's leader again");
        d.on_event(Event::Leader(coord));
        d.redirect(2, "127.0.0.1:2".into());
        assert_eq!(d.leader.leader_id, 2);
    }

    /// A forgotten session fails every operation sent in it (it may have
    /// been applied, and a resend in a new session could apply it again),
    /// registers anew, and sends the others in the new session.
    #[test]
    fn a_forgotten_session_fails_what_was_sent_and_registers_again() {
        let (mut d, _r, _e) = driver(2);
        let (tx, mut wire_rx) = mpsc::unbounded_channel();
        d.conn = Some(Conn { epoch: 1, leader: 1, tx, heard: Instant::now(), answered: false });
        for op_id in 1..=3 {
            put(&mut d, op_id);
        }
        d.pump();
        let sent: Vec<_> = std::iter::from_fn(|| wire_rx.try_recv().ok()).map(|c| (c.session, c.op_id)).collect();
        assert_eq!(sent, [(7, 1), (7, 2)], "the window is two");
        let expired = pb::Reply {
            session: 7,
            op_id: 2,
            result: Some(pb::reply::Result::Error(pb::Error {
                code: pb::ErrorCode::SessionExpired as i32,
                message: "session 7 expired".into(),
                ..Default::default()
            })),
            trace: Vec::new(),
        };
        let old_registration = d.registration.op_id;
        d.on_event(Event::Reply { epoch: 1, reply: expired });
        assert!(matches!(result(&d, 1), Some(Err(ClientError::SessionExpired(_)))));
        assert!(matches!(result(&d, 2), Some(Err(ClientError::SessionExpired(_)))));
        assert!(result(&d, 3).is_none(), "an operation never sent was failed");
        assert_eq!(d.session, None);
        assert_ne!(d.registration.op_id, old_registration, "the old registration's answer could be taken for the new");
        // The registration goes out, and once answered op 3 follows in the
        // new session.
        d.pump();
        let reg = wire_rx.try_recv().unwrap();
        assert_eq!((reg.session, reg.op_id), (0, d.registration.op_id));
        let registered = pb::Reply {
            session: 0,
            op_id: reg.op_id,
            result: Some(pb::reply::Result::Registered(pb::Registered { session: 9 })),
            trace: Vec::new(),
        };
        d.on_event(Event::Reply { epoch: 1, reply: registered });
        d.pump();
        let next = wire_rx.try_recv().unwrap();
        assert_eq!((next.session, next.op_id), (9, 3));
        assert!(wire_rx.try_recv().is_err(), "a failed operation was resent");
    }
}
