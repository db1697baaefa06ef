//! Datasets, image decoding, transforms and batch loading for image classification.
//!
//! Depends on candle-core and image only, so it can be reused by any image-classification project.

pub mod assets;
pub mod config;
pub mod transforms;

pub use config::{Interpolation, PreprocessConfig, IMAGENET_MEAN, IMAGENET_STD};
