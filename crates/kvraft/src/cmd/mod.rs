//! One module per subcommand, plus what the process subcommands share.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod coord;
pub mod ctl;
pub mod demo;
pub mod faults;
pub mod lincheck;
pub mod server;
pub mod sim;
pub mod trace;

/// Logs to standard error, `info` and up unless RUST_LOG says otherwise.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Makes a panic on any thread stop the whole process (fail-stop), as a
/// storage error does. Otherwise a panicking task or helper thread would
/// die alone and leave the process half alive: a server without its event
/// loop still answering heartbeats, or one whose snapshot thread never
/// reports back and whose log then never compacts. A panic is a bug, never
/// an answer to bad input; crashing is what Raft tolerates.
pub fn stop_on_panic(process: &'static str) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("kvraft {process}: a thread panicked, stopping");
        std::process::exit(101);
    }));
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
