//! `kvraft`: the one front door. Each subcommand is a process or a tool of
//! the system; each lives in its own module under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod local;

#[derive(Parser)]
#[command(name = "kvraft", version, about = "A replicated, linearizable key-value store you can watch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The seed's story in one command: a cluster, two clients, a failure, the failover.
    Demo(cmd::demo::Args),
    /// Fault injection with real partitions (network namespaces; root): a seeded nemesis and a linearizability check.
    Faults(cmd::faults::Args),
    /// Load generator: throughput and latency percentiles; `bench failover`.
    Bench(cmd::bench::Args),
    /// A local cluster in the background: up, down, status.
    Cluster(cmd::cluster::Args),
    /// Run the prototype's client workload through kvslib, checking every result.
    Client(cmd::client::Args),
    /// Admin and one-shot client: get, put, del, status, log.
    Ctl(cmd::ctl::Args),
    /// Run the coord: join, failure detection, leader selection.
    Coord(cmd::coord::Args),
    /// Run one server of the cluster.
    Server(cmd::server::Args),
    /// Run the tracing server: collects every process's trace records.
    TracingServer(cmd::trace::ServerArgs),
    /// Check or draw a recorded trace.
    Trace(cmd::trace::TraceArgs),
    /// Run seeded simulations of whole clusters under faults and check them.
    Sim(cmd::sim::Args),
    /// Check a history (JSON lines) for linearizability.
    Lincheck(cmd::lincheck::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Lincheck(_) | Command::Trace(_) | Command::Sim(_)) {
        // Like any Unix tool: a closed pipe (`kvraft trace check t | head`)
        // ends the process quietly. Only for these printing tools, which
        // open no sockets: a server or coord must survive writing to a
        // peer that just died (EPIPE), and so must `kvraft ctl`, which
        // ends quietly on a closed pipe by itself (cmd/ctl.rs).
        // SAFETY: restoring a signal's default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Faults(args) => cmd::faults::run(args),
        Command::Cluster(args) => cmd::cluster::run(args),
        Command::Client(args) => cmd::client::run(args),
        Command::Ctl(args) => cmd::ctl::run(args),
        Command::Coord(args) => cmd::coord::run(args),
        Command::Server(args) => cmd::server::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::TracingServer(args) => cmd::trace::server(args),
        Command::Trace(args) => cmd::trace::trace(args),
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
