//! Construct any supported architecture by name.

use crate::backbone::Backbone;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// Architectures implemented in code.
pub const ARCHITECTURES: &[&str] = &["resnet18", "resnet34", "resnet50", "vgg16"];

/// Build the architecture `arch` (timm name) with parameters from `store`, all frozen.
pub fn build(arch: &str, store: &ParamStore) -> Result<Box<dyn Backbone>> {
    match arch {
        "resnet18" | "resnet34" | "resnet50" => Ok(Box::new(crate::resnet::ResNet::from_name(arch, store)?)),
        "vgg16" => Ok(Box::new(crate::vgg::Vgg::from_name(arch, store)?)),
        _ => Err(Error::UnknownModel {
            name: arch.to_string(),
            suggestion: None,
        }),
    }
}
