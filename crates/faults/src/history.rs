//! What the clients saw, and how it becomes the checker's history.
//!
//! Each operation is recorded with its invoke and completion times (µs on
//! one monotonic clock shared by every client thread) and one of three
//! outcomes:
//!
//! - **ok**: the server's answer;
//! - **fail**: a definite refusal (BadRequest, Stale): the operation did
//!   not and will not take effect, so it is left out of the checked history;
//! - **unknown**: no answer (Timeout), or the coord said no quorum
//!   (QuorumImpossible) while the command may already be in some leader's
//!   log: it may take effect at any time after its call, or never. Written
//!   with `ret: null`. An unknown Get is left out: it changes nothing, and a
//!   read with no result constrains nothing.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use kvraft_lincheck as lin;
use kvslib::{ClientError, Op, Value};

#[derive(Clone, Debug)]
pub enum Outcome {
    Ok(Value),
    Fail(String),
    Unknown(String),
}

impl Outcome {
    /// Sorts a kvslib result into the three outcomes.
    pub fn of(result: Result<Value, ClientError>) -> Outcome {
        match result {
            Ok(v) => Outcome::Ok(v),
            Err(e @ (ClientError::BadRequest(_) | ClientError::Stale)) => Outcome::Fail(e.to_string()),
            // QuorumImpossible, Timeout, and the client's own troubles
            // (Stopped, Config): nobody knows whether it took effect.
            Err(e) => Outcome::Unknown(e.to_string()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Record {
    pub client: u64,
    pub op: Op,
    /// Invoke and completion, µs since the run started.
    pub call: u64,
    pub ret: u64,
    pub outcome: Outcome,
}

/// The counts the report gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub ops: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

pub fn tally(records: &[Record]) -> Tally {
    let mut t = Tally { ops: records.len(), ..Tally::default() };
    for r in records {
        match r.outcome {
            Outcome::Ok(_) => t.ok += 1,
            Outcome::Fail(_) => t.failed += 1,
            Outcome::Unknown(_) => t.unknown += 1,
        }
    }
    t
}

fn lin_op(op: &Op) -> lin::Op {
    match op {
        Op::Get { .. } => lin::Op::Get,
        Op::Put { value, .. } => lin::Op::Put { value: value.clone() },
        Op::Delete { .. } => lin::Op::Delete,
        Op::Append { value, .. } => lin::Op::Append { value: value.clone() },
        Op::Cas { expected, new, .. } => lin::Op::Cas { expected: expected.clone(), new: new.clone() },
    }
}

fn lin_output(v: &Value) -> lin::Output {
    match v {
        Value::Value(value) => lin::Output::Value { value: value.clone() },
        Value::Done => lin::Output::Ok,
        Value::Cas { swapped } => lin::Output::Cas { swapped: *swapped },
    }
}

/// The history to check, in call order.
pub fn to_operations(records: &[Record]) -> Vec<lin::Operation> {
    let mut ops: Vec<lin::Operation> = records
        .iter()
        .filter_map(|r| {
            let (ret, output) = match &r.outcome {
                Outcome::Ok(v) => (Some(r.ret), Some(lin_output(v))),
                Outcome::Fail(_) => return None,
                Outcome::Unknown(_) if matches!(r.op, Op::Get { .. }) => return None,
                Outcome::Unknown(_) => (None, None),
            };
            Some(lin::Operation {
                client: r.client,
                key: r.op.key().to_owned(),
                op: lin_op(&r.op),
                call: r.call,
                ret,
                output,
            })
        })
        .collect();
    ops.sort_by_key(|o| (o.call, o.client));
    ops
}

/// Writes the checked history as JSON lines (`kvraft lincheck FILE` reads it).
pub fn write_history(path: &Path, ops: &[lin::Operation]) -> anyhow::Result<()> {
    std::fs::write(path, lin::to_jsonl(ops)).with_context(|| format!("writing {}", path.display()))
}

/// Writes every operation, failures and errors included, one per line, for
/// people reading a run afterwards.
pub fn write_ops_log(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.call, r.client));
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?);
    for r in sorted {
        let outcome = match &r.outcome {
            Outcome::Ok(v) => format!("ok {v:?}"),
            Outcome::Fail(e) => format!("FAIL {e}"),
            Outcome::Unknown(e) => format!("UNKNOWN {e}"),
        };
        writeln!(
            f,
            "{:>12.6} {:>12.6} client={} {} -> {outcome}",
            r.call as f64 / 1e6,
            r.ret as f64 / 1e6,
            r.client,
            r.op
        )?;
    }
    f.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: Op, outcome: Outcome, call: u64) -> Record {
        Record { client: 1, op, call, ret: call + 5, outcome }
    }

    #[test]
    fn fails_and_unknown_reads_are_left_out_unknown_writes_stay_open() {
        let get = || Op::Get { key: "k".into() };
        let put = |v: &str| Op::Put { key: "k".into(), value: v.into() };
        let records = vec![
            rec(put("a"), Outcome::Ok(Value::Done), 10),
            rec(put("b"), Outcome::Fail("stale request".into()), 20),
            rec(put("c"), Outcome::Unknown("timeout".into()), 30),
            rec(get(), Outcome::Unknown("timeout".into()), 40),
            rec(get(), Outcome::Ok(Value::Value(Some("c".into()))), 50),
        ];
        let t = tally(&records);
        assert_eq!((t.ops, t.ok, t.failed, t.unknown), (5, 2, 1, 2));
        let ops = to_operations(&records);
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[1].ret, None);
        assert_eq!(ops[1].output, None);
        assert!(lin::check(&ops).verdict.is_linearizable());
        let text = lin::to_jsonl(&ops);
        assert_eq!(lin::parse_jsonl(&text).unwrap(), ops);
    }

    #[test]
    fn definite_and_indefinite_errors() {
        let d = std::time::Duration::from_secs(2);
        assert!(matches!(Outcome::of(Err(ClientError::Stale)), Outcome::Fail(_)));
        assert!(matches!(Outcome::of(Err(ClientError::BadRequest("x".into()))), Outcome::Fail(_)));
        assert!(matches!(Outcome::of(Err(ClientError::Timeout(d))), Outcome::Unknown(_)));
        assert!(matches!(Outcome::of(Err(ClientError::QuorumImpossible("x".into()))), Outcome::Unknown(_)));
    }
}
