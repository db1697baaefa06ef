//! Heads for transfer learning: classifier heads (linear and MLP; binary, multi-class and multi-label), semantic
//! segmentation decoders (FPN, U-Net) and an anchor-free detector (FCOS) on a backbone's multi-scale features.
//!
//! Depends on candle only. Parameters are `Var`s initialised from a seeded host RNG (PyTorch's default `Linear`
//! init), dropout masks come from a host RNG too, and a head saves to safetensors plus a JSON [`HeadConfig`] so a
//! trained model is self-describing.

pub mod config;
pub mod detect;
pub mod error;
pub mod head;
pub mod nn;
pub mod segment;

pub use config::{HeadConfig, InputKind, Task};
pub use detect::{DetHead, DetHeadConfig, DetOutput, DetTargets, Detection, PostProcess};
pub use error::{Error, Result};
pub use head::{save_safetensors_atomic, Head};
pub use segment::{Decoder, SegHead, SegHeadConfig};
