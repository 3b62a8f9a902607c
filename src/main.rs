//! The `wharf` command line: parse flags, load the config, start logging,
//! and run the server.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use wharf::config::{Config, ServeArgs};

/// Wharf: a pull-through caching mirror and registry for OCI content.
///
/// Every setting is a flag, an environment variable (WHARF_*) and a key in
/// an optional TOML config file; with none of them Wharf runs on embedded
/// defaults. Log verbosity follows WHARF_LOG (e.g. debug, wharf=trace).
#[derive(Parser)]
#[command(name = "wharf", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server (listens on 0.0.0.0:5000, data in ./wharf-data by default).
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = match Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("wharf: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(wharf::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
