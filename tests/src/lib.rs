//! End-to-end tests of the `trainer` binary live in `tests/`.
