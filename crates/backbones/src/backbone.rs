//! The one trait every architecture implements, and stage-wise freezing.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::layers::global_avg_pool;
use crate::params::ParamStore;

/// A named group of parameters that is frozen or unfrozen together (stem, stage 1…n, head).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Stage name, e.g. `stem`, `layer4`, `blocks.6`, `head`.
    pub name: String,
    /// Parameter-name prefixes (timm names) that belong to the stage.
    pub prefixes: Vec<String>,
}

impl Stage {
    /// A stage from a name and its prefixes.
    pub fn new(name: &str, prefixes: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A pretrained CNN: feature map, pooled features, ImageNet logits when the classifier is present.
pub trait Backbone: Send + Sync {
    /// Architecture name as in the registry (`resnet18`, `tf_efficientnet_lite0`, …).
    fn name(&self) -> &str;

    /// Width of the pooled features.
    fn num_features(&self) -> usize;

    /// Stages in input-to-output order; the ImageNet classifier is not a stage.
    fn stages(&self) -> Vec<Stage>;

    /// The store holding every parameter and buffer.
    fn store(&self) -> &ParamStore;

    /// The last feature map, N×C×h×w, for input N×3×H×W.
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// Pooled features (pre-logits), N×`num_features`.
    fn forward_pooled(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        global_avg_pool(&self.forward_features(x, train)?)
    }

    /// Whether the ImageNet classifier's weights are present.
    fn has_classifier(&self) -> bool;

    /// ImageNet logits from pooled features (N×1000), when the classifier is present.
    fn classify(&self, pooled: &Tensor) -> Result<Option<Tensor>>;

    /// ImageNet logits for input images, when the classifier is present.
    fn forward_logits(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let pooled = self.forward_pooled(x, false)?;
        self.classify(&pooled)
    }
}

/// Freeze every parameter, then unfreeze the last `n` stages (`n` = 0 freezes everything).
pub fn freeze_all_but_last(backbone: &dyn Backbone, n: usize) -> Result<()> {
    let stages = backbone.stages();
    if n > stages.len() {
        return Err(Error::Stage(format!(
            "{} has {} stages, cannot unfreeze {n}",
            backbone.name(),
            stages.len()
        )));
    }
    let store = backbone.store();
    store.freeze_all()?;
    for stage in &stages[stages.len() - n..] {
        store.set_trainable_prefixes(&stage.prefixes, true)?;
    }
    Ok(())
}

/// Make every backbone parameter trainable (the classifier too, if loaded).
pub fn unfreeze_all(backbone: &dyn Backbone) -> Result<()> {
    for p in backbone.store().params() {
        p.set_trainable(true)?;
    }
    Ok(())
}
