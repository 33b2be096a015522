//! `baton`: the command line for any Baton server, over its HTTP API only.
//!
//! Exit codes: 0 ok, 1 the server (or the network, or a run waited on) said no, 2 usage.

use clap::Parser;
use std::process::ExitCode;

mod cli;
mod client;
mod commands;
mod config;
mod error;
mod output;
mod sign;

fn main() -> ExitCode {
    // Bad arguments: clap prints the usage and exits 2.
    let args = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.report());
            e.exit_code()
        }
    }
}
