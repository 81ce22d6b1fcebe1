//! The names and addresses of one run: which namespace each process lives
//! in, its address, and its ports.
//!
//! Invariants:
//! - every namespace name is [`PREFIX`], the harness's pid, a run number
//!   and a dash, then the node's tag: parallel runs never share a name, and
//!   a later run can recognise (and sweep) what a dead process left behind;
//! - every address is in [`SUBNET`]`.0/24`, which exists only on the veths
//!   inside this run's namespaces: no namespace has a default route, so
//!   nothing can leave them;
//! - each process has a namespace, hence an address, of its own, so fixed
//!   ports never clash;
//! - in [`Net::Loopback`] (no namespaces can be made: a non-root run), every
//!   process lives on 127.0.0.1 and each of its ports was free when the
//!   run began (picked by `port::free_port`), fixed for the whole run so
//!   restarted processes come back at the same address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context;

/// What every namespace name of every run starts with.
pub const PREFIX: &str = "kvraft-faults-";

/// The first three octets of the private /24 used inside the namespaces.
pub const SUBNET: [u8; 3] = [10, 213, 7];

/// The ports a process listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Port {
    /// The coord's client API (clients, the harness).
    CoordClient,
    /// The coord's server API (joins).
    CoordServer,
    /// A server's fcheck responder (UDP).
    Fcheck,
    /// A server's peer port.
    Peer,
    /// A server's control port (the coord).
    Control,
    /// A server's client port.
    Client,
}

impl Port {
    const SERVER: [Port; 4] = [Port::Fcheck, Port::Peer, Port::Control, Port::Client];

    /// The port inside a namespace, where every process has an address of
    /// its own.
    fn fixed(self) -> u16 {
        match self {
            Port::CoordClient => 7000,
            Port::CoordServer => 7001,
            Port::Fcheck => 7100,
            Port::Peer => 7101,
            Port::Control => 7102,
            Port::Client => 7103,
        }
    }
}

/// Where the run's processes live.
#[derive(Clone, Debug)]
pub enum Net {
    /// A namespace each, joined by a bridge: partitions are possible.
    Namespaces,
    /// All on 127.0.0.1, each (process, port) on a port picked at start:
    /// kills and pauses only.
    Loopback(Arc<BTreeMap<(Node, Port), u16>>),
}

/// The interface each process namespace reaches the bridge through.
pub const NODE_IFACE: &str = "eth0";
/// The bridge in the hub namespace.
pub const BRIDGE: &str = "br0";

/// One process (or group of client tasks) with a namespace of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// The coord.
    Coord,
    /// Server `id` (1-based, as in its config).
    Server(u64),
    /// The harness's client `i` (1-based).
    Client(u64),
    /// The harness's observation post (leader queries, log comparison):
    /// never partitioned, so the harness always sees the whole cluster.
    Ctl,
}

impl Node {
    /// Short and unique within a run: the namespace suffix and the name of
    /// its veth in the hub (interface names must fit in 15 bytes).
    pub fn tag(self) -> String {
        match self {
            Node::Coord => "coord".into(),
            Node::Server(id) => format!("s{id}"),
            Node::Client(i) => format!("c{i}"),
            Node::Ctl => "ctl".into(),
        }
    }

    /// The node's address in the run's /24.
    pub fn ip(self) -> Ipv4Addr {
        let host = match self {
            Node::Coord => 2,
            Node::Server(id) => 10 + id as u8,
            Node::Client(i) => 100 + i as u8,
            Node::Ctl => 250,
        };
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host)
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Coord => f.write_str("coord"),
            Node::Server(id) => write!(f, "server {id}"),
            Node::Client(i) => write!(f, "client {i}"),
            Node::Ctl => f.write_str("harness"),
        }
    }
}

/// Most clients a run may have (their addresses are .101 to .200).
pub const MAX_CLIENTS: u64 = 100;

/// The shape of one run's network.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The pid the names are derived from (the harness's own).
    pub pid: u32,
    /// Counts runs within this process, so two runs of one process (two
    /// tests in one binary) do not clash either.
    pub run: u32,
    pub servers: u64,
    pub clients: u64,
    pub net: Net,
}

impl Layout {
    /// A layout in network namespaces.
    pub fn new(servers: u64, clients: u64) -> Layout {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        Layout {
            pid: std::process::id(),
            run: RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            servers,
            clients,
            net: Net::Namespaces,
        }
    }

    /// A layout on loopback, every port picked free now.
    pub fn loopback(servers: u64, clients: u64) -> anyhow::Result<Layout> {
        let mut ports = BTreeMap::new();
        let mut pick = |node: Node, port: Port| -> anyhow::Result<()> {
            ports.insert((node, port), crate::port::free_port().context("picking a loopback port")?);
            Ok(())
        };
        pick(Node::Coord, Port::CoordClient)?;
        pick(Node::Coord, Port::CoordServer)?;
        for id in 1..=servers {
            for port in Port::SERVER {
                pick(Node::Server(id), port)?;
            }
        }
        Ok(Layout { net: Net::Loopback(Arc::new(ports)), ..Layout::new(servers, clients) })
    }

    /// True if processes have namespaces (and partitions can be made).
    pub fn namespaced(&self) -> bool {
        matches!(self.net, Net::Namespaces)
    }

    /// Moves the calling thread into `node`'s namespace (nothing to do on
    /// loopback).
    pub fn enter(&self, node: Node) -> anyhow::Result<()> {
        match self.net {
            Net::Namespaces => crate::netns::enter(&self.netns(node)),
            Net::Loopback(_) => Ok(()),
        }
    }

    fn addr(&self, node: Node, port: Port) -> String {
        match &self.net {
            Net::Namespaces => format!("{}:{}", node.ip(), port.fixed()),
            Net::Loopback(ports) => {
                // Every (node, port) the configs name was picked in `loopback`.
                let p = ports.get(&(node, port)).copied().unwrap_or(0);
                format!("127.0.0.1:{p}")
            }
        }
    }

    /// What every namespace of this run starts with.
    pub fn prefix(&self) -> String {
        format!("{}{}-", process_prefix(self.pid), self.run)
    }

    /// The namespace holding the bridge.
    pub fn hub(&self) -> String {
        format!("{}hub", self.prefix())
    }

    pub fn netns(&self, node: Node) -> String {
        format!("{}{}", self.prefix(), node.tag())
    }

    pub fn server_ids(&self) -> impl Iterator<Item = u64> + use<> {
        1..=self.servers
    }

    /// Every node with a namespace (the hub aside).
    pub fn nodes(&self) -> Vec<Node> {
        let mut v = vec![Node::Ctl, Node::Coord];
        v.extend(self.server_ids().map(Node::Server));
        v.extend((1..=self.clients).map(Node::Client));
        v
    }

    /// Every node a partition may involve (the harness's own post aside).
    pub fn partitionable(&self) -> Vec<Node> {
        self.nodes().into_iter().filter(|n| *n != Node::Ctl).collect()
    }

    pub fn coord_client_addr(&self) -> String {
        self.addr(Node::Coord, Port::CoordClient)
    }

    pub fn coord_server_addr(&self) -> String {
        self.addr(Node::Coord, Port::CoordServer)
    }

    pub fn server_addr(&self, id: u64, port: Port) -> String {
        self.addr(Node::Server(id), port)
    }
}

/// What the namespace names of every run made by process `pid` start with.
pub fn process_prefix(pid: u32) -> String {
    format!("{PREFIX}{pid}-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_distinct() {
        let l = Layout { pid: 42, run: 3, servers: 7, clients: MAX_CLIENTS, net: Net::Namespaces };
        let nodes = l.nodes();
        let mut ns: Vec<_> = nodes.iter().map(|n| l.netns(*n)).collect();
        let mut ips: Vec<_> = nodes.iter().map(|n| n.ip()).collect();
        ns.push(l.hub());
        ns.sort();
        ns.dedup();
        ips.sort();
        ips.dedup();
        assert_eq!(ns.len(), nodes.len() + 1);
        assert_eq!(ips.len(), nodes.len());
        assert!(ns.iter().all(|n| n.starts_with("kvraft-faults-42-3-")));
        assert!(nodes.iter().all(|n| n.tag().len() <= 15));
    }
}

#[cfg(test)]
mod loopback_tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_distinct_and_on_127_0_0_1() {
        let l = Layout::loopback(5, 4).unwrap();
        assert!(!l.namespaced());
        let mut addrs = vec![l.coord_client_addr(), l.coord_server_addr()];
        for id in l.server_ids() {
            addrs.extend(Port::SERVER.iter().map(|p| l.server_addr(id, *p)));
        }
        assert!(addrs.iter().all(|a| a.starts_with("127.0.0.1:") && !a.ends_with(":0")), "{addrs:?}");
        let n = addrs.len();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), n);
    }
}
