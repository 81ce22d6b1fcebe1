//! Per-host clock discipline.
//!
//! A host's records appear in the file in the order it made them (one
//! connection per tracer, FIFO to the file), so consecutive records of one
//! host must show its clock moving forward: its own entry strictly grows
//! and no other entry decreases.
//!
//! Not errors: a jump of the own entry by more than one (records dropped by
//! the tracer: a warning), and a clock that starts again at `{host: 1}`
//! (the process restarted under the same identity: a warning, and the
//! comparison starts afresh).

use std::collections::HashMap;

use super::Ctx;

pub(super) fn check(ctx: &mut Ctx<'_>) {
    let records = ctx.records;
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let host = r.tracer_identity.as_str();
        let own = r.vector_clock.get(host);
        if own == 0 {
            ctx.error(
                "clock-own-entry",
                &[i],
                format!("clock {} has no entry for its own host {host}", r.vector_clock),
            );
            continue;
        }
        let Some(&p) = last.get(host) else {
            if own > 1 {
                ctx.warning(
                    "records-missing",
                    &[i],
                    format!("first record of {host} has own entry {own}: {} earlier records missing", own - 1),
                );
            }
            last.insert(host, i);
            continue;
        };
        last.insert(host, i);
        let prev = &records[p].vector_clock;
        let prev_own = prev.get(host);
        if own == 1 && r.vector_clock.len() == 1 && prev_own > 1 {
            ctx.warning("host-restart", &[i, p], format!("{host}'s clock starts again at 1: the process restarted"));
            continue;
        }
        if own <= prev_own {
            ctx.error("clock-monotonic", &[i, p], format!("own entry {host:?} did not grow: {prev_own} then {own}"));
        } else if own > prev_own + 1 {
            ctx.warning(
                "records-missing",
                &[i, p],
                format!(
                    "own entry {host:?} jumps from {prev_own} to {own}: {} records of {host} missing",
                    own - prev_own - 1
                ),
            );
        }
        for (id, v) in prev.iter() {
            let now = r.vector_clock.get(id);
            if id != host && now < v {
                ctx.error("clock-monotonic", &[i, p], format!("entry {id:?} decreased from {v} to {now}"));
            }
        }
    }
}
