//! The mobile building blocks shared by EfficientNet, MobileNetV3 and MobileNetV4: squeeze-excite,
//! depthwise-separable, inverted-residual (MBConv), universal inverted-residual (UIB) and conv-bn-act blocks, built
//! from a stage table in timm's block-string vocabulary.

use candle_core::Tensor;

use crate::backbone::{FeatureInfo, Stage, Taps};
use crate::error::Result;
use crate::fused::conv_bn_act;
use crate::layers::{Activation, BatchNorm2d, Conv2d, ConvConfig, Linear, Padding};
use crate::params::ParamStore;

/// The kind of a block, as the first token of timm's block strings (`ds`, `ir`, `cn`, `uir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Depthwise-separable: dw conv, bn, act, [se], pw conv, bn (`ds`).
    DepthwiseSeparable,
    /// Inverted residual (MBConv): pw expand, bn, act, dw conv, bn, act, [se], pw project, bn (`ir`).
    InvertedResidual,
    /// Plain convolution, bn, act (`cn`).
    ConvBnAct,
    /// Universal inverted residual (MobileNetV4's UIB): [dw start, bn], pw expand, bn, act, [dw mid, bn, act],
    /// pw project, bn (`uir`).
    UniversalInverted,
}

/// One entry of an architecture table: `repeats` blocks of one kind (timm's `ir_r2_k3_s2_e6_c24_se0.25`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockArgs {
    /// Block kind.
    pub kind: BlockKind,
    /// Number of repeats (only the first block has `stride`).
    pub repeats: usize,
    /// Kernel size of the depthwise (or plain) convolution; for `uir` the middle depthwise (0: none).
    pub kernel: usize,
    /// Kernel size of the `uir` start depthwise convolution (timm's `a`; 0: none, and 0 for other kinds).
    pub start_kernel: usize,
    /// Stride of the first block.
    pub stride: usize,
    /// Expansion ratio of inverted residuals (1 for the others).
    pub expand: f64,
    /// Output channels.
    pub out: usize,
    /// Squeeze-excite ratio (0: no SE).
    pub se: f64,
    /// Activation inside the block.
    pub act: Activation,
}

impl BlockArgs {
    /// A depthwise-separable block (`ds_r1_k{k}_s{s}_c{c}_se{se}`).
    pub const fn ds(k: usize, s: usize, c: usize, se: f64, act: Activation) -> Self {
        Self {
            kind: BlockKind::DepthwiseSeparable,
            repeats: 1,
            kernel: k,
            start_kernel: 0,
            stride: s,
            expand: 1.0,
            out: c,
            se,
            act,
        }
    }

    /// `r` inverted residuals (`ir_r{r}_k{k}_s{s}_e{e}_c{c}_se{se}`).
    pub const fn ir(r: usize, k: usize, s: usize, e: f64, c: usize, se: f64, act: Activation) -> Self {
        Self {
            kind: BlockKind::InvertedResidual,
            repeats: r,
            kernel: k,
            start_kernel: 0,
            stride: s,
            expand: e,
            out: c,
            se,
            act,
        }
    }

    /// A conv-bn-act block (`cn_r1_k{k}_s{s}_c{c}`).
    pub const fn cn(k: usize, s: usize, c: usize, act: Activation) -> Self {
        Self {
            kind: BlockKind::ConvBnAct,
            repeats: 1,
            kernel: k,
            start_kernel: 0,
            stride: s,
            expand: 1.0,
            out: c,
            se: 0.0,
            act,
        }
    }

    /// `r` universal inverted residuals (`uir_r{r}_a{a}_k{k}_s{s}_e{e}_c{c}`): start depthwise kernel `a` and middle
    /// depthwise kernel `k` (0: absent; `a0_k3` is an IR, `a3_k0` ConvNeXt-like, `a3_k3` ExtraDW, `a0_k0` an FFN).
    pub const fn uir(r: usize, a: usize, k: usize, s: usize, e: f64, c: usize, act: Activation) -> Self {
        Self {
            kind: BlockKind::UniversalInverted,
            repeats: r,
            kernel: k,
            start_kernel: a,
            stride: s,
            expand: e,
            out: c,
            se: 0.0,
            act,
        }
    }
}

/// How the squeeze-excite reduced width is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeWidth {
    /// `round(block_in · ratio)` (EfficientNet).
    FromBlockInput,
    /// `make_divisible(mid · ratio, 8)` (MobileNetV3).
    FromMidDivisible,
}

/// Family-wide settings of a mobile network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileConfig {
    /// BatchNorm epsilon (1e-5 PyTorch, 1e-3 TF ports).
    pub eps: f64,
    /// TensorFlow "SAME" padding (TF ports) instead of symmetric `k / 2`.
    pub tf_same: bool,
    /// SE activation; `None` uses the block's activation.
    pub se_act: Option<Activation>,
    /// SE gate.
    pub se_gate: Activation,
    /// SE reduced width rule.
    pub se_width: SeWidth,
}

impl MobileConfig {
    /// The padding of a `k × k` convolution.
    pub fn padding(&self, k: usize) -> Padding {
        if self.tf_same {
            Padding::TfSame
        } else {
            Padding::Symmetric(k / 2)
        }
    }
}

/// timm's `make_divisible`: round `v` to a multiple of `divisor`, never below 90 % of `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) / d).floor() * d).max(d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

fn conv(
    store: &ParamStore,
    prefix: &str,
    cfg: &MobileConfig,
    (cin, cout, k, stride): (usize, usize, usize, usize),
    depthwise: bool,
) -> Result<Conv2d> {
    Conv2d::new(
        store,
        prefix,
        ConvConfig {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride,
            padding: cfg.padding(k),
            groups: if depthwise { cin } else { 1 },
            bias: false,
        },
    )
}

/// Squeeze-excite: global mean, 1×1 reduce (bias), act, 1×1 expand (bias), gate, channel-wise scale.
#[derive(Debug, Clone)]
pub struct SqueezeExcite {
    conv_reduce: Conv2d,
    conv_expand: Conv2d,
    act: Activation,
    gate: Activation,
}

impl SqueezeExcite {
    /// Take `{prefix}.conv_reduce` and `{prefix}.conv_expand` from `store`.
    pub fn new(
        store: &ParamStore,
        prefix: &str,
        channels: usize,
        reduced: usize,
        act: Activation,
        gate: Activation,
    ) -> Result<Self> {
        let c = |name: &str, cin: usize, cout: usize| {
            Conv2d::new(
                store,
                &format!("{prefix}.{name}"),
                ConvConfig {
                    in_channels: cin,
                    out_channels: cout,
                    kernel: 1,
                    bias: true,
                    ..ConvConfig::default()
                },
            )
        };
        Ok(Self {
            conv_reduce: c("conv_reduce", channels, reduced)?,
            conv_expand: c("conv_expand", reduced, channels)?,
            act,
            gate,
        })
    }

    /// The reduce and expand convolutions, the activation and the gate.
    pub fn parts(&self) -> (&Conv2d, &Conv2d, Activation, Activation) {
        (&self.conv_reduce, &self.conv_expand, self.act, self.gate)
    }

    /// Rescale the channels of `x` (N×C×H×W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.mean_keepdim(2)?.mean_keepdim(3)?;
        let s = self.act.forward(&self.conv_reduce.forward(&s)?)?;
        let s = self.gate.forward(&self.conv_expand.forward(&s)?)?;
        Ok(x.broadcast_mul(&s)?)
    }
}

/// One block of a mobile network, with timm's parameter names under `blocks.{stage}.{index}`.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a few dozen blocks, built once: boxing would buy nothing
pub enum Block {
    /// `conv_dw`, `bn1`, act, `se`, `conv_pw`, `bn2` (+ residual).
    DepthwiseSeparable {
        /// Depthwise convolution.
        conv_dw: Conv2d,
        /// BN after the depthwise convolution.
        bn1: BatchNorm2d,
        /// Optional squeeze-excite.
        se: Option<SqueezeExcite>,
        /// Pointwise projection.
        conv_pw: Conv2d,
        /// BN after the projection.
        bn2: BatchNorm2d,
        /// Activation.
        act: Activation,
        /// Residual connection (stride 1, in == out).
        skip: bool,
    },
    /// `conv_pw`, `bn1`, act, `conv_dw`, `bn2`, act, `se`, `conv_pwl`, `bn3` (+ residual).
    InvertedResidual {
        /// Pointwise expansion.
        conv_pw: Conv2d,
        /// BN after the expansion.
        bn1: BatchNorm2d,
        /// Depthwise convolution.
        conv_dw: Conv2d,
        /// BN after the depthwise convolution.
        bn2: BatchNorm2d,
        /// Optional squeeze-excite.
        se: Option<SqueezeExcite>,
        /// Pointwise linear projection.
        conv_pwl: Conv2d,
        /// BN after the projection.
        bn3: BatchNorm2d,
        /// Activation.
        act: Activation,
        /// Residual connection (stride 1, in == out).
        skip: bool,
    },
    /// `conv`, `bn1`, act.
    ConvBnAct {
        /// Convolution.
        conv: Conv2d,
        /// BN.
        bn1: BatchNorm2d,
        /// Activation.
        act: Activation,
    },
    /// `dw_start`, `pw_exp`, `dw_mid`, `pw_proj`, each `{conv, bn}` (+ residual); timm's `UniversalInvertedResidual`
    /// without SE, `dw_end` and layer scale (none of MobileNetV4's conv variants use them).
    UniversalInverted {
        /// Optional start depthwise convolution, no activation (stride when there is no middle one).
        dw_start: Option<ConvNormAct>,
        /// Pointwise expansion with activation.
        pw_exp: ConvNormAct,
        /// Optional middle depthwise convolution with activation (carries the stride).
        dw_mid: Option<ConvNormAct>,
        /// Pointwise linear projection.
        pw_proj: ConvNormAct,
        /// Residual connection (stride 1, in == out).
        skip: bool,
    },
}

impl Block {
    /// Build one block under `prefix` from `args` with `cin` input channels and the given stride.
    pub fn new(
        store: &ParamStore,
        prefix: &str,
        cfg: &MobileConfig,
        args: &BlockArgs,
        cin: usize,
        stride: usize,
    ) -> Result<Self> {
        let p = |s: &str| format!("{prefix}.{s}");
        let bn = |s: &str, c: usize| BatchNorm2d::new(store, &p(s), c, cfg.eps);
        let (k, cout, act) = (args.kernel, args.out, args.act);
        let skip = stride == 1 && cin == cout;
        let se = |mid: usize| -> Result<Option<SqueezeExcite>> {
            if args.se <= 0.0 {
                return Ok(None);
            }
            let reduced = match cfg.se_width {
                SeWidth::FromBlockInput => (cin as f64 * args.se).round() as usize,
                SeWidth::FromMidDivisible => make_divisible(mid as f64 * args.se, 8),
            };
            let se_act = cfg.se_act.unwrap_or(act);
            SqueezeExcite::new(store, &p("se"), mid, reduced, se_act, cfg.se_gate).map(Some)
        };
        Ok(match args.kind {
            BlockKind::DepthwiseSeparable => Block::DepthwiseSeparable {
                conv_dw: conv(store, &p("conv_dw"), cfg, (cin, cin, k, stride), true)?,
                bn1: bn("bn1", cin)?,
                se: se(cin)?,
                conv_pw: conv(store, &p("conv_pw"), cfg, (cin, cout, 1, 1), false)?,
                bn2: bn("bn2", cout)?,
                act,
                skip,
            },
            BlockKind::InvertedResidual => {
                let mid = make_divisible(cin as f64 * args.expand, 8);
                Block::InvertedResidual {
                    conv_pw: conv(store, &p("conv_pw"), cfg, (cin, mid, 1, 1), false)?,
                    bn1: bn("bn1", mid)?,
                    conv_dw: conv(store, &p("conv_dw"), cfg, (mid, mid, k, stride), true)?,
                    bn2: bn("bn2", mid)?,
                    se: se(mid)?,
                    conv_pwl: conv(store, &p("conv_pwl"), cfg, (mid, cout, 1, 1), false)?,
                    bn3: bn("bn3", cout)?,
                    act,
                    skip,
                }
            }
            BlockKind::ConvBnAct => Block::ConvBnAct {
                conv: conv(store, &p("conv"), cfg, (cin, cout, k, stride), false)?,
                bn1: bn("bn1", cout)?,
                act,
            },
            BlockKind::UniversalInverted => {
                let a = args.start_kernel;
                if stride > 1 && a == 0 && k == 0 {
                    return Err(crate::error::Error::Msg(format!(
                        "{prefix}: a strided universal inverted residual needs a depthwise convolution"
                    )));
                }
                let mid = make_divisible(cin as f64 * args.expand, 8);
                // `{name}.conv` + `{name}.bn` (timm's ConvNormAct).
                let cna = |name: &str, (ci, co, k, s): (usize, usize, usize, usize), dw: bool, act: Activation| {
                    Ok::<_, crate::error::Error>(ConvNormAct {
                        conv: conv(store, &p(&format!("{name}.conv")), cfg, (ci, co, k, s), dw)?,
                        bn: bn(&format!("{name}.bn"), co)?,
                        act,
                    })
                };
                let none = Activation::None;
                let start_stride = if k > 0 { 1 } else { stride };
                Block::UniversalInverted {
                    dw_start: (a > 0)
                        .then(|| cna("dw_start", (cin, cin, a, start_stride), true, none))
                        .transpose()?,
                    pw_exp: cna("pw_exp", (cin, mid, 1, 1), false, act)?,
                    dw_mid: (k > 0)
                        .then(|| cna("dw_mid", (mid, mid, k, stride), true, act))
                        .transpose()?,
                    pw_proj: cna("pw_proj", (mid, cout, 1, 1), false, none)?,
                    skip,
                }
            }
        })
    }

    /// Apply the block to `x` (N×C×H×W); `train` lets unfrozen BatchNorms use batch statistics.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Block::DepthwiseSeparable {
                conv_dw,
                bn1,
                se,
                conv_pw,
                bn2,
                act,
                skip,
            } => {
                let mut y = conv_bn_act(conv_dw, bn1, *act, x, train)?;
                if let Some(se) = se {
                    y = se.forward(&y)?;
                }
                let y = conv_bn_act(conv_pw, bn2, Activation::None, &y, train)?;
                if *skip {
                    Ok((y + x)?)
                } else {
                    Ok(y)
                }
            }
            Block::InvertedResidual {
                conv_pw,
                bn1,
                conv_dw,
                bn2,
                se,
                conv_pwl,
                bn3,
                act,
                skip,
            } => {
                let y = conv_bn_act(conv_pw, bn1, *act, x, train)?;
                let mut y = conv_bn_act(conv_dw, bn2, *act, &y, train)?;
                if let Some(se) = se {
                    y = se.forward(&y)?;
                }
                let y = conv_bn_act(conv_pwl, bn3, Activation::None, &y, train)?;
                if *skip {
                    Ok((y + x)?)
                } else {
                    Ok(y)
                }
            }
            Block::ConvBnAct { conv, bn1, act } => conv_bn_act(conv, bn1, *act, x, train),
            Block::UniversalInverted {
                dw_start,
                pw_exp,
                dw_mid,
                pw_proj,
                skip,
            } => {
                let y = match dw_start {
                    Some(d) => d.forward(x, train)?,
                    None => x.clone(),
                };
                let y = pw_exp.forward(&y, train)?;
                let y = match dw_mid {
                    Some(d) => d.forward(&y, train)?,
                    None => y,
                };
                let y = pw_proj.forward(&y, train)?;
                if *skip {
                    Ok((y + x)?)
                } else {
                    Ok(y)
                }
            }
        }
    }
}

/// A convolution, BatchNorm and activation with free names (the stem: `conv_stem`, `bn1`).
#[derive(Debug, Clone)]
pub struct ConvNormAct {
    /// Convolution.
    pub conv: Conv2d,
    /// BatchNorm.
    pub bn: BatchNorm2d,
    /// Activation.
    pub act: Activation,
}

impl ConvNormAct {
    /// A dense `k × k` convolution named `conv_name` followed by BatchNorm `bn_name` and `act`.
    pub fn new(
        store: &ParamStore,
        (conv_name, bn_name): (&str, &str),
        cfg: &MobileConfig,
        (cin, cout, k, stride): (usize, usize, usize, usize),
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            conv: conv(store, conv_name, cfg, (cin, cout, k, stride), false)?,
            bn: BatchNorm2d::new(store, bn_name, cout, cfg.eps)?,
            act,
        })
    }

    /// Apply to `x`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        conv_bn_act(&self.conv, &self.bn, self.act, x, train)
    }
}

/// Build every stage of `table` under `blocks.{stage}.{index}`; returns the stages and the output width.
pub fn build_stages(
    store: &ParamStore,
    cfg: &MobileConfig,
    table: &[&[BlockArgs]],
    cin: usize,
) -> Result<(Vec<Vec<Block>>, usize)> {
    let mut stages = Vec::with_capacity(table.len());
    let mut c = cin;
    for (si, stage) in table.iter().enumerate() {
        let mut blocks = Vec::new();
        for args in stage.iter() {
            for r in 0..args.repeats {
                let stride = if r == 0 { args.stride } else { 1 };
                let prefix = format!("blocks.{si}.{}", blocks.len());
                blocks.push(Block::new(store, &prefix, cfg, args, c, stride)?);
                c = args.out;
            }
        }
        stages.push(blocks);
    }
    Ok((stages, c))
}

/// Run `x` through every block of every stage.
pub fn forward_stages(stages: &[Vec<Block>], x: &Tensor, train: bool) -> Result<Tensor> {
    let mut x = x.clone();
    for stage in stages {
        for block in stage {
            x = block.forward(&x, train)?;
        }
    }
    Ok(x)
}

/// The multi-scale features of a mobile network with a `stem`-channel stem (timm's full rule): the stem's output
/// (`bn1`, 1/2) when the first block has a stride, then [`mobile_feature_info`].
pub fn mobile_feature_info_with_stem(table: &[&[BlockArgs]], stem: usize) -> Vec<FeatureInfo> {
    let mut info = Vec::new();
    if table.first().and_then(|s| s.first()).is_some_and(|a| a.stride > 1) {
        info.push(FeatureInfo::new("bn1", 2, stem));
    }
    info.extend(mobile_feature_info(table));
    info
}

/// The multi-scale features of a mobile network (timm's rule): the output of each stage after which the
/// resolution halves, and of the last stage (the stem has stride 2; for the stem's own map see
/// [`mobile_feature_info_with_stem`]).
pub fn mobile_feature_info(table: &[&[BlockArgs]]) -> Vec<FeatureInfo> {
    let strides: Vec<usize> = table.iter().map(|s| s.iter().map(|a| a.stride).product()).collect();
    let mut info = Vec::new();
    let mut reduction = 2;
    for (i, stage) in table.iter().enumerate() {
        reduction *= strides[i];
        let next_halves = strides.get(i + 1).is_none_or(|&s| s > 1);
        if let (true, Some(last)) = (next_halves, stage.last()) {
            info.push(FeatureInfo::new(format!("blocks.{i}"), reduction, last.out));
        }
    }
    info
}

/// The chosen multi-scale maps of a mobile network: the stem's output (itself map `bn1` when `info` lists it) runs
/// through the stages, stopping after the last map asked for.
pub fn forward_mobile_multiscale(
    stages: &[Vec<Block>],
    info: &[FeatureInfo],
    x: &Tensor,
    train: bool,
    out_indices: &[usize],
) -> Result<Vec<Tensor>> {
    let mut taps = Taps::new(out_indices);
    if let Some(k) = info.iter().position(|f| f.module == "bn1") {
        taps.keep(k, x);
        if taps.done() {
            return Ok(taps.finish());
        }
    }
    let mut x = x.clone();
    for (i, stage) in stages.iter().enumerate() {
        for block in stage {
            x = block.forward(&x, train)?;
        }
        let name = format!("blocks.{i}");
        if let Some(k) = info.iter().position(|f| f.module == name) {
            taps.keep(k, &x);
            if taps.done() {
                break;
            }
        }
    }
    Ok(taps.finish())
}

/// The stages of a mobile network: `stem`, `blocks.0` … `blocks.{n-1}`, `head` with the given head prefixes.
pub fn mobile_stages(n_blocks: usize, head: &[&str]) -> Vec<Stage> {
    let mut out = vec![Stage::new("stem", &["conv_stem", "bn1"])];
    for i in 0..n_blocks {
        let name = format!("blocks.{i}");
        out.push(Stage::new(&name, &[name.as_str()]));
    }
    out.push(Stage::new("head", head));
    out
}

/// The ImageNet classifier `{prefix}` when the store provides its weight (a headless checkpoint: `None`).
pub fn optional_classifier(store: &ParamStore, prefix: &str, in_dim: usize, classes: usize) -> Result<Option<Linear>> {
    if store.contains(&format!("{prefix}.weight")) {
        Ok(Some(Linear::new(store, prefix, in_dim, classes, true)?))
    } else {
        Ok(None)
    }
}
