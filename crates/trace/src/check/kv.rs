//! Key-value safety (no reads of unwritten or overwritten values) and
//! completeness (every operation and request finished).
//!
//! Operations are the clients' records: `Put {ClientId, OpId, Key, Value}`
//! and its `PutResultRecvd {OpId, Key}`, `Get {ClientId, OpId, Key}` and its
//! `GetResultRecvd {OpId, Key, Value}`, matched by client host and `OpId`.
//!
//! A read of value `v` on key `k` is justified by a *candidate*: a put of
//! `v` on `k` that did not happen after the read's result (or the initial
//! empty value when `v` is empty). A candidate is *overwritten* when a put
//! of another value on `k` began after the candidate completed and itself
//! completed before the get began (all by clocks): then every linearization
//! orders the overwrite between the candidate and the read. The read is
//! stale when every candidate is overwritten.
//!
//! A put has *completed* at any record that proves it took effect: its
//! client's `PutResultRecvd`, or a server's `PutCommitted` for the same
//! `ClientId` and `OpId`. The server's record matters: another client's get
//! is rarely causally after a client's own result, but it is after the
//! leader's commit once it has talked to that leader.
//!
//! This is sound (it never flags a linearizable history) but not complete:
//! clocks show causality, not real time. `kvraft lincheck` is the full
//! linearizability check.

use std::collections::{HashMap, HashSet};

use super::Ctx;
use crate::record::Record;

struct Put {
    inv: usize,
    /// Records proving it took effect (see the module doc).
    ends: Vec<usize>,
    value: Option<String>,
}

impl Put {
    /// It had completed before `records[i]` (by clocks).
    fn completed_before(&self, ctx: &Ctx<'_>, i: usize) -> bool {
        self.ends.iter().any(|&e| ctx.hb(e, i))
    }
}

/// `Value` with the empty string read as "no value".
fn value(r: &Record) -> Option<String> {
    r.field("Value").filter(|v| !v.is_empty())
}

/// (client host, OpId) of an operation record.
fn op_key(r: &Record) -> Option<(&str, String)> {
    Some((r.tracer_identity.as_str(), r.field("OpId")?))
}

/// First record with `tag` per (client host, OpId).
fn by_op<'a>(ctx: &Ctx<'a>, tag: &str) -> HashMap<(&'a str, String), usize> {
    let mut map = HashMap::new();
    for (i, r) in ctx.records.iter().enumerate() {
        if r.tag == tag
            && let Some(k) = op_key(r)
        {
            map.entry(k).or_insert(i);
        }
    }
    map
}

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let put_results = by_op(ctx, "PutResultRecvd");
    let get_invs = by_op(ctx, "Get");
    let get_results = by_op(ctx, "GetResultRecvd");

    let mut commits: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for i in ctx.tagged("PutCommitted") {
        let r = &ctx.records[i];
        if let (Some(c), Some(op)) = (r.field("ClientId"), r.field("OpId")) {
            commits.entry((c, op)).or_default().push(i);
        }
    }
    let mut puts: HashMap<String, Vec<Put>> = HashMap::new();
    for (i, r) in ctx.records.iter().enumerate() {
        if r.tag != "Put" {
            continue;
        }
        let res = op_key(r).and_then(|k| put_results.get(&k).copied());
        if res.is_none() {
            ctx.warning(
                "put-no-result",
                &[i],
                format!("Put op {} never got a result", r.field("OpId").unwrap_or_default()),
            );
        }
        if let Some(key) = r.field("Key") {
            let mut ends: Vec<usize> = res.into_iter().collect();
            if let (Some(c), Some(op)) = (r.field("ClientId"), r.field("OpId")) {
                ends.extend(commits.get(&(c, op)).into_iter().flatten());
            }
            puts.entry(key).or_default().push(Put { inv: i, ends, value: value(r) });
        }
    }
    for i in ctx.tagged("Get").collect::<Vec<_>>() {
        let r = &ctx.records[i];
        if op_key(r).is_none_or(|k| !get_results.contains_key(&k)) {
            ctx.warning(
                "get-no-result",
                &[i],
                format!("Get op {} never got a result", r.field("OpId").unwrap_or_default()),
            );
        }
    }
    for i in ctx.tagged("GetResultRecvd").collect::<Vec<_>>() {
        let inv = op_key(&ctx.records[i]).and_then(|k| get_invs.get(&k).copied());
        check_read(ctx, &puts, i, inv);
    }
    unfinished_requests(ctx);
}

fn check_read(ctx: &mut Ctx<'_>, puts: &HashMap<String, Vec<Put>>, r: usize, inv: Option<usize>) {
    let read = &ctx.records[r];
    let Some(key) = read.field("Key") else {
        return;
    };
    let v = value(read);
    let none = Vec::new();
    let on_key = puts.get(&key).unwrap_or(&none);
    // Candidates (None: the initial empty value).
    let mut candidates: Vec<Option<&Put>> =
        on_key.iter().filter(|p| p.value == v && !ctx.hb(r, p.inv)).map(Some).collect();
    if v.is_none() {
        candidates.push(None);
    }
    let shown = v.as_deref().unwrap_or("");
    if candidates.is_empty() {
        ctx.error("read-unwritten", &[r], format!("read {key}={shown:?}, a value no Put wrote before the read"));
        return;
    }
    // Without the get's invocation we cannot tell when the read began.
    let Some(g) = inv else {
        return;
    };
    let overwrites: Vec<&Put> = on_key.iter().filter(|w| w.value != v && w.completed_before(ctx, g)).collect();
    let mut witness = None;
    for c in &candidates {
        let over = overwrites.iter().find(|w| match c {
            None => true,
            Some(c) => c.completed_before(ctx, w.inv),
        });
        match over {
            None => return,
            Some(w) => witness = Some((c.map(|c| c.inv), w.inv)),
        }
    }
    if let Some((c, w)) = witness {
        let mut at = vec![r, g];
        at.extend(c);
        at.push(w);
        let newer = value(&ctx.records[w]).unwrap_or_default();
        ctx.error(
            "stale-read",
            &at,
            format!("stale read: {key}={shown:?}, but Put {key}={newer:?} completed after it was written and before the Get began"),
        );
    }
}

/// `PutRecvd`/`GetRecvd` at a server with no `PutCommitted`/`GetCommitted`
/// for the same client operation there, unless that server failed.
fn unfinished_requests(ctx: &mut Ctx<'_>) {
    let records = ctx.records;
    // A server host's id, from its own records, and the failed ids.
    let mut server_id: HashMap<&str, String> = HashMap::new();
    for r in records {
        if matches!(r.tag.as_str(), "ServerStart" | "ServerJoining")
            && let Some(id) = r.field("ServerId")
        {
            server_id.insert(r.tracer_identity.as_str(), id);
        }
    }
    let failed: HashSet<String> = ctx.tagged("ServerFail").filter_map(|i| records[i].field("ServerId")).collect();
    for (recvd, committed) in [("PutRecvd", "PutCommitted"), ("GetRecvd", "GetCommitted")] {
        let key = |r: &Record| Some((r.tracer_identity.clone(), r.field("ClientId")?, r.field("OpId")?));
        let done: HashSet<_> = ctx.tagged(committed).filter_map(|i| key(&records[i])).collect();
        let mut reported = HashSet::new();
        for i in ctx.tagged(recvd).collect::<Vec<_>>() {
            let r = &records[i];
            let Some(k) = key(r) else { continue };
            let host_failed = server_id.get(r.tracer_identity.as_str()).is_some_and(|id| failed.contains(id));
            if host_failed || done.contains(&k) || !reported.insert(k.clone()) {
                continue;
            }
            ctx.warning(
                "request-uncommitted",
                &[i],
                format!("{recvd} of client {} op {} has no {committed} on {}, which did not fail", k.1, k.2, k.0),
            );
        }
    }
}
