//! After healing: are the servers' logs identical up to the commit index?
//!
//! Raft's log matching says every server holds the same entry at every
//! index both have committed. Each server is asked (over Admin) for its
//! commit and snapshot indexes, then for its entries in the window every
//! server still holds and has committed: above the highest snapshot, up to
//! the lowest commit index. Each entry (index, term, payload) must be the
//! same everywhere. Then the whole states (`states.rs`).

use std::time::Duration;

use kvraft_proto as pb;

use crate::layout::Layout;
use crate::leader::{admin, status};
use crate::states::{StateCheck, compare_states};

/// The outcome, in one line for the report.
pub struct LogCheck {
    /// False when two servers disagree on a committed entry or on their
    /// state, or when the states could not be compared after the heal.
    pub consistent: bool,
    pub summary: String,
}

const PAGE: u64 = 5000;

async fn lines(layout: &Layout, id: u64, from: u64, to: u64) -> Option<Vec<pb::LogLine>> {
    let mut a = admin(layout, id, Duration::from_secs(1)).await?;
    let mut out = Vec::new();
    let mut next = from;
    while next <= to {
        let limit = (to - next + 1).min(PAGE) as u32;
        let req = pb::LogRequest { from: next, limit };
        let page = tokio::time::timeout(Duration::from_secs(5), a.log(req)).await.ok()?.ok()?.into_inner().lines;
        if page.first().is_some_and(|l| l.index > next) {
            // Compacted since its status was read: the window is gone here.
            return None;
        }
        let before = out.len();
        out.extend(page.into_iter().filter(|l| l.index >= next && l.index <= to));
        match out.last() {
            Some(last) if out.len() > before => next = last.index + 1,
            _ => break,
        }
    }
    Some(out)
}

/// Every server's status, or the id of one that did not answer.
async fn statuses(layout: &Layout) -> Result<Vec<(u64, pb::StatusReply)>, u64> {
    let mut states = Vec::new();
    for id in layout.server_ids() {
        states.push((id, status(layout, id).await.ok_or(id)?));
    }
    Ok(states)
}

/// Waits (up to `within`) until every server answers and has committed
/// what the most advanced one had when first asked: a server restarted at
/// the very end learns the commit index only from the leader's next
/// message, and one just resumed may be slow to answer at first. Gives the
/// id of a server that never answered.
async fn converged(layout: &Layout, within: Duration) -> Result<Vec<(u64, pb::StatusReply)>, u64> {
    let deadline = tokio::time::Instant::now() + within;
    let mut target = None;
    loop {
        match statuses(layout).await {
            Ok(states) => {
                let top = states.iter().map(|(_, s)| s.commit_index).max().unwrap_or(0);
                let target = *target.get_or_insert(top);
                let behind = states.iter().any(|(_, s)| s.commit_index < target);
                if !behind || tokio::time::Instant::now() >= deadline {
                    return Ok(states);
                }
            }
            Err(id) if tokio::time::Instant::now() >= deadline => return Err(id),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the committed-log comparison found.
enum Logs {
    /// Identical over the window (the summary says which).
    Same(String),
    Differ(String),
    /// No window every server still holds (snapshots cover it all), or one
    /// compacted it meanwhile: the states comparison still decides.
    NoWindow(String),
}

/// Compares every server's committed log, then their whole states. After
/// the heal every server must answer and reach the others' applied index:
/// a check that could not be made fails the run, for a server stuck behind
/// (a snapshot it cannot install, say) is exactly what it must catch.
pub async fn compare(layout: &Layout) -> LogCheck {
    let states = match converged(layout, Duration::from_secs(10)).await {
        Ok(s) => s,
        Err(id) => {
            return LogCheck {
                consistent: false,
                summary: format!("NOT COMPARED: server {id} did not answer its status within 10 s of the heal"),
            };
        }
    };
    let logs = compare_logs(layout, &states).await;
    let check = compare_states(layout, Duration::from_secs(20)).await;
    overall(logs, check)
}

/// The verdict of both comparisons: consistent only if no log differs and
/// the states were compared and are the same.
fn overall(logs: Logs, states: StateCheck) -> LogCheck {
    let (logs_ok, logs_line) = match logs {
        Logs::Same(l) | Logs::NoWindow(l) => (true, l),
        Logs::Differ(l) => (false, l),
    };
    let (states_ok, states_line) = match states {
        StateCheck::Same(l) => (true, l),
        StateCheck::Differ(l) => (false, format!("but {l}")),
        StateCheck::NotCompared(l) => (false, format!("but NOT COMPARED: {l}")),
    };
    LogCheck { consistent: logs_ok && states_ok, summary: format!("{logs_line}; {states_line}") }
}

async fn compare_logs(layout: &Layout, states: &[(u64, pb::StatusReply)]) -> Logs {
    let from = states.iter().map(|(_, s)| s.snapshot_index).max().unwrap_or(0) + 1;
    let to = states.iter().map(|(_, s)| s.commit_index).min().unwrap_or(0);
    if to < from {
        return Logs::NoWindow(format!("logs not compared: no common committed window (from {from}, to {to})"));
    }
    let mut reference: Option<(u64, Vec<pb::LogLine>)> = None;
    for (id, _) in states {
        let Some(mine) = lines(layout, *id, from, to).await else {
            return Logs::NoWindow(format!(
                "logs not compared: server {id} did not list its log (or compacted it meanwhile)"
            ));
        };
        match &reference {
            None => reference = Some((*id, mine)),
            Some((rid, theirs)) => {
                if let Some(diff) = first_difference(theirs, &mine) {
                    return Logs::Differ(format!("servers {rid} and {id} differ in the committed log: {diff}"));
                }
            }
        }
    }
    let n = reference.map_or(0, |(_, l)| l.len());
    let commits: Vec<String> = states.iter().map(|(id, s)| format!("s{id}={}", s.commit_index)).collect();
    Logs::Same(format!(
        "logs identical on all {} servers over committed indexes {from}..={to} ({n} entries; commit {})",
        states.len(),
        commits.join(" ")
    ))
}

fn show(l: Option<&pb::LogLine>) -> String {
    l.map_or("nothing".into(), |l| format!("{}. Term={}, Entry={}", l.index, l.term, l.entry))
}

fn first_difference(a: &[pb::LogLine], b: &[pb::LogLine]) -> Option<String> {
    let same = |x: &pb::LogLine, y: &pb::LogLine| (x.index, x.term, &x.entry) == (y.index, y.term, &y.entry);
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if same(x, y) => {}
            (x, y) => return Some(format!("{} vs {}", show(x), show(y))),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_states_compared_and_the_same_pass() {
        let same = || StateCheck::Same("states identical".into());
        assert!(overall(Logs::Same("logs identical".into()), same()).consistent);
        // Snapshots covering every log: the states alone decide.
        assert!(overall(Logs::NoWindow("no window".into()), same()).consistent);
        assert!(!overall(Logs::Differ("differ".into()), same()).consistent);
        assert!(!overall(Logs::Same("logs identical".into()), StateCheck::Differ("x".into())).consistent);
        // A server stuck behind, or silent: the run fails, it does not pass unchecked.
        let stuck = overall(Logs::NoWindow("no window".into()), StateCheck::NotCompared("s3 behind".into()));
        assert!(!stuck.consistent);
        assert!(stuck.summary.contains("NOT COMPARED: s3 behind"), "{}", stuck.summary);
    }
}
