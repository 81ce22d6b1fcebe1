//! Checks or draws a recorded trace without building the whole `kvraft`
//! binary (which has the same as `kvraft trace check|view`):
//!
//! ```console
//! cargo run -p kvraft-trace --example trace_tool -- check trace_output.log [--strict]
//! cargo run -p kvraft-trace --example trace_tool -- view trace_output.log trace.html
//! ```
//!
//! `check` exits 1 when the report fails (errors; warnings too with
//! `--strict`), 2 on a usage or input error; every error is one line.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: trace_tool check FILE [--strict] | trace_tool view FILE OUT.html";
    let (Some(cmd), Some(file)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let records = match kvraft_trace::parse_trace_file(file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match (cmd.as_str(), args.get(2)) {
        ("check", flag) => {
            let strict = flag.is_some_and(|f| f == "--strict");
            let report = kvraft_trace::check(&records, strict);
            println!("{report}");
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        ("view", Some(out)) => match std::fs::write(out, kvraft_trace::render_html(&records)) {
            Ok(()) => {
                println!("wrote {out} ({} events)", records.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write {out}: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
    }
}
