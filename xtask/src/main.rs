//! Project tasks: `cargo xtask download-weights [NAME…] [--all]`, `cargo xtask bench`.

mod bench;
mod download;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed pages for reuse: candle allocates every activation afresh, and glibc maps (and zeroes)
/// each one over 32 MiB anew, which costs more than the arithmetic of the cheap layers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// CPU benchmarks: forward, end to end, training steps, data pipeline; prints a table, writes JSON.
    Bench(bench::Args),
    /// Run one benchmark measurement in this process (used by `bench`, one child process per measurement).
    #[command(hide = true)]
    BenchOne(bench::OneArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::DownloadWeights(args) => download::run(&args),
        Command::Bench(args) => bench::run(args),
        Command::BenchOne(args) => bench::run_one(args),
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
