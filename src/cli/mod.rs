//! The client commands of CONTRACT §2 (`apps`, `tokens`, `logs`, `drains`, `alerts`,
//! `shuttle`): they talk to a running `logplex serve` over its HTTP API.

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List apps (channels).
    Apps,
}

/// Runs one client command to completion and returns the process exit code
/// (0 ok, 1 failed request, 2 bad usage).
pub fn main(cmd: Command) -> ExitCode {
    let _ = cmd;
    ExitCode::FAILURE
}
