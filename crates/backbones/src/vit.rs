//! Vision Transformer (Dosovitskiy et al., 2020) and DINOv2 (Oquab et al., 2023) with timm's parameter names:
//! `vit_tiny_patch16_224`, `vit_small_patch16_224`, `vit_small_patch14_dinov2`, `vit_base_patch14_dinov2`.
//!
//! `patch_embed.proj` (p×p/p convolution) → prefix tokens (`cls_token`, optional `reg_token`) and `pos_embed` →
//! optional `norm_pre` → `blocks.{i}` (pre-norm: `x + ls1(attn(norm1(x)))`, `x + ls2(mlp(norm2(x)))`, layer scale
//! optional) → final `norm` → pooling (class token, or the mean of the patch tokens then `fc_norm`) → `head`.
//! DINOv2 is a configuration of the same code: patch 14, layer scale, no classifier, checkpoint grid 37×37 (518 px),
//! position embeddings resampled to any input size as timm's `resample_abs_pos_embed` does.

use candle_core::{DType, Tensor};

use crate::backbone::{check_out_indices, Backbone, FeatureInfo, Stage, Taps};
use crate::error::{Error, Result};
use crate::layers::{gelu, linear_nd, Conv2d, ConvConfig, LayerNorm, Linear, Padding};
use crate::params::{Param, ParamRole, ParamStore};

/// How the token sequence is pooled into the pre-logits features (timm's `global_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPool {
    /// The class token (`'token'`), after the final `norm`.
    Token,
    /// The mean of the patch tokens (`'avg'`), then `fc_norm` (timm then has no final `norm`).
    Avg,
}

/// One ViT variant: timm's `VisionTransformer` arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VitConfig {
    /// timm architecture name.
    pub name: &'static str,
    /// Square input size the checkpoint's `pos_embed` grid was made for (grid = `img_size / patch_size`).
    pub img_size: usize,
    /// Square patch size (stride of the patch embedding).
    pub patch_size: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP hidden width / `embed_dim`.
    pub mlp_ratio: f64,
    /// Whether `attn.qkv` has a bias.
    pub qkv_bias: bool,
    /// Layer-scale init value: `Some` when blocks have `ls1.gamma` / `ls2.gamma` (DINOv2: 1e-5).
    pub init_values: Option<f64>,
    /// Whether a class token leads the sequence.
    pub class_token: bool,
    /// Register tokens after the class token (`reg_token`, DINOv2 `_reg4`: 4).
    pub reg_tokens: usize,
    /// Position embeddings cover the patches only (added before the prefix tokens are prepended).
    pub no_embed_class: bool,
    /// LayerNorm `norm_pre` after the embedding (CLIP); the patch embedding then has no bias.
    pub pre_norm: bool,
    /// Pooling of the pre-logits features.
    pub global_pool: GlobalPool,
    /// timm's `dynamic_img_size`: any input size, position embeddings resampled at run time. Models without it are
    /// resampled the same way (timm does it once when loading a checkpoint made for another size).
    pub dynamic_img_size: bool,
    /// Classes of the pretrained classifier `head` (0: none, as DINOv2).
    pub num_classes: usize,
    /// LayerNorm epsilon (timm: 1e-6).
    pub eps: f64,
}

impl VitConfig {
    /// timm's classic ViT (class token, no layer scale, ImageNet-1k classifier) at 224 px.
    pub const fn vit(name: &'static str, patch_size: usize, embed_dim: usize, depth: usize, num_heads: usize) -> Self {
        Self {
            name,
            img_size: 224,
            patch_size,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            qkv_bias: true,
            init_values: None,
            class_token: true,
            reg_tokens: 0,
            no_embed_class: false,
            pre_norm: false,
            global_pool: GlobalPool::Token,
            dynamic_img_size: false,
            num_classes: 1000,
            eps: 1e-6,
        }
    }

    /// DINOv2: patch 14, layer scale 1e-5, checkpoint at 518 px, any input size, no classifier.
    pub const fn dinov2(name: &'static str, embed_dim: usize, depth: usize, num_heads: usize) -> Self {
        let mut c = Self::vit(name, 14, embed_dim, depth, num_heads);
        c.img_size = 518;
        c.init_values = Some(1e-5);
        c.dynamic_img_size = true;
        c.num_classes = 0;
        c
    }

    /// Class and register tokens before the patch tokens.
    pub const fn num_prefix_tokens(&self) -> usize {
        self.class_token as usize + self.reg_tokens
    }

    /// Side of the checkpoint's position-embedding grid.
    pub const fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Rows of `pos_embed`.
    pub const fn pos_embed_len(&self) -> usize {
        let g = self.grid();
        g * g
            + if self.no_embed_class {
                0
            } else {
                self.num_prefix_tokens()
            }
    }

    /// MLP hidden width.
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }
}

/// Every registered ViT.
pub const CONFIGS: &[VitConfig] = &[
    VitConfig::vit("vit_tiny_patch16_224", 16, 192, 12, 3),
    VitConfig::vit("vit_small_patch16_224", 16, 384, 12, 6),
    VitConfig::dinov2("vit_small_patch14_dinov2", 384, 12, 6),
    VitConfig::dinov2("vit_base_patch14_dinov2", 768, 12, 12),
];

/// timm's `vit_small_patch14_reg4_dinov2` (4 register tokens, position embeddings for the patches only); supported
/// by the code, not registered.
pub const VIT_SMALL_PATCH14_REG4_DINOV2: VitConfig = {
    let mut c = VitConfig::dinov2("vit_small_patch14_reg4_dinov2", 384, 12, 6);
    c.reg_tokens = 4;
    c.no_embed_class = true;
    c
};

/// The configuration of the registered timm architecture `name`, if it is a ViT.
pub fn config(name: &str) -> Option<&'static VitConfig> {
    CONFIGS.iter().find(|c| c.name == name)
}

/// Stages the blocks are grouped into for freezing (fewer when the model has fewer blocks).
pub const BLOCK_STAGES: usize = 4;

/// Interpolation weights of PyTorch's `F.interpolate(mode='bicubic', antialias=True, align_corners=False)` along
/// one axis, as an `out × in` row-major matrix (what timm's `resample_abs_pos_embed` uses).
///
/// PIL-style separable filter: cubic kernel with a = -0.5, support 2 widened by the scale when shrinking, taps
/// outside the input dropped and each row normalised to sum 1 (no edge replication).
pub fn bicubic_aa_weights(input: usize, output: usize) -> Vec<f64> {
    let cubic = |x: f64| {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    };
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut w = vec![0f64; output * input];
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // C++ truncates toward zero before clamping at 0.
        let xmin = ((center - support + 0.5).trunc() as i64).max(0) as usize;
        let xmax = ((center + support + 0.5).trunc() as i64).min(input as i64) as usize;
        let row = &mut w[i * input..(i + 1) * input];
        let mut total = 0.0;
        for (j, r) in row.iter_mut().enumerate().take(xmax).skip(xmin) {
            *r = cubic((j as f64 - center + 0.5) * invscale);
            total += *r;
        }
        if total != 0.0 {
            row.iter_mut().for_each(|r| *r /= total);
        }
    }
    w
}

/// timm's `resample_abs_pos_embed`: `pos` (1×(prefix + old_h·old_w)×C) to the grid `new` (h, w), the prefix rows
/// kept, the grid resampled bicubically with antialiasing; returned unchanged when the grid is the same.
///
/// Written as two matrix products, so gradients flow to `pos` when it is trainable.
pub fn resample_abs_pos_embed(
    pos: &Tensor,
    old: (usize, usize),
    new: (usize, usize),
    num_prefix_tokens: usize,
) -> Result<Tensor> {
    let (_, len, c) = pos.dims3()?;
    if len != num_prefix_tokens + old.0 * old.1 {
        return Err(Error::Msg(format!(
            "pos_embed has {len} rows, expected {num_prefix_tokens} prefix + {}×{} grid",
            old.0, old.1
        )));
    }
    if old == new {
        return Ok(pos.clone());
    }
    let dev = pos.device();
    let matrix = |input: usize, output: usize| -> Result<Tensor> {
        let w: Vec<f32> = bicubic_aa_weights(input, output)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        Ok(Tensor::from_vec(w, (output, input), dev)?.to_dtype(pos.dtype())?)
    };
    let grid = pos
        .narrow(1, num_prefix_tokens, old.0 * old.1)?
        .reshape((old.0, old.1, c))?;
    // Width first, then height (as PyTorch's separable pass); linear either way.
    let wide = matrix(old.1, new.1)?.broadcast_matmul(&grid)?; // old_h × new_w × C
    let tall = matrix(old.0, new.0)?.matmul(&wide.reshape((old.0, new.1 * c))?)?; // new_h × new_w·C
    let grid = tall.reshape((1, new.0 * new.1, c))?;
    if num_prefix_tokens == 0 {
        return Ok(grid);
    }
    Ok(Tensor::cat(&[&pos.narrow(1, 0, num_prefix_tokens)?, &grid], 1)?)
}

/// `attn`: fused `qkv` projection, multi-head scaled dot-product attention, `proj`.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn new(store: &ParamStore, prefix: &str, cfg: &VitConfig) -> Result<Self> {
        let c = cfg.embed_dim;
        if c % cfg.num_heads != 0 {
            return Err(Error::Msg(format!(
                "{}: embed_dim {c} is not divisible by {} heads",
                cfg.name, cfg.num_heads
            )));
        }
        Ok(Self {
            qkv: Linear::new(store, &format!("{prefix}.qkv"), c, 3 * c, cfg.qkv_bias)?,
            proj: Linear::new(store, &format!("{prefix}.proj"), c, c, true)?,
            heads: cfg.num_heads,
            scale: ((c / cfg.num_heads) as f64).powf(-0.5),
        })
    }

    /// `x` B×N×C; `fused`: inference (the attention keeps no graph). On the CPU in f32 the fused attention kernel
    /// (with its own backward), elsewhere the plain composition of ops.
    fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let qkv = linear_nd(&self.qkv, x)?;
        let y = if qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
            let qkv = if fused { qkv.detach() } else { qkv };
            kernels::ops::fused_attention(&qkv, self.heads, self.scale)?
        } else {
            kernels::ops::attention_composed(&qkv, self.heads, self.scale)?
        };
        linear_nd(&self.proj, &y)
    }
}

/// One pre-norm transformer block.
#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    ls1: Option<Param>,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ls2: Option<Param>,
}

impl Block {
    fn new(store: &ParamStore, prefix: &str, cfg: &VitConfig) -> Result<Self> {
        let (c, hidden) = (cfg.embed_dim, cfg.mlp_hidden());
        let ls = |name: &str| -> Result<Option<Param>> {
            cfg.init_values
                .map(|_| store.param_with_role(&format!("{prefix}.{name}.gamma"), c, ParamRole::LayerScale, true))
                .transpose()
        };
        Ok(Self {
            norm1: LayerNorm::new(store, &format!("{prefix}.norm1"), c, cfg.eps)?,
            attn: Attention::new(store, &format!("{prefix}.attn"), cfg)?,
            ls1: ls("ls1")?,
            norm2: LayerNorm::new(store, &format!("{prefix}.norm2"), c, cfg.eps)?,
            fc1: Linear::new(store, &format!("{prefix}.mlp.fc1"), c, hidden, true)?,
            fc2: Linear::new(store, &format!("{prefix}.mlp.fc2"), hidden, c, true)?,
            ls2: ls("ls2")?,
        })
    }

    fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let norm = |n: &LayerNorm, x: &Tensor| if fused { n.forward_fused(x) } else { n.forward(x) };
        let scale = |ls: &Option<Param>, y: Tensor| -> Result<Tensor> {
            match ls {
                Some(g) => Ok(y.broadcast_mul(&g.tensor())?),
                None => Ok(y),
            }
        };
        let y = self.attn.forward(&norm(&self.norm1, x)?, fused)?;
        let x = (x + scale(&self.ls1, y)?)?;
        let h = gelu(&linear_nd(&self.fc1, &norm(&self.norm2, &x)?)?)?;
        let y = linear_nd(&self.fc2, &h)?;
        Ok((&x + scale(&self.ls2, y)?)?)
    }
}

/// A Vision Transformer backbone (parameters frozen when built).
#[derive(Debug, Clone)]
pub struct Vit {
    cfg: VitConfig,
    store: ParamStore,
    patch_embed: Conv2d,
    cls_token: Option<Param>,
    reg_token: Option<Param>,
    pos_embed: Param,
    norm_pre: Option<LayerNorm>,
    blocks: Vec<Block>,
    norm: Option<LayerNorm>,
    fc_norm: Option<LayerNorm>,
    head: Option<Linear>,
}

impl Vit {
    /// Build `cfg` from `store`; the classifier `head` only when the configuration has classes and the store can
    /// provide `head.weight`.
    pub fn new(cfg: &VitConfig, store: &ParamStore) -> Result<Self> {
        let c = cfg.embed_dim;
        if cfg.patch_size == 0 || cfg.img_size < cfg.patch_size || cfg.depth == 0 {
            return Err(Error::Msg(format!("{}: invalid ViT configuration {cfg:?}", cfg.name)));
        }
        let patch_embed = Conv2d::new(
            store,
            "patch_embed.proj",
            ConvConfig {
                in_channels: 3,
                out_channels: c,
                kernel: cfg.patch_size,
                stride: cfg.patch_size,
                padding: Padding::Symmetric(0),
                groups: 1,
                bias: !cfg.pre_norm,
            },
        )?;
        let cls_token = cfg
            .class_token
            .then(|| store.param_with_role("cls_token", (1, 1, c), ParamRole::Token, false))
            .transpose()?;
        let reg_token = (cfg.reg_tokens > 0)
            .then(|| store.param_with_role("reg_token", (1, cfg.reg_tokens, c), ParamRole::Token, false))
            .transpose()?;
        let pos_embed = store.param_with_role(
            "pos_embed",
            (1, cfg.pos_embed_len(), c),
            ParamRole::PositionEmbedding,
            false,
        )?;
        let norm_pre = cfg
            .pre_norm
            .then(|| LayerNorm::new(store, "norm_pre", c, cfg.eps))
            .transpose()?;
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(store, &format!("blocks.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        let (norm, fc_norm) = match cfg.global_pool {
            GlobalPool::Token => (Some(LayerNorm::new(store, "norm", c, cfg.eps)?), None),
            GlobalPool::Avg => (None, Some(LayerNorm::new(store, "fc_norm", c, cfg.eps)?)),
        };
        let head = if cfg.num_classes > 0 && store.contains("head.weight") {
            Some(Linear::new(store, "head", c, cfg.num_classes, true)?)
        } else {
            None
        };
        Ok(Self {
            cfg: *cfg,
            store: store.clone(),
            patch_embed,
            cls_token,
            reg_token,
            pos_embed,
            norm_pre,
            blocks,
            norm,
            fc_norm,
            head,
        })
    }

    /// Build the registered timm architecture `name`.
    pub fn from_name(name: &str, store: &ParamStore) -> Result<Self> {
        let cfg = config(name).ok_or_else(|| Error::UnknownModel {
            name: name.to_string(),
            suggestion: None,
        })?;
        Self::new(cfg, store)
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Whether `forward_features(x, train)` takes the fused inference path (eval, CPU f32, nothing trainable).
    pub fn uses_inference_path(&self, x: &Tensor, train: bool) -> bool {
        crate::infer::eligible(&self.store, x, train) && !x.track_op()
    }

    /// Tokens after the final norm, B×(prefix + h·w)×C; `fused` picks the inference kernels (no gradient).
    pub fn forward_tokens(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let (mut t, _) = self.embed(x, fused)?;
        for block in &self.blocks {
            t = block.forward(&t, fused)?;
        }
        match &self.norm {
            Some(n) if fused => n.forward_fused(&t),
            Some(n) => n.forward(&t),
            None => Ok(t),
        }
    }

    /// The position embeddings for a `grid` of patches (resampled when it is not the checkpoint's).
    pub fn pos_embed_for(&self, grid: (usize, usize)) -> Result<Tensor> {
        let g = self.cfg.grid();
        let prefix = if self.cfg.no_embed_class {
            0
        } else {
            self.cfg.num_prefix_tokens()
        };
        resample_abs_pos_embed(&self.pos_embed.tensor(), (g, g), grid, prefix)
    }

    /// Patch embedding, prefix tokens and position embeddings (then `norm_pre`): B×T×C and the patch grid.
    fn embed(&self, x: &Tensor, fused: bool) -> Result<(Tensor, (usize, usize))> {
        let p = self.patch_embed.forward(x)?;
        let (b, c, gh, gw) = p.dims4()?;
        let mut t = p.flatten_from(2)?.transpose(1, 2)?; // B × h·w × C
        let pos = self.pos_embed_for((gh, gw))?;
        let mut prefix: Vec<Tensor> = Vec::new();
        for tok in [&self.cls_token, &self.reg_token].into_iter().flatten() {
            let tok = tok.tensor();
            let n = tok.dim(1)?;
            prefix.push(tok.broadcast_as((b, n, c))?);
        }
        let cat = |t: Tensor| -> Result<Tensor> {
            if prefix.is_empty() {
                return Ok(t);
            }
            let mut all: Vec<&Tensor> = prefix.iter().collect();
            all.push(&t);
            Ok(Tensor::cat(&all, 1)?)
        };
        t = if self.cfg.no_embed_class {
            cat(t.broadcast_add(&pos)?)?
        } else {
            cat(t)?.broadcast_add(&pos)?
        };
        if let Some(n) = &self.norm_pre {
            t = if fused { n.forward_fused(&t)? } else { n.forward(&t)? };
        }
        Ok((t, (gh, gw)))
    }

    /// Pool the final tokens into the pre-logits features (class token, or patch mean then `fc_norm`).
    fn pool(&self, tokens: &Tensor) -> Result<Tensor> {
        match self.cfg.global_pool {
            GlobalPool::Token => Ok(tokens.narrow(1, 0, 1)?.squeeze(1)?),
            GlobalPool::Avg => {
                let p = self.cfg.num_prefix_tokens();
                let n = tokens.dim(1)? - p;
                let mean = tokens.narrow(1, p, n)?.mean(1)?;
                match &self.fc_norm {
                    Some(f) => f.forward(&mean),
                    None => Ok(mean),
                }
            }
        }
    }

    /// Block stages: `depth` blocks split into up to [`BLOCK_STAGES`] consecutive groups, earlier groups larger.
    fn block_groups(&self) -> Vec<std::ops::Range<usize>> {
        let d = self.cfg.depth;
        let n = BLOCK_STAGES.min(d);
        let mut start = 0;
        (0..n)
            .map(|i| {
                let len = d / n + usize::from(i < d % n);
                let r = start..start + len;
                start += len;
                r
            })
            .collect()
    }
}

impl Backbone for Vit {
    fn name(&self) -> &str {
        self.cfg.name
    }

    fn num_features(&self) -> usize {
        self.cfg.embed_dim
    }

    /// `embed` (patch embedding, prefix tokens, position embeddings, `norm_pre`), the blocks in four groups
    /// (`blocks.0-2` …), then `norm` (or `fc_norm`).
    fn stages(&self) -> Vec<Stage> {
        let mut embed = vec!["patch_embed", "cls_token", "reg_token", "pos_embed"];
        if self.cfg.pre_norm {
            embed.push("norm_pre");
        }
        let mut stages = vec![Stage::new("embed", &embed)];
        for r in self.block_groups() {
            let prefixes: Vec<String> = r.clone().map(|i| format!("blocks.{i}")).collect();
            let name = if r.len() == 1 {
                prefixes[0].clone()
            } else {
                format!("blocks.{}-{}", r.start, r.end - 1)
            };
            stages.push(Stage { name, prefixes });
        }
        stages.push(match self.cfg.global_pool {
            GlobalPool::Token => Stage::new("norm", &["norm"]),
            GlobalPool::Avg => Stage::new("fc_norm", &["fc_norm"]),
        });
        stages
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The blocks (`depth`).
    fn num_layers(&self) -> Option<usize> {
        Some(self.cfg.depth)
    }

    /// BEiT's `get_num_layer_for_vit`: 0 for `patch_embed`, `cls_token`, `reg_token`, `mask_token`, `pos_embed`
    /// (and `norm_pre`), `i + 1` for `blocks.i`, `depth + 1` for the rest (final `norm` / `fc_norm`, `head`). timm's
    /// `group_matcher` differs in one point: it puts the final `norm` with the last block.
    fn layer_id(&self, name: &str) -> Option<usize> {
        let depth = self.cfg.depth;
        let embed = [
            "patch_embed",
            "cls_token",
            "reg_token",
            "mask_token",
            "pos_embed",
            "norm_pre",
        ];
        if embed.iter().any(|p| crate::params::name_has_prefix(name, p)) {
            return Some(0);
        }
        let block = name
            .strip_prefix("blocks.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|&i| i < depth);
        Some(block.map_or(depth + 1, |i| i + 1))
    }

    /// Every token after the final norm, N×T×C (T = prefix tokens + patches), as timm's `forward_features`.
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_tokens(x, self.uses_inference_path(x, train))
    }

    /// Every block, as timm's `feature_info` (reduction = patch size, channels = embed dim).
    fn feature_info(&self) -> Vec<FeatureInfo> {
        (0..self.cfg.depth)
            .map(|i| FeatureInfo::new(format!("blocks.{i}"), self.cfg.patch_size, self.cfg.embed_dim))
            .collect()
    }

    /// The chosen blocks' patch tokens (prefix tokens dropped, no final norm) as N×C×h×w, as timm's
    /// `forward_intermediates`.
    fn forward_multiscale(&self, x: &Tensor, train: bool, out_indices: &[usize]) -> Result<Vec<Tensor>> {
        check_out_indices(self.cfg.name, self.cfg.depth, out_indices)?;
        let fused = self.uses_inference_path(x, train);
        let (mut t, (gh, gw)) = self.embed(x, fused)?;
        let prefix = self.cfg.num_prefix_tokens();
        let mut taps = Taps::new(out_indices);
        for (i, block) in self.blocks.iter().enumerate() {
            if taps.done() {
                break;
            }
            t = block.forward(&t, fused)?;
            if out_indices.contains(&i) {
                let (b, _, c) = t.dims3()?;
                let map = t
                    .narrow(1, prefix, gh * gw)?
                    .reshape((b, gh, gw, c))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?;
                taps.keep(i, &map);
            }
        }
        Ok(taps.finish())
    }

    /// timm's pre-logits features: the class token after `norm` (or the patch mean then `fc_norm`).
    fn forward_pooled(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.pool(&self.forward_features(x, train)?)
    }

    fn has_classifier(&self) -> bool {
        self.head.is_some()
    }

    fn classify(&self, pooled: &Tensor) -> Result<Option<Tensor>> {
        self.head.as_ref().map(|h| h.forward(pooled)).transpose()
    }
}
