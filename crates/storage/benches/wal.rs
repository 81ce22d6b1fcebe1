//! Durable append throughput under group commit, beside the raw fdatasync
//! rate of this machine's disk.
//!
//! `cargo bench -p kvraft-storage`. Each append is one 100-byte entry (the
//! postcard encoding; 109 bytes with the record header) submitted as its
//! own job and waited for, by 1, 16 or 128 concurrent writers, with
//! `FsyncPolicy::Always`. With one writer appends/s can be at most the raw
//! fdatasync rate; group commit lets more writers share each sync. The data
//! directory is under `target/tmp`, on the build's disk (`/tmp` may be a
//! tmpfs, where fsync is free).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kvraft_core::kv::{Command, Op};
use kvraft_core::{Entry, Index, Payload};
use kvraft_storage::{GroupCommit, Job, Storage, StorageOptions};

const ENTRY_BYTES: usize = 100;
const WRITERS: [u64; 3] = [1, 16, 128];

/// Totals over every timed run (warm-up included), for the summary.
#[derive(Clone, Copy, Default)]
struct Totals {
    appends: u64,
    syncs: u64,
    elapsed: Duration,
}

static RAW: Mutex<Totals> = Mutex::new(Totals { appends: 0, syncs: 0, elapsed: Duration::ZERO });
static GROUPED: Mutex<Vec<(u64, Totals)>> = Mutex::new(Vec::new());

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

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_commit");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    for writers in WRITERS {
        let dir = bench_dir();
        let (storage, _) = Storage::open(dir.path(), StorageOptions::default()).expect("open");
        let gc = GroupCommit::new(storage).expect("group commit");
        // Indexes are handed out in submission order under one lock, as the
        // server's single shell would; the wait is outside it.
        let next: Mutex<Index> = Mutex::new(1);
        let mut totals = Totals::default();
        group.bench_with_input(BenchmarkId::from_parameter(writers), &writers, |b, &w| {
            b.iter_custom(|iters| {
                let before = gc.stats();
                let start = Barrier::new(w as usize + 1);
                let elapsed = thread::scope(|scope| {
                    for k in 0..w {
                        let (gc, next, start) = (&gc, &next, &start);
                        let mine = iters / w + u64::from(k < iters % w);
                        scope.spawn(move || {
                            start.wait();
                            for _ in 0..mine {
                                let pending = {
                                    let mut next = next.lock().expect("lock");
                                    let entries = vec![entry(*next)];
                                    *next += 1;
                                    gc.submit(Job { term: None, entries })
                                };
                                pending.wait().expect("durable append");
                            }
                        });
                    }
                    // Thread creation is not timed: the clock starts when
                    // every writer is ready.
                    start.wait();
                    // Returning ends the scope, which joins the writers.
                    Instant::now()
                })
                .elapsed();
                let after = gc.stats();
                totals.appends += after.entries - before.entries;
                totals.syncs += after.syncs - before.syncs;
                totals.elapsed += elapsed;
                elapsed
            })
        });
        GROUPED.lock().expect("lock").push((writers, totals));
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
    println!("{:>8} {:>12} {:>11} {:>15}", "writers", "appends/s", "fsyncs/s", "appends/fsync");
    for (writers, t) in GROUPED.lock().expect("lock").iter() {
        println!(
            "{writers:>8} {:>12.0} {:>11.0} {:>15.1}",
            rate(t.appends, t.elapsed),
            rate(t.syncs, t.elapsed),
            t.appends as f64 / t.syncs.max(1) as f64
        );
    }
}

criterion_group!(benches, raw_fdatasync, group_commit, summary);
criterion_main!(benches);
