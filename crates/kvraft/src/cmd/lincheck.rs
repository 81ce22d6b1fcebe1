//! `kvraft lincheck FILE`: checks a history written as JSON lines.

use std::path::PathBuf;
use std::process::ExitCode;

use kvraft_lincheck::{Verdict, check_file};

#[derive(clap::Args)]
pub struct Args {
    /// A history: one operation per line, as documented in the kvraft-lincheck crate.
    file: PathBuf,
}

/// Exit 0 if linearizable, 1 if not (or undecided), 2 on unreadable input.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = check_file(&args.file)?;
    println!("{report}");
    Ok(match report.verdict {
        Verdict::Linearizable => ExitCode::SUCCESS,
        Verdict::NotLinearizable(_) | Verdict::Unknown => ExitCode::from(1),
    })
}
