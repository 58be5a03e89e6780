//! `qronctl`: the operator's command line for a qron cluster, over the HTTP API.
//!
//! This file only parses the command line, runs it, and turns an error into
//! `error: ...` on stderr and exit status 1. The work is in the modules:
//! `args` (the command line), `client` (HTTP and failover between nodes),
//! `spec` (jobs from flags or files), `commands` (one API call per subcommand)
//! and `output` (tables and JSON).

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

mod args;
mod client;
mod commands;
mod output;
mod spec;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the causes too: "cannot read the job from x.json: No such file ...".
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(1)
        }
    }
}
