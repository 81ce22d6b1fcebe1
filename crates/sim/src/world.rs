//! One simulated run: the processes, the nemesis, and the final checks.

use kvraft_lincheck as lin;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::client::SimClient;
use crate::config::{ReadMode, SimConfig};
use crate::coord::CoordModel;
use crate::invariants::Invariants;
use crate::net::{Event, Msg, Net, Proc};
use crate::server::SimServer;

/// What one seed's run found.
#[derive(Debug)]
pub struct SeedReport {
    pub config: SimConfig,
    /// Operations in the history given to the linearizability checker.
    pub ops: usize,
    /// Of those, how many completed (the rest have unknown outcomes).
    pub ops_completed: usize,
    pub violations: Vec<String>,
    pub messages: u64,
    pub selections: u64,
    pub crashes: u64,
    /// Crashes of the coord's process; of those, how many lost its state file.
    pub coord_crashes: u64,
    pub coord_state_losses: u64,
    /// Restarted coords that asked the servers who leads, and of those how
    /// many kept a live leader.
    pub rediscoveries: u64,
    pub rediscovery_kept_leader: u64,
    /// Coords that lost their state and went on with a majority of the
    /// servers after the rejoin grace; leaders given up because a server
    /// reported a later term.
    pub partial_rejoins: u64,
    pub fenced_failovers: u64,
    /// Leaders given up because they said they lost their quorum.
    pub lost_quorum_failovers: u64,
    /// Servers' joins again after the coord said it did not know them.
    pub rejoins: u64,
    /// Client operations answered that their session was forgotten.
    pub sessions_expired: u64,
    /// Simulated milliseconds the run lasted.
    pub sim_ms: u64,
}

/// After the clients are done (faults healed), the coord must name the
/// real leader within this much simulated time: a rejoin grace, a
/// rediscovery and a few selections, with room to spare.
const LEADER_NAMED_WITHIN_MS: u64 = 5_000;

struct World {
    cfg: SimConfig,
    net: Net,
    servers: Vec<SimServer>,
    coord: CoordModel,
    clients: Vec<SimClient>,
    history: Vec<lin::Operation>,
    inv: Invariants,
    crashes: u64,
    coord_crashes: u64,
}

/// Runs one seed; `nodes` overrides the cluster size the seed would pick.
pub fn run_seed(seed: u64, nodes: Option<u64>) -> SeedReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg = SimConfig::from_seed(seed, nodes, &mut rng);
    let net = Net::new(rng, cfg.drop_rate, cfg.dup_rate, cfg.long_delay_rate);
    let servers = (1..=cfg.nodes).map(|id| SimServer::new(id, &cfg)).collect();
    let read_index = cfg.read_mode == ReadMode::ReadIndex;
    let clients =
        (1..=cfg.clients).map(|id| SimClient::new(id, cfg.ops_per_client, cfg.keys, cfg.nodes, read_index)).collect();
    let inv = Invariants::new(cfg.nodes as usize);
    let mut w = World {
        coord: CoordModel::new(cfg.nodes),
        cfg,
        net,
        servers,
        clients,
        history: Vec::new(),
        inv,
        crashes: 0,
        coord_crashes: 0,
    };
    w.run();
    w.report()
}

impl World {
    fn run(&mut self) {
        for s in &self.servers {
            s.schedule_tick(&mut self.net);
        }
        self.net.schedule(0, Event::CoordTick);
        for c in &self.clients {
            // Clients start once the cluster had time to form.
            self.net.schedule(50 + c.id, Event::ClientWake { id: c.id, timer: 0 });
        }
        self.net.schedule(self.cfg.nemesis_every_ms, Event::Nemesis);
        let deadline = self.cfg.faults_until_ms + self.cfg.settle_ms;
        let mut healed = false;
        while let Some(ev) = self.net.pop() {
            if !healed && self.net.now >= self.cfg.faults_until_ms {
                healed = true;
                self.heal_all();
            }
            if self.net.now > deadline || (healed && self.clients.iter().all(SimClient::done)) {
                // Not dropped: a tick lost here would stop its process's
                // clock for the rest of the run.
                self.handle(ev);
                break;
            }
            self.handle(ev);
        }
        if !self.clients.iter().all(SimClient::done) {
            let stuck: Vec<u64> = self.clients.iter().filter(|c| !c.done()).map(|c| c.id).collect();
            self.inv.violations.push(format!(
                "liveness: clients {stuck:?} did not finish within {} ms after faults stopped",
                self.cfg.settle_ms
            ));
        }
        // Let replication settle, then every live server must agree; and
        // the coord, once up, must name a server that does lead the
        // highest term (not one fenced since, say), so a new client would
        // find the leader.
        let settle_until = self.net.now + 500;
        let named_by = self.net.now + LEADER_NAMED_WITHIN_MS;
        while let Some(ev) = self.net.pop() {
            if self.net.now > settle_until && (self.names_the_leader() || self.net.now > named_by) {
                break;
            }
            if !matches!(ev, Event::ClientWake { .. }) {
                self.handle(ev);
            }
        }
        if !self.names_the_leader() {
            let terms: Vec<(u64, u64, bool)> = self
                .servers
                .iter()
                .map(|s| (s.id, s.node.term(), s.node.role() == kvraft_core::Role::Leader))
                .collect();
            self.inv.violations.push(format!(
                "liveness: {LEADER_NAMED_WITHIN_MS} ms after the clients finished, the coord ({}) names {:?} as leader; servers (id, term, leads): {terms:?}",
                self.coord.phase_name(),
                self.coord.leader()
            ));
        }
        self.check_convergence();
    }

    /// The coord is up and names a live server that leads, at the highest
    /// term any server holds.
    fn names_the_leader(&self) -> bool {
        let highest = self.servers.iter().map(|s| s.node.term()).max().unwrap_or(0);
        self.coord.is_up()
            && self.coord.leader().is_some_and(|l| {
                let s = &self.servers[l as usize - 1];
                s.alive && s.node.role() == kvraft_core::Role::Leader && s.node.term() == highest
            })
    }

    fn handle(&mut self, ev: Event) {
        let net = &mut self.net;
        match ev {
            Event::Deliver { from, to, msg } => match to {
                Proc::Server(id) => {
                    let s = &mut self.servers[id as usize - 1];
                    if s.alive {
                        s.on_message(from, msg, net, &mut self.inv);
                        if std::mem::take(&mut s.became_leader)
                            && net.now < self.cfg.faults_until_ms
                            && net.rng.random_bool(self.cfg.takeover_crash_rate)
                        {
                            if net.rng.random_bool(0.5) {
                                // Dies as soon as its No-Op is durable: a
                                // newer-term entry that only it holds.
                                s.crash_after_next_write = true;
                            } else {
                                let at = net.now + net.rng.random_range(1..40);
                                net.schedule(at, Event::Crash { id, incarnation: s.incarnation });
                            }
                        }
                    }
                }
                Proc::Coord => self.coord.on_message(from, msg, net, &mut self.inv),
                Proc::Client(id) => self.clients[id as usize - 1].on_message(msg, net, &mut self.history),
            },
            Event::ServerTick { id, incarnation } => {
                let s = &mut self.servers[id as usize - 1];
                if s.alive && s.incarnation == incarnation {
                    s.on_tick(net, &mut self.inv);
                }
            }
            Event::PersistDone { id, incarnation } => {
                let s = &mut self.servers[id as usize - 1];
                if s.alive && s.incarnation == incarnation {
                    let armed = std::mem::take(&mut s.crash_after_next_write);
                    let random =
                        net.now < self.cfg.faults_until_ms && net.rng.random_bool(self.cfg.crash_at_write_rate);
                    let failpoint = armed || random;
                    if random && !armed && net.rng.random_bool(0.5) {
                        s.crash(); // before the write lands
                    } else {
                        s.on_persist_done(net, &mut self.inv, failpoint);
                    }
                    if failpoint {
                        self.crashes += 1;
                    }
                }
            }
            Event::CoordTick => self.coord.on_tick(net, &mut self.inv),
            Event::CoordRestart { lose_state } => self.coord.restart(lose_state, net),
            Event::Crash { id, incarnation } => {
                let s = &mut self.servers[id as usize - 1];
                if s.alive && s.incarnation == incarnation {
                    s.crash();
                    self.crashes += 1;
                }
            }
            Event::ClientWake { id, timer } => self.clients[id as usize - 1].on_wake(timer, net, &mut self.history),
            Event::Nemesis => {
                if net.now < self.cfg.faults_until_ms {
                    self.nemesis();
                    let gap = self.net.rng.random_range(1..=2 * self.cfg.nemesis_every_ms);
                    self.net.schedule(self.net.now + gap, Event::Nemesis);
                }
            }
        }
    }

    fn all_procs(&self) -> Vec<Proc> {
        let mut all: Vec<Proc> = self.servers.iter().map(|s| Proc::Server(s.id)).collect();
        all.push(Proc::Coord);
        all.extend(self.clients.iter().map(|c| Proc::Client(c.id)));
        all
    }

    /// The server that most recently believes itself leader, if any.
    fn some_leader(&self) -> Option<u64> {
        self.servers
            .iter()
            .filter(|s| s.alive && s.node.role() == kvraft_core::Role::Leader)
            .max_by_key(|s| s.node.term())
            .map(|s| s.id)
    }

    /// One fault, drawn from the seed.
    fn nemesis(&mut self) {
        let all = self.all_procs();
        let n = self.cfg.nodes;
        let leader = self.some_leader();
        let rng = &mut self.net.rng;
        if self.cfg.coord_crash_rate > 0.0 && rng.random_bool(self.cfg.coord_crash_rate) {
            // The coord's process dies and starts again a little later; two
            // times in three its data directory is lost meanwhile. Messages
            // it sent before dying may still arrive.
            if self.coord.is_up() {
                let lose_state = rng.random_bool(2.0 / 3.0);
                let at = self.net.now + rng.random_range(5..300);
                if lose_state && rng.random_bool(0.5) {
                    self.lose_a_selection(&all);
                }
                self.coord.crash();
                self.coord_crashes += 1;
                self.net.schedule(at, Event::CoordRestart { lose_state });
            }
            return;
        }
        match rng.random_range(0..100) {
            0..15 => self.net.heal(),
            15..27 => {
                // Any subset of processes, coord and clients included, both ways.
                let side: Vec<Proc> = all.iter().copied().filter(|_| rng.random_bool(0.4)).collect();
                self.net.partition(&side, &all, true);
            }
            27..33 => {
                let side: Vec<Proc> = all.iter().copied().filter(|_| rng.random_bool(0.4)).collect();
                self.net.partition(&side, &all, false);
            }
            33..41 => {
                // The leader loses the coord but keeps its followers: the
                // coord replaces it, and the new term must fence it.
                if let Some(l) = leader {
                    self.net.partition(&[Proc::Server(l)], &[Proc::Server(l), Proc::Coord], true);
                }
            }
            41..54 => {
                // Only the leader (and whichever clients still talk to it) is
                // cut off: it piles up entries no one else has, which a later
                // leader must either keep or overwrite, never both.
                if let Some(l) = leader {
                    let mut side = vec![Proc::Server(l)];
                    side.extend(all.iter().copied().filter(|p| matches!(p, Proc::Client(_)) && rng.random_bool(0.5)));
                    self.net.heal();
                    self.net.partition(&side, &all, true);
                }
            }
            54..58 => {
                // The leader is cut from everyone but the coord and clients.
                if let Some(l) = leader {
                    let servers: Vec<Proc> = (1..=n).map(Proc::Server).collect();
                    self.net.partition(&[Proc::Server(l)], &servers, true);
                }
            }
            58..80 => {
                let id = match leader {
                    Some(l) if rng.random_bool(0.5) => l,
                    _ => rng.random_range(1..=n),
                };
                let s = &mut self.servers[id as usize - 1];
                if s.alive {
                    s.crash();
                    self.crashes += 1;
                }
            }
            80..95 => {
                let down: Vec<u64> = self.servers.iter().filter(|s| !s.alive).map(|s| s.id).collect();
                if let Some(&id) = down.choose(rng) {
                    self.servers[id as usize - 1].restart(&mut self.net, &mut self.inv);
                }
            }
            _ => {
                let id = rng.random_range(1..=self.cfg.clients);
                self.clients[id as usize - 1].restart(&mut self.net);
            }
        }
    }

    /// The coord, about to crash and lose its state, had a selection for
    /// a later term reach a minority of the servers, which are then cut off
    /// from everyone (until the next heal): the others rejoin the restarted coord
    /// without them, get a leader below their term, and that leader is
    /// fenced once the minority is back (the coord must hear of it).
    fn lose_a_selection(&mut self, all: &[Proc]) {
        let (term, epoch) = self.coord.lost_selection(&mut self.net);
        let minority = ((self.cfg.nodes - 1) / 2) as usize;
        let mut ids: Vec<u64> = self.servers.iter().filter(|s| s.alive).map(|s| s.id).collect();
        ids.shuffle(&mut self.net.rng);
        ids.truncate(self.net.rng.random_range(1..=minority));
        for &id in &ids {
            let msg = Msg::LogStateRequest { term, epoch };
            self.servers[id as usize - 1].on_message(Proc::Coord, msg, &mut self.net, &mut self.inv);
        }
        let side: Vec<Proc> = ids.iter().map(|&id| Proc::Server(id)).collect();
        self.net.partition(&side, all, true);
    }

    /// Faults stop: the network heals, loses nothing more, and every server restarts.
    fn heal_all(&mut self) {
        self.net.heal();
        self.net.faulty = false;
        for s in &mut self.servers {
            if !s.alive {
                s.restart(&mut self.net, &mut self.inv);
            }
        }
    }

    /// Every server that applied as far as the most advanced one holds the
    /// same key-value state.
    fn check_convergence(&mut self) {
        let max_applied = self.servers.iter().map(|s| s.kv.applied_index()).max().unwrap_or(0);
        let mut reference: Option<(u64, Vec<(String, String)>)> = None;
        for s in &self.servers {
            if s.kv.applied_index() != max_applied {
                continue;
            }
            let state = s.state();
            match &reference {
                None => reference = Some((s.id, state)),
                Some((id, r)) if *r != state => {
                    self.inv.violations.push(format!(
                        "divergence: servers {id} and {} applied to index {max_applied} but hold different states",
                        s.id
                    ));
                }
                Some(_) => {}
            }
        }
    }

    fn report(mut self) -> SeedReport {
        for c in &self.clients {
            self.inv.violations.extend(c.unexpected.iter().cloned());
        }
        let lin_report = lin::check(&self.history);
        match &lin_report.verdict {
            lin::Verdict::Linearizable => {}
            lin::Verdict::NotLinearizable(v) => {
                self.inv.violations.push(format!("linearizability: {v}"));
            }
            lin::Verdict::Unknown => {
                self.inv.violations.push("linearizability: checker budget exhausted".into());
            }
        }
        SeedReport {
            ops: self.history.len(),
            ops_completed: self.history.iter().filter(|o| o.ret.is_some()).count(),
            violations: self.inv.violations,
            messages: self.net.messages_sent,
            selections: self.coord.selections,
            crashes: self.crashes,
            coord_crashes: self.coord_crashes,
            coord_state_losses: self.coord.state_losses,
            rediscoveries: self.coord.rediscoveries,
            rediscovery_kept_leader: self.coord.kept_leaders,
            partial_rejoins: self.coord.partial_rejoins,
            fenced_failovers: self.coord.fenced_failovers,
            lost_quorum_failovers: self.coord.lost_quorum_failovers,
            rejoins: self.servers.iter().map(|s| s.rejoins).sum(),
            sessions_expired: self.clients.iter().map(|c| c.expired).sum(),
            sim_ms: self.net.now,
            config: self.cfg,
        }
    }
}
