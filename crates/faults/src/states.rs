//! After healing, beyond the log window: do the servers hold the same state?
//!
//! The log comparison (`logs.rs`) sees only what lies above the highest
//! snapshot; with frequent snapshots that is a few hundred entries, and a
//! snapshot installed wrongly would not show there. Once every server has
//! applied the same index, their state machines must encode to the same
//! bytes: each is asked for its digest (Admin.Digest).

use std::time::Duration;

use kvraft_proto as pb;

use crate::layout::Layout;
use crate::leader::admin;

pub enum StateCheck {
    Same(String),
    Differ(String),
    NotCompared(String),
}

async fn digest(layout: &Layout, id: u64) -> Option<pb::DigestReply> {
    let within = Duration::from_secs(5);
    let mut a = admin(layout, id, within).await?;
    Some(tokio::time::timeout(within, a.digest(pb::DigestRequest {})).await.ok()?.ok()?.into_inner())
}

/// The whole states, beyond the log window: once every server has applied
/// the same index (waiting up to `within`), their state machines must
/// encode to the same bytes. This also covers what snapshots hold, which
/// the log comparison cannot see.
pub async fn compare_states(layout: &Layout, within: Duration) -> StateCheck {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut digests = Vec::new();
        let mut silent = None;
        for id in layout.server_ids() {
            match digest(layout, id).await {
                Some(d) => digests.push((id, d)),
                None => silent = Some(id),
            }
        }
        if silent.is_none()
            && let Some(check) = verdict(&digests)
        {
            return check;
        }
        // One that did not answer this time is asked again until the deadline.
        if let Some(id) = silent
            && tokio::time::Instant::now() >= deadline
        {
            return StateCheck::NotCompared(format!("states not compared: server {id} did not answer"));
        }
        if tokio::time::Instant::now() >= deadline {
            let shown: Vec<String> = digests.iter().map(|(id, d)| format!("s{id}={}", d.applied_index)).collect();
            return StateCheck::NotCompared(format!(
                "states not compared: the servers did not reach one applied index ({})",
                shown.join(" ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The verdict on digests taken from every server, or `None` while they
/// have not all applied the same index (then they cannot be compared yet).
fn verdict(digests: &[(u64, pb::DigestReply)]) -> Option<StateCheck> {
    let (rid, reference) = digests.first()?;
    let applied = reference.applied_index;
    if digests.iter().any(|(_, d)| d.applied_index != applied) {
        return None;
    }
    Some(match digests.iter().find(|(_, d)| d.crc32c != reference.crc32c) {
        None => StateCheck::Same(format!(
            "states identical at applied index {applied} ({} keys, crc32c {:08x})",
            reference.keys, reference.crc32c
        )),
        Some((id, d)) => StateCheck::Differ(format!(
            "servers {rid} and {id} hold different states at applied index {applied} \
             (crc32c {:08x} vs {:08x}, {} vs {} keys)",
            reference.crc32c, d.crc32c, reference.keys, d.keys
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(applied_index: u64, crc32c: u32, keys: u64) -> pb::DigestReply {
        pb::DigestReply { applied_index, crc32c, keys }
    }

    #[test]
    fn one_server_that_differs_is_named() {
        let v = verdict(&[(1, d(40, 7, 3)), (2, d(40, 7, 3)), (3, d(40, 9, 3))]);
        match v {
            Some(StateCheck::Differ(m)) => {
                assert!(m.contains("servers 1 and 3"), "{m}");
                assert!(m.contains("applied index 40"), "{m}");
            }
            _ => panic!("a differing server was not caught"),
        }
    }

    #[test]
    fn equal_states_at_one_index_are_the_same() {
        let v = verdict(&[(1, d(40, 7, 3)), (2, d(40, 7, 3)), (3, d(40, 7, 3))]);
        assert!(matches!(v, Some(StateCheck::Same(m)) if m.contains("applied index 40")));
    }

    #[test]
    fn states_at_different_indexes_are_not_judged_yet() {
        // Their digests differ, but so do their applied indexes: no verdict.
        assert!(verdict(&[(1, d(40, 7, 3)), (2, d(41, 9, 4))]).is_none());
        assert!(verdict(&[]).is_none());
    }
}
