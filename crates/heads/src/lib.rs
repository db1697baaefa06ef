//! Classifier heads for transfer learning: linear and MLP heads for binary, multi-class and multi-label tasks.
//!
//! Depends on candle only. Parameters are `Var`s initialised from a seeded host RNG (PyTorch's default `Linear`
//! init), dropout masks come from a host RNG too, and a head saves to safetensors plus a JSON [`HeadConfig`] so a
//! trained model is self-describing.

pub mod config;
pub mod error;
pub mod head;

pub use config::{HeadConfig, InputKind, Task};
pub use error::{Error, Result};
pub use head::{save_safetensors_atomic, Head};
