//! Prints the nemesis schedule a seed gives, without running anything:
//!
//! ```console
//! cargo run -p kvraft-faults --example plan -- SEED SECS [SERVERS] [CLIENTS]
//! ```

use std::time::Duration;

fn main() {
    let args: Vec<u64> =
        std::env::args().skip(1).map(|a| a.parse().expect("numbers: SEED SECS [SERVERS] [CLIENTS]")).collect();
    let seed = args.first().copied().unwrap_or(0);
    let secs = args.get(1).copied().unwrap_or(60);
    let servers = args.get(2).copied().unwrap_or(5);
    let clients = args.get(3).copied().unwrap_or(4);
    let steps = kvraft_faults::schedule::generate(seed, servers, clients, Duration::from_secs(secs), &[]);
    for s in steps {
        println!("at {:>6.2}s hold {:>4.2}s  {:?}", s.at.as_secs_f64(), s.hold.as_secs_f64(), s.fault);
    }
}
