//! Directed network cuts between nodes, and healing them.
//!
//! A cut from A to B stops every packet A sends to B, and nothing else: it
//! is installed in A's namespace only, so B can still reach A (a one-way
//! partition) unless the reverse cut is installed too. Two ways to cut:
//!
//! - [`CutMode::Drop`]: a permanent neighbour (ARP) entry in A for B's
//!   address pointing at a MAC nobody has. A's frames to B are flooded by
//!   the bridge and discarded by everyone: silent loss, the sender sees only
//!   timeouts, like a pulled cable.
//! - [`CutMode::Reject`]: a blackhole route for B's /32 in A, more specific
//!   than the subnet route. A's sends to B fail at once (EINVAL): a fast,
//!   visible failure, like an ICMP-unreachable firewall.
//!
//! Invariant: `active` lists exactly the cuts installed, so healing removes
//! all of them and nothing else. (Deleting the namespaces removes them too.)

use std::collections::BTreeMap;

use crate::layout::{Layout, NODE_IFACE, Node};
use crate::netns;

/// How a cut drops packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CutMode {
    /// Silent loss (a bogus neighbour entry).
    Drop,
    /// Immediate send errors (a blackhole route).
    Reject,
}

impl std::fmt::Display for CutMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CutMode::Drop => "drop",
            CutMode::Reject => "reject",
        })
    }
}

/// A locally administered MAC that no interface of the run has.
const NOWHERE_MAC: &str = "02:6b:76:72:66:00";

/// The cuts currently installed.
#[derive(Default)]
pub struct Cuts {
    active: Vec<(Node, Node, CutMode)>,
}

/// The `ip` command (without `ip -n <ns>`) that installs or removes a cut
/// to `to`.
fn command(to: Node, mode: CutMode, install: bool) -> String {
    let dst = to.ip();
    match (mode, install) {
        (CutMode::Drop, true) => {
            format!("neigh replace {dst} lladdr {NOWHERE_MAC} dev {NODE_IFACE} nud permanent")
        }
        (CutMode::Drop, false) => format!("neigh del {dst} dev {NODE_IFACE}"),
        (CutMode::Reject, true) => format!("route add blackhole {dst}/32"),
        (CutMode::Reject, false) => format!("route del blackhole {dst}/32"),
    }
}

/// Runs each namespace's commands in one `ip -batch` (a process per cut
/// costs 5 ms idle and 50 ms on a busy machine: a 48-cut partition would
/// take seconds to install). `force` carries on past failures.
fn run_batches(layout: &Layout, cuts: &[(Node, Node, CutMode)], install: bool, force: bool) -> anyhow::Result<()> {
    let mut by_ns: BTreeMap<Node, String> = BTreeMap::new();
    for (from, to, mode) in cuts {
        let text = by_ns.entry(*from).or_default();
        text.push_str(&command(*to, *mode, install));
        text.push('\n');
    }
    let mut first_err = None;
    for (from, text) in by_ns {
        let ns = layout.netns(from);
        let mut args = vec!["-n", ns.as_str()];
        if force {
            args.push("-force");
        }
        args.extend(["-batch", "-"]);
        if let Err(e) = netns::tool_with_input("ip", &args, &text) {
            if !force {
                return Err(e);
            }
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

impl Cuts {
    /// Stops packets from each `from` to each `to` of `pairs`. Pairs
    /// already cut (in any mode) and self-pairs are skipped.
    pub fn cut(&mut self, layout: &Layout, pairs: &[(Node, Node)], mode: CutMode) -> anyhow::Result<()> {
        let mut new: Vec<(Node, Node, CutMode)> = Vec::new();
        for (from, to) in pairs {
            let known = |v: &[(Node, Node, CutMode)]| v.iter().any(|(f, t, _)| (f, t) == (from, to));
            if from != to && !known(&self.active) && !known(&new) {
                new.push((*from, *to, mode));
            }
        }
        // Recorded first: a batch that fails half-way is still healed.
        self.active.extend(new.iter().copied());
        run_batches(layout, &new, true, false)
    }

    /// Removes every cut. Tries them all; returns the first error.
    pub fn heal(&mut self, layout: &Layout) -> anyhow::Result<()> {
        let all = std::mem::take(&mut self.active);
        run_batches(layout, &all, false, true)
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }
}
