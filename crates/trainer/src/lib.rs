//! graft's command-line shell: flags, configuration, run folders, progress output, plots and the HTML report.
//!
//! The libraries plug in through [`backend::Backend`]; the `trainer` binary only parses and dispatches.

pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod det_viz;
pub mod engine;
pub mod error;
pub mod events;
pub mod lr_find;
pub mod models;
pub mod palette;
pub mod plots;
pub mod predict_out;
pub mod report;
pub mod run_dir;
pub mod seg_viz;
pub mod spec;
pub mod summary;
pub mod tutorial;
