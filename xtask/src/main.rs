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

/// mimalloc's `mi_option_purge_delay` (index in its v3 `mi_option_t`; the Rust bindings export no name for it).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Keep freed pages mapped: training frees and reallocates the same activation sizes every step, and pages returned
/// to the OS come back zeroed by the kernel (`perf`, Lite0 train step: kernel page clearing 23 % → 8 % of samples).
fn keep_freed_pages() {
    // SAFETY: setting an option is allowed at any time; -1 means "never purge".
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> ExitCode {
    backbones::device::keep_candle_pool_on_caller();
    keep_freed_pages();
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
