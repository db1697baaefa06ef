//! VGG (Simonyan & Zisserman, 2014) with timm's parameter names: `vgg16`.
//!
//! The trunk is timm's `features.{idx}`: 3×3 convolutions (pad 1, bias) + ReLU, and 2×2/2 max-pools closing each
//! of the five blocks. As Keras' `include_top=False`, [`Backbone::forward_features`] is the trunk output
//! (N×512×7×7 at 224) and [`Backbone::forward_pooled`] its spatial mean (N×512). The ImageNet classifier is optional:
//! when `pre_logits.fc1`, `pre_logits.fc2` and `head.fc` are available it is timm's `ConvMlp` (fc1: 7×7 convolution
//! 512→4096 on the feature map, ReLU, fc2: 1×1 convolution 4096→4096, ReLU; dropout is inactive in eval) followed
//! by global average pooling and the linear `head.fc`.

use candle_core::Tensor;

use crate::backbone::{check_out_indices, Backbone, FeatureInfo, Stage, Taps};
use crate::error::{Error, Result};
use crate::layers::{global_avg_pool, Conv2d, ConvConfig, Linear, Padding};
use crate::params::ParamStore;

/// One element of a VGG trunk, as in the paper's Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// A 3×3 convolution (pad 1, bias) to this many channels, followed by ReLU.
    Conv(usize),
    /// A 2×2 max-pool with stride 2 (ends a block).
    Pool,
}

/// One VGG variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VggConfig {
    /// timm architecture name.
    pub name: &'static str,
    /// The trunk, input to output.
    pub layers: &'static [Layer],
}

use Layer::{Conv, Pool};

/// VGG-16 (configuration "D").
#[rustfmt::skip]
pub const VGG16: VggConfig = VggConfig {
    name: "vgg16",
    layers: &[
        Conv(64), Conv(64), Pool,
        Conv(128), Conv(128), Pool,
        Conv(256), Conv(256), Conv(256), Pool,
        Conv(512), Conv(512), Conv(512), Pool,
        Conv(512), Conv(512), Conv(512), Pool,
    ],
};

/// Every supported VGG.
pub const CONFIGS: &[VggConfig] = &[VGG16];

/// Width of the classifier's hidden layers.
pub const HIDDEN: usize = 4096;
/// Kernel of `pre_logits.fc1` (the 7×7 feature map of a 224 input).
pub const FC1_KERNEL: usize = 7;
/// ImageNet-1k classes of the pretrained classifier.
pub const NUM_CLASSES: usize = 1000;

/// The configuration of the timm architecture `name`, if it is a supported VGG.
pub fn config(name: &str) -> Option<&'static VggConfig> {
    CONFIGS.iter().find(|c| c.name == name)
}

/// One built trunk operation.
#[derive(Debug, Clone)]
enum Op {
    Conv(Conv2d),
    Pool,
}

/// timm's `ConvMlp` pre-logits and `ClassifierHead`.
#[derive(Debug, Clone)]
struct Classifier {
    fc1: Conv2d,
    fc2: Conv2d,
    head: Linear,
}

/// A VGG backbone (parameters frozen when built).
#[derive(Debug, Clone)]
pub struct Vgg {
    cfg: VggConfig,
    store: ParamStore,
    ops: Vec<Op>,
    stages: Vec<Stage>,
    num_features: usize,
    classifier: Option<Classifier>,
}

fn conv_cfg(in_channels: usize, out_channels: usize, kernel: usize, padding: usize) -> ConvConfig {
    ConvConfig {
        in_channels,
        out_channels,
        kernel,
        stride: 1,
        padding: Padding::Symmetric(padding),
        groups: 1,
        bias: true,
    }
}

impl Vgg {
    /// Build `cfg` from `store`; the classifier is built only when the store can provide all its weights.
    pub fn new(cfg: &VggConfig, store: &ParamStore) -> Result<Self> {
        let mut ops = Vec::with_capacity(cfg.layers.len());
        let mut stages = Vec::new();
        let mut block: Vec<String> = Vec::new();
        let mut in_ch = 3;
        // timm's index: each convolution is followed by its ReLU module, each pool is one module.
        let mut idx = 0;
        for layer in cfg.layers {
            match *layer {
                Layer::Conv(out) => {
                    let prefix = format!("features.{idx}");
                    ops.push(Op::Conv(Conv2d::new(store, &prefix, conv_cfg(in_ch, out, 3, 1))?));
                    block.push(prefix);
                    in_ch = out;
                    idx += 2;
                }
                Layer::Pool => {
                    ops.push(Op::Pool);
                    let prefixes: Vec<&str> = block.iter().map(String::as_str).collect();
                    stages.push(Stage::new(&format!("block{}", stages.len() + 1), &prefixes));
                    block.clear();
                    idx += 1;
                }
            }
        }
        let names = ["pre_logits.fc1.weight", "pre_logits.fc2.weight", "head.fc.weight"];
        let classifier = if names.iter().all(|n| store.contains(n)) {
            Some(Classifier {
                fc1: Conv2d::new(store, "pre_logits.fc1", conv_cfg(in_ch, HIDDEN, FC1_KERNEL, 0))?,
                fc2: Conv2d::new(store, "pre_logits.fc2", conv_cfg(HIDDEN, HIDDEN, 1, 0))?,
                head: Linear::new(store, "head.fc", HIDDEN, NUM_CLASSES, true)?,
            })
        } else {
            None
        };
        Ok(Self {
            cfg: *cfg,
            store: store.clone(),
            ops,
            stages,
            num_features: in_ch,
            classifier,
        })
    }

    /// Build the timm architecture `name` (`vgg16`).
    pub fn from_name(name: &str, store: &ParamStore) -> Result<Self> {
        let cfg = config(name).ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            suggestion: None,
        })?;
        Self::new(cfg, store)
    }

    /// The configuration.
    pub fn config(&self) -> &VggConfig {
        &self.cfg
    }
}

impl Backbone for Vgg {
    fn name(&self) -> &str {
        self.cfg.name
    }

    fn num_features(&self) -> usize {
        self.num_features
    }

    fn stages(&self) -> Vec<Stage> {
        self.stages.clone()
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The trunk output (VGG has no BatchNorm: `train` changes nothing).
    fn forward_features(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for op in &self.ops {
            x = match op {
                Op::Conv(conv) => crate::fused::conv_act(conv, crate::layers::Activation::Relu, &x)?,
                Op::Pool => crate::ops::max_pool2d(&x, 2, 2, 0)?,
            };
        }
        Ok(x)
    }

    /// The ReLU before each max-pool (1/1 … 1/16, modules `features.{i}` as timm numbers them), then the last
    /// max-pool's output (1/32, the map [`Backbone::forward_features`] returns).
    fn feature_info(&self) -> Vec<FeatureInfo> {
        let (mut idx, mut reduction, mut channels) = (0usize, 1usize, 3usize);
        let mut info = Vec::new();
        for layer in self.cfg.layers {
            match *layer {
                Layer::Conv(c) => {
                    channels = c;
                    idx += 2;
                }
                Layer::Pool => {
                    info.push(FeatureInfo::new(format!("features.{}", idx - 1), reduction, channels));
                    reduction *= 2;
                    idx += 1;
                }
            }
        }
        info.push(FeatureInfo::new(format!("features.{}", idx - 1), reduction, channels));
        info
    }

    fn forward_multiscale(&self, x: &Tensor, _train: bool, out_indices: &[usize]) -> Result<Vec<Tensor>> {
        let n = self.feature_info().len();
        check_out_indices(self.cfg.name, n, out_indices)?;
        let mut taps = Taps::new(out_indices);
        let (mut x, mut k) = (x.clone(), 0);
        for op in &self.ops {
            x = match op {
                Op::Conv(conv) => crate::fused::conv_act(conv, crate::layers::Activation::Relu, &x)?,
                Op::Pool => {
                    taps.keep(k, &x);
                    k += 1;
                    if taps.done() {
                        break;
                    }
                    crate::ops::max_pool2d(&x, 2, 2, 0)?
                }
            };
        }
        taps.keep(n - 1, &x);
        Ok(taps.finish())
    }

    fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }

    /// Always `None`: VGG's classifier reads the feature map, not the pooled features; use
    /// [`Backbone::forward_logits`].
    fn classify(&self, _pooled: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// ImageNet logits: trunk, `pre_logits` (on a feature map average-pooled up to at least 7×7, as timm), global
    /// average pooling, `head.fc`.
    fn forward_logits(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(c) = &self.classifier else {
            return Ok(None);
        };
        let mut f = self.forward_features(x, false)?;
        let (_, _, h, w) = f.dims4()?;
        if h < FC1_KERNEL || w < FC1_KERNEL {
            f = adaptive_avg_pool2d(&f, h.max(FC1_KERNEL), w.max(FC1_KERNEL))?;
        }
        let y = c.fc1.forward(&f)?.relu()?;
        let y = c.fc2.forward(&y)?.relu()?;
        Ok(Some(c.head.forward(&global_avg_pool(&y)?)?))
    }
}

/// PyTorch's `adaptive_avg_pool2d` of `x` (N×C×H×W) to `out_h × out_w`, as two averaging matrix products.
pub fn adaptive_avg_pool2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let ph = pool_matrix(h, out_h, x)?; // out_h × h
    let pw = pool_matrix(w, out_w, x)?.t()?; // w × out_w
    let y = x.broadcast_matmul(&pw)?; // N×C×H×out_w
    Ok(ph.broadcast_matmul(&y)?) // N×C×out_h×out_w
}

/// The `out × n` matrix averaging PyTorch's adaptive bins `[floor(i·n/out), ceil((i+1)·n/out))`.
fn pool_matrix(n: usize, out: usize, like: &Tensor) -> Result<Tensor> {
    let mut m = vec![0f32; out * n];
    for i in 0..out {
        let start = i * n / out;
        let end = ((i + 1) * n).div_ceil(out);
        for j in start..end {
            m[i * n + j] = 1.0 / (end - start) as f32;
        }
    }
    Ok(Tensor::from_vec(m, (out, n), like.device())?.to_dtype(like.dtype())?)
}
