//! The run's network: a hub namespace holding a bridge, and one namespace
//! per node (coord, each server, each client, the harness's post), each
//! joined to the bridge by a veth pair.
//!
//! ```text
//!   ns <prefix>s1 ── eth0 10.213.7.11 ─┐
//!   ns <prefix>s2 ── eth0 10.213.7.12 ─┤        ns <prefix>hub
//!   ...                                ├── veths ── br0 (no address)
//!   ns <prefix>coord ─ eth0 10.213.7.2 ┤
//!   ns <prefix>c1 ── eth0 10.213.7.101 ┤
//!   ns <prefix>ctl ── eth0 10.213.7.250┘
//! ```
//!
//! Nothing is created in the root namespace: the host's interfaces, routes
//! and addresses are never touched, and since no namespace has a default
//! route, traffic to anything outside the /24 fails at once (ENETUNREACH).
//!
//! [`Network`] is a guard: dropping it deletes every namespace it made
//! (which removes the veths and the bridge with them), on success, on error
//! and while unwinding from a panic.

use anyhow::Context;

use crate::layout::{BRIDGE, Layout, NODE_IFACE, Node};
use crate::netns;

pub struct Network {
    layout: Layout,
    /// Namespaces created so far, deleted in reverse order on drop.
    created: Vec<String>,
}

impl Network {
    /// Builds the whole topology. A failure part-way deletes what was made.
    pub fn create(layout: &Layout) -> anyhow::Result<Network> {
        let mut net = Network { layout: layout.clone(), created: Vec::new() };
        let hub = layout.hub();
        net.add_netns(&hub)?;
        netns::ip(&["-n", &hub, "link", "add", "name", BRIDGE, "type", "bridge"])?;
        netns::ip(&["-n", &hub, "link", "set", BRIDGE, "up"])?;
        for node in layout.nodes() {
            net.add_node(node).with_context(|| format!("setting up the namespace of {node}"))?;
        }
        Ok(net)
    }

    fn add_netns(&mut self, name: &str) -> anyhow::Result<()> {
        netns::ip(&["netns", "add", name]).with_context(|| {
            format!(
                "cannot create network namespace {name}: the fault harness needs root \
                 (CAP_SYS_ADMIN) and iproute2"
            )
        })?;
        self.created.push(name.to_owned());
        Ok(())
    }

    fn add_node(&mut self, node: Node) -> anyhow::Result<()> {
        let hub = self.layout.hub();
        let ns = self.layout.netns(node);
        let tag = node.tag();
        let addr = format!("{}/24", node.ip());
        self.add_netns(&ns)?;
        let ip = netns::ip;
        ip(&["-n", &hub, "link", "add", "name", &tag, "type", "veth", "peer", "name", NODE_IFACE, "netns", &ns])?;
        ip(&["-n", &hub, "link", "set", &tag, "master", BRIDGE])?;
        ip(&["-n", &hub, "link", "set", &tag, "up"])?;
        ip(&["-n", &ns, "addr", "add", &addr, "dev", NODE_IFACE])?;
        ip(&["-n", &ns, "link", "set", NODE_IFACE, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            if let Err(e) = netns::delete(&name) {
                eprintln!("kvraft faults: could not delete namespace {name}: {e:#}");
            }
        }
    }
}
