//! ResNet residual blocks: `BasicBlock` (two 3×3 convolutions) and `Bottleneck` (1×1, 3×3, 1×1, expansion 4).
//!
//! Parameter names follow timm: `{prefix}.conv{i}`, `{prefix}.bn{i}`, and `{prefix}.downsample.{0,1}` for the
//! projection shortcut (1×1 strided convolution + BatchNorm) when the shape changes.

use candle_core::Tensor;

use crate::error::Result;
use crate::fused::conv_bn_act;
use crate::layers::{Activation, BatchNorm2d, Conv2d, ConvConfig, Padding};
use crate::params::ParamStore;

/// BatchNorm epsilon of every torchvision/timm ResNet.
pub const BN_EPS: f64 = 1e-5;

/// The residual block family of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions, output width = block width (ResNet-18/34).
    Basic,
    /// 1×1 reduce, 3×3 (strided), 1×1 expand ×4 (ResNet-50 and deeper).
    Bottleneck,
}

impl BlockKind {
    /// Output channels per block width (1 for basic blocks, 4 for bottlenecks).
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A convolution followed by its BatchNorm (no activation).
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: &ParamStore,
        conv: &str,
        bn: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        let cfg = ConvConfig {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: Padding::Symmetric(kernel / 2),
            groups: 1,
            bias: false,
        };
        Ok(Self {
            conv: Conv2d::new(store, conv, cfg)?,
            bn: BatchNorm2d::new(store, bn, out_channels, BN_EPS)?,
        })
    }

    /// `act(bn(conv(x)))`, BatchNorm folded into the convolution when it uses running statistics.
    fn forward(&self, x: &Tensor, train: bool, act: Activation) -> Result<Tensor> {
        conv_bn_act(&self.conv, &self.bn, act, x, train)
    }
}

/// One residual block: the main path, an optional projection shortcut, and the final ReLU.
#[derive(Debug, Clone)]
pub struct Block {
    main: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    /// Build the block `prefix` (e.g. `layer2.0`) taking `in_channels` to `width · expansion` at `stride`.
    pub fn new(
        store: &ParamStore,
        prefix: &str,
        kind: BlockKind,
        in_channels: usize,
        width: usize,
        stride: usize,
    ) -> Result<Self> {
        let out = width * kind.expansion();
        let p = |s: &str| format!("{prefix}.{s}");
        let main = match kind {
            BlockKind::Basic => vec![
                ConvBn::new(store, &p("conv1"), &p("bn1"), in_channels, width, 3, stride)?,
                ConvBn::new(store, &p("conv2"), &p("bn2"), width, width, 3, 1)?,
            ],
            BlockKind::Bottleneck => vec![
                ConvBn::new(store, &p("conv1"), &p("bn1"), in_channels, width, 1, 1)?,
                ConvBn::new(store, &p("conv2"), &p("bn2"), width, width, 3, stride)?,
                ConvBn::new(store, &p("conv3"), &p("bn3"), width, out, 1, 1)?,
            ],
        };
        let downsample = if stride != 1 || in_channels != out {
            Some(ConvBn::new(
                store,
                &p("downsample.0"),
                &p("downsample.1"),
                in_channels,
                out,
                1,
                stride,
            )?)
        } else {
            None
        };
        Ok(Self { main, downsample })
    }

    /// relu(main(x) + shortcut(x)); BatchNorm uses batch statistics when `train` (see [`BatchNorm2d`]).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let last = self.main.len() - 1;
        let mut y = x.clone();
        for (i, cb) in self.main.iter().enumerate() {
            let act = if i < last { Activation::Relu } else { Activation::None };
            y = cb.forward(&y, train, act)?;
        }
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward(x, train, Activation::None)?,
            None => x.clone(),
        };
        Ok(crate::conv::add_relu(&y, &shortcut)?)
    }
}
