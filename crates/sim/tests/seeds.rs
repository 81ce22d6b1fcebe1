//! The simulation as part of `cargo test`: hundreds of seeds per cluster
//! size, each with every fault of the simulator, all invariants checked after
//! every step and the history checked for linearizability.

use kvraft_sim::run_seed;

fn run(nodes: u64, seeds: std::ops::Range<u64>) {
    let mut ops = 0;
    let mut failures = Vec::new();
    for seed in seeds.clone() {
        let r = run_seed(seed, Some(nodes));
        ops += r.ops;
        if !r.violations.is_empty() {
            failures.push(format!(
                "seed {seed} ({} violations, first: {}); replay: kvraft sim --seed {seed} --seeds 1 --nodes {nodes} --verbose",
                r.violations.len(),
                r.violations[0]
            ));
        }
    }
    assert!(ops > 10 * seeds.count(), "the clients did almost nothing: {ops} ops");
    assert!(failures.is_empty(), "{} failing seeds:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn three_servers_2000_seeds() {
    run(3, 0..2000);
}

#[test]
fn five_servers_2000_seeds() {
    run(5, 10_000..12_000);
}

#[test]
fn seven_servers_2000_seeds() {
    run(7, 20_000..22_000);
}

/// A seed replays exactly: same events, same messages, same history.
#[test]
fn a_seed_is_deterministic() {
    let a = run_seed(42, None);
    let b = run_seed(42, None);
    assert_eq!((a.ops, a.ops_completed, a.messages, a.sim_ms), (b.ops, b.ops_completed, b.messages, b.sim_ms));
    assert!(a.messages > 0);
}

/// The coord crashes in some seeds, mostly losing its state file; the
/// servers then join again on their own, and a restarted coord keeps a live
/// leader when one leads the highest term, or, when some servers stay
/// away, goes on with a majority after the rejoin grace. Every such seed passes the
/// checks above; this makes sure the fault and the recovery happen at all.
#[test]
fn the_coord_loses_its_state_and_the_cluster_recovers() {
    let (mut losses, mut seeds_with_loss, mut rejoins, mut kept, mut partial) = (0, 0, 0, 0, 0);
    for seed in 0..300 {
        let r = run_seed(seed, None);
        assert!(r.violations.is_empty(), "seed {seed}: {}", r.violations[0]);
        losses += r.coord_state_losses;
        seeds_with_loss += u64::from(r.coord_state_losses > 0);
        rejoins += r.rejoins;
        kept += r.rediscovery_kept_leader;
        partial += r.partial_rejoins;
    }
    assert!(seeds_with_loss >= 30, "only {seeds_with_loss} of 300 seeds lost the coord's state");
    assert!(losses > 0 && rejoins > 0 && kept > 0, "losses {losses}, rejoins {rejoins}, leaders kept {kept}");
    // Some coords went on with a majority after the rejoin grace.
    assert!(partial > 0, "no join completed without every server");
}
