//! Weights files (safetensors, PyTorch zip), the Hugging Face cache and downloads from a loopback Hub.
//!
//! One test binary (each module was its own before); the modules keep their test names.

#[path = "../support/mod.rs"]
mod support;

mod hub_download;
mod pretrained;
mod weights_files;
