//! `kvraft`: the one front door. Each subcommand is a process or a tool of
//! the system; each lives in its own module under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "kvraft",
    version,
    about = "A replicated, linearizable key-value store you can watch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coord: join, failure detection, leader selection.
    Coord(cmd::coord::Args),
    /// Run one server of the cluster.
    Server(cmd::server::Args),
    /// Run seeded simulations of whole clusters under faults and check them.
    Sim(cmd::sim::Args),
    /// Check a history (JSON lines) for linearizability.
    Lincheck(cmd::lincheck::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Coord(args) => cmd::coord::run(args),
        Command::Server(args) => cmd::server::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::Lincheck(args) => cmd::lincheck::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvraft: {e:#}");
            ExitCode::from(2)
        }
    }
}
