//! Runs the harness from the command line until `kvraft faults` is wired:
//!
//! ```console
//! cargo run -p kvraft-faults --example faults -- --time 60 --seed 7 --servers 5
//! ```
//!
//! Flags: `--time SECS`, `--seed S`, `--servers N`, `--clients N`,
//! `--dir DIR` (default `faults-run`), `--bin PATH` (default
//! `target/debug/kvraft`). Exit 0 if the run passed, 1 if not, 2 on error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut opts = kvraft_faults::Options { progress: true, ..Default::default() };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let (flag, value) = (pair[0].as_str(), pair.get(1).map(String::as_str));
        let Some(value) = value else {
            eprintln!("{flag} needs a value");
            return ExitCode::from(2);
        };
        let num = || value.parse::<u64>();
        let ok = match flag {
            "--time" => num().map(|s| opts.duration = Duration::from_secs(s)).is_ok(),
            "--seed" => num().map(|s| opts.seed = s).is_ok(),
            "--servers" => num().map(|s| opts.servers = s).is_ok(),
            "--clients" => num().map(|s| opts.clients = s).is_ok(),
            "--dir" => {
                opts.work_dir = PathBuf::from(value);
                true
            }
            "--bin" => {
                opts.kvraft_bin = PathBuf::from(value);
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!("bad flag or value: {flag} {value}");
            return ExitCode::from(2);
        }
    }
    match kvraft_faults::run(&opts) {
        Ok(report) => {
            println!("{report}");
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("kvraft faults: {e:#}");
            ExitCode::from(2)
        }
    }
}
