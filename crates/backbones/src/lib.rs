//! Pretrained CNN backbones with timm's parameter names, weights resolution and freezing by stage.
//!
//! Every architecture is our own implementation (train/eval BatchNorm, per-stage freezing), naming its parameters
//! exactly as timm's checkpoints do, so loading a Hub checkpoint is a path lookup.

pub mod backbone;
pub mod conv;
pub mod error;
pub mod fused;
pub mod layers;
pub mod ops;
pub mod params;
pub mod registry;
pub mod resnet;
pub mod vgg;
pub mod zoo;

pub use backbone::{freeze_all_but_last, unfreeze_all, Backbone, Stage};
pub use error::{Error, Result};
pub use params::{Buffer, Param, ParamStore};
pub use registry::ModelSpec;
