//! Construct any supported architecture by name.

use crate::backbone::Backbone;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// Architectures implemented in code.
pub const ARCHITECTURES: &[&str] = &[
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mobilenetv3_large_100",
];

/// Build the architecture `arch` (timm name) with parameters from `store`, all frozen.
pub fn build(arch: &str, store: &ParamStore) -> Result<Box<dyn Backbone>> {
    Ok(match arch {
        "efficientnet_b0" => Box::new(crate::efficientnet::EfficientNet::b0(store)?),
        "tf_efficientnet_lite0" => Box::new(crate::efficientnet::EfficientNet::lite0(store)?),
        "mobilenetv3_large_100" => Box::new(crate::mobilenetv3::MobileNetV3::large_100(store)?),
        _ => {
            return Err(Error::UnknownModel {
                name: arch.to_string(),
                suggestion: None,
            })
        }
    })
}
