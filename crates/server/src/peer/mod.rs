//! Raft messages between servers: the wire ([`frame`]), the event loop's
//! outbound links ([`outbound`]), and the listener that feeds inbound
//! messages to the loop ([`inbound`]).

pub mod frame;
pub mod inbound;
pub mod outbound;

use kvraft_core::{AppendResult, Message};
use serde_json::json;

/// Records a Raft message sent or received, as the prototype's trace did.
pub fn record_message(trace: &kvraft_trace::Trace, msg: &Message, received: bool) {
    match msg {
        Message::AppendEntries { term, leader, prev_log_index, prev_log_term, entries, leader_commit, .. } => {
            let tag = if received { "AppendEntriesRequestRecvd" } else { "AppendEntriesRequestSent" };
            trace.record_with(tag, || {
                let shown: Vec<String> = entries.iter().take(8).map(|e| e.to_string()).collect();
                json!({"Term": term, "LeaderId": leader, "PrevLogIndex": prev_log_index,
                       "PrevLogTerm": prev_log_term, "Entries": shown, "EntryCount": entries.len(),
                       "LeaderCommit": leader_commit})
            });
        }
        Message::AppendEntriesResponse { term, from, result, .. } => {
            let tag = if received { "AppendEntriesResponseRecvd" } else { "AppendEntriesResponseSent" };
            let (success, match_index) = match result {
                AppendResult::Success { match_index } => (true, Some(*match_index)),
                _ => (false, None),
            };
            trace.record(tag, json!({"Term": term, "From": from, "Success": success, "MatchIndex": match_index}));
        }
        Message::InstallSnapshot { term, leader, snapshot, .. } => {
            let tag = if received { "InstallSnapshotRecvd" } else { "InstallSnapshotSent" };
            trace.record(tag, json!({"Term": term, "LeaderId": leader, "Index": snapshot.meta.index}));
        }
        Message::LogState(_) | Message::BecomeLeaderResponse { .. } => {}
    }
}
