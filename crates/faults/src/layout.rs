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
//!   ports never clash.

use std::net::Ipv4Addr;

/// What every namespace name of every run starts with.
pub const PREFIX: &str = "kvraft-faults-";

/// The first three octets of the private /24 used inside the namespaces.
pub const SUBNET: [u8; 3] = [10, 213, 7];

/// The coord's client API (clients, the harness) and server API (joins).
pub const COORD_CLIENT_PORT: u16 = 7000;
pub const COORD_SERVER_PORT: u16 = 7001;
/// A server's fcheck responder (UDP), peers, control (coord) and client ports.
pub const SERVER_FCHECK_PORT: u16 = 7100;
pub const SERVER_PEER_PORT: u16 = 7101;
pub const SERVER_CONTROL_PORT: u16 = 7102;
pub const SERVER_CLIENT_PORT: u16 = 7103;

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
}

impl Layout {
    pub fn new(servers: u64, clients: u64) -> Layout {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        Layout {
            pid: std::process::id(),
            run: RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            servers,
            clients,
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
        format!("{}:{COORD_CLIENT_PORT}", Node::Coord.ip())
    }

    pub fn coord_server_addr(&self) -> String {
        format!("{}:{COORD_SERVER_PORT}", Node::Coord.ip())
    }

    pub fn server_addr(&self, id: u64, port: u16) -> String {
        format!("{}:{port}", Node::Server(id).ip())
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
        let l = Layout { pid: 42, run: 3, servers: 7, clients: MAX_CLIENTS };
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
