//! The layers' folded Conv + BatchNorm (+ activation) against the unfolded layers (the kernels' own tests are in
//! `crates/kernels/tests`).
//!
//! One test binary (each module was its own before); the modules keep their test names.

#[path = "../support/mod.rs"]
mod support;

mod perf_conv;
