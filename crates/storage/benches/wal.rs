//! Durable append throughput with batching, beside the raw fdatasync rate
//! of this machine's disk.
//!
//! `cargo bench -p kvraft-storage`. Each append is one 100-byte entry (the
//! postcard encoding; 109 bytes with the record header), appended in
//! batches of 1, 16 or 128 with one `sync` per batch, under
//! `FsyncPolicy::Always`: what the server's disk thread does with the
//! entries that queued while its previous sync ran (group commit). With
//! batches of one, appends/s can be at most the raw fdatasync rate. The data
//! directory is under `target/tmp`, on the build's disk (`/tmp` may be a
//! tmpfs, where fsync is free).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kvraft_core::kv::{Command, Op};
use kvraft_core::{Entry, Index, Payload};
use kvraft_storage::{Storage, StorageOptions};

const ENTRY_BYTES: usize = 100;
const BATCHES: [u64; 3] = [1, 16, 128];

/// Totals over every timed run (warm-up included), for the summary.
#[derive(Clone, Copy, Default)]
struct Totals {
    appends: u64,
    syncs: u64,
    elapsed: Duration,
}

static RAW: Mutex<Totals> = Mutex::new(Totals { appends: 0, syncs: 0, elapsed: Duration::ZERO });
static BATCHED: Mutex<Vec<(u64, Totals)>> = Mutex::new(Vec::new());

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir under target/tmp")
}

/// An entry whose postcard encoding is exactly `ENTRY_BYTES` long.
fn entry(index: Index) -> Entry {
    let make = |value_len: usize| Entry {
        term: 1,
        index,
        payload: Payload::Command(Command {
            client_id: "bench".into(),
            session: 1,
            op_id: index,
            first_unacked: index,
            op: Op::Put { key: "k".into(), value: "v".repeat(value_len) },
        }),
    };
    let overhead = postcard::to_stdvec(&make(0)).map_or(0, |b| b.len());
    // `overhead` counts the empty value's one-byte length prefix, which
    // stays one byte below 128.
    make(ENTRY_BYTES.saturating_sub(overhead).min(127))
}

fn raw_fdatasync(c: &mut Criterion) {
    let dir = bench_dir();
    let path = dir.path().join("raw.log");
    let mut file = OpenOptions::new().create(true).append(true).open(&path).expect("raw file");
    let bytes = [0x5a_u8; 100];
    let mut group = c.benchmark_group("raw");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    group.bench_function("write_100B_fdatasync", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&bytes).expect("write");
                file.sync_data().expect("fdatasync");
            }
            let elapsed = start.elapsed();
            let mut raw = RAW.lock().expect("lock");
            raw.appends += iters;
            raw.syncs += iters;
            raw.elapsed += elapsed;
            elapsed
        })
    });
    group.finish();
}

fn batched(c: &mut Criterion) {
    let mut group = c.benchmark_group("batched");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    for batch in BATCHES {
        let dir = bench_dir();
        let (mut storage, _) = Storage::open(dir.path(), StorageOptions::default()).expect("open");
        let mut next: Index = 1;
        let mut totals = Totals::default();
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &n| {
            b.iter_custom(|iters| {
                // `iters` appends, `n` to a sync (the last batch may be
                // short); building the entries is not timed.
                let batches: Vec<Vec<Entry>> = (0..iters.div_ceil(n))
                    .map(|k| {
                        let first = next + k * n;
                        (first..first + n.min(iters - k * n)).map(entry).collect()
                    })
                    .collect();
                next += iters;
                let start = Instant::now();
                for entries in &batches {
                    storage.append(entries).expect("append");
                    storage.sync().expect("sync");
                }
                let elapsed = start.elapsed();
                totals.appends += iters;
                totals.syncs += batches.len() as u64;
                totals.elapsed += elapsed;
                elapsed
            })
        });
        BATCHED.lock().expect("lock").push((batch, totals));
    }
    group.finish();
}

fn summary(_: &mut Criterion) {
    let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64().max(1e-9);
    let raw = *RAW.lock().expect("lock");
    let record = postcard::to_stdvec(&entry(1)).map_or(0, |b| b.len()) + 9;
    println!();
    println!(
        "== WAL summary: FsyncPolicy::Always, {ENTRY_BYTES}-byte entries ({record}-byte records), data dir under {}",
        env!("CARGO_TARGET_TMPDIR")
    );
    if raw.syncs > 0 {
        println!(
            "raw write(100 B) + fdatasync: {:>9.0} fdatasync/s ({:.0} us each)",
            rate(raw.syncs, raw.elapsed),
            raw.elapsed.as_secs_f64() * 1e6 / raw.syncs as f64
        );
    }
    println!("{:>8} {:>12} {:>11} {:>15}", "batch", "appends/s", "fsyncs/s", "appends/fsync");
    for (batch, t) in BATCHED.lock().expect("lock").iter() {
        println!(
            "{batch:>8} {:>12.0} {:>11.0} {:>15.1}",
            rate(t.appends, t.elapsed),
            rate(t.syncs, t.elapsed),
            t.appends as f64 / t.syncs.max(1) as f64
        );
    }
}

criterion_group!(benches, raw_fdatasync, batched, summary);
criterion_main!(benches);
