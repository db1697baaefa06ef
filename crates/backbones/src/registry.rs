//! The model registry: one TOML file per backbone under `models/`, embedded at build time.

use std::sync::OnceLock;

use data::PreprocessConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a model's pretrained weights live on the Hugging Face Hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    /// Repository id, e.g. `timm/resnet18.tv_in1k`.
    pub repo: String,
    /// File in the repository, e.g. `model.safetensors`.
    pub file: String,
    /// Git revision (branch, tag or commit).
    pub revision: String,
    /// Expected sha256 of the file, when known.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Everything graft knows about one backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Registry name (`resnet18`).
    pub name: String,
    /// One-line human description.
    #[serde(default)]
    pub description: String,
    /// Architecture implemented in code (the timm model name, e.g. `resnet18`).
    pub architecture: String,
    /// Pretrained weights on the Hub.
    pub hub: HubSource,
    /// Licence of the pretrained weights.
    pub license: String,
    /// Width of the pooled features.
    pub num_features: usize,
    /// Classes of the pretrained classifier (1000 for ImageNet-1k; 0 when the checkpoint has none, as DINOv2).
    pub num_classes: usize,
    /// Approximate parameter count in millions.
    pub params_m: f32,
    /// Evaluation preprocessing.
    pub preprocess: PreprocessConfig,
    /// Stage names, input to output.
    pub stages: Vec<String>,
}

/// The registry files, `(file stem, TOML text)`, embedded at build time from `models/`.
pub const SOURCES: &[(&str, &str)] = &[
    ("convnext_atto", include_str!("../../../models/convnext_atto.toml")),
    ("convnext_tiny", include_str!("../../../models/convnext_tiny.toml")),
    ("efficientnet_b0", include_str!("../../../models/efficientnet_b0.toml")),
    (
        "mobilenetv3_large_100",
        include_str!("../../../models/mobilenetv3_large_100.toml"),
    ),
    (
        "mobilenetv4_conv_small",
        include_str!("../../../models/mobilenetv4_conv_small.toml"),
    ),
    ("resnet18", include_str!("../../../models/resnet18.toml")),
    ("resnet34", include_str!("../../../models/resnet34.toml")),
    ("resnet50", include_str!("../../../models/resnet50.toml")),
    (
        "tf_efficientnet_lite0",
        include_str!("../../../models/tf_efficientnet_lite0.toml"),
    ),
    ("vgg16", include_str!("../../../models/vgg16.toml")),
    (
        "vit_base_patch14_dinov2",
        include_str!("../../../models/vit_base_patch14_dinov2.toml"),
    ),
    (
        "vit_small_patch14_dinov2",
        include_str!("../../../models/vit_small_patch14_dinov2.toml"),
    ),
    (
        "vit_small_patch16_224",
        include_str!("../../../models/vit_small_patch16_224.toml"),
    ),
    (
        "vit_tiny_patch16_224",
        include_str!("../../../models/vit_tiny_patch16_224.toml"),
    ),
];

impl ModelSpec {
    /// Parse one registry file's text; `origin` names it in the error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            Error::Msg(format!(
                "invalid model file {origin}: {}",
                e.to_string().lines().next().unwrap_or_default()
            ))
        })
    }
}

/// Every registered model, sorted by name.
pub fn all() -> &'static [ModelSpec] {
    static ALL: OnceLock<Vec<ModelSpec>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut v: Vec<ModelSpec> = SOURCES
            .iter()
            .map(|(stem, text)| {
                // The embedded files are checked by the registry tests: a parse failure is a build defect.
                ModelSpec::from_toml(text, &format!("models/{stem}.toml")).expect("embedded registry file parses")
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    })
}

/// The names of every registered model, sorted.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|m| m.name.as_str()).collect()
}

/// The model called `name`; an unknown name is an error suggesting the nearest registered name.
pub fn get(name: &str) -> Result<ModelSpec> {
    if let Some(m) = all().iter().find(|m| m.name == name) {
        return Ok(m.clone());
    }
    Err(Error::UnknownModel {
        name: name.to_string(),
        suggestion: nearest(name),
    })
}

/// The registered name nearest to `name` by edit distance, when one is reasonably close.
pub fn nearest(name: &str) -> Option<String> {
    data::text::did_you_mean(name, all().iter().map(|m| m.name.as_str())).map(str::to_string)
}
