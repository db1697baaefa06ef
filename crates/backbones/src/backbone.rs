//! The one trait every architecture implements, and stage-wise freezing.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::layers::global_avg_pool;
use crate::params::ParamStore;

/// One feature map that [`Backbone::forward_multiscale`] can return, as timm's `feature_info` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureInfo {
    /// The timm module whose output the map is (`act1`, `layer2`, `blocks.4`).
    pub module: String,
    /// Input size divided by the map's size (2, 4, 8, 16, 32).
    pub reduction: usize,
    /// Channels of the map.
    pub channels: usize,
}

impl FeatureInfo {
    /// A feature entry from its module, reduction and channels.
    pub fn new(module: impl Into<String>, reduction: usize, channels: usize) -> Self {
        Self {
            module: module.into(),
            reduction,
            channels,
        }
    }
}

/// Check that `out_indices` is strictly increasing and inside `0..n` (the number of feature maps).
pub fn check_out_indices(name: &str, n: usize, out_indices: &[usize]) -> Result<()> {
    if out_indices.is_empty() {
        return Err(Error::Msg(format!("{name}: out_indices is empty")));
    }
    if let Some(bad) = out_indices.iter().find(|&&i| i >= n) {
        return Err(Error::Msg(format!(
            "{name}: out index {bad} is out of range (the model has {n} feature maps, 0..{})",
            n - 1
        )));
    }
    if out_indices.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::Msg(format!(
            "{name}: out_indices {out_indices:?} must be strictly increasing"
        )));
    }
    Ok(())
}

/// Collects the maps of a multi-scale forward pass: `keep(i, map)` stores map `i` when it was asked for, and
/// `done()` says when every asked-for map has been seen (so the forward pass can stop early).
#[derive(Debug)]
pub struct Taps<'a> {
    wanted: &'a [usize],
    out: Vec<Tensor>,
}

impl<'a> Taps<'a> {
    /// Taps for `out_indices` (already checked with [`check_out_indices`]).
    pub fn new(out_indices: &'a [usize]) -> Self {
        Self {
            wanted: out_indices,
            out: Vec::with_capacity(out_indices.len()),
        }
    }

    /// Keep `map` when feature `index` was asked for.
    pub fn keep(&mut self, index: usize, map: &Tensor) {
        if self.wanted.contains(&index) {
            self.out.push(map.clone());
        }
    }

    /// Whether every asked-for map has been kept.
    pub fn done(&self) -> bool {
        self.out.len() == self.wanted.len()
    }

    /// The kept maps, in `out_indices` order.
    pub fn finish(self) -> Vec<Tensor> {
        self.out
    }
}

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

/// A pretrained backbone (CNN or ViT): feature map, pooled features, ImageNet logits when the classifier is present.
pub trait Backbone: Send + Sync {
    /// Architecture name as in the registry (`resnet18`, `tf_efficientnet_lite0`, …).
    fn name(&self) -> &str;

    /// Width of the pooled features.
    fn num_features(&self) -> usize;

    /// Stages in input-to-output order; the ImageNet classifier is not a stage.
    fn stages(&self) -> Vec<Stage>;

    /// The store holding every parameter and buffer.
    fn store(&self) -> &ParamStore;

    /// Depth for layer-wise learning-rate decay (timm's `param_groups_layer_decay`, BEiT): parameters get layer ids
    /// from 0 (the embedding or stem) to `num_layers + 1` (everything after the last block). `None` when the
    /// architecture defines no layer decay.
    fn num_layers(&self) -> Option<usize> {
        None
    }

    /// The layer-decay id of parameter `name`, in `0..=num_layers + 1`; `None` when [`Backbone::num_layers`] is.
    fn layer_id(&self, name: &str) -> Option<usize> {
        let _ = name;
        None
    }

    /// Whether [`Backbone::forward_features`] of `x` would take a dedicated inference path (a folded, frozen copy
    /// of the network) instead of the general autograd path; `false` for architectures that have none.
    fn uses_inference_path(&self, x: &Tensor, train: bool) -> Result<bool> {
        let _ = (x, train);
        Ok(false)
    }

    /// The last feature map, N×C×h×w, for input N×3×H×W (Vision Transformers: every token, N×T×C, as timm).
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// The feature maps [`Backbone::forward_multiscale`] can return, input to output (timm's `feature_info`).
    fn feature_info(&self) -> Vec<FeatureInfo>;

    /// The feature maps at `out_indices` (strictly increasing indices into [`Backbone::feature_info`]), like timm's
    /// `features_only=True` model; each is N×channels×(H/reduction)×(W/reduction) (rounded up).
    fn forward_multiscale(&self, x: &Tensor, train: bool, out_indices: &[usize]) -> Result<Vec<Tensor>>;

    /// Every feature map (all of [`Backbone::feature_info`]).
    fn forward_all_features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let all: Vec<usize> = (0..self.feature_info().len()).collect();
        self.forward_multiscale(x, train, &all)
    }

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
