//! Shared by the integration tests: terse constructors for hand-written
//! histories, and a simulated linearizable register for random ones.

#![allow(dead_code)] // each test binary uses a different subset

use kvraft_lincheck::{Op, Operation, Output};
use rand::Rng;

pub fn done(client: u64, key: &str, op: Op, call: u64, ret: u64, output: Output) -> Operation {
    Operation { client, key: key.to_owned(), op, call, ret: Some(ret), output: Some(output) }
}

pub fn pending(client: u64, key: &str, op: Op, call: u64) -> Operation {
    Operation { client, key: key.to_owned(), op, call, ret: None, output: None }
}

pub fn put_op(v: &str) -> Op {
    Op::Put { value: v.to_owned() }
}

pub fn append_op(v: &str) -> Op {
    Op::Append { value: v.to_owned() }
}

pub fn cas_op(expected: Option<&str>, new: &str) -> Op {
    Op::Cas { expected: expected.map(str::to_owned), new: new.to_owned() }
}

pub fn value(v: Option<&str>) -> Output {
    Output::Value { value: v.map(str::to_owned) }
}

pub fn put(client: u64, key: &str, v: &str, call: u64, ret: u64) -> Operation {
    done(client, key, put_op(v), call, ret, Output::Ok)
}

pub fn append(client: u64, key: &str, v: &str, call: u64, ret: u64) -> Operation {
    done(client, key, append_op(v), call, ret, Output::Ok)
}

pub fn delete(client: u64, key: &str, call: u64, ret: u64) -> Operation {
    done(client, key, Op::Delete, call, ret, Output::Ok)
}

pub fn get(client: u64, key: &str, v: Option<&str>, call: u64, ret: u64) -> Operation {
    done(client, key, Op::Get, call, ret, value(v))
}

pub fn cas(client: u64, key: &str, expected: Option<&str>, new: &str, swapped: bool, call: u64, ret: u64) -> Operation {
    done(client, key, cas_op(expected, new), call, ret, Output::Cas { swapped })
}

/// Which values the simulated clients write.
#[derive(Clone, Copy)]
pub enum Values {
    /// From a tiny alphabet, so that different writes collide and the
    /// search has to consider many orders.
    Small,
    /// Every write unique: puts write `v<i>`, appends `+<i>`, cas `c<i>`,
    /// so a put's value can never be recreated by another operation.
    Unique,
}

pub struct Sim {
    pub clients: u64,
    pub keys: Vec<String>,
    pub ops: usize,
    /// Chance that a client never hears back (the op then takes effect at a
    /// random instant or not at all, with equal odds).
    pub pending: f64,
    /// Largest pause between a client's operations.
    pub max_gap: u64,
    /// Largest call-to-return time.
    pub max_duration: u64,
    pub values: Values,
}

const SMALL: [&str; 3] = ["a", "b", "c"];

/// Generates a linearizable history: each client issues operations one
/// after another; each operation takes effect at a random instant strictly
/// inside its [call, ret] interval, and outputs come from applying the
/// operations to a real register in that order.
pub fn simulate(rng: &mut impl Rng, sim: &Sim) -> Vec<Operation> {
    // Time unit for linearization points, so they fall strictly inside
    // [call, ret] even when call and ret are adjacent integers.
    const SUB: u64 = 1024;
    let mut free_at = vec![0u64; sim.clients as usize];
    let mut ops = Vec::with_capacity(sim.ops);
    // (linearization point, op index); None = never takes effect.
    let mut points: Vec<(u64, usize)> = Vec::new();
    let mut last_put: Vec<Option<String>> = vec![None; sim.keys.len()];
    for i in 0..sim.ops {
        let client = (0..sim.clients as usize).min_by_key(|&c| (free_at[c], c)).unwrap_or(0);
        let call = free_at[client] + rng.random_range(0..=sim.max_gap);
        let ret = call + rng.random_range(1..=sim.max_duration);
        free_at[client] = ret;
        let k = rng.random_range(0..sim.keys.len());
        let pick = |rng: &mut dyn rand::RngCore, tag: &str| -> String {
            match sim.values {
                Values::Small => SMALL[rng.random_range(0..SMALL.len())].to_owned(),
                Values::Unique => format!("{tag}{i}"),
            }
        };
        let op = match rng.random_range(0..100) {
            0..35 => Op::Get,
            35..60 => {
                let v = pick(rng, "v");
                last_put[k] = Some(v.clone());
                Op::Put { value: v }
            }
            60..70 => Op::Append { value: pick(rng, "+") },
            70..78 => Op::Delete,
            _ => {
                let expected = match sim.values {
                    Values::Small => match rng.random_range(0..4) {
                        0 => None,
                        n => Some(SMALL[n - 1].to_owned()),
                    },
                    Values::Unique if rng.random_bool(0.7) => last_put[k].clone(),
                    Values::Unique => None,
                };
                let new = pick(rng, "c");
                Op::Cas { expected, new }
            }
        };
        let is_pending = rng.random_bool(sim.pending);
        if !is_pending || rng.random_bool(0.5) {
            let point = call * SUB + rng.random_range(1..(ret - call) * SUB);
            points.push((point, i));
        }
        ops.push(Operation {
            client: client as u64,
            key: sim.keys[k].clone(),
            op,
            call,
            ret: (!is_pending).then_some(ret),
            output: None,
        });
    }

    points.sort_unstable();
    let mut register: Vec<Option<String>> = vec![None; sim.keys.len()];
    for (_, i) in points {
        let k = sim.keys.iter().position(|k| *k == ops[i].key).unwrap_or(0);
        let current = &mut register[k];
        let output = match &ops[i].op {
            Op::Get => Output::Value { value: current.clone() },
            Op::Put { value } => {
                *current = Some(value.clone());
                Output::Ok
            }
            Op::Delete => {
                *current = None;
                Output::Ok
            }
            Op::Append { value } => {
                let mut joined = current.take().unwrap_or_default();
                joined.push_str(value);
                *current = Some(joined);
                Output::Ok
            }
            Op::Cas { expected, new } => {
                let swapped = current == expected;
                if swapped {
                    *current = Some(new.clone());
                }
                Output::Cas { swapped }
            }
        };
        if ops[i].ret.is_some() {
            ops[i].output = Some(output);
        }
    }
    ops
}
