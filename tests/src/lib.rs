//! Test support for the whole workspace, and (in `tests/`) the end-to-end tests of the `trainer` binary.
//!
//! The library has no dependency on any workspace crate, so every crate can list it under `[dev-dependencies]`
//! without a cycle.

pub mod assets;
pub mod fixtures;
pub mod synth;
