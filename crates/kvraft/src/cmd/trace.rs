//! `kvraft tracing-server` and `kvraft trace check|view`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// The config file (ServerBind, Secret, OutputFile, ShivizOutputFile).
    #[arg(long, default_value = "config/tracing_server_config.json")]
    config: PathBuf,
}

/// Runs the tracing server until SIGINT or SIGTERM; the output files are
/// always whole lines.
pub fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let cfg = kvraft_trace::TracingServerConfig::from_file(&args.config).map_err(|e| anyhow!("{e}"))?;
    crate::cmd::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let stats = rt.block_on(async move {
        eprintln!(
            "kvraft tracing-server: listening on {}, writing {} and {}",
            cfg.server_bind,
            cfg.output_file.display(),
            cfg.shiviz_output_file.display()
        );
        kvraft_trace::run_tracing_server(cfg, crate::cmd::shutdown_signal()).await
    });
    let stats = stats.map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "kvraft tracing-server: {} records from {} tracers ({:.0} records/s)",
        stats.records,
        stats.tracers_accepted,
        stats.records_per_sec()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Check a trace_output.log: safety properties (errors) and completeness (warnings).
    Check {
        file: PathBuf,
        /// Fail on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Draw a trace as one self-contained HTML page (no network needed).
    View {
        file: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
}

pub fn trace(args: TraceArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Check { file, strict } => {
            let records = kvraft_trace::parse_trace_file(&file).map_err(|e| anyhow!("{e}"))?;
            let report = kvraft_trace::check(&records, strict);
            println!("{report}");
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        What::View { file, output } => {
            let records = kvraft_trace::parse_trace_file(&file).map_err(|e| anyhow!("{e}"))?;
            std::fs::write(&output, kvraft_trace::render_html(&records))
                .with_context(|| format!("cannot write {}", output.display()))?;
            println!("wrote {} ({} events)", output.display(), records.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
