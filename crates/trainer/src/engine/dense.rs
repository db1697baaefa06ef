//! What segmentation and detection runs share: the run record, freezing per `--mode`, the optimizer groups and the
//! one fit loop (`training::fit_task`) with the run folder's checkpoints, resume, early stopping and progress.

use std::cell::RefCell;
use std::path::Path;

use backbones::Backbone;
use candle_core::Tensor;
use training::{EpochRecord, FitConfig, FitResult, ParamGroup, Task};

use super::train::{make_optimizer, schedule};
use crate::backend::TrainObserver;
use crate::config::TrainConfig;
use crate::error::UsageError;
use crate::spec::{Mode, Unfreeze};
use crate::summary::EpochRow;

/// The backbone's rate relative to `--lr` when fine-tuning a dense task: pretrained features move ten times slower
/// than the freshly initialised decoder.
pub const BACKBONE_LR_FACTOR: f64 = 0.1;

/// Freeze or unfreeze `backbone` per `--mode`, `--unfreeze` and `--train-bn` (a bad `--unfreeze` is a usage error).
pub fn apply_mode(cfg: &TrainConfig, backbone: &dyn Backbone) -> anyhow::Result<()> {
    let which = match (cfg.mode, cfg.unfreeze) {
        (Mode::FeatureExtract, _) => training::Unfreeze::None,
        (Mode::FineTune, None | Some(Unfreeze::All)) => training::Unfreeze::All,
        (Mode::FineTune, Some(Unfreeze::Last(n))) => training::Unfreeze::Last(n),
    };
    let train_bn = cfg.mode == Mode::FineTune && cfg.train_bn;
    training::set_trainable(backbone, which, train_bn).map_err(|e| UsageError(format!("--unfreeze: {e}")))?;
    Ok(())
}

/// The optimizer's groups: the head at `--lr`, then each backbone stage with trainable parameters at
/// `--lr` × [`BACKBONE_LR_FACTOR`].
pub fn param_groups(
    cfg: &TrainConfig,
    backbone: &dyn Backbone,
    head_vars: Vec<(String, candle_core::Var)>,
) -> Vec<ParamGroup> {
    let mut groups = vec![ParamGroup::new("head", head_vars, cfg.lr)];
    groups.extend(training::finetune::stage_groups(backbone, cfg.lr * BACKBONE_LR_FACTOR));
    groups
}

/// The batches of a dense run.
pub struct EpochData<TB, VB> {
    /// Optimizer steps (training batches) per epoch.
    pub steps: usize,
    /// Whether there is validation data (rows without it carry no validation figures).
    pub has_val: bool,
    /// `train(epoch)`: the epoch's training batches.
    pub train: TB,
    /// `val(epoch)`: the validation batches.
    pub val: VB,
}

/// Train `task` through `training::fit_task` for `cfg.epochs` epochs, checkpointing in `run_dir` (exact resume
/// with `--resume`), keeping the best epoch by the task's score and stopping early after `--patience` epochs
/// without improvement. Returns the library's result and the rows the observer saw.
pub fn fit<T, TB, TI, VB, VI>(
    task: &T,
    cfg: &TrainConfig,
    run_dir: &Path,
    observer: &mut dyn TrainObserver,
    data: EpochData<TB, VB>,
) -> anyhow::Result<(FitResult, Vec<EpochRow>)>
where
    T: Task,
    TB: FnMut(usize) -> TI,
    TI: IntoIterator<Item = training::Result<(Tensor, T::Target)>>,
    VB: FnMut(usize) -> VI,
    VI: IntoIterator<Item = training::Result<(Tensor, T::Target)>>,
{
    let backbone = task
        .backbone()
        .ok_or_else(|| anyhow::anyhow!("a dense task trains through its backbone"))?;
    let EpochData {
        steps,
        has_val,
        mut train,
        val,
    } = data;
    let groups = param_groups(cfg, backbone, task.head_vars());
    let mut optimizer = make_optimizer(cfg, groups)?;
    let sched = schedule(cfg.scheduler, cfg.epochs, steps.max(1));
    let fit_cfg = FitConfig {
        epochs: cfg.epochs,
        patience: cfg.patience,
        seed: cfg.seed,
        checkpoint_dir: Some(run_dir.to_path_buf()),
        resume: cfg.resume.is_some(),
        loss: training::LossConfig::default(),
        // Without validation every epoch scores alike: keep the last one, not the first.
        restore_best: has_val,
    };
    let observer = RefCell::new(observer);
    let rows = RefCell::new(Vec::new());
    let epochs = cfg.epochs;
    let result = training::fit_task(
        task,
        optimizer.as_mut(),
        &sched,
        &fit_cfg,
        |epoch| {
            observer.borrow_mut().epoch_started(epoch + 1, epochs, steps);
            train(epoch)
        },
        val,
        |r: &EpochRecord| {
            let row = EpochRow::from_task_record(r, has_val);
            rows.borrow_mut().push(row.clone());
            observer
                .borrow_mut()
                .epoch_ended(&row)
                .map_err(|e| training::Error::Config(format!("{e:#}")))
        },
        &mut |p| observer.borrow_mut().batch(p, steps),
    )?;
    Ok((result, rows.into_inner()))
}
