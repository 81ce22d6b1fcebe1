//! One client: a thread in the client's own namespace (so partitions can
//! strand it with a minority) running a kvslib client with one operation in
//! flight, recording every operation until told to stop.
//!
//! The thread moves itself into its namespace before it builds its
//! (single-threaded) tokio runtime, so every socket the client opens, and
//! every thread the runtime spawns, lives there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kvslib::{Config, KvClient, Transport};

use crate::history::{Outcome, Record};
use crate::layout::{Layout, Node};
use crate::workload::{KeySpace, Workload};

/// An operation gets this long before kvslib reports a timeout.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the harness and its clients share.
pub struct Shared {
    /// The clock every time in the history is measured on.
    pub epoch: Instant,
    /// Set when the clients must finish their current operation and stop.
    pub stop: AtomicBool,
    /// µs since `epoch` at which everything was healed (0: not yet).
    pub healed_at: AtomicU64,
    /// Per client: operations invoked after the heal that succeeded.
    pub ok_after_heal: Vec<AtomicU64>,
    /// Running totals, for progress lines.
    pub ok: AtomicU64,
    pub not_ok: AtomicU64,
    pub keys: KeySpace,
}

impl Shared {
    pub fn new(epoch: Instant, clients: u64) -> Shared {
        Shared {
            epoch,
            stop: AtomicBool::new(false),
            healed_at: AtomicU64::new(0),
            ok_after_heal: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            ok: AtomicU64::new(0),
            not_ok: AtomicU64::new(0),
            keys: KeySpace::default(),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// Sets `stop` when dropped: whatever way the harness leaves (an error, a
/// panic), its client threads end and can be joined.
pub struct StopOnDrop(pub Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// Runs client `index` (1-based) until `shared.stop`; returns its records.
pub fn run(layout: &Layout, index: u64, seed: u64, shared: Arc<Shared>) -> anyhow::Result<Vec<Record>> {
    layout.enter(Node::Client(index))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("building a client runtime")?;
    let cfg = Config {
        client_id: format!("faults-{}-{}-c{index}", layout.pid, layout.run),
        coord_addr: layout.coord_client_addr(),
        secret: String::new(),
        ch_capacity: 16,
        window: 1,
        op_timeout: OP_TIMEOUT,
        tracer: Default::default(),
        // Both ways to the leader are checked under faults: the odd
        // clients on the client wire's frames, the even ones on gRPC.
        transport: if index % 2 == 1 { Transport::Frames } else { Transport::Grpc },
    };
    rt.block_on(async move {
        let (client, _results) = KvClient::start(cfg).map_err(|e| anyhow::anyhow!("client {index}: {e}"))?;
        let mut workload = Workload::new(seed, index);
        let mut records = Vec::new();
        while !shared.stop.load(Ordering::SeqCst) {
            let op = workload.next(&shared.keys);
            let call = shared.now_us();
            // kvslib bounds every operation by OP_TIMEOUT; the outer bound
            // only guards the harness against a client library that hangs.
            let result =
                match tokio::time::timeout(OP_TIMEOUT + Duration::from_secs(3), client.execute(op.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(kvslib::ClientError::Config(
                        "the harness gave up: kvslib did not return within its op timeout + 3 s".into(),
                    )),
                };
            let ret = shared.now_us();
            workload.observe(&op, &result);
            let outcome = Outcome::of(result);
            let ok = matches!(outcome, Outcome::Ok(_));
            if ok {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                let healed = shared.healed_at.load(Ordering::SeqCst);
                if healed != 0 && call >= healed {
                    shared.ok_after_heal[index as usize - 1].fetch_add(1, Ordering::SeqCst);
                }
            } else {
                shared.not_ok.fetch_add(1, Ordering::Relaxed);
            }
            records.push(Record { client: index, op, call, ret, outcome });
            let pause = if ok { workload.think() } else { workload.back_off() };
            tokio::time::sleep(pause).await;
        }
        Ok(records)
    })
}
