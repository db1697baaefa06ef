//! Fine-tuning helpers: unfreezing stages, BatchNorm mode, discriminative rates and fastai's two-phase recipe.

use backbones::{freeze_all_but_last, unfreeze_all, Backbone};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fit::{fit, EpochRecord, FitConfig, FitResult, Model};
use crate::optim::{Optimizer, ParamGroup};
use crate::schedule::Schedule;

/// Which backbone stages train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unfreeze {
    /// The backbone stays frozen.
    None,
    /// The last `n` stages train.
    Last(usize),
    /// Every stage trains.
    All,
}

/// Apply `which` to `backbone` and set whether its BatchNorm layers use batch statistics (`train_bn`).
pub fn set_trainable(backbone: &dyn Backbone, which: Unfreeze, train_bn: bool) -> Result<()> {
    match which {
        Unfreeze::None => freeze_all_but_last(backbone, 0)?,
        Unfreeze::Last(n) => freeze_all_but_last(backbone, n)?,
        Unfreeze::All => {
            freeze_all_but_last(backbone, 0)?;
            unfreeze_all(backbone)?;
            // The ImageNet classifier is not a backbone stage: keep it frozen.
            let stage_params: Vec<String> = backbone.stages().into_iter().flat_map(|s| s.prefixes).collect();
            for p in backbone.store().params() {
                if !stage_params
                    .iter()
                    .any(|pre| backbones::params::name_has_prefix(p.name(), pre))
                {
                    p.set_trainable(false)?;
                }
            }
        }
    }
    backbone.store().set_batchnorm_train(train_bn);
    Ok(())
}

/// Parameter groups with discriminative rates: each backbone stage with trainable parameters, then the head.
/// Rates rise geometrically from `head_lr / lr_mult` (first trainable stage) to `head_lr` (the head), as fastai's
/// `slice(lr / lr_mult, lr)`.
pub fn discriminative_groups(model: Model<'_>, head_lr: f64, lr_mult: f64) -> Vec<ParamGroup> {
    let mut groups = Vec::new();
    if let Some(b) = model.backbone {
        let vars = b.store().trainable_vars();
        for stage in b.stages() {
            let params: Vec<_> = vars
                .iter()
                .filter(|(n, _)| stage.prefixes.iter().any(|p| backbones::params::name_has_prefix(n, p)))
                .cloned()
                .collect();
            if !params.is_empty() {
                groups.push(ParamGroup::new(&stage.name, params, 0.0));
            }
        }
    }
    groups.push(ParamGroup::new("head", model.head.vars(), 0.0));
    let n = groups.len();
    for (i, g) in groups.iter_mut().enumerate() {
        let frac = if n == 1 { 1.0 } else { i as f64 / (n - 1) as f64 };
        g.lr = head_lr / lr_mult.powf(1.0 - frac);
    }
    groups
}

/// Settings of [`fine_tune`] (fastai's defaults: 1 frozen epoch, base rate 2e-3, halved for phase 2, lr_mult 100).
#[derive(Debug, Clone)]
pub struct FineTuneConfig {
    /// Epochs with the backbone frozen (head only).
    pub freeze_epochs: usize,
    /// Epochs with the backbone unfrozen.
    pub epochs: usize,
    /// Head learning rate in phase 1 (halved in phase 2).
    pub base_lr: f64,
    /// Ratio of the head's rate to the first stage's in phase 2.
    pub lr_mult: f64,
    /// Stages unfrozen in phase 2.
    pub unfreeze: Unfreeze,
    /// Whether BatchNorm uses batch statistics in phase 2.
    pub train_bn: bool,
    /// Optimizer steps per epoch (for the one-cycle schedules).
    pub steps_per_epoch: usize,
    /// Fit settings shared by both phases (the checkpoint folder gets `phase1/` and `phase2/` subfolders).
    pub fit: FitConfig,
}

/// fastai's `fine_tune`: one-cycle on the head with the backbone frozen (pct_start 0.99) for `freeze_epochs`,
/// then unfreeze and one-cycle (pct_start 0.3, div 5) with discriminative rates. `make_optimizer` builds an
/// optimizer over the given groups (e.g. AdamW). Returns the two phases' results.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune<TB, TI, VB, VI, MO, CB>(
    model: Model<'_>,
    cfg: &FineTuneConfig,
    mut make_optimizer: MO,
    mut train_batches: TB,
    mut val_batches: VB,
    mut on_epoch: CB,
) -> Result<(FitResult, FitResult)>
where
    TB: FnMut(usize) -> TI,
    TI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    VB: FnMut(usize) -> VI,
    VI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    MO: FnMut(Vec<ParamGroup>) -> Result<Box<dyn Optimizer>>,
    CB: FnMut(usize, &EpochRecord) -> Result<()>,
{
    let backbone = model
        .backbone
        .ok_or_else(|| Error::Config("fine-tuning needs a backbone".into()))?;
    let sub = |name: &str| cfg.fit.checkpoint_dir.as_ref().map(|d| d.join(name));

    set_trainable(backbone, Unfreeze::None, false)?;
    let mut opt = make_optimizer(discriminative_groups(model, cfg.base_lr, 1.0))?;
    let total = cfg.freeze_epochs * cfg.steps_per_epoch;
    let s1 = Schedule::OneCycle {
        total_steps: total.max(1),
        pct_start: 0.99,
        div: 25.0,
        final_div: 1e5,
    };
    let fit1 = FitConfig {
        epochs: cfg.freeze_epochs,
        checkpoint_dir: sub("phase1"),
        ..cfg.fit.clone()
    };
    let r1 = fit(
        model,
        opt.as_mut(),
        &s1,
        &fit1,
        &mut train_batches,
        &mut val_batches,
        |r| on_epoch(1, r),
    )?;

    set_trainable(backbone, cfg.unfreeze, cfg.train_bn)?;
    let lr = cfg.base_lr / 2.0;
    let mut opt = make_optimizer(discriminative_groups(model, lr, cfg.lr_mult))?;
    let total = cfg.epochs * cfg.steps_per_epoch;
    let s2 = Schedule::OneCycle {
        total_steps: total.max(1),
        pct_start: 0.3,
        div: 5.0,
        final_div: 1e5,
    };
    let fit2 = FitConfig {
        epochs: cfg.epochs,
        checkpoint_dir: sub("phase2"),
        seed: cfg.fit.seed.wrapping_add(1),
        ..cfg.fit.clone()
    };
    let r2 = fit(
        model,
        opt.as_mut(),
        &s2,
        &fit2,
        &mut train_batches,
        &mut val_batches,
        |r| on_epoch(2, r),
    )?;
    Ok((r1, r2))
}
