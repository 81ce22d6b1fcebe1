//! What the clients ask for: Gets, Puts, Appends and CompareAndSwaps (and
//! a few Deletes) over a handful of keys, every written value unique.
//!
//! - Unique values make the history checkable: a read names the one write
//!   it saw, and an Append's token shows up exactly once if it took effect
//!   exactly once.
//! - Keys rotate, Jepsen-style: each of [`KEY_SLOTS`] slots hands out a
//!   fresh key every [`OPS_PER_KEY`] operations. Operations with unknown
//!   outcome stay concurrent with everything after them, and the checker's
//!   cost grows with how many a key has; rotating bounds that per key, so a
//!   thirty-minute run checks as fast as a short one.
//! - A CompareAndSwap usually expects the value this client last saw, so
//!   swaps succeed often enough to matter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kvslib::{ClientError, Op, Value};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::schedule;

/// How many keys are in use at once.
pub const KEY_SLOTS: usize = 5;
/// Operations (by all clients) on one key before its slot moves on.
pub const OPS_PER_KEY: u64 = 250;

/// The key slots, shared by every client.
pub struct KeySpace {
    issued: Vec<AtomicU64>,
}

impl Default for KeySpace {
    fn default() -> Self {
        KeySpace { issued: (0..KEY_SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl KeySpace {
    /// The key for one more operation on `slot`.
    fn take(&self, slot: usize) -> String {
        let n = self.issued[slot].fetch_add(1, Ordering::Relaxed);
        format!("k{slot}.{}", n / OPS_PER_KEY)
    }
}

/// One client's stream of operations.
pub struct Workload {
    rng: ChaCha8Rng,
    client: u64,
    seq: u64,
    /// What this client last saw each key hold (absent: it does not know).
    known: HashMap<String, Option<String>>,
}

impl Workload {
    /// Client `client` (1-based) of a run with `seed`.
    pub fn new(seed: u64, client: u64) -> Workload {
        Workload { rng: schedule::rng(seed, schedule::NEMESIS_STREAM + client), client, seq: 0, known: HashMap::new() }
    }

    pub fn next(&mut self, keys: &KeySpace) -> Op {
        let key = keys.take(self.rng.random_range(0..KEY_SLOTS));
        self.seq += 1;
        let tag = format!("{}.{}", self.client, self.seq);
        match self.rng.random_range(0..100) {
            0..30 => Op::Get { key },
            30..50 => Op::Put { key, value: format!("p{tag}") },
            50..72 => Op::Append { key, value: format!("a{tag};") },
            72..97 => {
                let expected = match self.known.get(&key) {
                    Some(v) if self.rng.random_bool(0.85) => v.clone(),
                    _ => None,
                };
                Op::Cas { key, expected, new: format!("c{tag}") }
            }
            _ => Op::Delete { key },
        }
    }

    /// Learns from an outcome what the key now holds (or forgets it).
    pub fn observe(&mut self, op: &Op, result: &Result<Value, ClientError>) {
        let key = op.key().to_owned();
        let now = match (op, result) {
            (_, Ok(Value::Value(v))) => Some(v.clone()),
            (Op::Put { value, .. }, Ok(Value::Done)) => Some(Some(value.clone())),
            (Op::Delete { .. }, Ok(Value::Done)) => Some(None),
            (Op::Cas { new, .. }, Ok(Value::Cas { swapped: true })) => Some(Some(new.clone())),
            _ => None,
        };
        match now {
            Some(v) => self.known.insert(key, v),
            None => self.known.remove(&key),
        };
    }

    /// A short think time between operations: a few hundred operations a
    /// second in all, plenty to catch anomalies without drowning the
    /// two-core machines this runs on.
    pub fn think(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(0..=10))
    }

    /// A longer pause after a failure, so a client facing an unavailable
    /// cluster does not pile up operations of unknown outcome.
    pub fn back_off(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(100..=300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unique_and_keys_rotate() {
        let keys = KeySpace::default();
        let mut a = Workload::new(5, 1);
        let mut b = Workload::new(5, 2);
        let mut seen = std::collections::HashSet::new();
        let mut key_names = std::collections::HashSet::new();
        for _ in 0..5000 {
            for w in [&mut a, &mut b] {
                let op = w.next(&keys);
                key_names.insert(op.key().to_owned());
                let v = match op {
                    Op::Put { value, .. } | Op::Append { value, .. } => value,
                    Op::Cas { new, .. } => new,
                    _ => continue,
                };
                assert!(seen.insert(v));
            }
        }
        // 10000 ops over 5 slots of 250 ops each: 40 keys, one more per
        // slot whose count does not end on a multiple of 250.
        assert!((40..=45).contains(&key_names.len()), "{}", key_names.len());
    }

    #[test]
    fn cas_expects_what_was_seen() {
        let keys = KeySpace::default();
        let mut w = Workload::new(1, 1);
        let mut expected_seen = 0;
        for _ in 0..2000 {
            let op = w.next(&keys);
            if let Op::Cas { expected: Some(_), .. } = &op {
                expected_seen += 1;
            }
            let r = match &op {
                Op::Get { key } => Ok(Value::Value(Some(format!("v-{key}")))),
                Op::Cas { .. } => Ok(Value::Cas { swapped: true }),
                _ => Ok(Value::Done),
            };
            w.observe(&op, &r);
        }
        assert!(expected_seen > 100, "{expected_seen}");
    }
}
