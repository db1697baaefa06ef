//! Numerical parity with timm on the shared fixtures, and the inference path against the general path.
//!
//! One test binary (each module was its own before); the modules keep their test names.

#[path = "../support/mod.rs"]
mod support;

mod efficientnet_parity;
mod infer_path;
mod mobilenetv3_parity;
mod modern;
mod multiscale;
mod resnet_parity;
mod vgg_parity;
mod zero_shot_lite0;
