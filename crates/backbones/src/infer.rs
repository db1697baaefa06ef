//! The inference path of frozen mobile networks (EfficientNet, MobileNetV3, MobileNetV4) on the CPU: when it applies, how a
//! network's blocks become a `kernels::plan::MobilePlan`, and the per-model cache that keeps one plan until a
//! parameter or buffer of the store changes.
//!
//! The plan folds every BatchNorm and copies every weight into the NHWC layout, so it is built once and reused
//! for as long as [`ParamStore::version`] stays the same; anything that could need a gradient takes the general
//! (autograd) path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use kernels::plan::{FoldedConv, MobilePlan, SqueezeExcite as SePlan, Step};

use crate::blocks::{Block, ConvNormAct, SqueezeExcite};
use crate::error::Result;
use crate::layers::{Activation, BatchNorm2d, Conv2d};
use crate::params::ParamStore;

/// Whether the inference path applies: eval, CPU, f32, and no trainable parameter in `store`.
pub(crate) fn eligible(store: &ParamStore, x: &Tensor, train: bool) -> bool {
    !train
        && matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && store.dtype() == DType::F32
        && x.rank() == 4
        && store.params().iter().all(|p| !p.is_trainable())
}

/// `conv` with `bn` folded in and `act` after it, for the plan.
fn folded(conv: &Conv2d, bn: &BatchNorm2d, act: Activation) -> kernels::Result<FoldedConv> {
    let cfg = &conv.cfg;
    let (w, b) = (conv.weight.tensor(), conv.bias.as_ref().map(|b| b.tensor()));
    let (stats, act) = (bn.stats(), act.into());
    if conv.is_depthwise() {
        FoldedConv::depthwise(&w, b.as_ref(), &stats, cfg.stride, cfg.padding, act)
    } else if cfg.groups == 1 {
        FoldedConv::dense(&w, b.as_ref(), &stats, cfg.stride, cfg.padding, act)
    } else {
        Err(kernels::Error::Unsupported(format!(
            "a grouped convolution ({} groups)",
            cfg.groups
        )))
    }
}

fn squeeze_excite(se: &Option<SqueezeExcite>) -> kernels::Result<Option<SePlan>> {
    let Some(se) = se else { return Ok(None) };
    let (reduce, expand, act, gate) = se.parts();
    let wb = |c: &Conv2d| (c.weight.tensor(), c.bias.as_ref().map(|b| b.tensor()));
    let (rw, rb) = wb(reduce);
    let (ew, eb) = wb(expand);
    SePlan::new((&rw, rb.as_ref()), act.into(), (&ew, eb.as_ref()), gate.into()).map(Some)
}

/// One block as a plan step. The `match` is exhaustive on purpose: a new block kind does not compile until the
/// inference path knows it.
fn step(block: &Block) -> kernels::Result<Step> {
    Ok(match block {
        Block::DepthwiseSeparable {
            conv_dw,
            bn1,
            se,
            conv_pw,
            bn2,
            act,
            skip,
        } => Step::Separable {
            dw: folded(conv_dw, bn1, *act)?,
            se: squeeze_excite(se)?,
            pw: folded(conv_pw, bn2, Activation::None)?,
            skip: *skip,
        },
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
        } => Step::Inverted {
            pw: folded(conv_pw, bn1, *act)?,
            dw: folded(conv_dw, bn2, *act)?,
            se: squeeze_excite(se)?,
            pwl: folded(conv_pwl, bn3, Activation::None)?,
            skip: *skip,
        },
        Block::ConvBnAct { conv, bn1, act } => {
            let f = folded(conv, bn1, *act)?;
            if conv.cfg.kernel == 1 && conv.cfg.stride == 1 {
                Step::Pointwise(f)
            } else {
                Step::Dense(f)
            }
        }
        Block::UniversalInverted {
            dw_start,
            pw_exp,
            dw_mid,
            pw_proj,
            skip,
        } => {
            let cna = |l: &ConvNormAct| folded(&l.conv, &l.bn, l.act);
            Step::Universal {
                start: dw_start.as_ref().map(cna).transpose()?,
                pw: cna(pw_exp)?,
                mid: dw_mid.as_ref().map(cna).transpose()?,
                pwl: cna(pw_proj)?,
                skip: *skip,
            }
        }
    })
}

/// Fold a network's stem, blocks and optional head into a plan; `None` when a layer has a shape the plan's
/// kernels do not run (the architecture tests require every registered mobile network to have a plan).
pub(crate) fn build_plan(
    stem: &ConvNormAct,
    stages: &[Vec<Block>],
    head: Option<&ConvNormAct>,
) -> Result<Option<MobilePlan>> {
    plan_of(stem, stages.iter().flatten(), head)
}

/// [`build_plan`] over any sequence of blocks.
fn plan_of<'a>(
    stem: &ConvNormAct,
    blocks: impl Iterator<Item = &'a Block>,
    head: Option<&ConvNormAct>,
) -> Result<Option<MobilePlan>> {
    let plan = (|| {
        let stem = folded(&stem.conv, &stem.bn, stem.act)?;
        let steps = blocks.map(step).collect::<kernels::Result<Vec<_>>>()?;
        let head = head.map(|h| folded(&h.conv, &h.bn, h.act)).transpose()?;
        MobilePlan::new(stem, steps, head)
    })();
    match plan {
        Ok(plan) => Ok(Some(plan)),
        Err(kernels::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn conv_frozen(conv: &Conv2d) -> bool {
    !conv.weight.is_trainable() && conv.bias.as_ref().is_none_or(|b| !b.is_trainable())
}

fn bn_frozen(bn: &BatchNorm2d) -> bool {
    !bn.weight.is_trainable() && !bn.bias.is_trainable()
}

fn layer_frozen(l: &ConvNormAct) -> bool {
    conv_frozen(&l.conv) && bn_frozen(&l.bn)
}

fn se_frozen(se: &Option<SqueezeExcite>) -> bool {
    se.as_ref().is_none_or(|se| {
        let (reduce, expand, _, _) = se.parts();
        conv_frozen(reduce) && conv_frozen(expand)
    })
}

/// Whether every parameter of `block` is frozen (so its BatchNorms use running statistics in any mode). The
/// `match` is exhaustive on purpose, as in [`step`].
fn block_frozen(block: &Block) -> bool {
    match block {
        Block::DepthwiseSeparable {
            conv_dw,
            bn1,
            se,
            conv_pw,
            bn2,
            ..
        } => conv_frozen(conv_dw) && bn_frozen(bn1) && se_frozen(se) && conv_frozen(conv_pw) && bn_frozen(bn2),
        Block::InvertedResidual {
            conv_pw,
            bn1,
            conv_dw,
            bn2,
            se,
            conv_pwl,
            bn3,
            ..
        } => {
            conv_frozen(conv_pw)
                && bn_frozen(bn1)
                && conv_frozen(conv_dw)
                && bn_frozen(bn2)
                && se_frozen(se)
                && conv_frozen(conv_pwl)
                && bn_frozen(bn3)
        }
        Block::ConvBnAct { conv, bn1, .. } => conv_frozen(conv) && bn_frozen(bn1),
        Block::UniversalInverted {
            dw_start,
            pw_exp,
            dw_mid,
            pw_proj,
            ..
        } => {
            dw_start.as_ref().is_none_or(layer_frozen)
                && layer_frozen(pw_exp)
                && dw_mid.as_ref().is_none_or(layer_frozen)
                && layer_frozen(pw_proj)
        }
    }
}

/// The frozen leading part of a mobile network (the stem and the first blocks whose parameters are all frozen) on
/// an inference plan, the blocks after it on the general path: partial fine-tuning (`train-last`, `--unfreeze`)
/// pays the plan's cost, not the autograd path's, for the layers it does not train.
///
/// Exact: frozen BatchNorms normalise with running statistics in training mode too, and nothing before the first
/// trainable block needs a gradient when the input needs none. The plan is cached for the store's version (a
/// change of any value or trainable state rebuilds it; while the trained BatchNorms update their running statistics
/// that is once per step, a small cost next to the step).
#[derive(Debug, Default)]
pub(crate) struct FrozenPrefix {
    cache: PlanCache,
}

impl FrozenPrefix {
    /// The output of every block of `stages` after `stem`, for `x` (N×C×H×W) in mode `train`, with the frozen
    /// prefix on its plan; `None` when there is no frozen prefix (or it cannot be planned, or `x` is not a CPU f32
    /// map that needs no gradient): the caller takes the general path.
    pub fn forward(
        &self,
        store: &ParamStore,
        stem: &ConvNormAct,
        stages: &[Vec<Block>],
        x: &Tensor,
        train: bool,
    ) -> Result<Option<Tensor>> {
        let applies = matches!(x.device(), Device::Cpu)
            && x.dtype() == DType::F32
            && store.dtype() == DType::F32
            && x.rank() == 4
            && !x.track_op()
            && layer_frozen(stem);
        if !applies {
            self.cache.release_stale(store);
            return Ok(None);
        }
        let blocks: Vec<&Block> = stages.iter().flatten().collect();
        let k = blocks.iter().take_while(|b| block_frozen(b)).count();
        if k == 0 {
            self.cache.release_stale(store);
            return Ok(None);
        }
        // One trainability per version: the cached plan was built for this same prefix.
        let Some(plan) = self
            .cache
            .get(store, || plan_of(stem, blocks[..k].iter().copied(), None))?
        else {
            return Ok(None);
        };
        let mut y = plan.forward(x)?;
        for block in &blocks[k..] {
            y = block.forward(&y, train)?;
        }
        Ok(Some(y))
    }

    /// How many prefix plans have been built.
    pub fn builds(&self) -> usize {
        self.cache.builds()
    }
}

/// A model's inference plan, kept until the store's version changes (`None` cached too: no plan for this model).
#[derive(Default)]
pub(crate) struct PlanCache {
    slot: Mutex<Option<(u64, Option<Arc<MobilePlan>>)>>,
    builds: AtomicUsize,
}

impl PlanCache {
    /// The plan for the store's current version, built with `build` when there is none for it.
    pub fn get(
        &self,
        store: &ParamStore,
        build: impl FnOnce() -> Result<Option<MobilePlan>>,
    ) -> Result<Option<Arc<MobilePlan>>> {
        // Read the version before building: a change during the build leaves a plan keyed by the older version,
        // so the next call rebuilds.
        let version = store.version();
        let mut slot = self.slot.lock().expect("plan cache lock");
        if let Some((v, plan)) = &*slot {
            if *v == version {
                return Ok(plan.clone());
            }
        }
        *slot = None;
        let plan = build()?.map(Arc::new);
        self.builds.fetch_add(1, Ordering::Relaxed);
        *slot = Some((version, plan.clone()));
        Ok(plan)
    }

    /// The plan for a forward of `x` when the inference path applies to it ([`eligible`]), built with `build` when
    /// there is none for the store's version; `None` otherwise, dropping a plan that went stale.
    pub fn for_forward(
        &self,
        store: &ParamStore,
        x: &Tensor,
        train: bool,
        build: impl FnOnce() -> Result<Option<MobilePlan>>,
    ) -> Result<Option<Arc<MobilePlan>>> {
        if !eligible(store, x, train) {
            self.release_stale(store);
            return Ok(None);
        }
        self.get(store, build)
    }

    /// Drop a plan built for an older version of the store (its copy of the weights is stale).
    pub fn release_stale(&self, store: &ParamStore) {
        let mut slot = self.slot.lock().expect("plan cache lock");
        if slot.as_ref().is_some_and(|(v, _)| *v != store.version()) {
            *slot = None;
        }
    }

    /// How many plans have been built (each build folds and copies every weight).
    pub fn builds(&self) -> usize {
        self.builds.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache").field("builds", &self.builds()).finish()
    }
}
