//! The model registry: one TOML file per backbone under `models/`, embedded at build time.

use data::PreprocessConfig;
use serde::{Deserialize, Serialize};

/// Where a model's pretrained weights live on the Hugging Face Hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
pub struct ModelSpec {
    /// Registry name (`resnet18`).
    pub name: String,
    /// Architecture implemented in code (the timm model name, e.g. `resnet18`).
    pub architecture: String,
    /// Pretrained weights on the Hub.
    pub hub: HubSource,
    /// Licence of the pretrained weights.
    pub license: String,
    /// Width of the pooled features.
    pub num_features: usize,
    /// Classes of the pretrained classifier (1000 for ImageNet-1k).
    pub num_classes: usize,
    /// Approximate parameter count in millions.
    pub params_m: f32,
    /// Evaluation preprocessing.
    pub preprocess: PreprocessConfig,
    /// Stage names, input to output.
    pub stages: Vec<String>,
}
