//! The `crier-bench` command: parse the options, run, print the report.
//!
//! Many connections need many file descriptors: raise the limit in the shell first
//! (`ulimit -n 120000`), for the servers as well.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = crier_bench::Args::parse();
    let json = args.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crier-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crier_bench::run(args)) {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crier-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
