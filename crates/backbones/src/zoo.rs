//! Construct any supported architecture by name.

use crate::backbone::Backbone;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// Architectures implemented in code.
pub const ARCHITECTURES: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg16",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "convnext_atto",
    "convnext_tiny",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_small_patch14_dinov2",
    "vit_base_patch14_dinov2",
];

/// Build the architecture `arch` (timm name) with parameters from `store`, all frozen.
pub fn build(arch: &str, store: &ParamStore) -> Result<Box<dyn Backbone>> {
    match arch {
        "resnet18" | "resnet34" | "resnet50" => Ok(Box::new(crate::resnet::ResNet::from_name(arch, store)?)),
        "vgg16" => Ok(Box::new(crate::vgg::Vgg::from_name(arch, store)?)),
        "efficientnet_b0" => Ok(Box::new(crate::efficientnet::EfficientNet::b0(store)?)),
        "tf_efficientnet_lite0" => Ok(Box::new(crate::efficientnet::EfficientNet::lite0(store)?)),
        "mobilenetv3_large_100" => Ok(Box::new(crate::mobilenetv3::MobileNetV3::large_100(store)?)),
        "mobilenetv4_conv_small" => Ok(Box::new(crate::mobilenetv4::MobileNetV4::conv_small(store)?)),
        "convnext_atto" | "convnext_tiny" => Ok(Box::new(crate::convnext::ConvNext::from_name(arch, store)?)),
        "vit_tiny_patch16_224" | "vit_small_patch16_224" | "vit_small_patch14_dinov2" | "vit_base_patch14_dinov2" => {
            Ok(Box::new(crate::vit::Vit::from_name(arch, store)?))
        }
        _ => Err(Error::UnknownModel {
            name: arch.to_string(),
            suggestion: None,
        }),
    }
}
