//! Commands per second through an in-memory 3-server cluster of cores:
//! every message delivered, every Ready persisted (in memory) and applied.
//! One command per round ("unbatched") against many commands per round
//! ("batched"), where one AppendEntries carries them all.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kvraft_core::Config;
use kvraft_core::kv::Op;

#[path = "../tests/support/mod.rs"]
mod support;
use support::Cluster;

fn cluster(max_entries_per_msg: usize) -> Cluster {
    let mut c = Cluster::with_config(
        0,
        &[vec![], vec![], vec![]],
        match max_entries_per_msg {
            1 => |id| Config { max_entries_per_msg: 1, ..Config::new(id) },
            _ => Config::new,
        },
    );
    c.designate(1, 1);
    c
}

fn throughput(crit: &mut Criterion) {
    let mut group = crit.benchmark_group("replicate_3_servers");
    for (name, batch, per_msg) in [("unbatched", 1u64, 1usize), ("batched", 64, 512), ("batched", 512, 512)] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(BenchmarkId::new(name, batch), |b| {
            let mut c = cluster(per_msg);
            let mut op_id = 0;
            b.iter(|| {
                for _ in 0..batch {
                    op_id += 1;
                    let op = Op::Put { key: format!("k{}", op_id % 1000), value: "v".repeat(100) };
                    c.propose(1, "bench", op_id, op).expect("leader");
                }
                c.run();
                assert_eq!(c.node(2).commit_index(), c.node(1).log().last_index());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
