//! `kvraft demo`: the seed's user story in one command. A coord and N
//! servers as child processes, two clients, a failure injected mid-run, the
//! coord's detection and the failover shown as they happen, every result
//! checked, and the servers' logs shown consistent across the failover.

use std::path::PathBuf;
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kvslib::{Config, KvClient, Op, Value};
use tokio::sync::Mutex;

use crate::local::{self, Layout};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Failure {
    /// SIGKILL the leader.
    Leader,
    /// SIGKILL one follower.
    Follower,
    /// SIGKILL the leader and one follower (5 or more servers).
    Two,
    /// The coord stops hearing the leader's heartbeats (the seed's partition test).
    Partition,
    /// SIGKILL the leader and a follower of three: quorum impossible. Later
    /// operations must end with a typed error, not hang.
    Quorum,
    /// No failure.
    None,
}

#[derive(clap::Args)]
pub struct Args {
    /// Number of servers: 3, 5 or 7.
    #[arg(long, default_value_t = 5)]
    servers: u64,
    /// Which failure to inject in the middle of the run.
    #[arg(long, value_enum, default_value_t = Failure::Leader)]
    fail: Failure,
    /// Operations per client (alternating Put and Get, as the prototype).
    #[arg(long, default_value_t = 40)]
    ops: u64,
    /// Pause between a client's operations, so people can follow.
    #[arg(long, default_value_t = 25)]
    pace_ms: u64,
    /// Folder for configs, data and logs (emptied first).
    #[arg(long, default_value = "demo-run")]
    dir: PathBuf,
    /// Settings (LostMsgsThresh, Secret) come from this folder's coord_config.json.
    #[arg(long, default_value = "config")]
    config: PathBuf,
}

/// Kills every child when dropped: on success, on error, on Ctrl-C.
struct Children(Vec<(String, Option<Child>)>);

impl Children {
    /// SIGTERM to those named, a moment to flush (traces), then SIGKILL.
    fn stop_gracefully(&mut self, which: impl Fn(&str) -> bool) {
        let mut stopping: Vec<Child> = Vec::new();
        for (n, c) in &mut self.0 {
            if which(n)
                && let Some(child) = c.take()
            {
                // SAFETY: plain signal delivery to our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                stopping.push(child);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for mut child in stopping {
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// For a start that went wrong: each process that has exited, with its
    /// status and the last lines of its log, one paragraph each.
    fn exited(&mut self, logs: &std::path::Path) -> String {
        let mut report = String::new();
        for (name, c) in &mut self.0 {
            let Some(status) = c.as_mut().and_then(|c| c.try_wait().ok().flatten()) else {
                continue;
            };
            let log = logs.join(format!("{name}.log"));
            let text = std::fs::read(&log).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            report.push_str(&format!("\n{name} exited ({status}); the end of {}:", log.display()));
            for line in &lines[lines.len().saturating_sub(10)..] {
                report.push_str(&format!("\n    {line}"));
            }
        }
        report
    }

    fn kill(&mut self, name: &str) -> bool {
        for (n, c) in &mut self.0 {
            if n == name
                && let Some(mut child) = c.take()
            {
                let _ = child.kill();
                let _ = child.wait();
                return true;
            }
        }
        false
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            if let Some(mut child) = c.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

struct Clock(Instant);

impl Clock {
    fn say(&self, what: impl AsRef<str>) {
        println!("[{:>6.2}s] {}", self.0.elapsed().as_secs_f64(), what.as_ref());
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !matches!(args.servers, 3 | 5 | 7) {
        bail!("--servers must be 3, 5 or 7, not {}", args.servers);
    }
    if args.fail == Failure::Two && args.servers < 5 {
        bail!("--fail two needs at least 5 servers (3 would lose its quorum; that is --fail quorum)");
    }
    if args.fail == Failure::Quorum && args.servers != 3 {
        bail!("--fail quorum kills two servers, so it needs --servers 3");
    }
    if args.ops < 4 {
        bail!("--ops must be at least 4");
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    let mut layout = Layout::create_traced(&args.dir, args.servers, &args.config, true)?;
    // The "partition" failure silences the leader's responder.
    layout.partition_switch = true;
    let layout = Arc::new(layout);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        tokio::select! {
            r = demo(args, layout) => r,
            _ = tokio::signal::ctrl_c() => {
                println!("interrupted: stopping every process");
                Ok(ExitCode::from(130))
            }
        }
    })
}

async fn demo(args: Args, layout: Arc<Layout>) -> anyhow::Result<ExitCode> {
    let clock = Arc::new(Clock(Instant::now()));
    let mut children = Children(Vec::new());
    children.0.push(("tracing-server".into(), Some(layout.start_tracing_server()?)));
    children.0.push(("coord".into(), Some(layout.start_coord(false)?)));
    for id in 1..=layout.n {
        children.0.push((format!("server{id}"), Some(layout.start_server(id, false)?)));
    }
    clock.say(format!(
        "started the tracing server, the coord and {} servers (configs, data and logs in {})",
        layout.n,
        layout.dir.display()
    ));
    let info = local::leader(&layout.coord_client, &layout.secret, Duration::from_secs(20)).await?;
    if info.leader_id == 0 {
        let exited = children.exited(&layout.dir.join("logs"));
        bail!("no leader after 20 s: {} (see {}/logs){exited}", info.status, layout.dir.display());
    }
    clock.say(format!("coord: all {} servers joined; server {} leads term {}", layout.n, info.leader_id, info.term));

    let first_term = info.term;
    // Watch the coord and report every change as it happens.
    let watcher = {
        let (coord, secret, clock) = (layout.coord_client.clone(), layout.secret.clone(), clock.clone());
        tokio::spawn(async move {
            let mut last = (info.leader_id, false);
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let Ok(l) = local::leader(&coord, &secret, Duration::ZERO).await else {
                    continue;
                };
                let now = (l.leader_id, l.quorum_impossible);
                if now != last {
                    if l.leader_id == 0 {
                        clock.say(format!("coord: no leader ({})", l.status));
                    } else {
                        clock.say(format!("coord: server {} is the new leader, term {}", l.leader_id, l.term));
                    }
                    last = now;
                }
            }
        })
    };

    let fail_at = args.ops / 2;
    let injected = Arc::new(Mutex::new(false));
    let children = Arc::new(Mutex::new(children));
    let mut clients = Vec::new();
    for c in 1..=2u64 {
        let mut cfg = Config::new(c.to_string(), layout.coord_client.clone());
        cfg.window = 1;
        cfg.secret = layout.secret.clone();
        if args.fail == Failure::Quorum {
            cfg.op_timeout = Duration::from_secs(3);
        }
        if let Some(addr) = &layout.tracing {
            cfg.tracer = kvraft_trace::Tracer::new(kvraft_trace::TracerConfig {
                identity: format!("client{c}"),
                server_addr: addr.clone(),
                secret: layout.secret.clone(),
            })
            .map_err(|e| anyhow::anyhow!("tracing: {e}"))?;
        }
        let (client, _results) = KvClient::start(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (clock, injected, children, fail) = (clock.clone(), injected.clone(), children.clone(), args.fail);
        let (coord, layout2, ops, pace) = (layout.coord_client.clone(), layout.clone(), args.ops, args.pace_ms);
        clients.push(tokio::spawn(async move {
            let mut wrong = 0u64;
            let mut refused = 0u64;
            let mut worst = Duration::ZERO;
            for n in 1..=ops {
                if c == 1 && n == fail_at {
                    let mut done = injected.lock().await;
                    if !*done {
                        *done = true;
                        inject(fail, &coord, &layout2, &mut *children.lock().await, &clock).await;
                    }
                }
                let i = n.div_ceil(2);
                let op = if n % 2 == 1 {
                    Op::Put { key: format!("k{i}"), value: format!("val{i}") }
                } else {
                    Op::Get { key: format!("k{i}") }
                };
                tokio::time::sleep(Duration::from_millis(pace)).await;
                let start = Instant::now();
                let r = client.execute(op.clone()).await;
                worst = worst.max(start.elapsed());
                let ok = match (&op, &r) {
                    (Op::Put { .. }, Ok(Value::Done)) => true,
                    (Op::Get { key }, Ok(Value::Value(Some(v)))) => *v == format!("val{}", &key[1..]),
                    // Without a quorum the right answer is a typed error.
                    (_, Err(kvslib::ClientError::QuorumImpossible(_) | kvslib::ClientError::Timeout(_)))
                        if fail == Failure::Quorum && *injected.lock().await =>
                    {
                        refused += 1;
                        true
                    }
                    _ => false,
                };
                if !ok {
                    wrong += 1;
                    clock.say(format!("client {c}: {op} -> {r:?}   WRONG"));
                }
            }
            client.stop().await;
            (wrong, refused, worst)
        }));
    }
    let mut wrong = 0;
    let mut worst = Duration::ZERO;
    for (c, h) in clients.into_iter().enumerate() {
        let (w, r, s) = h.await.context("a client task failed")?;
        wrong += w;
        worst = worst.max(s);
        let refused = if r > 0 { format!(", {r} refused with a typed error (no quorum)") } else { String::new() };
        clock.say(format!("client {}: {} operations done, {w} wrong{refused}, slowest {s:?}", c + 1, args.ops));
    }
    // A failover is shown once the coord has selected the next leader. Its
    // detection and selection (a few hundred ms) may outlast the clients'
    // run, which goes on at the old leader through a partition: wait for it.
    if matches!(args.fail, Failure::Leader | Failure::Partition) {
        let deadline = Instant::now() + FAILOVER_WAIT;
        loop {
            match local::leader(&layout.coord_client, &layout.secret, Duration::ZERO).await {
                Ok(l) if l.leader_id != 0 && l.term > first_term => break,
                _ if Instant::now() >= deadline => {
                    clock.say(format!("coord: no new leader within {FAILOVER_WAIT:?}"));
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    // Time for the watcher to report what it last saw.
    tokio::time::sleep(Duration::from_millis(300)).await;
    watcher.abort();

    let consistent = show_logs(&layout, &clock).await?;
    println!();
    println!(
        "{} operations by 2 clients, {wrong} wrong; the longest a client waited (across the failure): {worst:?}",
        2 * args.ops
    );
    println!("logs of every running server: {}", if consistent { "identical" } else { "DIFFERENT" });

    // Stop the cluster gently so every process flushes its trace, then the
    // tracing server, then read the trace back.
    let mut children = Arc::try_unwrap(children).map_err(|_| anyhow::anyhow!("clients still running"))?.into_inner();
    children.stop_gracefully(|n| n != "tracing-server");
    children.stop_gracefully(|_| true);
    let trace_file = layout.dir.join("trace_output.log");
    match kvraft_trace::parse_trace_file(&trace_file) {
        Ok(records) => {
            let report = kvraft_trace::check(&records, false);
            let html = layout.dir.join("trace.html");
            std::fs::write(&html, kvraft_trace::render_html(&records)).context("writing the trace view")?;
            let summary = report.to_string().lines().last().unwrap_or_default().to_owned();
            println!("trace: {} records; kvraft trace check: {summary}", records.len());
            println!("  {} (ShiViz: {})", trace_file.display(), layout.dir.join("shiviz_output.log").display());
            println!("  {} (open it in a browser; no network needed)", html.display());
        }
        Err(e) => println!("trace: could not read {}: {e}", trace_file.display()),
    }
    println!("configs, data and logs: {}", layout.dir.display());
    Ok(if wrong == 0 && consistent { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// How long the demo waits for the coord to select the next leader.
const FAILOVER_WAIT: Duration = Duration::from_secs(10);

async fn inject(fail: Failure, coord: &str, layout: &Layout, children: &mut Children, clock: &Clock) {
    let leader = local::leader(coord, &layout.secret, Duration::from_secs(2)).await.map(|l| l.leader_id).unwrap_or(0);
    let follower = (1..=7).find(|&i| i != leader).unwrap_or(2);
    match fail {
        Failure::None => clock.say("no failure injected"),
        Failure::Leader => {
            children.kill(&format!("server{leader}"));
            clock.say(format!("killed the leader, server {leader} (SIGKILL)"));
        }
        Failure::Follower => {
            children.kill(&format!("server{follower}"));
            clock.say(format!("killed a follower, server {follower} (SIGKILL)"));
        }
        Failure::Quorum => {
            children.kill(&format!("server{leader}"));
            children.kill(&format!("server{follower}"));
            clock
                .say(format!("killed the leader, server {leader}, and server {follower} (SIGKILL): quorum impossible"));
        }
        Failure::Two => {
            children.kill(&format!("server{leader}"));
            children.kill(&format!("server{follower}"));
            clock.say(format!("killed the leader, server {leader}, and server {follower} (SIGKILL)"));
        }
        Failure::Partition => {
            // The seed's coord test: the leader stops answering the coord's
            // heartbeats (its responder goes silent) but keeps running. Real
            // network partitions are the fault harness's.
            let _ = std::fs::write(layout.mute_file(leader), "");
            clock.say(format!("partition: the coord no longer hears the leader, server {leader}, which keeps running"));
        }
    }
}

/// Prints one server's log around the failover (the prototype's view) and
/// checks that every running server holds the same entries.
async fn show_logs(layout: &Layout, clock: &Clock) -> anyhow::Result<bool> {
    let mut logs = Vec::new();
    for s in &layout.servers {
        if let Ok(lines) = local::server_log(&s.client, &layout.secret).await {
            logs.push((s.id, lines));
        }
    }
    let Some((id, reference)) = logs.first() else { bail!("no server answers") };
    let first_new_term = reference.windows(2).find(|w| w[1].term != w[0].term).map(|w| w[1].index);
    clock.say(format!("server {id}'s log ({} entries):", reference.len()));
    for l in reference {
        let near = first_new_term.is_none_or(|f| l.index + 4 >= f && l.index <= f + 4);
        if near || l.index <= 3 || l.index + 2 >= reference.len() as u64 {
            println!("    {}. {}", l.index, l.entry);
        } else if first_new_term.is_some_and(|f| l.index + 5 == f || l.index == f + 5) {
            println!("    ...");
        }
    }
    let same = logs.iter().all(|(_, l)| {
        let n = l.len().min(reference.len());
        l[..n].iter().zip(&reference[..n]).all(|(a, b)| a.entry == b.entry)
    });
    clock.say(format!("{} running servers compared entry by entry", logs.len()));
    Ok(same)
}
