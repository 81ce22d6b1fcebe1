//! The closed-loop driver, the same for every system: each client's
//! connection runs `window` lanes, each lane issues its next operation when
//! the last one returned; after the warm-up, every latency goes into an
//! HdrHistogram, and the lanes' histograms are merged at the end.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::usage::{self, Usage};

/// Why `--op append` cannot run against etcd.
pub const APPEND_ON_ETCD: &str = "append is not supported against etcd: it has no append operation \
    (a read-modify-write txn is not the same operation); use put, get or mixed";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Put,
    Get,
    Mixed,
    Append,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Append => "append",
        }
    }
}

/// One operation, as every target sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchOp {
    Get { key: String },
    Put { key: String, value: String },
    Append { key: String, value: String },
}

/// One bench client's connection to the system under test; each lane runs
/// on a clone of it.
pub trait Conn: Clone + Send + 'static {
    /// Runs one operation to its end: `Ok` once the system acknowledged it.
    fn execute(&mut self, op: BenchOp) -> impl Future<Output = Result<(), String>> + Send;
}

/// What to run.
pub struct Load {
    /// Names the run on the progress bar and in error messages ("kvraft put").
    pub label: String,
    pub op: Workload,
    /// Lanes per connection.
    pub window: usize,
    pub keys: u64,
    pub value_size: usize,
    /// Seconds not measured, then seconds measured.
    pub warmup: u64,
    pub duration: u64,
    /// A progress bar on standard error.
    pub progress: bool,
    /// Processes whose CPU and memory over the measured seconds are reported.
    pub watch: Option<Vec<u32>>,
    /// The runtime the lanes run on (a [`super::solo::Solo`]'s, for a few
    /// lanes: the one their connections were made on); else the caller's.
    pub on: Option<tokio::runtime::Handle>,
}

/// What a run measured.
pub struct Outcome {
    /// Operations acknowledged in the measured seconds.
    pub ops: u64,
    pub secs: f64,
    pub errors: u64,
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
    pub usage: Option<Usage>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at three significant digits: the bounds are valid.
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// The name of key `k`, the same on every system.
pub fn key_name(k: u64) -> String {
    format!("key{k}")
}

/// The next operation of a lane whose xorshift state is `x`.
fn next_op(x: &mut u64, op: Workload, keys: u64, value: &str) -> BenchOp {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    let key = key_name(*x % keys);
    match op {
        Workload::Put => BenchOp::Put { key, value: value.to_owned() },
        Workload::Get => BenchOp::Get { key },
        Workload::Append => BenchOp::Append { key, value: "a".into() },
        Workload::Mixed if x.is_multiple_of(2) => BenchOp::Get { key },
        Workload::Mixed => BenchOp::Put { key, value: value.to_owned() },
    }
}

/// Runs `load` on `conns` (one per client). The lanes are aborted if this
/// future is dropped.
pub async fn run<C: Conn>(conns: &[C], load: &Load) -> anyhow::Result<Outcome> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let value = "x".repeat(load.value_size);
    let mut lanes = JoinSet::new();
    for (c, conn) in conns.iter().enumerate() {
        for lane in 0..load.window as u64 {
            let (mut conn, measuring, stop, done, errors) =
                (conn.clone(), measuring.clone(), stop.clone(), done.clone(), errors.clone());
            let (op, keys, value, label) = (load.op, load.keys, value.clone(), load.label.clone());
            let mut x = c as u64 * 1_000_003 + lane * 7919 + 1;
            let lane = async move {
                let mut hist = histogram();
                while !stop.load(Ordering::Relaxed) {
                    let op = next_op(&mut x, op, keys, &value);
                    let start = Instant::now();
                    let r = conn.execute(op).await;
                    if measuring.load(Ordering::Relaxed) {
                        match r {
                            Ok(()) => {
                                let _ = hist.record(start.elapsed().as_micros().max(1) as u64);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("kvraft bench: {label}: first error: {e}");
                                }
                            }
                        }
                    }
                }
                hist
            };
            match &load.on {
                Some(rt) => lanes.spawn_on(lane, rt),
                None => lanes.spawn(lane),
            };
        }
    }
    let bar = load.progress.then(|| {
        let b = indicatif::ProgressBar::new(load.warmup + load.duration);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} {msg:>10} [{bar:30}] {pos}/{len}s")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_prefix(load.label.clone());
        b
    });
    for s in 0..load.warmup {
        if let Some(b) = &bar {
            b.set_message("warm-up");
            b.set_position(s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let before = load.watch.as_deref().map(usage::sample);
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    for s in 0..load.duration {
        if let Some(b) = &bar {
            b.set_message(format!("{} ops", done.load(Ordering::Relaxed)));
            b.set_position(load.warmup + s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    measuring.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let usage = match (&load.watch, &before) {
        (Some(pids), Some(before)) => Some(usage::between(before, &usage::sample(pids))),
        _ => None,
    };
    stop.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut hist = histogram();
    // A lane stuck in an operation gets until the deadline; then it is aborted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, lanes.join_next()).await {
        if let Ok(h) = r {
            hist.add(&h).map_err(|e| anyhow!("merging histograms: {e}"))?;
        }
    }
    Ok(Outcome { ops: done.load(Ordering::Relaxed), secs, errors: errors.load(Ordering::Relaxed), hist, usage })
}

/// Writes every key once (`value_size` bytes), the keys spread over the
/// connections, so that gets find values. Each put is tried three times.
pub async fn prefill<C: Conn>(conns: &[C], keys: u64, value_size: usize) -> anyhow::Result<()> {
    let value = "x".repeat(value_size);
    let n = conns.len() as u64;
    let mut set = JoinSet::new();
    for (c, conn) in conns.iter().enumerate() {
        let (mut conn, value) = (conn.clone(), value.clone());
        set.spawn(async move {
            let mut k = c as u64;
            while k < keys {
                let mut tries = 0;
                while let Err(e) = conn.execute(BenchOp::Put { key: key_name(k), value: value.clone() }).await {
                    tries += 1;
                    if tries == 3 {
                        return Err(format!("{}: {e}", key_name(k)));
                    }
                }
                k += n;
            }
            Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("prefilling the keys: {e}"),
            Err(e) => bail!("prefilling the keys: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that counts, and fails every `fail_every`-th operation.
    #[derive(Clone)]
    struct Fake {
        ops: Arc<std::sync::Mutex<Vec<BenchOp>>>,
        fail_every: usize,
        /// The names of the threads the operations ran on.
        threads: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    }

    impl Fake {
        fn new(ops: &Arc<std::sync::Mutex<Vec<BenchOp>>>, fail_every: usize) -> Fake {
            Fake { ops: ops.clone(), fail_every, threads: Default::default() }
        }
    }

    impl Conn for Fake {
        async fn execute(&mut self, op: BenchOp) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let name = std::thread::current().name().unwrap_or("unnamed").to_owned();
            self.threads.lock().map_err(|_| "poisoned".to_string())?.insert(name);
            let mut ops = self.ops.lock().map_err(|_| "poisoned".to_string())?;
            ops.push(op);
            if self.fail_every > 0 && ops.len().is_multiple_of(self.fail_every) { Err("boom".into()) } else { Ok(()) }
        }
    }

    #[test]
    fn mixed_is_gets_and_puts_of_the_keys() {
        let mut x = 1;
        let ops: Vec<BenchOp> = (0..1000).map(|_| next_op(&mut x, Workload::Mixed, 10, "v")).collect();
        let gets = ops.iter().filter(|o| matches!(o, BenchOp::Get { .. })).count();
        assert!(gets > 300 && gets < 700, "{gets}");
        for o in &ops {
            let (BenchOp::Get { key } | BenchOp::Put { key, .. } | BenchOp::Append { key, .. }) = o;
            let k: u64 = key.strip_prefix("key").unwrap().parse().unwrap();
            assert!(k < 10);
        }
    }

    #[tokio::test]
    async fn a_run_counts_operations_and_errors() {
        let ops = Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns = vec![Fake::new(&ops, 10); 2];
        let load = Load {
            label: "fake put".into(),
            op: Workload::Put,
            window: 2,
            keys: 5,
            value_size: 3,
            warmup: 0,
            duration: 1,
            progress: false,
            watch: Some(vec![std::process::id()]),
            on: None,
        };
        let o = run(&conns, &load).await.unwrap();
        assert!(o.ops > 0);
        assert!(o.errors > 0);
        assert_eq!(o.hist.len(), o.ops);
        assert!(o.usage.is_some());
        assert!(ops.lock().unwrap().iter().all(|op| matches!(op, BenchOp::Put { value, .. } if value == "xxx")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_few_lanes_run_on_their_own_thread() {
        let solo = super::super::solo::Solo::for_lanes(1).unwrap().unwrap();
        let ops = Arc::new(std::sync::Mutex::new(Vec::new()));
        let conn = Fake::new(&ops, 0);
        let load = Load {
            label: "fake put".into(),
            op: Workload::Put,
            window: 1,
            keys: 5,
            value_size: 3,
            warmup: 0,
            duration: 1,
            progress: false,
            watch: None,
            on: Some(solo.handle().clone()),
        };
        let o = run(std::slice::from_ref(&conn), &load).await.unwrap();
        assert!(o.ops > 0);
        let threads = conn.threads.lock().unwrap().clone();
        assert_eq!(threads.into_iter().collect::<Vec<_>>(), vec!["kvraft-bench-lanes".to_owned()]);
    }

    #[tokio::test]
    async fn prefill_writes_every_key_once() {
        let ops = Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns = vec![Fake::new(&ops, 0); 3];
        prefill(&conns, 10, 4).await.unwrap();
        let mut keys: Vec<String> = ops
            .lock()
            .unwrap()
            .iter()
            .map(|o| match o {
                BenchOp::Put { key, .. } => key.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        keys.sort();
        let mut want: Vec<String> = (0..10).map(key_name).collect();
        want.sort();
        assert_eq!(keys, want);
    }
}
