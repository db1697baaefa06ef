//! Architectures: timm's tensors (manifests), stage freezing and training, the VGG head, the model registry, the
//! layers' folded Conv + BatchNorm and the cached inference plan.
//!
//! One test binary (each module was its own before); the modules keep their test names.

#[path = "../support/mod.rs"]
mod support;

mod efficientnet_manifest;
mod efficientnet_training;
mod mobilenetv3_manifest;
mod mobilenetv3_training;
mod mobilenetv4;
mod param_roles;
mod perf_conv;
mod plan_cache;
mod registry_models;
mod resnet_freeze;
mod resnet_full_finetune;
mod resnet_manifest;
mod vgg_freeze;
mod vgg_head;
mod vgg_manifest;
