//! ConvNeXt (Liu et al., 2022, "A ConvNet for the 2020s") with timm's parameter names: `convnext_atto`,
//! `convnext_tiny`.
//!
//! Stem: `stem.0` 4×4/4 patchify convolution + `stem.1` LayerNorm over channels. Then `stages.0..3`; stages 1–3
//! open with a `downsample` (LayerNorm + 2×2/2 convolution). Each block: depthwise 7×7 `conv_dw` → `norm` →
//! `mlp.fc1` (4× wider) → GELU → `mlp.fc2` → layer scale `gamma` → + input. Head (pre-logits): global average
//! pool → `head.norm`; classifier `head.fc`.
//!
//! Runs channels-last (N×H×W×C) end to end, the layout timm's blocks compute in: the stem and downsample patchify
//! convolutions are a reshape + one matmul over pixel rows, LayerNorms and the MLP work on pixel rows, the 7×7
//! depthwise convolution is [`depthwise_conv2d_nhwc`]. Maps are converted to N×C×H×W only where the [`Backbone`]
//! methods return them.

use candle_core::Tensor;

use crate::backbone::{check_out_indices, Backbone, FeatureInfo, Stage, Taps};
use crate::error::{Error, Result};
use crate::layers::{gelu, Conv2d, ConvConfig, LayerNorm, Linear, Padding};
use crate::ops::{add_bias, depthwise_conv2d_nhwc, linear_rows};
use crate::params::{Param, ParamRole, ParamStore};

/// One ConvNeXt variant: timm's `ConvNeXt` arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvNextConfig {
    /// timm architecture name.
    pub name: &'static str,
    /// Blocks in `stages.0..3`.
    pub depths: [usize; 4],
    /// Channels of `stages.0..3`.
    pub dims: [usize; 4],
    /// Stem patch size (stride 4 overall at `stages.0`).
    pub patch_size: usize,
    /// Depthwise kernel of every block.
    pub kernel_size: usize,
    /// MLP hidden width / block width.
    pub mlp_ratio: f64,
    /// Layer-scale init value: `Some` when blocks have `gamma` (timm: 1e-6).
    pub ls_init_value: Option<f64>,
    /// timm's `conv_mlp`: the MLP is stored as 1×1 convolutions (`out × in × 1 × 1`) instead of linear layers.
    pub conv_mlp: bool,
    /// Classes of the pretrained classifier `head.fc`.
    pub num_classes: usize,
    /// LayerNorm epsilon (timm: 1e-6).
    pub eps: f64,
}

impl ConvNextConfig {
    /// A ConvNeXt with timm's defaults (patch 4, kernel 7, MLP ×4, layer scale 1e-6, ImageNet-1k classifier).
    pub const fn new(name: &'static str, depths: [usize; 4], dims: [usize; 4], conv_mlp: bool) -> Self {
        Self {
            name,
            depths,
            dims,
            patch_size: 4,
            kernel_size: 7,
            mlp_ratio: 4.0,
            ls_init_value: Some(1e-6),
            conv_mlp,
            num_classes: 1000,
            eps: 1e-6,
        }
    }
}

/// Every supported ConvNeXt (timm's `convnext_atto` is a timm original with 1×1-convolution MLPs).
pub const CONFIGS: &[ConvNextConfig] = &[
    ConvNextConfig::new("convnext_atto", [2, 2, 6, 2], [40, 80, 160, 320], true),
    ConvNextConfig::new("convnext_tiny", [3, 3, 9, 3], [96, 192, 384, 768], false),
];

/// The configuration of the timm architecture `name`, if it is a supported ConvNeXt.
pub fn config(name: &str) -> Option<&'static ConvNextConfig> {
    CONFIGS.iter().find(|c| c.name == name)
}

/// A pointwise layer stored either as a linear layer (`out × in`) or a 1×1 convolution (`out × in × 1 × 1`).
#[derive(Debug, Clone)]
struct Pointwise {
    weight: Param,
    bias: Param,
    dims: (usize, usize),
}

impl Pointwise {
    fn new(store: &ParamStore, prefix: &str, (i, o): (usize, usize), conv: bool) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let weight = if conv {
            store.param(&name, (o, i, 1, 1))?
        } else {
            store.param(&name, (o, i))?
        };
        Ok(Self {
            weight,
            bias: store.param_with_role(&format!("{prefix}.bias"), o, ParamRole::Bias, false)?,
            dims: (i, o),
        })
    }

    /// `x` (rows × in) → `(x · Wᵀ + b) · scale [+ skip]` (rows × out), `scale` per output channel folded into the
    /// weight and bias (a weight-sized multiply instead of an activation-sized one; gradients pass through the fold).
    /// Without gradients, one fused GEMM with the bias and residual epilogue ([`linear_rows`]).
    fn forward(&self, x: &Tensor, scale: Option<&Tensor>, skip: Option<&Tensor>) -> Result<Tensor> {
        let (i, o) = self.dims;
        let w = self.weight.tensor().reshape((o, i))?;
        let b = self.bias.tensor();
        let (w, b) = match scale {
            Some(s) => (w.broadcast_mul(&s.reshape((o, 1))?)?, (b * s)?),
            None => (w, b),
        };
        Ok(linear_rows(x, &w, &b, skip)?)
    }
}

/// A patchify convolution (kernel = stride = `p`, no padding, as timm's stem and downsample) of the channels-last
/// `x` (N×H×W×C) as one matmul over patch rows → N×(H/p)×(W/p)×out (floor, like the convolution).
fn patchify_nhwc(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let (p, co) = (conv.cfg.kernel, conv.cfg.out_channels);
    let (ho, wo) = (h / p, w / p);
    let x = if h % p != 0 || w % p != 0 {
        x.narrow(1, 0, ho * p)?.narrow(2, 0, wo * p)?.contiguous()?
    } else {
        x.clone()
    };
    // Rows of (ky, kx, ci) — runs of p·C contiguous values; the weight is permuted to the same order.
    let rows = x
        .reshape((n, ho, p, wo, p, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((n * ho * wo, p * p * c))?;
    let wt = conv.weight.tensor().permute((0, 2, 3, 1))?.reshape((co, p * p * c))?;
    Ok(rows_matmul(&rows, &wt, conv)?.reshape((n, ho, wo, co))?)
}

/// The patchify convolution `conv` of the channels-first `x` (N×C×H×W) → channels-last N×(H/p)×(W/p)×out.
fn patchify_nchw(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (p, co) = (conv.cfg.kernel, conv.cfg.out_channels);
    let (ho, wo) = (h / p, w / p);
    let x = if h % p != 0 || w % p != 0 {
        x.narrow(2, 0, ho * p)?.narrow(3, 0, wo * p)?.contiguous()?
    } else {
        x.contiguous()?
    };
    // Rows of (ci, ky, kx): the weight's own order.
    let rows = x
        .reshape((n, c, ho, p, wo, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((n * ho * wo, c * p * p))?;
    let wt = conv.weight.tensor().reshape((co, c * p * p))?;
    Ok(rows_matmul(&rows, &wt, conv)?.reshape((n, ho, wo, co))?)
}

/// Patch rows times the flattened weight `w` (out × patch), plus the convolution's bias.
fn rows_matmul(rows: &Tensor, w: &Tensor, conv: &Conv2d) -> Result<Tensor> {
    Ok(match &conv.bias {
        Some(b) => linear_rows(rows, w, &b.tensor(), None)?,
        None => rows.matmul(&w.t()?)?,
    })
}

/// LayerNorm over the last dimension of a channels-last map (fused for inference).
fn norm_nhwc(norm: &LayerNorm, x: &Tensor, fused: bool) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let c = dims[dims.len() - 1];
    let rows = x.reshape((x.elem_count() / c.max(1), c))?;
    let y = if fused {
        norm.forward_fused(&rows)?
    } else {
        norm.forward(&rows)?
    };
    Ok(y.reshape(dims)?)
}

/// One ConvNeXt block.
#[derive(Debug, Clone)]
struct Block {
    conv_dw: Conv2d,
    norm: LayerNorm,
    fc1: Pointwise,
    fc2: Pointwise,
    gamma: Option<Param>,
}

impl Block {
    fn new(store: &ParamStore, prefix: &str, cfg: &ConvNextConfig, c: usize) -> Result<Self> {
        let hidden = (c as f64 * cfg.mlp_ratio) as usize;
        let k = cfg.kernel_size;
        Ok(Self {
            conv_dw: Conv2d::new(
                store,
                &format!("{prefix}.conv_dw"),
                ConvConfig {
                    in_channels: c,
                    out_channels: c,
                    kernel: k,
                    stride: 1,
                    padding: Padding::Symmetric(k / 2),
                    groups: c,
                    bias: true,
                },
            )?,
            norm: LayerNorm::new(store, &format!("{prefix}.norm"), c, cfg.eps)?,
            fc1: Pointwise::new(store, &format!("{prefix}.mlp.fc1"), (c, hidden), cfg.conv_mlp)?,
            fc2: Pointwise::new(store, &format!("{prefix}.mlp.fc2"), (hidden, c), cfg.conv_mlp)?,
            gamma: cfg
                .ls_init_value
                .map(|_| store.param_with_role(&format!("{prefix}.gamma"), c, ParamRole::LayerScale, true))
                .transpose()?,
        })
    }

    /// `x` N×H×W×C (channels-last, timm's two layouts compute the same function) → N×H×W×C.
    fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let cfg = &self.conv_dw.cfg;
        let pad = cfg.padding.amounts(h, w, cfg.kernel, cfg.stride, 1);
        let y = depthwise_conv2d_nhwc(x, &self.conv_dw.weight.tensor(), cfg.stride, pad)?;
        let y = y.reshape((n * h * w, c))?;
        let y = match &self.conv_dw.bias {
            Some(b) => add_bias(&y, &b.tensor())?,
            None => y,
        };
        let y = if fused {
            self.norm.forward_fused(&y)?
        } else {
            self.norm.forward(&y)?
        };
        let y = gelu(&self.fc1.forward(&y, None, None)?)?;
        let gamma = self.gamma.as_ref().map(|g| g.tensor());
        let y = self
            .fc2
            .forward(&y, gamma.as_ref(), Some(&x.reshape((n * h * w, c))?))?;
        Ok(y.reshape((n, h, w, c))?)
    }
}

/// One stage: optional `downsample` (LayerNorm + strided convolution), then its blocks.
#[derive(Debug, Clone)]
struct StageLayers {
    downsample: Option<(LayerNorm, Conv2d)>,
    blocks: Vec<Block>,
}

impl StageLayers {
    /// `x` N×H×W×C → the stage's output, channels-last.
    fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let mut x = match &self.downsample {
            Some((norm, conv)) => patchify_nhwc(conv, &norm_nhwc(norm, x, fused)?)?,
            None => x.clone(),
        };
        for b in &self.blocks {
            x = b.forward(&x, fused)?;
        }
        Ok(x)
    }
}

/// A ConvNeXt backbone (parameters frozen when built).
#[derive(Debug, Clone)]
pub struct ConvNext {
    cfg: ConvNextConfig,
    store: ParamStore,
    stem_conv: Conv2d,
    stem_norm: LayerNorm,
    stages: Vec<StageLayers>,
    head_norm: LayerNorm,
    head_fc: Option<Linear>,
}

impl ConvNext {
    /// Build `cfg` from `store`; the classifier `head.fc` only when the store can provide `head.fc.weight`.
    pub fn new(cfg: &ConvNextConfig, store: &ParamStore) -> Result<Self> {
        let d = cfg.dims;
        let stem_conv = Conv2d::new(
            store,
            "stem.0",
            ConvConfig {
                in_channels: 3,
                out_channels: d[0],
                kernel: cfg.patch_size,
                stride: cfg.patch_size,
                padding: Padding::Symmetric(0),
                groups: 1,
                bias: true,
            },
        )?;
        let stem_norm = LayerNorm::new(store, "stem.1", d[0], cfg.eps)?;
        let mut stages = Vec::with_capacity(4);
        for i in 0..4 {
            let downsample = if i == 0 {
                None
            } else {
                let norm = LayerNorm::new(store, &format!("stages.{i}.downsample.0"), d[i - 1], cfg.eps)?;
                let conv = Conv2d::new(
                    store,
                    &format!("stages.{i}.downsample.1"),
                    ConvConfig {
                        in_channels: d[i - 1],
                        out_channels: d[i],
                        kernel: 2,
                        stride: 2,
                        padding: Padding::Symmetric(0),
                        groups: 1,
                        bias: true,
                    },
                )?;
                Some((norm, conv))
            };
            let blocks = (0..cfg.depths[i])
                .map(|j| Block::new(store, &format!("stages.{i}.blocks.{j}"), cfg, d[i]))
                .collect::<Result<Vec<_>>>()?;
            stages.push(StageLayers { downsample, blocks });
        }
        let head_norm = LayerNorm::new(store, "head.norm", d[3], cfg.eps)?;
        let head_fc = if cfg.num_classes > 0 && store.contains("head.fc.weight") {
            Some(Linear::new(store, "head.fc", d[3], cfg.num_classes, true)?)
        } else {
            None
        };
        Ok(Self {
            cfg: *cfg,
            store: store.clone(),
            stem_conv,
            stem_norm,
            stages,
            head_norm,
            head_fc,
        })
    }

    /// Build the timm architecture `name` (`convnext_atto`, `convnext_tiny`).
    pub fn from_name(name: &str, store: &ParamStore) -> Result<Self> {
        let cfg = config(name).ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            suggestion: None,
        })?;
        Self::new(cfg, store)
    }

    /// The configuration.
    pub fn config(&self) -> &ConvNextConfig {
        &self.cfg
    }

    /// Whether a forward pass may use candle's fused LayerNorm (eval, CPU f32, nothing trainable).
    pub fn uses_inference_path(&self, x: &Tensor, train: bool) -> bool {
        crate::infer::eligible(&self.store, x, train) && !x.track_op()
    }

    /// The stem of the N×C×H×W image batch `x` → channels-last N×(H/4)×(W/4)×C.
    fn stem(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        norm_nhwc(&self.stem_norm, &patchify_nchw(&self.stem_conv, x)?, fused)
    }

    /// The last stage's map, channels-last N×h×w×C.
    fn forward_nhwc(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let fused = self.uses_inference_path(x, train);
        let mut x = self.stem(x, fused)?;
        for s in &self.stages {
            x = s.forward(&x, fused)?;
        }
        Ok(x)
    }
}

/// A channels-last map N×H×W×C as N×C×H×W (contiguous), the layout the [`Backbone`] methods return.
fn to_nchw(x: &Tensor) -> Result<Tensor> {
    Ok(x.permute((0, 3, 1, 2))?.contiguous()?)
}

impl Backbone for ConvNext {
    fn name(&self) -> &str {
        self.cfg.name
    }

    fn num_features(&self) -> usize {
        self.cfg.dims[3]
    }

    /// `stem`, `stages.0` … `stages.3`, `head` (= `head.norm`, part of the pre-logits features).
    fn stages(&self) -> Vec<Stage> {
        let mut stages = vec![Stage::new("stem", &["stem"])];
        stages.extend((0..4).map(|i| {
            let name = format!("stages.{i}");
            Stage::new(&name, &[name.as_str()])
        }));
        stages.push(Stage::new("head", &["head.norm"]));
        stages
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Every block of every stage (timm's fine `group_matcher`: one layer per block).
    fn num_layers(&self) -> Option<usize> {
        Some(self.cfg.depths.iter().sum())
    }

    /// timm's fine `group_matcher`: `stem` 0; `stages.i.blocks.j` 1 + (blocks of the stages before i) + j;
    /// `stages.i.downsample` with `stages.i.blocks.0`; the rest (`head.norm`, `head.fc`) `num_layers + 1`.
    fn layer_id(&self, name: &str) -> Option<usize> {
        let total: usize = self.cfg.depths.iter().sum();
        if crate::params::name_has_prefix(name, "stem") {
            return Some(0);
        }
        let mut parts = name.split('.');
        let id = match (parts.next(), parts.next().and_then(|i| i.parse::<usize>().ok())) {
            (Some("stages"), Some(i)) if i < 4 => {
                let before: usize = self.cfg.depths[..i].iter().sum();
                match (parts.next(), parts.next().and_then(|j| j.parse::<usize>().ok())) {
                    (Some("blocks"), Some(j)) => 1 + before + j.min(self.cfg.depths[i].saturating_sub(1)),
                    _ => 1 + before,
                }
            }
            _ => total + 1,
        };
        Some(id)
    }

    /// The last stage's map, N×C×h×w, before the head norm (timm's `forward_features`).
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        to_nchw(&self.forward_nhwc(x, train)?)
    }

    /// The output of each of `stages.0..3` (1/4 … 1/32), as timm.
    fn feature_info(&self) -> Vec<FeatureInfo> {
        (0..4)
            .map(|i| FeatureInfo::new(format!("stages.{i}"), 4 << i, self.cfg.dims[i]))
            .collect()
    }

    fn forward_multiscale(&self, x: &Tensor, train: bool, out_indices: &[usize]) -> Result<Vec<Tensor>> {
        check_out_indices(self.cfg.name, 4, out_indices)?;
        let fused = self.uses_inference_path(x, train);
        let mut taps = Taps::new(out_indices);
        let mut x = self.stem(x, fused)?;
        for (i, s) in self.stages.iter().enumerate() {
            if taps.done() {
                break;
            }
            x = s.forward(&x, fused)?;
            taps.keep(i, &x);
        }
        taps.finish().iter().map(to_nchw).collect()
    }

    /// timm's pre-logits features: global average pool, then `head.norm` (pooled channels-last, no conversion).
    fn forward_pooled(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.forward_nhwc(x, train)?;
        let (n, h, w, c) = y.dims4()?;
        self.head_norm.forward(&y.reshape((n, h * w, c))?.mean(1)?)
    }

    fn has_classifier(&self) -> bool {
        self.head_fc.is_some()
    }

    fn classify(&self, pooled: &Tensor) -> Result<Option<Tensor>> {
        self.head_fc.as_ref().map(|fc| fc.forward(pooled)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn conv(ci: usize, co: usize, p: usize) -> Conv2d {
        let tensors = HashMap::from([
            ("c.weight".to_string(), rand(&[co, ci, p, p], 1)),
            ("c.bias".to_string(), rand(&[co], 2)),
        ]);
        let store = ParamStore::from_tensors(tensors, DType::F32, &Device::Cpu);
        let cfg = ConvConfig {
            in_channels: ci,
            out_channels: co,
            kernel: p,
            stride: p,
            padding: Padding::Symmetric(0),
            groups: 1,
            bias: true,
        };
        Conv2d::new(&store, "c", cfg).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    /// The patchify matmuls equal the strided convolution (floor output) from either layout, also when the input
    /// size is not a multiple of the patch.
    #[test]
    fn patchify_matches_the_strided_convolution() {
        for (ci, co, p, h, w) in [(3, 8, 4, 16, 16), (3, 5, 4, 18, 23), (6, 12, 2, 7, 9), (5, 3, 2, 2, 2)] {
            let c = conv(ci, co, p);
            let x = rand(&[2, ci, h, w], 3);
            let want = c.forward(&x).unwrap().permute((0, 2, 3, 1)).unwrap();
            let from_nchw = patchify_nchw(&c, &x).unwrap();
            let from_nhwc = patchify_nhwc(&c, &x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()).unwrap();
            assert!(max_diff(&from_nchw, &want) < 1e-5, "{ci}->{co} p{p} {h}x{w}");
            assert!(max_diff(&from_nhwc, &want) < 1e-5, "{ci}->{co} p{p} {h}x{w}");
        }
    }
}
