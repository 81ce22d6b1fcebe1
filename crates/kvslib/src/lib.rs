//! kvslib: the KVRaft client library.
//!
//! The prototype's shape: [`KvClient::start`] gives a client and a channel of
//! results; [`KvClient::get`], [`KvClient::put`] (and `delete`, `append`,
//! `cas`) return the operation's id at once; results arrive on the channel
//! in the order issued; [`KvClient::stop`] waits for what is in flight and
//! closes the channel. For code that wants one result at a time,
//! [`KvClient::execute`] is a plain async call.
//!
//! Beyond the prototype: up to `window` operations travel at once on one
//! connection to the leader (plain frames by default, or a gRPC stream:
//! [`Transport`]); the leader is found, and followed, through the
//! coord's watch; after a failover the same opIds are sent again, so nothing
//! is applied twice; an operation that cannot finish ends with a typed error
//! (quorum impossible, timeout) instead of hanging; a restarted client with
//! the same id registers a new, larger session with the cluster before its
//! first operation, so it is not locked out whatever its clock says.

mod backoff;
mod driver;
mod op;
mod wire;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use op::{ClientError, Op, OpResult, Value};

/// How a client starts.
#[derive(Clone, Debug)]
pub struct Config {
    /// The client's id; several clients must not share one at the same time.
    pub client_id: String,
    /// The coord's client API (the coord config's ClientAPIListenAddr).
    pub coord_addr: String,
    /// The cluster's Secret ("" when none).
    pub secret: String,
    /// Capacity of the results channel (the prototype's ChCapacity), at
    /// most [`MAX_CH_CAPACITY`].
    pub ch_capacity: usize,
    /// Operations in flight at once, at most [`MAX_WINDOW`].
    pub window: usize,
    /// An operation without a result after this long ends with `Timeout`.
    pub op_timeout: Duration,
    /// Vector-clock tracing (disabled by default): KvslibStart, Put, Get,
    /// their results, leader changes, KvslibStop.
    pub tracer: kvraft_trace::Tracer,
    /// How operations reach the leader.
    pub transport: Transport,
}

/// How a client's session reaches the leader: the same commands and
/// replies either way, on the same port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Length-prefixed frames (the server's client wire): what one write
    /// costs is mostly the servers' work, not HTTP/2's.
    #[default]
    Frames,
    /// The KvClient service's gRPC Session stream, as a client in another
    /// language would use it.
    Grpc,
}

/// The most operations in flight one client may ask for: far more than a
/// server's stream gains from, and its buffers are sized from it.
pub const MAX_WINDOW: usize = 4_096;
/// The largest results channel one client may ask for.
pub const MAX_CH_CAPACITY: usize = 1 << 20;

impl Config {
    pub fn new(client_id: impl Into<String>, coord_addr: impl Into<String>) -> Self {
        Config {
            client_id: client_id.into(),
            coord_addr: coord_addr.into(),
            secret: String::new(),
            ch_capacity: 1024,
            window: 64,
            op_timeout: Duration::from_secs(10),
            tracer: kvraft_trace::Tracer::disabled(),
            transport: Transport::default(),
        }
    }
}

/// A running client. Cheap to clone; all clones share one session.
#[derive(Clone)]
pub struct KvClient {
    requests: mpsc::Sender<driver::Request>,
    /// The next opId. Held while an operation is handed to the driver, so
    /// the driver sees operations in opId order (its ordering, and the
    /// `first_unacked` it sends, depend on that).
    next_op: std::sync::Arc<tokio::sync::Mutex<u64>>,
}

impl KvClient {
    /// Starts the client (inside a tokio runtime). It finds the leader by
    /// itself; operations issued before then wait for it.
    pub fn start(cfg: Config) -> Result<(KvClient, mpsc::Receiver<OpResult>), ClientError> {
        if cfg.client_id.is_empty() || cfg.client_id.len() > kvraft_proto::MAX_CLIENT_ID_BYTES {
            let max = kvraft_proto::MAX_CLIENT_ID_BYTES;
            return Err(ClientError::Config(format!("the client id must be 1 to {max} bytes")));
        }
        if let Some(problem) = kvraft_proto::secret::secret_problem(&cfg.secret) {
            return Err(ClientError::Config(problem));
        }
        if !is_host_port(&cfg.coord_addr) {
            return Err(ClientError::Config(format!("the coord address {:?} is not host:port", cfg.coord_addr)));
        }
        if cfg.window > MAX_WINDOW {
            return Err(ClientError::Config(format!("a window of {} is above the limit of {MAX_WINDOW}", cfg.window)));
        }
        if cfg.ch_capacity > MAX_CH_CAPACITY {
            let cap = cfg.ch_capacity;
            return Err(ClientError::Config(format!("ChCapacity {cap} is above the limit of {MAX_CH_CAPACITY}")));
        }
        let (results_tx, results_rx) = mpsc::channel(cfg.ch_capacity.max(1));
        let (req_tx, req_rx) = mpsc::channel(cfg.window.max(1) * 4);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let trace = cfg.tracer.create_trace();
        trace.record("KvslibStart", serde_json::json!({"ClientId": cfg.client_id}));
        tokio::spawn(wire::watch_coord(
            cfg.coord_addr.clone(),
            cfg.secret.clone(),
            ev_tx.clone(),
            trace.clone(),
            cfg.client_id.clone(),
        ));
        let settings = driver::Settings {
            client_id: cfg.client_id,
            secret: cfg.secret,
            window: cfg.window,
            op_timeout: cfg.op_timeout,
            trace,
            transport: cfg.transport,
        };
        let d = driver::Driver::new(settings, results_tx, ev_tx);
        tokio::spawn(d.run(req_rx, ev_rx));
        let client = KvClient { requests: req_tx, next_op: std::sync::Arc::new(tokio::sync::Mutex::new(1)) };
        Ok((client, results_rx))
    }

    /// Numbers `op` and hands it to the driver, in one step.
    async fn hand_over(&self, op: Op, reply: Option<oneshot::Sender<OpResult>>) -> Result<u64, ClientError> {
        let mut next = self.next_op.lock().await;
        let op_id = *next;
        self.requests.send(driver::Request::Submit { op, op_id, reply }).await.map_err(|_| ClientError::Stopped)?;
        *next += 1;
        Ok(op_id)
    }

    /// Issues `op`; its result comes on the results channel. Waits only if
    /// the client is far behind: eight windows waiting (four queued in the
    /// driver, four more handed over to it).
    pub async fn submit(&self, op: Op) -> Result<u64, ClientError> {
        self.hand_over(op, None).await
    }

    pub async fn get(&self, key: impl Into<String>) -> Result<u64, ClientError> {
        self.submit(Op::Get { key: key.into() }).await
    }

    pub async fn put(&self, key: impl Into<String>, value: impl Into<String>) -> Result<u64, ClientError> {
        self.submit(Op::Put { key: key.into(), value: value.into() }).await
    }

    pub async fn delete(&self, key: impl Into<String>) -> Result<u64, ClientError> {
        self.submit(Op::Delete { key: key.into() }).await
    }

    pub async fn append(&self, key: impl Into<String>, value: impl Into<String>) -> Result<u64, ClientError> {
        self.submit(Op::Append { key: key.into(), value: value.into() }).await
    }

    pub async fn cas(
        &self,
        key: impl Into<String>,
        expected: Option<String>,
        new: impl Into<String>,
    ) -> Result<u64, ClientError> {
        self.submit(Op::Cas { key: key.into(), expected, new: new.into() }).await
    }

    /// Runs one operation and waits for its result (in order with the rest).
    pub async fn execute(&self, op: Op) -> Result<Value, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.hand_over(op, Some(tx)).await?;
        rx.await.map_err(|_| ClientError::Stopped)?.result
    }

    /// Waits for every operation in flight to finish, then closes the
    /// results channel (after its remaining results are read).
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(driver::Request::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// `addr` names a host and a port, as the coord's address must: anything
/// else would only show up as every operation timing out.
fn is_host_port(addr: &str) -> bool {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .is_ok_and(|e| e.uri().port().is_some() && e.uri().path() == "/" && e.uri().query().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coord_addresses_must_be_host_and_port() {
        for good in ["127.0.0.1:7000", "localhost:1", "[::1]:7000", "coord.example:80"] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in ["", "127.0.0.1", "two words:1", "host:port", "h:1/x", "h:1?q", "127.0.0.1:99999"] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    /// A Secret that could not travel, or a client id no server takes, is
    /// a configuration error at start, not a timeout later.
    #[tokio::test]
    async fn unusable_secrets_and_ids_are_refused_at_start() {
        let cfg = |id: &str, secret: &str| {
            let mut c = Config::new(id.to_owned(), "127.0.0.1:1".to_owned());
            c.secret = secret.to_owned();
            c
        };
        for (c, says) in [
            (cfg("1", "two\nlines"), "printable ASCII"),
            (cfg(&"c".repeat(257), ""), "1 to 256 bytes"),
            (cfg("", ""), "1 to 256 bytes"),
        ] {
            match KvClient::start(c) {
                Err(ClientError::Config(e)) => assert!(e.contains(says), "{e}"),
                other => panic!("expected a config error naming {says:?}, got {:?}", other.map(|_| ())),
            }
        }
        assert!(KvClient::start(cfg("1", "correct horse")).is_ok());
    }

    /// `submit` waits once eight windows are waiting: a caller that issues
    /// faster than the cluster answers is slowed down, not buffered without
    /// bound.
    #[tokio::test]
    async fn submit_waits_when_eight_windows_are_waiting() {
        let mut c = Config::new("1".to_owned(), "127.0.0.1:1".to_owned()); // no coord: nothing completes
        c.window = 2;
        let (client, _results) = KvClient::start(c).unwrap();
        let put = || Op::Put { key: "k".into(), value: "v".into() };
        // Four windows in the driver, four more in the request channel.
        for i in 1..=16 {
            let op = tokio::time::timeout(std::time::Duration::from_secs(2), client.submit(put())).await;
            assert_eq!(op.expect("submit waited with room left").unwrap(), i);
        }
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), client.submit(put())).await;
        assert!(waited.is_err(), "submit took a 17th operation with 16 queued");
    }

    /// An operation handed over while the client is stopping (by another
    /// clone) gets a result, Stopped, before the results channel closes.
    #[tokio::test]
    async fn an_operation_handed_over_while_stopping_is_answered() {
        let mut c = Config::new("1".to_owned(), "127.0.0.1:1".to_owned()); // no coord: nothing completes
        c.op_timeout = std::time::Duration::from_millis(300);
        let (client, mut results) = KvClient::start(c).unwrap();
        let put = |v: &str| Op::Put { key: "k".into(), value: v.into() };
        assert_eq!(client.submit(put("a")).await.unwrap(), 1);
        let stopping = tokio::spawn(client.clone().stop());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // The driver is stopping (op 1 waits for its timeout) and no longer
        // reads requests; this one lands in the channel's buffer.
        assert_eq!(client.submit(put("b")).await.unwrap(), 2);
        let mut got = Vec::new();
        while let Some(r) = tokio::time::timeout(std::time::Duration::from_secs(10), results.recv()).await.unwrap() {
            got.push((r.op_id, r.result));
        }
        stopping.await.unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(got[0], (1, Err(ClientError::Timeout(_)))), "{got:?}");
        assert_eq!(got[1], (2, Err(ClientError::Stopped)));
    }
}
