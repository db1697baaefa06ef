//! Pretrained CNN and Vision Transformer backbones with timm's parameter names, weights resolution and freezing by stage.
//!
//! Every architecture is our own implementation (train/eval BatchNorm, per-stage freezing), naming its parameters
//! exactly as timm's checkpoints do, so loading a Hub checkpoint is a path lookup.

pub mod backbone;
pub mod blocks;
pub mod conv;
pub mod convnext;
pub mod device;
pub mod efficientnet;
pub mod error;
pub mod fused;
pub mod hub;
mod infer;
pub mod layers;
pub mod mobilenetv3;
pub mod mobilenetv4;
pub mod ops;
pub mod params;
pub mod pretrained;
pub mod pth;
pub mod registry;
pub mod resnet;
pub mod vgg;
pub mod vit;
pub mod weights;
pub mod zoo;

pub use backbone::{freeze_all_but_last, unfreeze_all, Backbone, FeatureInfo, Stage};
pub use error::{Error, Result};
pub use params::{Buffer, Param, ParamRole, ParamStore};
pub use pretrained::{pretrained, Pretrained, WeightsSource};
pub use registry::ModelSpec;
