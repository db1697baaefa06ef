//! Fine-tuning helpers: unfreezing stages, BatchNorm mode, discriminative rates and fastai's two-phase recipe.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use backbones::{freeze_all_but_last, unfreeze_all, Backbone, ParamRole};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointMeta;
use crate::error::{Error, Result};
use crate::fit::{fit_observed, BatchProgress, EpochRecord, FitConfig, FitResult, Model};
use crate::optim::{split_no_decay, Optimizer, ParamGroup};
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

/// Apply `which` to `backbone`; `train_bn` is fastai's: BatchNorm layers use batch statistics, and the norm
/// layers' parameters (role [`ParamRole::Norm`]: BatchNorm, LayerNorm, GroupNorm scales and shifts) train in the
/// frozen stages too (for models without BatchNorm, such as ConvNeXt and ViT, that is all it does).
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
    if train_bn {
        let stage_params: Vec<String> = backbone.stages().into_iter().flat_map(|s| s.prefixes).collect();
        for p in backbone.store().params() {
            let in_stage = stage_params
                .iter()
                .any(|pre| backbones::params::name_has_prefix(p.name(), pre));
            if in_stage && p.role() == ParamRole::Norm {
                p.set_trainable(true)?;
            }
        }
    }
    backbone.store().set_batchnorm_train(train_bn);
    Ok(())
}

/// [`split_no_decay`] for groups over `model`: backbone parameters by their [`ParamRole`], the head's by the name
/// fallback (groups named `head` or `head.*` hold the head's parameters, all others the backbone's). What a
/// `make_optimizer` of [`fine_tune_observed`] applies to get timm's no-decay set (the trainer does).
pub fn split_model_groups(model: Model<'_>, groups: Vec<ParamGroup>) -> Vec<ParamGroup> {
    let roles = model.backbone.map(|b| b.store().roles()).unwrap_or_default();
    let none = HashMap::new();
    groups
        .into_iter()
        .flat_map(|g| {
            let r = if g.name == "head" || g.name.starts_with("head.") {
                &none
            } else {
                &roles
            };
            split_no_decay(vec![g], r)
        })
        .collect()
}

/// Layer-wise learning-rate decay (timm's `param_groups_layer_decay`, BEiT): each trainable backbone parameter goes
/// to the group of its layer id `i` ([`Backbone::layer_id`], 0 ..= L + 1 with L = [`Backbone::num_layers`]) at rate
/// `base_lr · decay^(L + 1 − i)`; `head_vars` train at `base_lr`. Groups are `backbone.layer_<i>` and `head`, each
/// split into decay and `.no_decay` parts by role as [`split_no_decay`] (the head's by the name fallback). An
/// error for architectures without layer ids or `decay` outside (0, 1].
pub fn layer_decay_groups(
    backbone: &dyn Backbone,
    head_vars: Vec<(String, Var)>,
    base_lr: f64,
    decay: f64,
) -> Result<Vec<ParamGroup>> {
    if !(decay > 0.0 && decay <= 1.0) {
        return Err(Error::Config(format!("layer decay must be in (0, 1], got {decay}")));
    }
    let not_defined = || Error::Config(format!("layer decay is not defined for {}", backbone.name()));
    let layers = backbone.num_layers().ok_or_else(not_defined)?;
    let mut by_layer: BTreeMap<usize, Vec<(String, Var)>> = BTreeMap::new();
    for (name, var) in backbone.store().trainable_vars() {
        let id = backbone.layer_id(&name).ok_or_else(not_defined)?.min(layers + 1);
        by_layer.entry(id).or_default().push((name, var));
    }
    let mut groups: Vec<ParamGroup> = by_layer
        .into_iter()
        .map(|(id, params)| {
            let lr = base_lr * decay.powi((layers + 1 - id) as i32);
            ParamGroup::new(&format!("backbone.layer_{id}"), params, lr)
        })
        .collect();
    groups = split_no_decay(groups, &backbone.store().roles());
    groups.extend(split_no_decay(
        vec![ParamGroup::new("head", head_vars, base_lr)],
        &HashMap::new(),
    ));
    Ok(groups)
}

/// One group per backbone stage with trainable parameters (named as the stage), each at rate `lr`.
pub fn stage_groups(backbone: &dyn Backbone, lr: f64) -> Vec<ParamGroup> {
    let vars = backbone.store().trainable_vars();
    backbone
        .stages()
        .into_iter()
        .filter_map(|stage| {
            let params: Vec<_> = vars
                .iter()
                .filter(|(n, _)| stage.prefixes.iter().any(|p| backbones::params::name_has_prefix(n, p)))
                .cloned()
                .collect();
            (!params.is_empty()).then(|| ParamGroup::new(&stage.name, params, lr))
        })
        .collect()
}

/// Parameter groups with discriminative rates: each backbone stage with trainable parameters, then the head.
/// Rates rise geometrically from `head_lr / lr_mult` (first trainable stage) to `head_lr` (the head), as fastai's
/// `slice(lr / lr_mult, lr)`.
pub fn discriminative_groups(model: Model<'_>, head_lr: f64, lr_mult: f64) -> Vec<ParamGroup> {
    let mut groups = model.backbone.map(|b| stage_groups(b, 0.0)).unwrap_or_default();
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
    /// fastai's `train_bn` in phase 2: BatchNorm uses batch statistics and norm layers train in frozen stages
    /// (see [`set_trainable`]).
    pub train_bn: bool,
    /// Layer-wise learning-rate decay for phase 2 (see [`layer_decay_groups`]), replacing the discriminative rates
    /// (`lr_mult`); `None`: discriminative rates.
    pub layer_decay: Option<f64>,
    /// Optimizer steps per epoch (for the one-cycle schedules) of [`fine_tune`]; [`fine_tune_observed`] asks its
    /// [`PhaseData`] instead.
    pub steps_per_epoch: usize,
    /// Fit settings shared by both phases. With a `checkpoint_dir`, phase 1 of the two-phase recipe checkpoints in
    /// its `phase1/` subfolder and the final phase in the folder itself (the layout of `trainer`'s run folders).
    pub fit: FitConfig,
}

/// The schedules and rates of [`fine_tune_observed`].
#[derive(Debug, Clone, PartialEq)]
pub enum Recipe {
    /// fastai's `fine_tune`: phase 1 one-cycle (pct_start 0.99) at `base_lr` on the head; phase 2 one-cycle
    /// (pct_start 0.3, div 5) at `base_lr / 2` with discriminative rates (`lr_mult`).
    TwoPhase,
    /// A plain fit with this schedule in each phase that runs, at `base_lr` (phase 2: discriminative rates with
    /// `lr_mult`, 1 for one rate), e.g. feature extraction (phase 1 only) or fine-tuning without frozen epochs.
    Plain(Schedule),
}

/// Batches of one epoch (`Result<(x, labels)>`).
pub type Batches<'a> = Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a>;

/// The data of the two phases of [`fine_tune_observed`]. `phase` is 1 (frozen backbone) or 2 (unfrozen); `epoch`
/// counts over the whole run from 0 (phase 2 starts at `freeze_epochs`).
pub trait PhaseData {
    /// Whether phase 1's batches hold features of the frozen backbone (the head trains alone on them) rather
    /// than images.
    fn phase1_features(&self) -> bool {
        false
    }
    /// Optimizer steps per epoch of `phase`.
    fn steps_per_epoch(&self, phase: u8) -> usize;
    /// Training batches of `phase` for `epoch`.
    fn train(&self, phase: u8, epoch: usize) -> Batches<'_>;
    /// Validation batches of `phase` for `epoch` (none: validation figures are 0).
    fn val(&self, phase: u8, epoch: usize) -> Batches<'_>;
}

/// Receives the progress of [`fit_phase`] and [`fine_tune_observed`], epochs counted over the whole run (from 0).
pub trait FitObserver {
    /// An epoch of `steps` optimizer steps begins.
    fn epoch_started(&mut self, _epoch: usize, _steps: usize) {}
    /// An optimizer step finished.
    fn batch(&mut self, _progress: &BatchProgress) {}
    /// An epoch finished (also called, on resume, for each epoch the checkpoint already holds); an error stops
    /// the run.
    fn epoch_ended(&mut self, _phase: u8, _record: &EpochRecord) -> Result<()> {
        Ok(())
    }
}

/// One fit of a run: its epochs, where they start in the run, its schedule, seed and checkpoint folder.
#[derive(Debug, Clone)]
pub struct Phase {
    /// 1 (frozen backbone) or 2 (unfrozen), as passed to the observer.
    pub phase: u8,
    /// Epochs of this phase.
    pub epochs: usize,
    /// Run-wide number (0-based) of this phase's first epoch.
    pub first_epoch: usize,
    /// The learning-rate schedule over this phase's steps.
    pub schedule: Schedule,
    /// Seed of the phase's training RNG.
    pub seed: u64,
    /// Checkpoint folder (`fit.checkpoint_dir` is ignored).
    pub checkpoint_dir: Option<PathBuf>,
}

/// Epochs already recorded by the checkpoint in `dir` (its sidecar only), or none.
pub fn checkpointed_history(dir: &Path) -> Vec<EpochRecord> {
    std::fs::read(crate::checkpoint::meta_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<CheckpointMeta>(&b).ok())
        .map(|m| m.history)
        .unwrap_or_default()
}

fn shifted(r: &EpochRecord, by: usize) -> EpochRecord {
    EpochRecord {
        epoch: r.epoch + by,
        ..r.clone()
    }
}

/// [`fit_observed`] for one phase of a run: epochs and batches numbered run-wide (from `phase.first_epoch`), the
/// observer told of each epoch start, step and end; on resume (`fit.resume`), the epochs already in the checkpoint
/// are replayed to the observer first. `train`/`val` get run-wide epoch numbers.
#[allow(clippy::too_many_arguments)]
pub fn fit_phase<TB, TI, VB, VI>(
    model: Model<'_>,
    optimizer: &mut dyn Optimizer,
    phase: &Phase,
    fit: &FitConfig,
    steps_per_epoch: usize,
    mut train: TB,
    mut val: VB,
    observer: &mut dyn FitObserver,
) -> Result<FitResult>
where
    TB: FnMut(usize) -> TI,
    TI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    VB: FnMut(usize) -> VI,
    VI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
{
    let offset = phase.first_epoch;
    if let (true, Some(dir)) = (fit.resume, &phase.checkpoint_dir) {
        for r in checkpointed_history(dir) {
            observer.epoch_ended(phase.phase, &shifted(&r, offset))?;
        }
    }
    let cfg = FitConfig {
        epochs: phase.epochs,
        seed: phase.seed,
        checkpoint_dir: phase.checkpoint_dir.clone(),
        ..fit.clone()
    };
    let observer = RefCell::new(observer);
    fit_observed(
        model,
        optimizer,
        &phase.schedule,
        &cfg,
        |epoch| {
            observer.borrow_mut().epoch_started(epoch + offset, steps_per_epoch);
            train(epoch + offset)
        },
        |epoch| val(epoch + offset),
        |r| observer.borrow_mut().epoch_ended(phase.phase, &shifted(r, offset)),
        &mut |p| {
            observer.borrow_mut().batch(&BatchProgress {
                epoch: p.epoch + offset,
                ..p.clone()
            })
        },
    )
}

/// fastai's `fine_tune`: one-cycle on the head with the backbone frozen (pct_start 0.99) for `freeze_epochs`,
/// then unfreeze and one-cycle (pct_start 0.3, div 5) with discriminative rates. `make_optimizer` builds an
/// optimizer over the given groups (e.g. AdamW); both phases train on `train_batches(epoch)` (`epoch` counted within
/// the phase). Returns the two phases' results (see [`fine_tune_observed`]).
#[allow(clippy::too_many_arguments)]
pub fn fine_tune<'b, TB, TI, VB, VI, MO, CB>(
    model: Model<'_>,
    cfg: &FineTuneConfig,
    make_optimizer: MO,
    train_batches: TB,
    val_batches: VB,
    on_epoch: CB,
) -> Result<(FitResult, FitResult)>
where
    TB: FnMut(usize) -> TI,
    TI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    TI::IntoIter: 'b,
    VB: FnMut(usize) -> VI,
    VI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    VI::IntoIter: 'b,
    MO: FnMut(Vec<ParamGroup>) -> Result<Box<dyn Optimizer>>,
    CB: FnMut(usize, &EpochRecord) -> Result<()>,
{
    /// The closures as [`PhaseData`]; epochs passed back within the phase.
    struct Closures<'a, TB, VB> {
        train: RefCell<TB>,
        val: RefCell<VB>,
        steps: usize,
        freeze_epochs: usize,
        batches: std::marker::PhantomData<&'a ()>,
    }
    impl<'a, TB, TI, VB, VI> PhaseData for Closures<'a, TB, VB>
    where
        TB: FnMut(usize) -> TI,
        TI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
        TI::IntoIter: 'a,
        VB: FnMut(usize) -> VI,
        VI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
        VI::IntoIter: 'a,
    {
        fn steps_per_epoch(&self, _: u8) -> usize {
            self.steps
        }
        fn train(&self, phase: u8, epoch: usize) -> Batches<'_> {
            let e = if phase == 2 { epoch - self.freeze_epochs } else { epoch };
            Box::new((self.train.borrow_mut())(e).into_iter())
        }
        fn val(&self, phase: u8, epoch: usize) -> Batches<'_> {
            let e = if phase == 2 { epoch - self.freeze_epochs } else { epoch };
            Box::new((self.val.borrow_mut())(e).into_iter())
        }
    }
    /// `on_epoch(phase, record)` with the record's epoch within its phase.
    struct OnEpoch<CB> {
        on_epoch: CB,
        freeze_epochs: usize,
    }
    impl<CB: FnMut(usize, &EpochRecord) -> Result<()>> FitObserver for OnEpoch<CB> {
        fn epoch_ended(&mut self, phase: u8, r: &EpochRecord) -> Result<()> {
            let mut r = r.clone();
            if phase == 2 {
                r.epoch -= self.freeze_epochs;
            }
            (self.on_epoch)(phase as usize, &r)
        }
    }
    let data: Closures<'b, TB, VB> = Closures {
        train: RefCell::new(train_batches),
        val: RefCell::new(val_batches),
        steps: cfg.steps_per_epoch,
        freeze_epochs: cfg.freeze_epochs,
        batches: std::marker::PhantomData,
    };
    let mut observer = OnEpoch {
        on_epoch,
        freeze_epochs: cfg.freeze_epochs,
    };
    fine_tune_observed(model, cfg, &Recipe::TwoPhase, make_optimizer, &data, &mut observer)
}

/// The recipe's phases over `data`: phase 1 trains the head with the backbone frozen for `freeze_epochs` (on
/// features when `data.phase1_features()`), phase 2 unfreezes `cfg.unfreeze` (norm layers per `train_bn`) and trains
/// it with the head for `epochs`, its stages' rates rising geometrically to the head's (see
/// [`discriminative_groups`]; stage groups are named `backbone.<stage>`), or with `cfg.layer_decay` the groups of
/// [`layer_decay_groups`] (already split by role). `make_optimizer` gets the groups as built; it may split them
/// with [`split_model_groups`] (groups that already carry a weight-decay value are left as they are). A phase with
/// no epochs is skipped (its result is empty). Phase 2 seeds its RNG with `fit.seed + 1`; its epochs continue phase 1's numbering; the
/// backbone is frozen again at the end. Checkpoints (with `fit.checkpoint_dir`): phase 1 in `phase1/` when it is
/// the two-phase recipe's or phase 2 follows, the final phase in the folder itself; `fit.resume` continues each.
pub fn fine_tune_observed<MO>(
    model: Model<'_>,
    cfg: &FineTuneConfig,
    recipe: &Recipe,
    mut make_optimizer: MO,
    data: &dyn PhaseData,
    observer: &mut dyn FitObserver,
) -> Result<(FitResult, FitResult)>
where
    MO: FnMut(Vec<ParamGroup>) -> Result<Box<dyn Optimizer>>,
{
    let backbone = model
        .backbone
        .ok_or_else(|| Error::Config("fine-tuning needs a backbone".into()))?;
    let empty = || FitResult {
        history: Vec::new(),
        best_val_acc: 0.0,
        best_score: 0.0,
        best_epoch: 0,
        stopped_early: false,
        resumed_from: None,
    };
    let dir = cfg.fit.checkpoint_dir.clone();
    let two_phase = *recipe == Recipe::TwoPhase;

    let r1 = if cfg.freeze_epochs > 0 {
        set_trainable(backbone, Unfreeze::None, false)?;
        let head_only = Model {
            backbone: None,
            head: model.head,
        };
        let m1 = if data.phase1_features() { head_only } else { model };
        let steps = data.steps_per_epoch(1);
        let mut opt = make_optimizer(discriminative_groups(model, cfg.base_lr, 1.0))?;
        let schedule = match recipe {
            Recipe::TwoPhase => Schedule::OneCycle {
                total_steps: (cfg.freeze_epochs * steps).max(1),
                pct_start: 0.99,
                div: 25.0,
                final_div: 1e5,
            },
            Recipe::Plain(s) => *s,
        };
        let phase1_dir = two_phase || cfg.epochs > 0;
        let phase = Phase {
            phase: 1,
            epochs: cfg.freeze_epochs,
            first_epoch: 0,
            schedule,
            seed: cfg.fit.seed,
            checkpoint_dir: dir
                .as_ref()
                .map(|d| if phase1_dir { d.join("phase1") } else { d.clone() }),
        };
        fit_phase(
            m1,
            opt.as_mut(),
            &phase,
            &cfg.fit,
            steps,
            |e| data.train(1, e),
            |e| data.val(1, e),
            observer,
        )?
    } else {
        empty()
    };

    let r2 = if cfg.epochs > 0 {
        set_trainable(backbone, cfg.unfreeze, cfg.train_bn)?;
        let steps = data.steps_per_epoch(2);
        let (lr, schedule) = match recipe {
            Recipe::TwoPhase => (
                cfg.base_lr / 2.0,
                Schedule::OneCycle {
                    total_steps: (cfg.epochs * steps).max(1),
                    pct_start: 0.3,
                    div: 5.0,
                    final_div: 1e5,
                },
            ),
            Recipe::Plain(s) => (cfg.base_lr, *s),
        };
        let groups = match cfg.layer_decay {
            Some(decay) => layer_decay_groups(backbone, model.head.vars(), lr, decay)?,
            None => {
                let mut groups = discriminative_groups(model, lr, cfg.lr_mult);
                // Stage names may clash with the head's group (EfficientNet has a `head` stage).
                let last = groups.len() - 1;
                for g in &mut groups[..last] {
                    g.name = format!("backbone.{}", g.name);
                }
                groups
            }
        };
        let mut opt = make_optimizer(groups)?;
        let phase = Phase {
            phase: 2,
            epochs: cfg.epochs,
            first_epoch: cfg.freeze_epochs,
            schedule,
            seed: cfg.fit.seed.wrapping_add(1),
            checkpoint_dir: dir,
        };
        let r = fit_phase(
            model,
            opt.as_mut(),
            &phase,
            &cfg.fit,
            steps,
            |e| data.train(2, e),
            |e| data.val(2, e),
            observer,
        )?;
        set_trainable(backbone, Unfreeze::None, false)?;
        r
    } else {
        empty()
    };
    Ok((r1, r2))
}
