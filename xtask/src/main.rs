//! Project tasks: `cargo xtask download-weights [NAME…] [--all]`, `cargo xtask bench [WHAT]`.

mod download;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// graft's project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "graft project tasks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download pretrained weights from the Hugging Face Hub into its cache (reused by Python tools too).
    DownloadWeights(download::Args),
    /// Run benchmarks (not implemented yet).
    Bench {
        /// What to benchmark.
        what: Option<String>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::DownloadWeights(args) => download::run(&args),
        Command::Bench { what } => {
            println!(
                "bench {}: not implemented yet",
                what.as_deref().unwrap_or("(all)")
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
