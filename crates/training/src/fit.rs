//! The fit loop (PyTorch's `train_model`): train and val phases per epoch, best-val weights, early stopping,
//! per-epoch atomic checkpoints and exact resume.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use backbones::Backbone;
use candle_core::{DType, Tensor};
use heads::{Head, InputKind, Task as HeadTask};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointMeta, RngState};
use crate::error::{Error, Result};
use crate::loss::{bce_with_logits, cross_entropy, CrossEntropy};
use crate::optim::{OptimState, Optimizer};
use crate::schedule::LrSchedule;
use crate::task::{Classify, Task};

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean training loss (per sample).
    pub train_loss: f64,
    /// Training accuracy (per label for multi-label tasks).
    pub train_acc: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_acc: f64,
    /// Learning rate of the first group at the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch.
    pub seconds: f64,
    /// The task's score that picks the best epoch (accuracy, mIoU, AP); absent in records written before tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Every validation metric the task computed, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Mean training loss parts per sample (e.g. `box`, `cls`), for multi-part losses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loss_parts: BTreeMap<String, f64>,
}

/// The model being trained: an optional backbone (absent when training on precomputed features) and a head.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    /// The backbone; `None` when batches already hold features.
    pub backbone: Option<&'a dyn Backbone>,
    /// The head.
    pub head: &'a Head,
}

impl Model<'_> {
    /// Logits for input `x`; training mode when `rng` is given (batch-norm statistics, dropout from `rng`).
    pub fn forward(&self, x: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let train = rng.is_some();
        let features = match self.backbone {
            None => x.clone(),
            Some(b) => match self.head.config().input {
                InputKind::Pooled { .. } => b.forward_pooled(x, train)?,
                InputKind::FeatureMap { .. } => b.forward_features(x, train)?,
            },
        };
        Ok(self.head.forward(&features, rng)?)
    }

    /// A copy of every trainable tensor and every backbone buffer, by name (`head/…`, `backbone/…`).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = crate::task::backbone_state(self.backbone)?;
        for (k, v) in self.head.vars() {
            out.insert(format!("head/{k}"), v.as_tensor().detach().copy()?);
        }
        Ok(out)
    }

    /// Restore tensors saved by [`Model::state`] (a copy, so later updates do not alias them).
    pub fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        for (k, v) in self.head.vars() {
            let t = state
                .get(&format!("head/{k}"))
                .ok_or_else(|| Error::Config(format!("saved state lacks head tensor `{k}`")))?;
            v.set(&t.copy()?)?;
        }
        crate::task::load_backbone_state(self.backbone, state)
    }
}

/// Loss options by task: cross-entropy (multi-class) or BCE with logits (binary, multi-label).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossConfig {
    /// Label smoothing (multi-class).
    pub label_smoothing: f64,
    /// Per-class weights (see [`crate::loss::class_weights_auto`]).
    pub class_weights: Option<Vec<f32>>,
    /// Per-output positive weights (binary: one value; multi-label: one per label).
    pub pos_weight: Option<Vec<f32>>,
}

/// Settings of [`fit`].
#[derive(Debug, Clone)]
pub struct FitConfig {
    /// Number of epochs.
    pub epochs: usize,
    /// Stop after this many epochs without a better validation accuracy.
    pub patience: Option<usize>,
    /// Seed of the training RNG (dropout masks).
    pub seed: u64,
    /// Folder for `last.safetensors` / `last.json` written every epoch.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint_dir` when there is one.
    pub resume: bool,
    /// Loss options.
    pub loss: LossConfig,
    /// Restore the best-validation weights at the end.
    pub restore_best: bool,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            patience: None,
            seed: 0,
            checkpoint_dir: None,
            resume: false,
            loss: LossConfig::default(),
            restore_best: true,
        }
    }
}

/// What [`fit`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitResult {
    /// Every epoch, including those before a resume.
    pub history: Vec<EpochRecord>,
    /// Validation accuracy at the best epoch.
    pub best_val_acc: f64,
    /// The task's best score (accuracy for classification: equal to `best_val_acc`).
    #[serde(default)]
    pub best_score: f64,
    /// Its epoch.
    pub best_epoch: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The epoch the run resumed from (epochs already done), when it resumed.
    pub resumed_from: Option<usize>,
}

/// Where the train phase stands after an optimizer step (passed to [`fit_observed`]'s `on_batch`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchProgress {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Batch index within the epoch (0-based).
    pub batch: usize,
    /// Optimizer steps taken so far in the whole run (including epochs before a resume).
    pub steps: usize,
    /// Loss of this batch (mean per sample).
    pub loss: f64,
    /// Mean loss per sample over the epoch's batches so far.
    pub mean_loss: f64,
    /// Accuracy over the epoch's batches so far (per label for multi-label tasks).
    pub accuracy: f64,
    /// Samples seen so far in this epoch.
    pub samples: usize,
}

/// Loss and number of correct predictions (and of predictions) for a batch, by task.
pub fn batch_loss(
    task: HeadTask,
    logits: &Tensor,
    labels: &Tensor,
    cfg: &LossConfig,
) -> Result<(Tensor, usize, usize)> {
    let n = logits.dim(0)?;
    match task {
        HeadTask::MultiClass => {
            let opts = CrossEntropy {
                label_smoothing: cfg.label_smoothing,
                class_weights: cfg.class_weights.clone(),
            };
            let loss = cross_entropy(logits, labels, &opts)?;
            let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            let y: Vec<u32> = labels.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
            Ok((loss, pred.iter().zip(&y).filter(|(a, b)| a == b).count(), n))
        }
        HeadTask::Binary | HeadTask::MultiLabel => {
            let y = labels.to_dtype(DType::F32)?.reshape(logits.shape())?;
            let (mut pos_weight, mut scale) = (cfg.pos_weight.clone(), 1.0);
            if let (HeadTask::Binary, Some(w)) = (task, &cfg.class_weights) {
                // mean(w_y · l) = w0 · BCE(pos_weight = w1 / w0).
                if w.len() != 2 || w[0] <= 0.0 {
                    return Err(Error::Config("a binary task needs 2 positive class weights".into()));
                }
                let pw = pos_weight.as_ref().map(|p| p[0]).unwrap_or(1.0) * w[1] / w[0];
                pos_weight = Some(vec![pw]);
                scale = w[0] as f64;
            }
            let weight = match task {
                HeadTask::MultiLabel => cfg.class_weights.as_deref(),
                _ => None,
            };
            let loss = (bce_with_logits(logits, &y, pos_weight.as_deref(), weight)? * scale)?;
            let pred = logits.ge(0f32)?.to_dtype(DType::F32)?;
            let correct = pred.eq(&y)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
            Ok((loss, correct, y.elem_count()))
        }
    }
}

/// Train `model` for `cfg.epochs`: each epoch a train phase over `train_batches(epoch)` (an optimizer step per
/// batch, the LR factor from `schedule` at the global step) and a val phase over `val_batches(epoch)`; then
/// `on_epoch(record)` runs after the checkpoint is written (an error from it stops the run, as an interruption).
/// Batches are `(x, labels)`: `x` images for a backbone or features, labels u32 (N, or N×C multi-hot).
pub fn fit<TB, TI, VB, VI, CB>(
    model: Model<'_>,
    optimizer: &mut dyn Optimizer,
    schedule: &dyn LrSchedule,
    cfg: &FitConfig,
    train_batches: TB,
    val_batches: VB,
    on_epoch: CB,
) -> Result<FitResult>
where
    TB: FnMut(usize) -> TI,
    TI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    VB: FnMut(usize) -> VI,
    VI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    CB: FnMut(&EpochRecord) -> Result<()>,
{
    fit_observed(
        model,
        optimizer,
        schedule,
        cfg,
        train_batches,
        val_batches,
        on_epoch,
        &mut |_| {},
    )
}

/// [`fit`], calling `on_batch` after every optimizer step with the epoch's running figures (for progress bars).
#[allow(clippy::too_many_arguments)]
pub fn fit_observed<TB, TI, VB, VI, CB>(
    model: Model<'_>,
    optimizer: &mut dyn Optimizer,
    schedule: &dyn LrSchedule,
    cfg: &FitConfig,
    train_batches: TB,
    val_batches: VB,
    on_epoch: CB,
    on_batch: &mut dyn FnMut(&BatchProgress),
) -> Result<FitResult>
where
    TB: FnMut(usize) -> TI,
    TI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    VB: FnMut(usize) -> VI,
    VI: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    CB: FnMut(&EpochRecord) -> Result<()>,
{
    let task = Classify {
        model,
        loss: cfg.loss.clone(),
    };
    fit_task(
        &task,
        optimizer,
        schedule,
        cfg,
        train_batches,
        val_batches,
        on_epoch,
        on_batch,
    )
}

/// The shared fit loop for any [`Task`]: each epoch a train phase over `train_batches(epoch)` (an optimizer step
/// per batch, the LR factor from `schedule` at the global step) and a validation pass over `val_batches(epoch)`
/// accumulated by the task's evaluator; the task's score picks the best epoch (kept, restored at the end when
/// `cfg.restore_best`), drives early stopping, and goes with the model, the optimizer and the RNG into an atomic
/// checkpoint every epoch (exact resume). `on_epoch(record)` runs after the checkpoint is written (an error from it
/// stops the run, as an interruption); `on_batch` after every optimizer step. `cfg.loss` is not used here: the
/// task owns its loss.
#[allow(clippy::too_many_arguments)]
pub fn fit_task<T, TB, TI, VB, VI, CB>(
    task: &T,
    optimizer: &mut dyn Optimizer,
    schedule: &dyn LrSchedule,
    cfg: &FitConfig,
    mut train_batches: TB,
    mut val_batches: VB,
    mut on_epoch: CB,
    on_batch: &mut dyn FnMut(&BatchProgress),
) -> Result<FitResult>
where
    T: Task,
    TB: FnMut(usize) -> TI,
    TI: IntoIterator<Item = Result<(Tensor, T::Target)>>,
    VB: FnMut(usize) -> VI,
    VI: IntoIterator<Item = Result<(Tensor, T::Target)>>,
    CB: FnMut(&EpochRecord) -> Result<()>,
{
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut start_epoch = 0;
    let mut step = 0usize;
    let mut history = Vec::new();
    let mut best: Option<(f64, usize)> = None;
    let mut best_state: Option<HashMap<String, Tensor>> = None;
    let mut since_best = 0;
    let mut resumed_from = None;

    if let (true, Some(dir)) = (cfg.resume, &cfg.checkpoint_dir) {
        if let Some(ck) = Checkpoint::load(dir, &checkpoint_device(task))? {
            let m = ck.meta;
            let pick = |prefix: &str| -> HashMap<String, Tensor> {
                ck.tensors
                    .iter()
                    .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.clone())))
                    .collect()
            };
            task.load_state(&pick("model/"))?;
            let best_t = pick("best/");
            best_state = (!best_t.is_empty()).then_some(best_t);
            optimizer.load_state(&OptimState {
                tensors: pick("optim/"),
                scalars: m.optimizer_scalars.clone(),
            })?;
            rng = m.rng.restore()?;
            start_epoch = m.epoch;
            step = m.schedule_step;
            history = m.history;
            best = m.best_metric.zip(m.best_epoch);
            since_best = m.epochs_without_improvement;
            resumed_from = Some(m.epoch);
        }
    }

    let mut stopped_early = false;
    for epoch in start_epoch..cfg.epochs {
        if cfg.patience.is_some_and(|p| since_best >= p) {
            stopped_early = true;
            break;
        }
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut count, mut samples) = (0f64, 0usize, 0usize, 0usize);
        let mut parts: BTreeMap<String, f64> = BTreeMap::new();
        for (i, batch) in train_batches(epoch).into_iter().enumerate() {
            let (x, y) = batch?;
            optimizer.set_lr_scale(schedule.multiplier(step));
            let out = task.train_step(&x, &y, &mut rng)?;
            let l = out.loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !l.is_finite() {
                return Err(Error::NonFinite {
                    epoch,
                    step: i,
                    loss: l,
                });
            }
            optimizer.step(&out.loss.backward()?)?;
            step += 1;
            let n = x.dim(0)?;
            loss_sum += l as f64 * n as f64;
            samples += n;
            correct += out.correct;
            count += out.count;
            for (k, v) in out.parts {
                *parts.entry(k).or_default() += v * n as f64;
            }
            on_batch(&BatchProgress {
                epoch,
                batch: i,
                steps: step,
                loss: l as f64,
                mean_loss: loss_sum / samples.max(1) as f64,
                accuracy: correct as f64 / count.max(1) as f64,
                samples,
            });
        }
        let lr = optimizer.lr();
        let (train_loss, train_acc) = (loss_sum / samples.max(1) as f64, correct as f64 / count.max(1) as f64);
        let mut eval = task.evaluator();
        for batch in val_batches(epoch) {
            let (x, y) = batch?;
            eval.add(&x, &y)?;
        }
        let summary = eval.finish()?;
        for v in parts.values_mut() {
            *v /= samples.max(1) as f64;
        }
        let record = EpochRecord {
            epoch,
            train_loss,
            train_acc,
            val_loss: summary.loss,
            val_acc: summary.accuracy,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
            score: Some(summary.score),
            metrics: summary.metrics,
            loss_parts: parts,
        };
        if best.is_none_or(|(b, _)| summary.score > b) {
            best = Some((summary.score, epoch));
            best_state = Some(task.state()?);
            since_best = 0;
        } else {
            since_best += 1;
        }
        history.push(record.clone());
        if let Some(dir) = &cfg.checkpoint_dir {
            let opt = optimizer.state();
            let mut tensors: HashMap<String, Tensor> = task
                .state()?
                .into_iter()
                .map(|(k, v)| (format!("model/{k}"), v))
                .collect();
            if let Some(bs) = &best_state {
                tensors.extend(bs.iter().map(|(k, v)| (format!("best/{k}"), v.clone())));
            }
            tensors.extend(opt.tensors.into_iter().map(|(k, v)| (format!("optim/{k}"), v)));
            let meta = CheckpointMeta {
                epoch: epoch + 1,
                schedule_step: step,
                rng: RngState::capture(&rng),
                best_metric: best.map(|b| b.0),
                best_epoch: best.map(|b| b.1),
                epochs_without_improvement: since_best,
                history: history.clone(),
                optimizer_scalars: opt.scalars,
            };
            Checkpoint { tensors, meta }.save(dir)?;
        }
        on_epoch(&record)?;
    }
    if cfg.restore_best {
        if let Some(bs) = &best_state {
            task.load_state(bs)?;
        }
    }
    let (best_score, best_epoch) = best.unwrap_or((0.0, 0));
    let best_val_acc = history
        .iter()
        .find(|r| r.epoch == best_epoch)
        .map(|r| r.val_acc)
        .unwrap_or(0.0);
    Ok(FitResult {
        history,
        best_val_acc,
        best_score,
        best_epoch,
        stopped_early,
        resumed_from,
    })
}

/// The device checkpoint tensors load onto: the head's, else the backbone's.
fn checkpoint_device<T: Task>(task: &T) -> candle_core::Device {
    if let Some((_, v)) = task.head_vars().first() {
        return v.device().clone();
    }
    task.backbone()
        .map(|b| b.store().device().clone())
        .unwrap_or(candle_core::Device::Cpu)
}
