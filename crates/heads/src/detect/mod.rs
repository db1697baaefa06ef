//! Anchor-free object detection on a backbone's multi-scale features: FCOS (Tian et al. 2019) as torchvision builds
//! it — an FPN over the 1/8, 1/16 and 1/32 maps (P3–P5, optionally P6–P7 by stride-2 convolutions), a head shared by
//! every level with a classification tower (focal loss) and a regression tower predicting the distances to the four
//! box sides (GIoU loss) and a centerness score — with FCOS's target assignment ([`assign`]) and class-wise NMS.

pub mod assign;
pub mod boxes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backbones::layers::Conv2d;
use backbones::{FeatureInfo, ParamStore};
use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{conv, init_store, match_size, resize_bilinear, upsample_nearest2x, GroupNorm, Init};
use assign::{AssignConfig, Level};
use boxes::Xyxy;

/// Everything needed to rebuild a detection head and to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetHeadConfig {
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// Indices into the backbone's `feature_info` of the maps the FPN reads (C3, C4, C5).
    pub out_indices: Vec<usize>,
    /// Those maps' descriptions.
    pub inputs: Vec<FeatureInfo>,
    /// Resample a single-scale encoder's maps to 1/8, 1/16, 1/32 (a simple feature pyramid, as ViTDet).
    pub simple_pyramid: bool,
    /// Pyramid levels: 3 (P3–P5) or 5 (P3–P7, as FCOS).
    pub levels: usize,
    /// Width of the FPN and of the towers (torchvision: 256).
    pub channels: usize,
    /// Convolutions per tower (torchvision: 4).
    pub tower_convs: usize,
    /// Prior probability of the classification bias initialisation (0.01).
    pub prior: f32,
    /// Target assignment.
    pub center_radius: f32,
}

/// Reductions of the encoder maps the FPN reads.
const C_REDUCTIONS: [usize; 3] = [8, 16, 32];

impl DetHeadConfig {
    /// A configuration for an encoder with `info`, with torchvision's FCOS widths and `levels` pyramid levels.
    pub fn for_encoder(class_names: Vec<String>, info: &[FeatureInfo], levels: usize) -> Result<Self> {
        if class_names.is_empty() {
            return Err(Error::Config("detection needs at least one class".into()));
        }
        if levels != 3 && levels != 5 {
            return Err(Error::Config(format!(
                "levels must be 3 (P3–P5) or 5 (P3–P7), got {levels}"
            )));
        }
        if info.is_empty() {
            return Err(Error::Config("the backbone has no feature maps".into()));
        }
        let single = info.iter().all(|f| f.reduction == info[0].reduction);
        let out_indices = if single {
            let n = info.len();
            let idx: Vec<usize> = (1..=3).map(|q| (q * n / 3).max(1) - 1).collect();
            if idx.windows(2).any(|w| w[0] == w[1]) {
                return Err(Error::Config(format!(
                    "a single-scale encoder needs at least 3 feature maps, got {n}"
                )));
            }
            idx
        } else {
            C_REDUCTIONS
                .iter()
                .map(|&r| {
                    info.iter().rposition(|f| f.reduction == r).ok_or_else(|| {
                        Error::Config(format!(
                            "the detection FPN needs a feature map at 1/{r}; the backbone has {:?}",
                            info.iter().map(|f| f.reduction).collect::<Vec<_>>()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(Self {
            class_names,
            inputs: out_indices.iter().map(|&i| info[i].clone()).collect(),
            out_indices,
            simple_pyramid: single,
            levels,
            channels: 256,
            tower_convs: 4,
            prior: 0.01,
            center_radius: 1.5,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Strides of the pyramid levels (8, 16, 32[, 64, 128]).
    pub fn strides(&self) -> Vec<usize> {
        (0..self.levels).map(|i| 8 << i).collect()
    }

    /// The stride inputs should be padded to (the coarsest level's).
    pub fn stride(&self) -> usize {
        8 << (self.levels - 1)
    }

    /// The assignment settings.
    pub fn assign_config(&self) -> AssignConfig {
        AssignConfig {
            center_radius: self.center_radius,
            ..AssignConfig::default()
        }
    }
}

/// Raw predictions for a batch, every level's locations concatenated (level by level, each row-major).
#[derive(Debug, Clone)]
pub struct DetOutput {
    /// Classification logits, N×L×classes.
    pub cls: Tensor,
    /// Distances to the box sides divided by the level's stride (after ReLU), N×L×4 (left, top, right, bottom).
    pub reg: Tensor,
    /// Centerness logits, N×L.
    pub ctr: Tensor,
    /// The levels (stride and size), in order.
    pub levels: Vec<Level>,
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The box in input pixels `[x0, y0, x1, y1]`.
    pub bbox: Xyxy,
    /// `√(sigmoid(cls) · sigmoid(centerness))`, as torchvision's FCOS.
    pub score: f32,
    /// Class index.
    pub class: usize,
}

/// Settings of [`DetHead::postprocess`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostProcess {
    /// Minimum score.
    pub conf: f32,
    /// IoU above which class-wise NMS suppresses a box.
    pub iou: f32,
    /// Detections kept per image.
    pub max_det: usize,
    /// Candidates kept per level before NMS (torchvision: 1000).
    pub topk: usize,
}

impl Default for PostProcess {
    fn default() -> Self {
        Self {
            conf: 0.05,
            iou: 0.6,
            max_det: 100,
            topk: 1000,
        }
    }
}

/// Dense training targets of a batch: from [`DetHead::targets`].
#[derive(Debug, Clone)]
pub struct DetTargets {
    /// One-hot classes of positive locations (zeros for background), N×L×classes.
    pub cls: Tensor,
    /// Normalised `ltrb` targets, N×L×4 (zeros for background).
    pub reg: Tensor,
    /// Centerness targets, N×L.
    pub ctr: Tensor,
    /// 1 for positive locations, N×L.
    pub fg: Tensor,
    /// Number of positive locations in the batch.
    pub num_fg: usize,
    /// Target boxes of the positive locations in input pixels, N×L×4 (zeros for background).
    pub boxes: Tensor,
    /// Location centres in pixels, L×2.
    pub centers: Tensor,
    /// Stride of each location, L.
    pub strides: Tensor,
}

#[derive(Debug, Clone)]
struct Tower {
    layers: Vec<(Conv2d, GroupNorm)>,
}

impl Tower {
    fn new(store: &ParamStore, prefix: &str, c: usize, n: usize) -> Result<Self> {
        let layers = (0..n)
            .map(|i| {
                Ok((
                    conv(store, &format!("{prefix}.conv.{}", 3 * i), (c, c, 3, 1), true)?,
                    GroupNorm::new(store, &format!("{prefix}.conv.{}", 3 * i + 1), 32.min(c), c)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for (c, g) in &self.layers {
            y = g.forward(&c.forward(&y)?)?.relu()?;
        }
        Ok(y)
    }
}

/// An FCOS head (FPN + shared towers) over the chosen encoder maps; parameters in its own store, named as
/// torchvision's `FCOS` (`fpn.*`, `head.classification_head.*`, `head.regression_head.*`).
#[derive(Debug, Clone)]
pub struct DetHead {
    config: DetHeadConfig,
    store: ParamStore,
    inner: Vec<Conv2d>,
    layer: Vec<Conv2d>,
    extra: Vec<Conv2d>,
    cls_tower: Tower,
    reg_tower: Tower,
    cls_logits: Conv2d,
    bbox_reg: Conv2d,
    bbox_ctr: Conv2d,
}

impl DetHead {
    /// A freshly initialised head (torchvision's init: FPN Kaiming-uniform(a=1), head N(0, 0.01), classification
    /// bias −log((1 − prior)/prior)), every parameter trainable, drawn from `seed`.
    pub fn new(config: DetHeadConfig, device: &Device, seed: u64) -> Result<Self> {
        let head = Self::build(config, ParamStore::empty(DType::F32, device))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        init_store(&head.store, &mut rng, |name| {
            if name.starts_with("fpn") {
                Init::KaimingA1
            } else {
                Init::NormalE4(100)
            }
        })?;
        let p = head.config.prior as f64;
        let b = Tensor::full(-((1.0 - p) / p).ln() as f32, head.config.num_classes(), device)?;
        head.cls_logits.bias.as_ref().expect("bias").set(&b)?;
        Ok(head)
    }

    fn build(config: DetHeadConfig, store: ParamStore) -> Result<Self> {
        let c = config.channels;
        let k = config.num_classes();
        let inner = config
            .inputs
            .iter()
            .enumerate()
            .map(|(i, f)| conv(&store, &format!("fpn.inner_blocks.{i}.0"), (f.channels, c, 1, 1), true))
            .collect::<Result<Vec<_>>>()?;
        let layer = (0..config.inputs.len())
            .map(|i| conv(&store, &format!("fpn.layer_blocks.{i}.0"), (c, c, 3, 1), true))
            .collect::<Result<Vec<_>>>()?;
        let extra = (0..config.levels.saturating_sub(3))
            .map(|i| conv(&store, &format!("fpn.extra_blocks.p{}", 6 + i), (c, c, 3, 2), true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cls_tower: Tower::new(&store, "head.classification_head", c, config.tower_convs)?,
            reg_tower: Tower::new(&store, "head.regression_head", c, config.tower_convs)?,
            cls_logits: conv(&store, "head.classification_head.cls_logits", (c, k, 3, 1), true)?,
            bbox_reg: conv(&store, "head.regression_head.bbox_reg", (c, 4, 3, 1), true)?,
            bbox_ctr: conv(&store, "head.regression_head.bbox_ctrness", (c, 1, 3, 1), true)?,
            inner,
            layer,
            extra,
            config,
            store,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DetHeadConfig {
        &self.config
    }

    /// The store holding the head's parameters.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The trainable variables by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.store.trainable_vars()
    }

    /// The pyramid P3… for encoder maps `feats` (C3, C4, C5 at the configured indices) of an `h × w` input.
    fn pyramid(&self, feats: &[Tensor], (h, w): (usize, usize)) -> Result<Vec<Tensor>> {
        if feats.len() != self.config.inputs.len() {
            return Err(Error::InputShape {
                got: vec![feats.len()],
                expected: format!("{} encoder maps", self.config.inputs.len()),
            });
        }
        for (f, info) in feats.iter().zip(&self.config.inputs) {
            if f.dims4()?.1 != info.channels {
                return Err(Error::InputShape {
                    got: f.dims().to_vec(),
                    expected: format!("{} channels for {}", info.channels, info.module),
                });
            }
        }
        let resampled;
        let feats = if self.config.simple_pyramid {
            resampled = feats
                .iter()
                .zip(C_REDUCTIONS)
                .map(|(f, r)| resize_bilinear(f, h.div_ceil(r), w.div_ceil(r), false))
                .collect::<Result<Vec<_>>>()?;
            &resampled[..]
        } else {
            feats
        };
        // torchvision's FeaturePyramidNetwork: top-down with nearest upsampling, 3×3 output convolutions.
        let n = feats.len();
        let mut last = self.inner[n - 1].forward(&feats[n - 1])?;
        let mut outs = vec![self.layer[n - 1].forward(&last)?];
        for i in (0..n - 1).rev() {
            let lateral = self.inner[i].forward(&feats[i])?;
            let (_, _, lh, lw) = lateral.dims4()?;
            last = (lateral + match_size(&upsample_nearest2x(&last)?, lh, lw)?)?;
            outs.insert(0, self.layer[i].forward(&last)?);
        }
        // LastLevelP6P7 on P5 (in = out channels): P6 = conv(P5), P7 = conv(relu(P6)).
        let mut prev = outs[n - 1].clone();
        for (i, e) in self.extra.iter().enumerate() {
            let x = if i == 0 { prev.clone() } else { prev.relu()? };
            prev = e.forward(&x)?;
            outs.push(prev.clone());
        }
        Ok(outs)
    }

    /// Raw predictions for encoder maps `feats` of an `input_hw` input.
    pub fn forward(&self, feats: &[Tensor], input_hw: (usize, usize)) -> Result<DetOutput> {
        let pyramid = self.pyramid(feats, input_hw)?;
        let k = self.config.num_classes();
        let (mut cls, mut reg, mut ctr, mut levels) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (p, stride) in pyramid.iter().zip(self.config.strides()) {
            let (n, _, h, w) = p.dims4()?;
            let ct = self.cls_tower.forward(p)?;
            let rt = self.reg_tower.forward(p)?;
            let flat = |t: Tensor, c: usize| -> Result<Tensor> { Ok(t.permute((0, 2, 3, 1))?.reshape((n, h * w, c))?) };
            cls.push(flat(self.cls_logits.forward(&ct)?, k)?);
            reg.push(flat(self.bbox_reg.forward(&rt)?.relu()?, 4)?);
            ctr.push(self.bbox_ctr.forward(&rt)?.reshape((n, h * w))?);
            levels.push(Level { stride, h, w });
        }
        Ok(DetOutput {
            cls: Tensor::cat(&cls, 1)?,
            reg: Tensor::cat(&reg, 1)?,
            ctr: Tensor::cat(&ctr, 1)?,
            levels,
        })
    }

    /// Dense targets for `gt` (per image: boxes in input pixels and class indices) on the locations of `levels`.
    pub fn targets(&self, levels: &[Level], gt: &[Vec<(Xyxy, usize)>], device: &Device) -> Result<DetTargets> {
        let k = self.config.num_classes();
        let l: usize = levels.iter().map(Level::len).sum();
        let n = gt.len();
        let (mut cls, mut reg, mut ctr, mut fg, mut boxes) = (
            vec![0f32; n * l * k],
            vec![0f32; n * l * 4],
            vec![0f32; n * l],
            vec![0f32; n * l],
            vec![0f32; n * l * 4],
        );
        let mut centers = Vec::with_capacity(2 * l);
        let mut strides = Vec::with_capacity(l);
        for level in levels {
            for i in 0..level.len() {
                let (x, y) = level.center(i);
                centers.extend([x, y]);
                strides.push(level.stride as f32);
            }
        }
        let cfg = self.config.assign_config();
        let mut num_fg = 0;
        for (b, objects) in gt.iter().enumerate() {
            for (_, c) in objects {
                if *c >= k {
                    return Err(Error::Config(format!("class {c} is out of range for {k} classes")));
                }
            }
            let gt_boxes: Vec<Xyxy> = objects.iter().map(|(bx, _)| *bx).collect();
            for (j, m) in assign::assign(levels, &gt_boxes, &cfg).into_iter().enumerate() {
                let Some(g) = m else { continue };
                let (bx, c) = objects[g];
                let at = b * l + j;
                let t = assign::ltrb_target((centers[2 * j], centers[2 * j + 1]), &bx, strides[j]);
                cls[at * k + c] = 1.0;
                reg[at * 4..at * 4 + 4].copy_from_slice(&t);
                boxes[at * 4..at * 4 + 4].copy_from_slice(&bx);
                ctr[at] = assign::centerness(&t);
                fg[at] = 1.0;
                num_fg += 1;
            }
        }
        Ok(DetTargets {
            cls: Tensor::from_vec(cls, (n, l, k), device)?,
            reg: Tensor::from_vec(reg, (n, l, 4), device)?,
            ctr: Tensor::from_vec(ctr, (n, l), device)?,
            fg: Tensor::from_vec(fg, (n, l), device)?,
            num_fg,
            boxes: Tensor::from_vec(boxes, (n, l, 4), device)?,
            centers: Tensor::from_vec(centers, (l, 2), device)?,
            strides: Tensor::from_vec(strides, l, device)?,
        })
    }

    /// Detections per image from raw predictions (torchvision's FCOS postprocessing): scores
    /// `√(sigmoid(cls) · sigmoid(ctr))` above `pp.conf`, the `pp.topk` best per level, boxes decoded and clipped to
    /// `input_hw`, class-wise NMS at `pp.iou`, at most `pp.max_det`, by decreasing score.
    pub fn postprocess(
        &self,
        out: &DetOutput,
        input_hw: (usize, usize),
        pp: &PostProcess,
    ) -> Result<Vec<Vec<Detection>>> {
        let (n, _, k) = out.cls.dims3()?;
        let cls: Vec<f32> = candle_nn::ops::sigmoid(&out.cls.detach())?.flatten_all()?.to_vec1()?;
        let ctr: Vec<f32> = candle_nn::ops::sigmoid(&out.ctr.detach())?.flatten_all()?.to_vec1()?;
        let reg: Vec<f32> = out.reg.detach().flatten_all()?.to_vec1()?;
        let l: usize = out.levels.iter().map(Level::len).sum();
        let (h, w) = (input_hw.0 as f32, input_hw.1 as f32);
        let mut all = Vec::with_capacity(n);
        for b in 0..n {
            let (mut bx, mut sc, mut cl) = (Vec::new(), Vec::new(), Vec::new());
            let mut offset = 0;
            for level in &out.levels {
                let mut cand: Vec<(f32, usize, usize)> = Vec::new();
                for i in 0..level.len() {
                    let at = b * l + offset + i;
                    for c in 0..k {
                        let s = (cls[at * k + c] * ctr[at]).sqrt();
                        if s > pp.conf {
                            cand.push((s, i, c));
                        }
                    }
                }
                cand.sort_by(|a, b| b.0.total_cmp(&a.0));
                cand.truncate(pp.topk);
                for (s, i, c) in cand {
                    let at = b * l + offset + i;
                    let t = [reg[at * 4], reg[at * 4 + 1], reg[at * 4 + 2], reg[at * 4 + 3]];
                    let d = assign::decode(level.center(i), &t, level.stride as f32);
                    bx.push([
                        d[0].clamp(0.0, w),
                        d[1].clamp(0.0, h),
                        d[2].clamp(0.0, w),
                        d[3].clamp(0.0, h),
                    ]);
                    sc.push(s);
                    cl.push(c);
                }
                offset += level.len();
            }
            let keep = boxes::batched_nms(&bx, &sc, &cl, pp.iou);
            all.push(
                keep.into_iter()
                    .take(pp.max_det)
                    .map(|i| Detection {
                        bbox: bx[i],
                        score: sc[i],
                        class: cl[i],
                    })
                    .collect(),
            );
        }
        Ok(all)
    }

    /// The JSON configuration written beside `path`.
    pub fn config_path(path: &Path) -> PathBuf {
        crate::nn::config_path(path)
    }

    /// Save the weights and statistics (safetensors at `path`) and the configuration (`path.json`), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::nn::save_store(&self.store, &self.config, path)
    }

    /// Load a head saved with [`DetHead::save`]; its parameters are trainable.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (config, tensors) = crate::nn::load_store::<DetHeadConfig>(path, "detection head", device)?;
        Self::from_tensors(config, tensors, device)
    }

    /// A head over saved tensors (every parameter must be present); parameters are made trainable.
    pub fn from_tensors(config: DetHeadConfig, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        Ok(crate::nn::trainable_store(tensors, device, |store| Self::build(config, store))?.0)
    }
}
