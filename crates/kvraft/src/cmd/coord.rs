//! `kvraft coord`: runs the coord.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kvraft_coord::CoordConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, default_value = "config/coord_config.json")]
    config: PathBuf,
    /// Override the config's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = CoordConfig::load(&args.config)?;
    if let Some(d) = args.data_dir {
        cfg.data_dir = Some(d);
    }
    crate::cmd::init_logging();
    crate::cmd::stop_on_panic("coord");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        eprintln!(
            "kvraft coord: {} servers, servers join on {}, clients on {}, state in {}",
            cfg.num_servers,
            cfg.server_api_listen_addr,
            cfg.client_api_listen_addr,
            cfg.data_dir().display()
        );
        kvraft_coord::run(cfg, crate::cmd::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
