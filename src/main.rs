//! The `hxlog` binary: parse arguments, run, map the error chain to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hxlog::cli::Cli::parse();
    match hxlog::commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hxlog: error: {e:#}");
            ExitCode::from(hxlog::commands::EXIT_FAILURE)
        }
    }
}
