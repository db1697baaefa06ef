//! ResNet (He et al., 2015) with timm's parameter names: `resnet18`, `resnet34`, `resnet50`.
//!
//! Stem: `conv1` 7×7/2 + `bn1` + ReLU + max-pool 3×3/2; then `layer1..layer4` of residual blocks (first block of
//! layers 2–4 strided); classifier `fc` on the globally average-pooled last feature map.

mod block;

pub use block::{Block, BlockKind, BN_EPS};

use candle_core::Tensor;

use crate::backbone::{check_out_indices, Backbone, FeatureInfo, Stage, Taps};
use crate::error::{Error, Result};
use crate::fused::conv_bn_act;
use crate::layers::{Activation, BatchNorm2d, Conv2d, ConvConfig, Linear, Padding};
use crate::params::ParamStore;

/// One ResNet variant, as a row of the paper's Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetConfig {
    /// timm architecture name.
    pub name: &'static str,
    /// Residual block family.
    pub block: BlockKind,
    /// Blocks in `layer1..layer4`.
    pub depths: [usize; 4],
}

/// Block widths of `layer1..layer4` (output channels are width × expansion).
pub const WIDTHS: [usize; 4] = [64, 128, 256, 512];
/// Stride of the first block of `layer1..layer4`.
pub const STRIDES: [usize; 4] = [1, 2, 2, 2];
/// Channels after the stem.
pub const STEM_CHANNELS: usize = 64;
/// ImageNet-1k classes of the pretrained classifier.
pub const NUM_CLASSES: usize = 1000;

/// Every supported ResNet.
#[rustfmt::skip]
pub const CONFIGS: &[ResNetConfig] = &[
    ResNetConfig { name: "resnet18", block: BlockKind::Basic, depths: [2, 2, 2, 2] },
    ResNetConfig { name: "resnet34", block: BlockKind::Basic, depths: [3, 4, 6, 3] },
    ResNetConfig { name: "resnet50", block: BlockKind::Bottleneck, depths: [3, 4, 6, 3] },
];

/// The configuration of the timm architecture `name`, if it is a supported ResNet.
pub fn config(name: &str) -> Option<&'static ResNetConfig> {
    CONFIGS.iter().find(|c| c.name == name)
}

/// A ResNet backbone (parameters frozen when built).
#[derive(Debug, Clone)]
pub struct ResNet {
    cfg: ResNetConfig,
    store: ParamStore,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<Vec<Block>>,
    fc: Option<Linear>,
}

impl ResNet {
    /// Build `cfg` from `store`; the classifier `fc` is built only when the store can provide `fc.weight`.
    pub fn new(cfg: &ResNetConfig, store: &ParamStore) -> Result<Self> {
        let conv1 = Conv2d::new(
            store,
            "conv1",
            ConvConfig {
                in_channels: 3,
                out_channels: STEM_CHANNELS,
                kernel: 7,
                stride: 2,
                padding: Padding::Symmetric(3),
                groups: 1,
                bias: false,
            },
        )?;
        let bn1 = BatchNorm2d::new(store, "bn1", STEM_CHANNELS, BN_EPS)?;
        let mut in_ch = STEM_CHANNELS;
        let mut layers = Vec::with_capacity(4);
        for (i, &depth) in cfg.depths.iter().enumerate() {
            let mut blocks = Vec::with_capacity(depth);
            for j in 0..depth {
                let stride = if j == 0 { STRIDES[i] } else { 1 };
                let prefix = format!("layer{}.{j}", i + 1);
                blocks.push(Block::new(store, &prefix, cfg.block, in_ch, WIDTHS[i], stride)?);
                in_ch = WIDTHS[i] * cfg.block.expansion();
            }
            layers.push(blocks);
        }
        let fc = if store.contains("fc.weight") {
            Some(Linear::new(store, "fc", in_ch, NUM_CLASSES, true)?)
        } else {
            None
        };
        Ok(Self {
            cfg: *cfg,
            store: store.clone(),
            conv1,
            bn1,
            layers,
            fc,
        })
    }

    /// Build the timm architecture `name` (`resnet18`, `resnet34`, `resnet50`).
    pub fn from_name(name: &str, store: &ParamStore) -> Result<Self> {
        let cfg = config(name).ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            suggestion: None,
        })?;
        Self::new(cfg, store)
    }

    /// The configuration.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }
}

impl Backbone for ResNet {
    fn name(&self) -> &str {
        self.cfg.name
    }

    fn num_features(&self) -> usize {
        WIDTHS[3] * self.cfg.block.expansion()
    }

    fn stages(&self) -> Vec<Stage> {
        let mut stages = vec![Stage::new("stem", &["conv1", "bn1"])];
        stages.extend((1..=4).map(|i| {
            let name = format!("layer{i}");
            Stage::new(&name, &[name.as_str()])
        }));
        stages
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = conv_bn_act(&self.conv1, &self.bn1, Activation::Relu, x, train)?;
        let mut x = crate::ops::max_pool2d(&x, 3, 2, 1)?;
        for block in self.layers.iter().flatten() {
            x = block.forward(&x, train)?;
        }
        Ok(x)
    }

    /// `act1` (the stem before max-pooling, 1/2), then `layer1` … `layer4` (1/4 … 1/32), as timm.
    fn feature_info(&self) -> Vec<FeatureInfo> {
        let e = self.cfg.block.expansion();
        let mut info = vec![FeatureInfo::new("act1", 2, STEM_CHANNELS)];
        info.extend((0..4).map(|i| FeatureInfo::new(format!("layer{}", i + 1), 4 << i, WIDTHS[i] * e)));
        info
    }

    fn forward_multiscale(&self, x: &Tensor, train: bool, out_indices: &[usize]) -> Result<Vec<Tensor>> {
        check_out_indices(self.cfg.name, 5, out_indices)?;
        let mut taps = Taps::new(out_indices);
        let x = conv_bn_act(&self.conv1, &self.bn1, Activation::Relu, x, train)?;
        taps.keep(0, &x);
        let mut x = crate::ops::max_pool2d(&x, 3, 2, 1)?;
        for (i, layer) in self.layers.iter().enumerate() {
            if taps.done() {
                break;
            }
            for block in layer {
                x = block.forward(&x, train)?;
            }
            taps.keep(i + 1, &x);
        }
        Ok(taps.finish())
    }

    fn has_classifier(&self) -> bool {
        self.fc.is_some()
    }

    fn classify(&self, pooled: &Tensor) -> Result<Option<Tensor>> {
        self.fc.as_ref().map(|fc| fc.forward(pooled)).transpose()
    }
}
