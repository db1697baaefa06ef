//! The custom CPU ops (depthwise, max-pool, BatchNorm folding, convolution) against candle's, and their timings.
//!
//! One test binary (each module was its own before); the modules keep their test names.

#[path = "../support/mod.rs"]
mod support;

mod ops_bench;
mod ops_depthwise;
mod ops_fold;
mod ops_maxpool;
mod perf_conv;
