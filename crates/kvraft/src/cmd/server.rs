//! `kvraft server {server-id}`: runs one server of the cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kvraft_server::ServerConfig;

#[derive(clap::Args)]
pub struct Args {
    /// This server's id (1 to 7).
    id: u64,
    /// The config file [default: config/server_config{id}.json]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the config's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.config.unwrap_or_else(|| PathBuf::from(format!("config/server_config{}.json", args.id)));
    let mut cfg = ServerConfig::load(&path)?;
    if cfg.server_id != args.id {
        anyhow::bail!("{} is the config of server {}, not {}", path.display(), cfg.server_id, args.id);
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = Some(d);
    }
    crate::cmd::init_logging();
    crate::cmd::stop_on_panic("server");
    // One thread runs the event loop and all network I/O; the disk thread
    // is the only other. Measured: half the context switches per write of
    // a multi-threaded runtime, whose workers wake each other for every
    // task handed across (and context switches dominate the servers' CPU
    // profile on this kind of machine).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        eprintln!(
            "kvraft server {}: peers on {}, coord on {}, clients on {}, data in {}",
            cfg.server_id,
            cfg.server_server_addr,
            cfg.server_listen_addr,
            cfg.client_listen_addr,
            cfg.data_dir().display()
        );
        kvraft_server::run(cfg, crate::cmd::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
