//! The `logplex` binary: parses the command line, installs tracing and hands over to the
//! library's `logplex::run` for `serve`, or to the client commands of [`cli`], which talk to
//! a running router over its API and are not part of the library.

mod cli;

use clap::{Parser, Subcommand};

/// jemalloc keeps the router's memory bounded under connection churn, where glibc's malloc
/// fragments (see Cargo.toml).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "logplex",
    version,
    about = "A log router and drain service compatible with Heroku's Logplex"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Serve {
        /// Config file (default ./config.toml, else the built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(cli::Command),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Client(cmd) => cli::main(cmd),
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("cannot raise the open-files limit: {e}");
    }
    let config = match logplex::config::Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("logplex: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("logplex: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = logplex::shutdown::on_signals();
        logplex::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logplex: {e:#}");
            ExitCode::FAILURE
        }
    }
}
