//! `kvraft bench scale`: memory and restart time as the data grows.
//!
//! A fresh cluster (fsync on, every server setting at its default unless
//! `--snapshot-entries` says otherwise) is loaded
//! with distinct keys `key{i}` in doubling steps (keys/8, keys/4, keys/2,
//! keys; fewer steps for small `--keys`). After each step, once every server
//! has applied what the leader committed, it prints the load rate, each
//! server's resident memory (VmRSS), its data directory's size on disk, and
//! how much the memory grew since the previous step; a random sample of the
//! keys is read back and checked. Then two restart times:
//!
//! - one follower is SIGKILLed and restarted: the time from the spawn until
//!   it serves its status (it read its snapshot and WAL), and until it has
//!   applied the commit index the leader had at the kill;
//! - one follower is SIGKILLed while the others take more than a snapshot's
//!   worth of writes, then restarted: the time until it has caught up
//!   through the leader's snapshot, and the leader's resident memory
//!   meanwhile (the snapshot is read back from its disk to be sent);
//! - every server is SIGKILLed and restarted (the coord stays): the time
//!   until a restarted server leads, and until a Get of a loaded key returns
//!   the value that was written.
//!
//! Every process it starts is killed when the run ends, however it ends; a
//! server whose resident memory passes `--max-rss-mib` (by default half of
//! the machine's memory, shared among the servers) ends the run with an
//! error, before the kernel's OOM killer picks a victim on a shared machine.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use kvraft_proto as pb;
use kvslib::{Config, KvClient, Op, Value};
use tokio::task::JoinSet;

use crate::local::{self, Layout};

/// The first step has at least this many keys (unless `--keys` is smaller).
const MIN_FIRST_STEP: u64 = 500;
/// Keys read back and checked after each step and after the restarts.
const SAMPLE: u64 = 1_000;
/// How long a restarted server may take to recover and catch up.
const RECOVERY_LIMIT: Duration = Duration::from_secs(600);
/// How long the followers may take to apply what the leader committed.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Distinct keys at the end (loaded in doubling steps from a quarter or an eighth of this).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Servers of the cluster (3, 5 or 7).
    #[arg(long, default_value_t = 3)]
    pub servers: u64,
    /// Concurrent clients loading the keys (each its own session).
    #[arg(long, default_value_t = 32)]
    pub clients: u64,
    /// Operations in flight per client.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Where the cluster keeps configs, data and logs (emptied first; it must be empty or a bench folder).
    #[arg(long, default_value = "bench-scale")]
    pub dir: PathBuf,
    /// One JSON object per line (one per step, one for the restarts), no progress bar.
    #[arg(long)]
    pub json: bool,
    /// Stop (with an error) when a server's resident memory passes this many MiB.
    /// Default: half of this machine's memory, shared among the servers.
    #[arg(long, value_name = "MIB")]
    pub max_rss_mib: Option<u64>,
    /// The servers' SnapshotEntries (a snapshot every this many entries); default: the servers' default.
    #[arg(long, value_name = "N")]
    pub snapshot_entries: Option<u64>,
}

/// Runs `kvraft bench scale`. Ctrl-C stops it, and the cluster with it.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    validate(args)?;
    tokio::select! {
        r = scale(args) => r,
        _ = tokio::signal::ctrl_c() => {
            // `scale` is dropped here, and with it the cluster: its processes are killed.
            eprintln!("kvraft bench scale: interrupted; the processes it started are stopped");
            Ok(ExitCode::from(130))
        }
    }
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let max_value = kvraft_server::convert::MAX_VALUE_BYTES;
    if args.value_size == 0 || args.value_size > max_value {
        bail!("--value-size must be 1..={max_value} bytes, not {}", args.value_size);
    }
    if !matches!(args.servers, 3 | 5 | 7) {
        bail!("--servers must be 3, 5 or 7, not {}", args.servers);
    }
    if args.clients == 0 || args.window == 0 {
        bail!("--clients and --window must be at least 1");
    }
    if args.clients > 10_000 || args.window > 10_000 {
        bail!("--clients and --window must be at most 10000");
    }
    if args.max_rss_mib == Some(0) || args.snapshot_entries == Some(0) {
        bail!("--max-rss-mib and --snapshot-entries must be at least 1");
    }
    Ok(())
}

/// The memory limit per server, in bytes: `--max-rss-mib`, or half of
/// MemTotal shared among the servers (no limit if /proc/meminfo is unreadable).
fn rss_limit(args: &Args) -> u64 {
    if let Some(m) = args.max_rss_mib {
        return m.saturating_mul(1 << 20);
    }
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    total.map_or(u64::MAX, |kb| kb * 1024 / 2 / args.servers.max(1))
}

/// The key counts after each loading step: doubling, ending at `keys`, the
/// first at least [`MIN_FIRST_STEP`] keys, at most four steps.
pub fn steps(keys: u64) -> Vec<u64> {
    let mut halvings = 0;
    while halvings < 3 && keys >> (halvings + 1) >= MIN_FIRST_STEP {
        halvings += 1;
    }
    (0..=halvings).rev().map(|h| keys >> h).collect()
}

/// The value written to key `i`: its number and a dot, repeated to `size`
/// bytes, so that a value read back names the key it belongs to.
pub fn value_of(i: u64, size: usize) -> String {
    format!("{i}.").chars().cycle().take(size).collect()
}

fn key_of(i: u64) -> String {
    format!("key{i}")
}

/// The processes of the cluster; all killed on drop.
struct Cluster {
    layout: Layout,
    /// A server above this resident memory stops the run.
    rss_limit: u64,
    coord: Option<Child>,
    /// Server `id` at `id - 1`; `None` while killed.
    servers: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.servers.iter_mut().flatten().chain(self.coord.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    /// A fresh cluster in `dir`, once it has a leader.
    async fn start(args: &Args) -> anyhow::Result<Cluster> {
        let (dir, n) = (args.dir.as_path(), args.servers);
        prepare_dir(dir)?;
        // A template that does not exist: every setting at its default
        // (no Secret, LostMsgsThresh 3), whatever the working directory holds.
        let layout = Layout::create(dir, n, &dir.join("no-template"))?;
        if let Some(every) = args.snapshot_entries {
            for id in 1..=n {
                set_snapshot_entries(&dir.join(format!("server_config{id}.json")), every)?;
            }
        }
        let mut c = Cluster { layout, rss_limit: rss_limit(args), coord: None, servers: Vec::new() };
        c.coord = Some(c.layout.start_coord(false)?);
        for id in 1..=n {
            let child = c.layout.start_server(id, false)?;
            c.servers.push(Some(child));
        }
        let l = local::leader(&c.layout.coord_client, &c.layout.secret, Duration::from_secs(30)).await?;
        if l.leader_id == 0 {
            bail!("the cluster did not get a leader: {}", l.status);
        }
        Ok(c)
    }

    fn ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.layout.n
    }

    async fn status(&self, id: u64) -> anyhow::Result<pb::StatusReply> {
        local::server_status(&self.layout.server(id)?.client, &self.layout.secret).await
    }

    fn pid(&self, id: u64) -> Option<u32> {
        self.servers.get(id as usize - 1)?.as_ref().map(Child::id)
    }

    fn log(&self, id: u64) -> PathBuf {
        self.layout.dir.join("logs").join(format!("server{id}.log"))
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.layout.dir.join("data").join(format!("server{id}"))
    }

    /// SIGKILL, and reap.
    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.servers[id as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let child = self.layout.start_server(id, false)?;
        self.servers[id as usize - 1] = Some(child);
        Ok(())
    }

    /// An error naming the first server that exited, or whose memory
    /// passed the limit (a run that would take the machine's memory stops
    /// here rather than wake the OOM killer).
    fn check(&mut self) -> anyhow::Result<()> {
        self.check_alive()?;
        for id in self.ids() {
            let Some(pid) = self.pid(id) else { continue };
            if let Some((rss, _)) = proc_memory(pid)
                && rss > self.rss_limit
            {
                bail!(
                    "server {id}'s resident memory reached {} (limit {}; --max-rss-mib): stopped before the \
                     machine runs out of memory",
                    mib(rss),
                    mib(self.rss_limit)
                );
            }
        }
        Ok(())
    }

    /// An error naming the first server that exited, and its log.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            let exited = match &mut self.servers[id as usize - 1] {
                Some(c) => c.try_wait().with_context(|| format!("checking on server {id}"))?,
                None => continue,
            };
            if let Some(status) = exited {
                self.servers[id as usize - 1] = None;
                bail!("server {id} exited ({status}); see {}", self.log(id).display());
            }
        }
        Ok(())
    }

    /// Waits until a leader is named and every server has applied the
    /// leader's commit index; returns the leader, that index and the term.
    async fn caught_up(&mut self, within: Duration) -> anyhow::Result<(u64, u64, u64)> {
        let deadline = Instant::now() + within;
        loop {
            self.check()?;
            let l = local::leader(&self.layout.coord_client, &self.layout.secret, Duration::from_secs(1)).await?;
            if l.leader_id != 0
                && let Ok(ls) = self.status(l.leader_id).await
                && ls.role == "leader"
            {
                let mut all = true;
                for id in self.ids() {
                    match self.status(id).await {
                        Ok(s) if s.applied_index >= ls.commit_index => {}
                        _ => all = false,
                    }
                }
                if all {
                    return Ok((l.leader_id, ls.commit_index, ls.term));
                }
            }
            if Instant::now() > deadline {
                bail!("the servers did not all apply the leader's commit index within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each server's resident memory now (VmRSS), and the largest peak (VmHWM).
    fn rss(&self) -> anyhow::Result<(Vec<u64>, u64)> {
        let mut now = Vec::new();
        let mut peak = 0;
        for id in self.ids() {
            let pid = self.pid(id).ok_or_else(|| anyhow!("server {id} is not running"))?;
            let m = proc_memory(pid).ok_or_else(|| {
                anyhow!("no memory figures for server {id} (pid {pid}) in /proc; see {}", self.log(id).display())
            })?;
            now.push(m.0);
            peak = peak.max(m.1);
        }
        Ok((now, peak))
    }

    fn data_dir_bytes(&self) -> Vec<u64> {
        self.ids().map(|id| dir_bytes(&self.data_dir(id))).collect()
    }
}

/// (b) A follower is SIGKILLed while the others take a tenth more than a
/// snapshot's worth of writes (the loaded keys rewritten with the same
/// values), until the leader's snapshot is past everything the follower
/// has and no later one is due; then it is restarted, and the leader must
/// send it the snapshot, read back from its disk. Times the catch-up, and
/// samples the leader's resident memory meanwhile.
async fn lagging_follower(c: &mut Cluster, args: &Args) -> anyhow::Result<Lagging> {
    let coord = c.layout.coord_client.clone();
    let every = args.snapshot_entries.unwrap_or(kvraft_server::config::DEFAULT_SNAPSHOT_ENTRIES);
    let writes = every + every / 10;
    let (leader, behind, _) = c.caught_up(CATCH_UP_LIMIT).await?;
    let follower = c.ids().rev().find(|&id| id != leader).ok_or_else(|| anyhow!("no follower"))?;
    c.kill(follower);
    let writers = clients(&coord, &c.layout.secret, args.clients, args.window, "lagging")?;
    let mut left = writes;
    while left > 0 {
        let n = left.min(args.keys);
        load(c, &writers, args.window, 0, n, args.value_size, None).await?;
        left -= n;
    }
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w.stop()).await;
    }
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    let target = loop {
        c.check_alive()?;
        let s = c.status(leader).await?;
        // Past the follower, and the last snapshot those writes call for is
        // taken: one still being encoded (100 MB at a million keys) would
        // count as the send's memory.
        if s.snapshot_index > behind && s.commit_index < s.snapshot_index + every {
            break s.commit_index;
        }
        if Instant::now() > deadline {
            bail!("the leader did not take its last snapshot past index {behind} within {CATCH_UP_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let leader_rss = |c: &Cluster| c.pid(leader).and_then(proc_memory).map_or(0, |m| m.0);
    let leader_rss_before = leader_rss(c);
    let mut leader_rss_max = leader_rss_before;
    let spawned = Instant::now();
    c.spawn(follower)?;
    // The slowest Status answer from the follower once it answers: Status
    // is served by its event loop, so this is how long the loop was kept
    // from serving while it was sent and installed the snapshot.
    let mut status_max = Duration::ZERO;
    let snapshot_index = loop {
        c.check()?;
        leader_rss_max = leader_rss_max.max(leader_rss(c));
        let asked = Instant::now();
        let status = c.status(follower).await;
        if status.is_ok() {
            status_max = status_max.max(asked.elapsed());
        }
        if let Ok(s) = status
            && s.applied_index >= target
        {
            if s.snapshot_index <= behind {
                bail!("server {follower} caught up without the leader's snapshot (at {})", s.snapshot_index);
            }
            break s.snapshot_index;
        }
        if spawned.elapsed() > RECOVERY_LIMIT {
            bail!(
                "server {follower} did not apply index {target} within {RECOVERY_LIMIT:?} of its restart; see {}",
                c.log(follower).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let caught_up = spawned.elapsed();
    let follower_rss_peak = c.pid(follower).and_then(proc_memory).map_or(0, |m| m.1);
    Ok(Lagging {
        follower,
        writes,
        snapshot_index,
        caught_up,
        leader_rss_before,
        leader_rss_max,
        follower_status_max: status_max,
        follower_rss_peak,
    })
}

/// Writes `SnapshotEntries` into a server config made by [`Layout::create`].
fn set_snapshot_entries(path: &Path, every: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let obj = cfg.as_object_mut().ok_or_else(|| anyhow!("{} is not a JSON object", path.display()))?;
    obj.insert("SnapshotEntries".into(), every.into());
    let text = serde_json::to_string_pretty(&cfg)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Empties `dir` for a fresh cluster, refusing a folder that holds anything
/// but a previous bench's cluster.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(());
            }
            if !dir.join("coord_config.json").is_file() {
                bail!(
                    "--dir {} is not empty and does not hold a bench cluster (no coord_config.json): \
                     choose another folder",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("--dir {}: {e}", dir.display())),
    }
}

/// VmRSS and VmHWM of a process, in bytes.
fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Bytes a folder takes on disk (allocated blocks, as `du` counts), files
/// that vanish while it is walked (a compaction) left out.
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            total += dir_bytes(&e.path());
        } else {
            total += m.blocks() * 512;
        }
    }
    total
}

/// `n` clients of the cluster, `window` operations in flight each.
fn clients(coord: &str, secret: &str, n: u64, window: usize, tag: &str) -> anyhow::Result<Vec<KvClient>> {
    let mut v = Vec::new();
    for c in 0..n {
        let mut cfg = Config::new(format!("scale-{tag}{c}-{}", std::process::id()), coord);
        cfg.window = window;
        cfg.secret = secret.to_owned();
        cfg.op_timeout = Duration::from_secs(20);
        let (client, _results) = KvClient::start(cfg).map_err(|e| anyhow!("starting a client: {e}"))?;
        v.push(client);
    }
    Ok(v)
}

/// Puts `key{i}` for every `i` in `from..to`, spread over every client's
/// window; each put is tried up to three times. Returns the time it took.
async fn load(
    c: &mut Cluster,
    clients: &[KvClient],
    window: usize,
    from: u64,
    to: u64,
    value_size: usize,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicU64::new(from));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut lanes = JoinSet::new();
    for client in clients {
        for _ in 0..window {
            let (client, next, done) = (client.clone(), next.clone(), done.clone());
            lanes.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return Ok(());
                    }
                    let mut tries = 0;
                    loop {
                        let op = Op::Put { key: key_of(i), value: value_of(i, value_size) };
                        match client.execute(op).await {
                            Ok(_) => break,
                            Err(e) => {
                                tries += 1;
                                if tries == 3 {
                                    return Err(format!("putting {}: {e}", key_of(i)));
                                }
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            r = lanes.join_next() => match r {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => bail!("loading the keys: {e}"),
                Some(Err(e)) => bail!("loading the keys: {e}"),
            },
            _ = tick.tick() => {
                c.check()?;
                if let Some(b) = bar {
                    b.set_position(from + done.load(Ordering::Relaxed));
                }
            }
        }
    }
    if let Some(b) = bar {
        b.set_position(to);
    }
    Ok(start.elapsed())
}

/// Reads back up to [`SAMPLE`] random keys of `0..loaded` (always the first
/// and the last) and checks each value; returns how many were checked.
async fn verify(clients: &[KvClient], loaded: u64, value_size: usize) -> anyhow::Result<u64> {
    let mut x = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0x9e37_79b9, |d| d.as_nanos() as u64) | 1;
    let mut sample = vec![0, loaded - 1];
    if loaded <= SAMPLE {
        sample = (0..loaded).collect();
    } else {
        while (sample.len() as u64) < SAMPLE {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sample.push(x % loaded);
        }
    }
    let checked = sample.len() as u64;
    let mut gets = JoinSet::new();
    for (n, i) in sample.into_iter().enumerate() {
        let client = clients[n % clients.len()].clone();
        gets.spawn(async move {
            let want = value_of(i, value_size);
            let mut tries = 0;
            loop {
                match client.execute(Op::Get { key: key_of(i) }).await {
                    Ok(Value::Value(Some(v))) if v == want => return Ok(()),
                    Ok(Value::Value(got)) => {
                        return Err(format!(
                            "{} holds {}, not the value written ({})",
                            key_of(i),
                            got.as_deref().map_or("nothing".into(), |v| format!("{:?}", abbreviate(v))),
                            format_args!("{:?}", abbreviate(&want)),
                        ));
                    }
                    Ok(other) => return Err(format!("a Get of {} answered {other:?}", key_of(i))),
                    Err(e) => {
                        tries += 1;
                        if tries == 3 {
                            return Err(format!("reading {}: {e}", key_of(i)));
                        }
                    }
                }
            }
        });
    }
    while let Some(r) = gets.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("verifying the loaded values: {e}"),
            Err(e) => bail!("verifying the loaded values: {e}"),
        }
    }
    Ok(checked)
}

fn abbreviate(v: &str) -> String {
    if v.chars().count() <= 24 { v.to_owned() } else { format!("{}...", v.chars().take(24).collect::<String>()) }
}

/// One step's figures.
struct Step {
    keys: u64,
    load_secs: f64,
    leader: u64,
    /// The leader's term: how many leaders there have been.
    term: u64,
    rss: Vec<u64>,
    rss_peak_max: u64,
    data: Vec<u64>,
    growth: Option<f64>,
    per_key: Option<f64>,
    verified: u64,
}

impl Step {
    fn rss_max(&self) -> u64 {
        self.rss.iter().copied().max().unwrap_or(0)
    }

    fn ops_per_sec(&self, loaded: u64) -> f64 {
        loaded as f64 / self.load_secs.max(1e-9)
    }

    fn json(&self, args: &Args, loaded: u64) -> serde_json::Value {
        serde_json::json!({
            "system": "kvraft",
            "kind": "step",
            "servers": args.servers,
            "value_size": args.value_size,
            "keys": self.keys,
            "loaded": loaded,
            "load_secs": self.load_secs,
            "load_ops_per_sec": self.ops_per_sec(loaded),
            "leader": self.leader,
            "term": self.term,
            "rss_bytes_max": self.rss_max(),
            "rss_bytes_leader": self.rss.get(self.leader as usize - 1),
            "rss_bytes_per_server": self.rss,
            "rss_peak_bytes_max": self.rss_peak_max,
            "rss_growth": self.growth,
            "rss_bytes_per_key": self.per_key,
            "data_dir_bytes": self.data.iter().copied().max().unwrap_or(0),
            "data_dir_bytes_per_server": self.data,
            "verified": self.verified,
        })
    }

    fn line(&self, loaded: u64) -> String {
        let mut s = format!(
            "{:>11} {:>11.0} {:>5} {:>9} {:>9} {:>9} {:>10} {:>9}  ",
            thousands(self.keys),
            self.ops_per_sec(loaded),
            self.term,
            mib(self.rss_max()),
            mib(self.rss.get(self.leader as usize - 1).copied().unwrap_or(0)),
            mib(self.rss_peak_max),
            mib(self.data.iter().copied().max().unwrap_or(0)),
            self.growth.map_or("-".into(), |g| format!("x{g:.2}")),
        );
        let _ = write!(s, "{:>9}  ", self.per_key.map_or("-".into(), |b| format!("{b:.0} B")));
        let per: Vec<String> = self.rss.iter().map(|&b| mib(b)).collect();
        s.push_str(&per.join(" / "));
        s
    }
}

/// A follower that missed more than a snapshot's worth of writes, sent
/// the leader's snapshot (read back from its disk) when it restarts.
struct Lagging {
    follower: u64,
    writes: u64,
    snapshot_index: u64,
    caught_up: Duration,
    leader_rss_before: u64,
    leader_rss_max: u64,
    /// The slowest Status answer of the follower while it caught up.
    follower_status_max: Duration,
    /// The follower's peak resident memory (VmHWM: it was restarted, so
    /// this covers the catch-up).
    follower_rss_peak: u64,
}

/// The restarts' figures.
struct Restarts {
    follower: u64,
    target_index: u64,
    follower_serving: Duration,
    follower_caught_up: Duration,
    follower_rss: u64,
    lagging: Lagging,
    all_leader: Duration,
    all_get: Duration,
    get_key: String,
    rss_after: Vec<u64>,
    verified: u64,
}

impl Restarts {
    fn json(&self, args: &Args, keys: u64) -> serde_json::Value {
        serde_json::json!({
            "system": "kvraft",
            "kind": "restart",
            "servers": args.servers,
            "keys": keys,
            "follower": self.follower,
            "follower_target_index": self.target_index,
            "follower_serving_secs": self.follower_serving.as_secs_f64(),
            "follower_restart_secs": self.follower_caught_up.as_secs_f64(),
            "follower_rss_bytes": self.follower_rss,
            "lagging_follower": self.lagging.follower,
            "lagging_writes": self.lagging.writes,
            "lagging_snapshot_index": self.lagging.snapshot_index,
            "lagging_caught_up_secs": self.lagging.caught_up.as_secs_f64(),
            "leader_rss_bytes_before_send": self.lagging.leader_rss_before,
            "leader_rss_bytes_max_during_send": self.lagging.leader_rss_max,
            "lagging_status_max_secs": self.lagging.follower_status_max.as_secs_f64(),
            "lagging_follower_rss_peak_bytes": self.lagging.follower_rss_peak,
            "all_leader_secs": self.all_leader.as_secs_f64(),
            "all_restart_secs": self.all_get.as_secs_f64(),
            "get_key": self.get_key,
            "rss_bytes_per_server_after_restart": self.rss_after,
            "rss_bytes_max_after_restart": self.rss_after.iter().copied().max().unwrap_or(0),
            "verified": self.verified,
        })
    }

    fn lines(&self, n: u64) -> String {
        let per: Vec<String> = self.rss_after.iter().map(|&b| mib(b)).collect();
        let l = &self.lagging;
        format!(
            "restart one follower (server {}, SIGKILL): serving after {:.2} s (its snapshot and WAL read), \
             applied the leader's commit index {} after {:.2} s; RSS then {}\n\
             a follower that missed {} writes (server {}, SIGKILL, restarted): sent the leader's snapshot \
             (index {}), caught up after {:.2} s; the leader's RSS {} before, at most {} meanwhile; \
             the follower's peak RSS {}, its slowest Status answer meanwhile {:.0} ms\n\
             restart all {n} servers (SIGKILL): a leader after {:.2} s, a Get of {} right after {:.2} s; \
             RSS once caught up {}; {} values read back and right",
            self.follower,
            self.follower_serving.as_secs_f64(),
            self.target_index,
            self.follower_caught_up.as_secs_f64(),
            mib(self.follower_rss),
            thousands(l.writes),
            l.follower,
            l.snapshot_index,
            l.caught_up.as_secs_f64(),
            mib(l.leader_rss_before),
            mib(l.leader_rss_max),
            mib(l.follower_rss_peak),
            l.follower_status_max.as_secs_f64() * 1e3,
            self.all_leader.as_secs_f64(),
            self.get_key,
            self.all_get.as_secs_f64(),
            per.join(" / "),
            self.verified,
        )
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}M", b as f64 / (1u64 << 20) as f64)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints a line on standard output (an error, not a panic, if it is closed).
fn emit(bar: Option<&indicatif::ProgressBar>, line: &str) -> anyhow::Result<()> {
    let write = || {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush())
    };
    match bar {
        Some(b) => b.suspend(write),
        None => write(),
    }
    .context("writing to standard output")
}

async fn scale(args: &Args) -> anyhow::Result<ExitCode> {
    let mut c = Cluster::start(args).await?;
    let coord = c.layout.coord_client.clone();
    let empty = c.rss()?.0.into_iter().max().unwrap_or(0);
    if !args.json {
        emit(
            None,
            &format!(
                "kvraft bench scale: {} servers (fsync on, {}), {}-byte values, \
                 {} clients x {} in flight; data in {}\n\
                 RSS of the largest server before loading: {}; a server above {} stops the run\n\
                 {:>11} {:>11} {:>5} {:>9} {:>9} {:>9} {:>10} {:>9}  {:>9}  RSS per server",
                args.servers,
                args.snapshot_entries.map_or(
                    format!("SnapshotEntries {}: the defaults", kvraft_server::config::DEFAULT_SNAPSHOT_ENTRIES),
                    |n| { format!("SnapshotEntries {n}") }
                ),
                args.value_size,
                args.clients,
                args.window,
                c.layout.dir.display(),
                mib(empty),
                mib(c.rss_limit),
                "keys",
                "load ops/s",
                "term",
                "RSS max",
                "RSS ldr",
                "peak max",
                "data dir",
                "growth",
                "per key",
            ),
        )?;
    }
    let loaders = clients(&coord, &c.layout.secret, args.clients, args.window, "load")?;
    let bar = (!args.json).then(|| {
        let b = indicatif::ProgressBar::new(args.keys);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} keys ({per_sec})")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b
    });
    let mut prev: Option<Step> = None;
    let mut loaded_to = 0;
    for target in steps(args.keys) {
        if let Some(b) = &bar {
            b.set_message(format!("to {}", thousands(target)));
        }
        let took = load(&mut c, &loaders, args.window, loaded_to, target, args.value_size, bar.as_ref()).await?;
        let loaded = target - loaded_to;
        loaded_to = target;
        c.check()?;
        let verified = verify(&loaders, target, args.value_size).await?;
        let (leader, _, term) = c.caught_up(CATCH_UP_LIMIT).await?;
        let (rss, rss_peak_max) = c.rss()?;
        let mut step = Step {
            keys: target,
            load_secs: took.as_secs_f64(),
            leader,
            term,
            rss,
            rss_peak_max,
            data: c.data_dir_bytes(),
            growth: None,
            per_key: None,
            verified,
        };
        step.growth = prev.as_ref().map(|p| step.rss_max() as f64 / p.rss_max().max(1) as f64);
        step.per_key = Some((step.rss_max() as f64 - empty as f64) / target as f64);
        let text = if args.json { step.json(args, loaded).to_string() } else { step.line(loaded) };
        emit(bar.as_ref(), &text)?;
        prev = Some(step);
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    for l in loaders {
        let _ = tokio::time::timeout(Duration::from_secs(5), l.stop()).await;
    }
    if !args.json {
        emit(None, &format!("{} values read back and right after each step; now the restarts", SAMPLE.min(args.keys)))?;
    }
    let r = restarts(&mut c, args).await?;
    let text = if args.json { r.json(args, args.keys).to_string() } else { r.lines(args.servers) };
    emit(None, &text)?;
    Ok(ExitCode::SUCCESS)
}

async fn restarts(c: &mut Cluster, args: &Args) -> anyhow::Result<Restarts> {
    let coord = c.layout.coord_client.clone();

    // (a) One follower, killed and restarted.
    let (leader, _, _) = c.caught_up(CATCH_UP_LIMIT).await?;
    let follower = c.ids().find(|&id| id != leader).ok_or_else(|| anyhow!("no follower"))?;
    let target_index = c.status(leader).await?.commit_index;
    c.kill(follower);
    let spawned = Instant::now();
    c.spawn(follower)?;
    let mut serving = None;
    let caught_up = loop {
        c.check()?;
        if let Ok(s) = c.status(follower).await {
            let now = spawned.elapsed();
            serving.get_or_insert(now);
            if s.applied_index >= target_index {
                break now;
            }
        }
        if spawned.elapsed() > RECOVERY_LIMIT {
            bail!(
                "server {follower} did not apply index {target_index} within {RECOVERY_LIMIT:?} of its restart; see {}",
                c.log(follower).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let follower_serving = serving.unwrap_or(caught_up);
    let follower_rss = c
        .pid(follower)
        .and_then(proc_memory)
        .map(|m| m.0)
        .ok_or_else(|| anyhow!("no memory figures for server {follower}"))?;

    let lagging = lagging_follower(c, args).await?;

    // (c) Every server, killed and restarted; the coord stays.
    c.caught_up(CATCH_UP_LIMIT).await?;
    let last = args.keys - 1;
    let get_key = key_of(last);
    let want = value_of(last, args.value_size);
    for id in c.ids() {
        c.kill(id);
    }
    let spawned = Instant::now();
    for id in c.ids() {
        c.spawn(id)?;
    }
    let client = clients(&coord, &c.layout.secret, 1, 1, "restart")?.pop().ok_or_else(|| anyhow!("no client"))?;
    // The Get runs on its own task (aborted with the set if this returns
    // early); this loop watches for the leader and for a server that died.
    let mut get = JoinSet::new();
    let (key, getter) = (get_key.clone(), client.clone());
    get.spawn(async move {
        loop {
            match getter.execute(Op::Get { key: key.clone() }).await {
                Ok(Value::Value(Some(v))) if v == want => return Ok(spawned.elapsed()),
                Ok(other) => return Err(format!("a Get of {key} answered {other:?}, not the value written")),
                Err(_) if spawned.elapsed() < RECOVERY_LIMIT => {}
                Err(e) => return Err(format!("a Get of {key} failed: {e}")),
            }
        }
    });
    let (mut all_leader, mut all_get) = (None, None);
    while all_leader.is_none() || all_get.is_none() {
        c.check()?;
        if all_leader.is_none()
            && let Ok(l) = local::leader(&coord, &c.layout.secret, Duration::from_millis(200)).await
            && l.leader_id != 0
            && let Ok(s) = c.status(l.leader_id).await
            && s.role == "leader"
        {
            all_leader = Some(spawned.elapsed());
        }
        if let Some(r) = get.try_join_next() {
            match r {
                Ok(Ok(t)) => all_get = Some(t),
                Ok(Err(e)) => bail!("after restarting every server: {e}"),
                Err(e) => bail!("after restarting every server: {e}"),
            }
        }
        if spawned.elapsed() > RECOVERY_LIMIT {
            bail!("no leader, or no right answer to a Get, within {RECOVERY_LIMIT:?} of restarting every server");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (Some(all_leader), Some(all_get)) = (all_leader, all_get) else {
        bail!("the restart of every server was not timed");
    };
    client.stop().await;
    c.caught_up(CATCH_UP_LIMIT).await?;
    let (rss_after, _) = c.rss()?;
    let checkers = clients(&coord, &c.layout.secret, args.clients.min(8), args.window, "check")?;
    let verified = verify(&checkers, args.keys, args.value_size).await?;
    for l in checkers {
        let _ = tokio::time::timeout(Duration::from_secs(5), l.stop()).await;
    }
    Ok(Restarts {
        follower,
        target_index,
        follower_serving,
        follower_caught_up: caught_up,
        follower_rss,
        lagging,
        all_leader,
        all_get,
        get_key,
        rss_after,
        verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_keys() {
        assert_eq!(steps(1_000_000), vec![125_000, 250_000, 500_000, 1_000_000]);
        assert_eq!(steps(4000), vec![500, 1000, 2000, 4000]);
        assert_eq!(steps(1000), vec![500, 1000]);
        assert_eq!(steps(999), vec![999]);
        assert_eq!(steps(1), vec![1]);
    }

    #[test]
    fn values_name_their_key_and_have_the_size() {
        assert_eq!(value_of(12, 7), "12.12.1");
        assert_eq!(value_of(0, 1), "0");
        assert_eq!(value_of(123_456, 100).len(), 100);
        assert_ne!(value_of(1, 100), value_of(2, 100));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(12_345), "12,345");
        assert_eq!(abbreviate("short"), "short");
        assert!(abbreviate(&"x".repeat(100)).ends_with("..."));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let ok = Args {
            keys: 10,
            value_size: 100,
            servers: 3,
            clients: 1,
            window: 1,
            dir: PathBuf::from("x"),
            json: false,
            max_rss_mib: None,
            snapshot_entries: None,
        };
        assert!(validate(&ok).is_ok());
        assert!(validate(&Args { keys: 0, ..ok.clone() }).is_err());
        assert!(validate(&Args { servers: 4, ..ok.clone() }).is_err());
        assert!(validate(&Args { value_size: 0, ..ok.clone() }).is_err());
        assert!(validate(&Args { window: 0, ..ok.clone() }).is_err());
        assert!(validate(&Args { max_rss_mib: Some(0), ..ok.clone() }).is_err());
        assert_eq!(rss_limit(&Args { max_rss_mib: Some(3), ..ok.clone() }), 3 << 20);
        assert!(rss_limit(&ok) > 0);
    }

    #[test]
    fn a_folder_with_other_files_is_not_emptied() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("precious.txt"), "keep").unwrap();
        assert!(prepare_dir(d.path()).is_err());
        assert!(d.path().join("precious.txt").exists());
        std::fs::write(d.path().join("coord_config.json"), "{}").unwrap();
        prepare_dir(d.path()).unwrap();
        assert!(!d.path().exists());
    }
}
