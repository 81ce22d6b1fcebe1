//! Carries out the schedule on the real cluster: resolves "the leader",
//! applies each fault, holds it, undoes it, and logs every action.
//!
//! Invariants:
//! - at most one scheduled fault is in force at a time, and every fault is
//!   undone before the next is applied (or by [`Nemesis::heal_all`]);
//! - [`Nemesis::heal_all`] leaves no cut, no paused process, no strace and
//!   no process down, whatever happened before (it is also what runs when
//!   the fault phase ends mid-step).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::client::Shared;
use crate::cluster::Cluster;
use crate::configs::Paths;
use crate::cuts::Cuts;
use crate::layout::{Layout, Node};
use crate::leader;
use crate::schedule::{Direction, Fault, Kind, Partition, Shape, Step, Who};
use crate::slow_disk::{self, SlowDisk};

/// How to undo the fault in force.
enum Undo {
    Restart(Node),
    Resume(Node),
    StopSlowDisk(u64, SlowDisk),
    Heal,
    Nothing,
}

pub struct Nemesis<'a> {
    layout: Layout,
    paths: Paths,
    cluster: &'a mut Cluster,
    rt: &'a tokio::runtime::Runtime,
    cuts: Cuts,
    epoch: Instant,
    progress: bool,
    strace: bool,
    /// Every action, with its time since the run started.
    pub actions: Vec<String>,
    /// How many faults of each kind were injected (skipped ones excluded).
    pub counts: BTreeMap<Kind, usize>,
    /// The clients' running totals, shown on progress lines.
    stats: Option<Arc<Shared>>,
    /// Processes that exited without the nemesis killing them.
    pub unexpected_exits: Vec<String>,
}

impl<'a> Nemesis<'a> {
    pub fn new(
        layout: &Layout,
        paths: &Paths,
        cluster: &'a mut Cluster,
        rt: &'a tokio::runtime::Runtime,
        epoch: Instant,
        progress: bool,
    ) -> Nemesis<'a> {
        Nemesis {
            layout: layout.clone(),
            paths: paths.clone(),
            cluster,
            rt,
            cuts: Cuts::default(),
            epoch,
            progress,
            // strace attaches to a server only as root (ptrace of a non-child).
            strace: slow_disk::available() && crate::run::is_root(),
            actions: Vec::new(),
            counts: BTreeMap::new(),
            stats: None,
            unexpected_exits: Vec::new(),
        }
    }

    /// Shows the clients' totals on progress lines.
    pub fn with_stats(mut self, stats: Arc<Shared>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Logs one action (and prints it when asked to).
    pub fn note(&mut self, what: impl AsRef<str>) {
        let line = format!("t={:>7.2}s {}", self.epoch.elapsed().as_secs_f64(), what.as_ref());
        if self.progress {
            let totals = self.stats.as_ref().map_or(String::new(), |s| {
                format!("   [ok {}, not ok {}]", s.ok.load(Ordering::Relaxed), s.not_ok.load(Ordering::Relaxed))
            });
            eprintln!("[faults] {line}{totals}");
        }
        self.actions.push(line);
    }

    fn leader(&self) -> Option<u64> {
        self.rt.block_on(leader::current(&self.layout))
    }

    fn resolve(&self, who: Who, fallback: u64) -> (u64, &'static str) {
        match who {
            Who::Server(id) => (id, ""),
            Who::Leader => match self.leader() {
                Some(id) => (id, " (the leader)"),
                None => (fallback, " (no leader known)"),
            },
        }
    }

    /// Runs `steps` until `deadline`; whatever is in force at the
    /// deadline is left to [`Nemesis::heal_all`].
    ///
    /// Gaps and holds are kept as drawn, measured from when the previous
    /// action actually finished: applying or undoing a fault takes time
    /// (processes, `ip`), and a late step must not eat into the next one's
    /// hold. So steps drift later than their ideal `at`, and the last ones
    /// may not fit in the budget.
    pub fn run(&mut self, steps: &[Step], deadline: Instant) -> anyhow::Result<()> {
        let mut ideal_end = Duration::ZERO;
        let mut real_end = Instant::now();
        for step in steps {
            let gap = step.at.saturating_sub(ideal_end);
            if !self.sleep_until(real_end + gap, deadline) {
                return Ok(());
            }
            let undo = self.apply(step, deadline)?;
            let held = self.sleep_until(Instant::now() + step.hold, deadline);
            self.undo(undo)?;
            real_end = Instant::now();
            ideal_end = step.at + step.lasts();
            if !held {
                return Ok(());
            }
        }
        self.sleep_until(deadline, deadline);
        Ok(())
    }

    /// Sleeps until `t` or `deadline`, whichever is first, watching the
    /// processes meanwhile; true if `t` came.
    pub fn sleep_until(&mut self, t: Instant, deadline: Instant) -> bool {
        let until = t.min(deadline);
        loop {
            self.watch_processes();
            let now = Instant::now();
            if now >= until {
                return t <= deadline;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    /// Notes every process that exited without being killed by us.
    pub fn watch_processes(&mut self) {
        for exit in self.cluster.take_exits() {
            self.note(format!("UNEXPECTED: {exit}"));
            self.unexpected_exits.push(exit);
        }
    }

    fn count(&mut self, kind: Kind) {
        *self.counts.entry(kind).or_default() += 1;
    }

    fn apply(&mut self, step: &Step, deadline: Instant) -> anyhow::Result<Undo> {
        self.watch_processes();
        let hold = format!("for {:.1}s", step.hold.as_secs_f64());
        match &step.fault {
            Fault::KillServer(who) => {
                let (id, why) = self.resolve(*who, step.fallback);
                let node = Node::Server(id);
                self.cluster.kill(node);
                self.count(Kind::KillServer);
                let down = if step.hold < Duration::from_millis(100) {
                    format!("restart after {} ms (faster than failure detection)", step.hold.as_millis())
                } else {
                    format!("down {hold}")
                };
                self.note(format!("kill-server: SIGKILL server {id}{why}, {down}"));
                Ok(Undo::Restart(node))
            }
            Fault::PauseServer(who) => {
                let (id, why) = self.resolve(*who, step.fallback);
                let node = Node::Server(id);
                self.cluster.pause(node);
                self.count(Kind::PauseServer);
                self.note(format!("pause-server: SIGSTOP server {id}{why} {hold}"));
                Ok(Undo::Resume(node))
            }
            Fault::KillCoord { wipe: true, with_server: Some((who, coord_down)) } => {
                let (id, why) = self.resolve(*who, step.fallback);
                let server = Node::Server(id);
                self.cluster.kill(server);
                self.cluster.kill(Node::Coord);
                self.count(Kind::KillServer);
                self.count(Kind::KillCoord);
                self.wipe_coord()?;
                self.note(format!(
                    "kill-coord: SIGKILL server {id}{why}, then the coord, and delete its state; \
                     the coord down {:.1}s, the server {:.1}s more",
                    coord_down.as_secs_f64(),
                    step.hold.as_secs_f64()
                ));
                // The coord comes back while the server stays down: it has
                // to go on with the servers that join it again.
                if self.sleep_until(Instant::now() + *coord_down, deadline) {
                    self.cluster.launch(Node::Coord)?;
                    self.note("restart the coord (the server stays down)");
                }
                Ok(Undo::Restart(server))
            }
            Fault::KillCoord { wipe, .. } => {
                self.cluster.kill(Node::Coord);
                self.count(Kind::KillCoord);
                if *wipe {
                    self.wipe_coord()?;
                    self.note(format!("kill-coord: SIGKILL the coord and delete its state, down {hold}"));
                } else {
                    self.note(format!("kill-coord: SIGKILL the coord, down {hold}"));
                }
                Ok(Undo::Restart(Node::Coord))
            }
            Fault::SlowDisk { who, delay } => {
                let (id, why) = self.resolve(*who, step.fallback);
                let ms = delay.as_millis();
                if !self.strace {
                    self.note(format!(
                        "slow-disk skipped: needs strace and root (server {id}{why}, +{ms} ms per fsync)"
                    ));
                    return Ok(Undo::Nothing);
                }
                let Some(pid) = self.cluster.pid(Node::Server(id)) else {
                    self.note(format!("slow-disk skipped: server {id} is not running"));
                    return Ok(Undo::Nothing);
                };
                let slow = SlowDisk::start(pid, *delay, &self.paths.log("strace"))?;
                self.count(Kind::SlowDisk);
                self.note(format!("slow-disk: every fsync of server {id}{why} +{ms} ms {hold}"));
                Ok(Undo::StopSlowDisk(id, slow))
            }
            Fault::Partition(p) => {
                let leader = self.resolve(Who::Leader, step.fallback);
                let (a, b) = self.groups(&p.shape, leader.0);
                self.cut(p, &a, &b)?;
                self.count(Kind::Partition);
                let text = describe(p, &a, &b, leader);
                self.note(format!("partition: {text} [{}, {} cuts] {hold}", p.mode, self.cuts.len()));
                Ok(Undo::Heal)
            }
        }
    }

    /// Deletes the coord's data directory, as if its disk were lost.
    fn wipe_coord(&self) -> anyhow::Result<()> {
        let dir = self.paths.data(Node::Coord);
        std::fs::remove_dir_all(&dir).map_err(|e| anyhow::anyhow!("deleting the coord's data {}: {e}", dir.display()))
    }

    /// The two groups of a partition, with the leader resolved.
    fn groups(&self, shape: &Shape, leader: u64) -> (Vec<Node>, Vec<Node>) {
        let all = self.layout.partitionable();
        let rest = |a: &[Node]| -> Vec<Node> { all.iter().copied().filter(|n| !a.contains(n)).collect() };
        let clients = |ids: &[u64]| ids.iter().map(|i| Node::Client(*i)).collect::<Vec<_>>();
        match shape {
            Shape::MajorityMinority { minority, coord_with_minority, clients_with_minority } => {
                let mut a: Vec<Node> = minority.iter().map(|i| Node::Server(*i)).collect();
                if *coord_with_minority {
                    a.push(Node::Coord);
                }
                a.extend(clients(clients_with_minority));
                let b = rest(&a);
                (a, b)
            }
            Shape::LeaderIsolated { clients: with } => {
                let mut a = vec![Node::Server(leader)];
                a.extend(clients(with));
                let b = rest(&a);
                (a, b)
            }
            Shape::LeaderFromCoord => (vec![Node::Server(leader)], vec![Node::Coord]),
            Shape::LeaderFromFollowers => {
                let others = self.layout.server_ids().filter(|&id| id != leader).map(Node::Server).collect();
                (vec![Node::Server(leader)], others)
            }
            Shape::CoordIsolated { clients: with } => {
                let mut b: Vec<Node> = self.layout.server_ids().map(Node::Server).collect();
                b.extend(clients(with));
                (vec![Node::Coord], b)
            }
            Shape::Split { a, b } => (a.clone(), b.clone()),
        }
    }

    fn cut(&mut self, p: &Partition, a: &[Node], b: &[Node]) -> anyhow::Result<()> {
        let mut pairs = Vec::new();
        for x in a {
            for y in b {
                if p.direction != Direction::BToA {
                    pairs.push((*x, *y));
                }
                if p.direction != Direction::AToB {
                    pairs.push((*y, *x));
                }
            }
        }
        self.cuts.cut(&self.layout, &pairs, p.mode)
    }

    fn undo(&mut self, undo: Undo) -> anyhow::Result<()> {
        match undo {
            Undo::Restart(node) => {
                // Already up only if something else restarted it: leave it.
                if !self.cluster.is_up(node) {
                    self.cluster.launch(node)?;
                    self.note(format!("restart {node}"));
                }
            }
            Undo::Resume(node) => {
                self.cluster.resume(node);
                self.note(format!("SIGCONT {node}"));
            }
            Undo::StopSlowDisk(id, slow) => {
                slow.stop();
                self.note(format!("disk of server {id} back to full speed"));
            }
            Undo::Heal => {
                self.cuts.heal(&self.layout)?;
                self.note("heal the network");
            }
            Undo::Nothing => {}
        }
        Ok(())
    }

    /// Heals the network, resumes paused processes and restarts dead ones.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.watch_processes();
        if !self.cuts.is_empty() {
            self.cuts.heal(&self.layout)?;
            self.note("heal the network");
        }
        for node in self.cluster.paused() {
            self.cluster.resume(node);
            self.note(format!("SIGCONT {node}"));
        }
        for node in self.cluster.down() {
            self.cluster.launch(node)?;
            self.note(format!("restart {node}"));
        }
        Ok(())
    }
}

fn list(nodes: &[Node]) -> String {
    let v: Vec<String> = nodes.iter().map(|n| n.tag()).collect();
    format!("{{{}}}", v.join(","))
}

/// One line for the log: the shape, the groups, the direction.
fn describe(p: &Partition, a: &[Node], b: &[Node], leader: (u64, &str)) -> String {
    let arrow = match p.direction {
        Direction::Both => "<-x->",
        Direction::AToB => "-x->",
        Direction::BToA => "<-x-",
    };
    let what = match &p.shape {
        Shape::MajorityMinority { .. } => "majority/minority".to_owned(),
        Shape::LeaderIsolated { .. } => format!("leader isolated: server {}{}", leader.0, leader.1),
        Shape::LeaderFromCoord => format!("leader from coord: server {}{}", leader.0, leader.1),
        Shape::LeaderFromFollowers => format!("leader from followers: server {}{}", leader.0, leader.1),
        Shape::CoordIsolated { .. } => "coord isolated".to_owned(),
        Shape::Split { .. } => "split".to_owned(),
    };
    format!("{what} {} {arrow} {}", list(a), list(b))
}
