//! Where each event goes in the space-time diagram.
//!
//! One lane per host (in order of first appearance). An event's row is one
//! more than the rows of the events it directly depends on: the previous
//! event of its host and, for a `ReceiveTokenTrace`, the matching
//! `GenerateTokenTrace`. That is the longest-path layering of the
//! happened-before graph, so rows are a linear extension of
//! happened-before (an arrow always points down) and concurrent events
//! share rows, which keeps the diagram short.
//!
//! The file lists records in arrival order, which is causal only per host,
//! so events are placed with Kahn's algorithm: a host waits while its next
//! event is a receive whose generate is not placed yet. A dependency cycle
//! (only possible in a corrupt trace) is broken by placing the earliest
//! waiting event without its generate.

use std::collections::HashMap;

use crate::check::tokens::generates;
use crate::record::Record;

/// The diagram's geometry, in rows and lanes.
pub struct Layout {
    /// Lane names (hosts), left to right.
    pub hosts: Vec<String>,
    /// Lane of each record.
    pub lane: Vec<usize>,
    /// Row of each record.
    pub row: Vec<usize>,
    /// Number of rows.
    pub rows: usize,
    /// Message arrows: (generate, receive) record indices.
    pub arrows: Vec<(usize, usize)>,
}

pub fn layout(records: &[Record]) -> Layout {
    let mut lane_of: HashMap<&str, usize> = HashMap::new();
    let mut hosts = Vec::new();
    let mut queues: Vec<Vec<usize>> = Vec::new();
    let mut lane = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let l = *lane_of.entry(&r.tracer_identity).or_insert_with(|| {
            hosts.push(r.tracer_identity.clone());
            queues.push(Vec::new());
            hosts.len() - 1
        });
        lane.push(l);
        queues[l].push(i);
    }

    // The generate each receive depends on.
    let gens = generates(records);
    let sender: Vec<Option<usize>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.tag != "ReceiveTokenTrace" {
                return None;
            }
            let g = *gens.get(crate::check::tokens::token_of(r)?)?;
            (g != i).then_some(g)
        })
        .collect();
    let arrows: Vec<(usize, usize)> = sender.iter().enumerate().filter_map(|(i, g)| g.map(|g| (g, i))).collect();

    let n = records.len();
    let mut row = vec![0usize; n];
    let mut placed = vec![false; n];
    let mut next = vec![0usize; hosts.len()]; // position in each lane's queue
    let mut last_row: Vec<Option<usize>> = vec![None; hosts.len()];
    let mut waiting: HashMap<usize, Vec<usize>> = HashMap::new(); // generate -> lanes
    let mut ready: Vec<usize> = (0..hosts.len()).collect();
    let mut done = 0;
    while done < n {
        let Some(l) = ready.pop() else {
            // A cycle: force the earliest waiting event.
            let Some((l, i)) =
                (0..hosts.len()).filter_map(|l| queues[l].get(next[l]).map(|&i| (l, i))).min_by_key(|&(_, i)| i)
            else {
                break; // unreachable: done < n leaves an event somewhere
            };
            place(i, None, &mut row, &mut placed, &mut last_row[l]);
            next[l] += 1;
            done += 1;
            wake(i, &mut waiting, &mut ready);
            ready.push(l);
            continue;
        };
        while let Some(&i) = queues[l].get(next[l]) {
            let dep = sender[i];
            if let Some(g) = dep
                && !placed[g]
            {
                waiting.entry(g).or_default().push(l);
                break;
            }
            place(i, dep.map(|g| row[g]), &mut row, &mut placed, &mut last_row[l]);
            next[l] += 1;
            done += 1;
            wake(i, &mut waiting, &mut ready);
        }
    }
    let rows = row.iter().max().map_or(0, |&r| r + 1);
    Layout { hosts, lane, row, rows, arrows }
}

fn place(i: usize, dep_row: Option<usize>, row: &mut [usize], placed: &mut [bool], last: &mut Option<usize>) {
    let after_host = last.map_or(0, |r| r + 1);
    let after_dep = dep_row.map_or(0, |r| r + 1);
    row[i] = after_host.max(after_dep);
    placed[i] = true;
    *last = Some(row[i]);
}

fn wake(i: usize, waiting: &mut HashMap<usize, Vec<usize>>, ready: &mut Vec<usize>) {
    if let Some(lanes) = waiting.remove(&i) {
        ready.extend(lanes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_trace;

    #[test]
    fn rows_extend_happened_before() {
        let text = include_str!("../../tests/data/3Server2ClientLeaderFailure/trace_output.log");
        let records = parse_trace(text).unwrap();
        let l = layout(&records);
        assert_eq!(l.hosts.len(), 6);
        assert!(l.arrows.len() > 50);
        for (a, ra) in records.iter().enumerate() {
            for (b, rb) in records.iter().enumerate() {
                if ra.vector_clock.happened_before(&rb.vector_clock) {
                    assert!(l.row[a] < l.row[b], "lines {} -> {}", ra.line, rb.line);
                }
            }
        }
        for &(g, r) in &l.arrows {
            assert!(l.row[g] < l.row[r]);
        }
        // Concurrency is used: far fewer rows than events.
        assert!(l.rows < records.len(), "{} rows", l.rows);
    }
}
