//! `trainer`: graft's command-line interface. This file only wires: parsing, dispatch, exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use trainer::{cli, commands, engine, error};

/// mimalloc reuses freed pages: candle allocates every activation afresh, and glibc maps and zeroes each block over
/// 32 MiB anew, which costs more than the arithmetic of the cheap layers (see `cargo xtask bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // A bug must still end in one line (exit code 101), not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error{at}: {msg} (please report this)");
    }));

    let matches = match cli::Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return clap_error(e),
    };
    let parsed = match cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    match commands::run(parsed, &matches, &engine::Graft) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", data::text::one_line(&format!("{err:#}")));
            ExitCode::from(error::exit_code(&err))
        }
    }
}

/// Help and version go to stdout as clap prints them; usage errors become one `error: …` line, exit code 2.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("error: invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let tips: Vec<&str> = lines.filter(|l| l.starts_with("tip:")).collect();
            let tip = if tips.is_empty() {
                String::new()
            } else {
                format!(" ({})", tips.join("; "))
            };
            eprintln!("error: {first}{tip}; see --help");
            ExitCode::from(2)
        }
    }
}
