//! Project tasks: `cargo xtask bench`.

mod bench;

use clap::{Parser, Subcommand};

/// Project tasks.
#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// CPU benchmarks: forward, end to end, training steps, data pipeline; prints a table, writes JSON.
    Bench(bench::Args),
    /// Run one benchmark measurement in this process (used by `bench`, one child process per measurement).
    #[command(hide = true)]
    BenchOne(bench::OneArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(args),
        Command::BenchOne(args) => bench::run_one(args),
    }
}
