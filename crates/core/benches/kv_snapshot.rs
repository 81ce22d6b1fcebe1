//! The key-value state machine at a million keys: applies per second, and
//! what a snapshot costs the event loop (a clone) against what it costs the
//! thread that encodes it, and what a received one costs a follower's loop.
//! Prints numbers; asserts nothing.
//!
//! `cargo bench -p kvraft-core --bench kv_snapshot [-- KEYS]`

use std::time::Instant;

use kvraft_core::kv::{Command, KvStore, Op};
use kvraft_core::{Entry, Payload};

fn put(index: u64, keys: u64, value: &str) -> Entry {
    let cmd = Command {
        client_id: format!("c{}", index % 64),
        session: 1,
        op_id: index,
        first_unacked: index,
        op: Op::Put { key: format!("key{:08}", (index * 7919) % keys), value: value.into() },
    };
    Entry { term: 1, index, payload: Payload::Command(cmd) }
}

fn main() {
    let keys: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let (first, second) = ("x".repeat(100), "y".repeat(100));
    let mut kv = KvStore::new();
    for (round, value) in [(0, &first), (1, &second)] {
        let entries: Vec<Entry> = (1..=keys).map(|i| put(round * keys + i, keys, value)).collect();
        let t = Instant::now();
        for e in &entries {
            kv.apply(e);
        }
        let s = t.elapsed().as_secs_f64();
        let what = if round == 0 { "inserts" } else { "overwrites" };
        println!("{keys} {what}: {:.0} applies/s ({:.2} us each)", keys as f64 / s, s * 1e6 / keys as f64);
    }
    let mut bytes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let frozen = kv.clone();
        let clone = t.elapsed();
        let t = Instant::now();
        bytes = frozen.snapshot();
        let encode = t.elapsed();
        println!(
            "snapshot of {} keys: clone (on the loop) {clone:?}, encode (off the loop) {encode:?}, {} MiB",
            kv.len(),
            bytes.len() >> 20
        );
    }
    // What a follower's loop does with a snapshot received from the leader:
    // decode it, and drop the store it replaces.
    for _ in 0..3 {
        let t = Instant::now();
        let restored = KvStore::restore(&bytes).expect("a snapshot just encoded decodes");
        let restore = t.elapsed();
        let t = Instant::now();
        drop(restored);
        println!(
            "received snapshot of {} keys: decode {restore:?}, drop the replaced store {:?}",
            kv.len(),
            t.elapsed()
        );
    }
}
