//! Cluster-level safety: leaders, joins, failovers.
//!
//! Body fields read (the prototype's): `BecameLeader {ServerId, Term?}`,
//! `ServerJoiningRecvd {ServerId}`, `ServerJoined {ServerId}`,
//! `BecameFollower {ServerId}`, `ServerFail {ServerId}`,
//! `LeaderRes {ClientId, ServerId}`, `LeaderFailOver {ServerId,
//! FailedLeaderId?, Term?}`, `LeaderReconfigDone {ServerId}`.

use std::collections::{BTreeSet, HashMap};

use super::Ctx;

pub(super) fn check(ctx: &mut Ctx<'_>) {
    one_leader_per_term(ctx);
    all_joined_after_joins(ctx);
    failover_after_fail(ctx);
}

/// No two `BecameLeader` for one term from different servers. Only bodies
/// with a `Term` can be checked (the prototype's have none). The same
/// server announcing twice is a warning.
fn one_leader_per_term(ctx: &mut Ctx<'_>) {
    let mut first: HashMap<u64, usize> = HashMap::new();
    let leaders: Vec<usize> = ctx.tagged("BecameLeader").collect();
    for i in leaders {
        let r = &ctx.records[i];
        let Some(term) = r.field_u64("Term") else {
            continue;
        };
        let server = r.field("ServerId");
        match first.get(&term) {
            None => {
                first.insert(term, i);
            }
            Some(&j) => {
                let other = &ctx.records[j];
                if other.field("ServerId") != server || other.tracer_identity != r.tracer_identity {
                    ctx.error(
                        "one-leader-per-term",
                        &[i, j],
                        format!(
                            "two leaders in term {term}: server {} and server {}",
                            other.field("ServerId").unwrap_or_default(),
                            server.unwrap_or_default()
                        ),
                    );
                } else {
                    ctx.warning("one-leader-per-term", &[i, j], format!("server became leader of term {term} twice"));
                }
            }
        }
    }
}

/// `AllServersJoined` only after a `ServerJoiningRecvd` of every member.
/// Members are the servers the trace shows in the cluster (`ServerJoined`,
/// `BecameLeader`, `BecameFollower`): a server refused at join is not one.
fn all_joined_after_joins(ctx: &mut Ctx<'_>) {
    let mut members = BTreeSet::new();
    for tag in ["ServerJoined", "BecameLeader", "BecameFollower"] {
        for i in ctx.tagged(tag) {
            if let Some(id) = ctx.records[i].field("ServerId") {
                members.insert(id);
            }
        }
    }
    let mut joins: HashMap<String, Vec<usize>> = HashMap::new();
    for i in ctx.tagged("ServerJoiningRecvd") {
        if let Some(id) = ctx.records[i].field("ServerId") {
            joins.entry(id).or_default().push(i);
        }
    }
    let alls: Vec<usize> = ctx.tagged("AllServersJoined").collect();
    for a in alls {
        for m in &members {
            let seen = joins.get(m).is_some_and(|js| js.iter().any(|&j| ctx.hb(j, a)));
            if !seen {
                let mut at = vec![a];
                at.extend(joins.get(m).into_iter().flatten().copied());
                ctx.error("all-joined", &at, format!("AllServersJoined before the coord received server {m}'s join"));
            }
        }
    }
}

/// `LeaderFailOver` only after a `ServerFail` of the leader it replaces:
/// `FailedLeaderId` when the body has it, else the last leader announced
/// before the failover (by `BecameLeader`, `LeaderRes`, `LeaderFailOver`,
/// `LeaderReconfigDone`, latest in clock order).
fn failover_after_fail(ctx: &mut Ctx<'_>) {
    let records = ctx.records;
    let announcements: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            matches!(r.tag.as_str(), "BecameLeader" | "LeaderRes" | "LeaderFailOver" | "LeaderReconfigDone")
                && r.field("ServerId").is_some()
        })
        .map(|(i, _)| i)
        .collect();
    let mut fails: HashMap<String, Vec<usize>> = HashMap::new();
    for i in ctx.tagged("ServerFail") {
        if let Some(id) = records[i].field("ServerId") {
            fails.entry(id).or_default().push(i);
        }
    }
    let failovers: Vec<usize> = ctx.tagged("LeaderFailOver").collect();
    for f in failovers {
        let known = announcements
            .iter()
            .copied()
            .filter(|&a| ctx.hb(a, f))
            .max_by_key(|&a| records[a].vector_clock.sum())
            .map(|a| (a, records[a].field("ServerId").unwrap_or_default()));
        let named = records[f].field("FailedLeaderId");
        let previous = match (&named, &known) {
            (Some(id), _) => id.clone(),
            (None, Some((_, id))) => id.clone(),
            (None, None) => continue,
        };
        if let (Some(named), Some((a, id))) = (&named, &known)
            && named != id
        {
            ctx.warning(
                "failover-after-fail",
                &[f, *a],
                format!("failover replaces server {named}, but the leader known before it was server {id}"),
            );
        }
        let failed_before = fails.get(&previous).is_some_and(|fs| fs.iter().any(|&s| ctx.hb(s, f)));
        if !failed_before {
            ctx.error(
                "failover-after-fail",
                &[f],
                format!("LeaderFailOver without a ServerFail of the previous leader (server {previous}) before it"),
            );
        }
    }
}
