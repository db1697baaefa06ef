//! `trainer train`: the head on cached features of the frozen backbone (feature extraction), or fine-tuning
//! (fastai's two phases by default: the head on frozen features, then unfrozen stages at lower rates), with
//! per-epoch atomic checkpoints and exact resume — all through `training::fine_tune_observed`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use backbones::pretrained::{Pretrained, WeightsSource};
use backbones::{Backbone, ModelSpec};
use candle_core::{Device, Tensor};
use heads::{Head, HeadConfig, InputKind, Task};
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use training::export::{ModelMeta, WeightsRef};
use training::{
    BatchProgress, Batches, EpochRecord, FineTuneConfig, FitConfig, FitObserver, LossConfig, Model, Optimizer,
    ParamGroup, PhaseData, Recipe, Schedule,
};

use super::evaluate::{summarize, Scored};
use super::inputs::{self, FeatureSpec, Features, Sets};
use crate::backend::TrainObserver;
use crate::config::TrainConfig;
use crate::error::UsageError;
use crate::spec::{Augment, HeadSpec, Mode, OptimizerKind, Pooling, SchedulerSpec, Unfreeze};
use crate::summary::{EpochRow, TrainOutcome};

/// The run folder's record of what was trained on (checked by `--resume`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `classify`, `segment` or `detect` (absent in run folders from before tasks: classify).
    #[serde(default)]
    pub task: crate::spec::TaskKind,
    /// Registry name of the backbone.
    pub model: String,
    /// The pretrained weights used.
    pub weights: WeightsRef,
    /// `feature-extract` or `fine-tune`.
    pub mode: String,
    /// Training classes.
    pub classes: Vec<String>,
}

/// `run.json` in a run folder.
pub fn run_info_path(run_dir: &Path) -> PathBuf {
    run_dir.join("run.json")
}

/// The best model of a run.
pub fn best_path(run_dir: &Path) -> PathBuf {
    run_dir.join("best.safetensors")
}

/// The backbone spec for `--model`, as a usage error with a suggestion when unknown.
pub fn model_spec(name: &str) -> anyhow::Result<ModelSpec> {
    backbones::registry::get(name).map_err(|e| UsageError(format!("--model: {e}")).into())
}

/// A backbones error about the `--weights` file the user named is a usage error.
fn weights_error(explicit: Option<&Path>, e: backbones::Error) -> anyhow::Error {
    match (explicit, &e) {
        (Some(_), backbones::Error::Weights { .. }) => UsageError(format!("--weights: {e}")).into(),
        _ => e.into(),
    }
}

/// Resolve the pretrained weights (explicit file, Hub cache or download) and hash them.
pub fn resolve_weights(spec: &ModelSpec, explicit: Option<&Path>) -> anyhow::Result<WeightsRef> {
    let w = backbones::pretrained::resolve(spec, &WeightsSource::file_or_hub(explicit))
        .map_err(|e| weights_error(explicit, e))?;
    Ok(WeightsRef {
        path: w.path,
        sha256: w.sha256,
    })
}

/// `--model` built from `--weights` (or the Hub) on `device`: one call to `backbones::pretrained`.
pub fn pretrained(name: &str, explicit: Option<&Path>, device: &Device) -> anyhow::Result<(Pretrained, WeightsRef)> {
    model_spec(name)?;
    let p = backbones::pretrained(name, &WeightsSource::file_or_hub(explicit), device)
        .map_err(|e| weights_error(explicit, e))?;
    let w = WeightsRef {
        path: p.weights.clone(),
        sha256: p.sha256.clone(),
    };
    Ok((p, w))
}

/// The device of `cfg`.
pub fn device_of(spec: crate::spec::DeviceSpec) -> anyhow::Result<Device> {
    spec.open()
        .map_err(|e| UsageError(format!("--device {spec}: {}", data::text::one_line(&e.to_string()))).into())
}

/// The optimizer `kind` with its settings over `groups`.
pub fn optimizer(
    kind: OptimizerKind,
    momentum: f64,
    weight_decay: f64,
    groups: Vec<ParamGroup>,
) -> training::Result<Box<dyn Optimizer>> {
    Ok(match kind {
        OptimizerKind::Sgd => Box::new(training::Sgd::new(
            groups,
            training::SgdConfig {
                momentum,
                nesterov: false,
                weight_decay,
            },
        )?),
        OptimizerKind::Adam => Box::new(training::Adam::new(
            groups,
            training::AdamConfig {
                weight_decay,
                ..training::AdamConfig::adam()
            },
        )?),
        OptimizerKind::AdamW => Box::new(training::Adam::new(
            groups,
            training::AdamConfig {
                weight_decay,
                ..training::AdamConfig::adamw()
            },
        )?),
    })
}

/// The optimizer `cfg` names over `groups`.
pub fn make_optimizer(cfg: &TrainConfig, groups: Vec<ParamGroup>) -> training::Result<Box<dyn Optimizer>> {
    optimizer(cfg.optimizer, cfg.momentum, cfg.weight_decay, groups)
}

/// The schedule `spec` over `epochs` epochs of `steps` optimizer steps.
pub fn schedule(spec: SchedulerSpec, epochs: usize, steps: usize) -> Schedule {
    match spec {
        SchedulerSpec::None => Schedule::Constant,
        SchedulerSpec::Step { step, gamma } => Schedule::Step {
            step_epochs: step,
            gamma,
            steps_per_epoch: steps,
        },
        SchedulerSpec::Cosine { warmup } => Schedule::WarmupCosine {
            warmup_steps: warmup * steps,
            total_steps: epochs * steps,
            min_factor: 0.0,
        },
        SchedulerSpec::OneCycle => Schedule::one_cycle((epochs * steps).max(1)),
    }
}

/// The head's configuration for `cfg` on `backbone`.
pub fn head_config(
    cfg: &TrainConfig,
    spec: &ModelSpec,
    backbone: &dyn Backbone,
    classes: &[String],
    weights: &WeightsRef,
    device: &Device,
) -> anyhow::Result<HeadConfig> {
    let task = if cfg.binary {
        if classes.len() != 2 {
            return Err(UsageError(format!(
                "--binary needs exactly 2 classes, the data has {}",
                classes.len()
            ))
            .into());
        }
        Task::Binary
    } else {
        Task::MultiClass
    };
    let input = match cfg.pool {
        Pooling::Avg => InputKind::Pooled {
            features: backbone.num_features(),
        },
        Pooling::Flatten => {
            let [h, w] = spec.preprocess.input_size;
            let probe = Tensor::zeros((1, 3, h, w), candle_core::DType::F32, device)?;
            let features = backbone.forward_features(&probe, false)?;
            let Ok((_, c, fh, fw)) = features.dims4() else {
                return Err(UsageError(format!(
                    "--pool flatten: {} returns tokens ({:?}), not a feature map; use --pool avg (the model's own \
                     pooling, as timm's global_pool)",
                    spec.name,
                    features.dims()
                ))
                .into());
            };
            InputKind::FeatureMap {
                channels: c,
                height: fh,
                width: fw,
            }
        }
    };
    Ok(HeadConfig {
        task,
        class_names: classes.to_vec(),
        input,
        hidden: match &cfg.head {
            HeadSpec::Mlp(w) => w.clone(),
            // `TrainConfig::validate` keeps dense heads away from classification.
            _ => Vec::new(),
        },
        dropout: cfg.dropout,
        backbone: Some(spec.name.clone()),
        backbone_sha256: Some(weights.sha256.clone()),
        preprocessing: Some(serde_json::to_value(&spec.preprocess)?),
    })
}

fn loss_config(cfg: &TrainConfig, train: &data::Dataset) -> LossConfig {
    LossConfig {
        label_smoothing: cfg.label_smoothing as f64,
        class_weights: match cfg.class_weights {
            crate::spec::ClassWeights::None => None,
            crate::spec::ClassWeights::Auto => Some(training::class_weights_auto(&train.class_counts())),
        },
        pos_weight: None,
    }
}

fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(epoch as u64).to_le_bytes());
    bytes[24..].copy_from_slice(b"featbtch");
    ChaCha8Rng::from_seed(bytes)
}

/// Row batches of cached features: shuffled per `(seed, epoch)` for training, in order otherwise.
fn feature_batches(
    f: &Features,
    batch_size: usize,
    shuffle: Option<(u64, usize)>,
) -> training::Result<Vec<(Tensor, Tensor)>> {
    let n = f.x.dim(0)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    if let Some((seed, epoch)) = shuffle {
        order.shuffle(&mut epoch_rng(seed, epoch));
    }
    order
        .chunks(batch_size)
        .map(|c| {
            let idx = Tensor::from_slice(c, c.len(), f.x.device())?;
            Ok((f.x.index_select(&idx, 0)?, f.labels.index_select(&idx, 0)?))
        })
        .collect()
}

/// The run's batches: cached features in phase 1, images from the loaders in phase 2.
struct RunData<'a> {
    train_features: Option<&'a Features>,
    val_features: Option<&'a Features>,
    train_loader: Option<&'a data::Loader>,
    val_loader: Option<&'a data::Loader>,
    batch_size: usize,
    seed: u64,
}

fn boxed<'a>(batches: training::Result<Vec<(Tensor, Tensor)>>) -> Batches<'a> {
    match batches {
        Ok(v) => Box::new(v.into_iter().map(Ok)),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

fn loader_batches(loader: Option<&data::Loader>, epoch: u64) -> Batches<'_> {
    let to_pair = |b: data::Result<data::Batch>| {
        b.map(|b| (b.images, b.labels))
            .map_err(|e| training::Error::Config(e.to_string()))
    };
    Box::new(loader.into_iter().flat_map(move |l| l.epoch(epoch)).map(to_pair))
}

impl PhaseData for RunData<'_> {
    fn phase1_features(&self) -> bool {
        true
    }
    fn steps_per_epoch(&self, phase: u8) -> usize {
        match phase {
            1 => self
                .train_features
                .map_or(0, |f| f.x.dims()[0].div_ceil(self.batch_size)),
            _ => self.train_loader.map_or(0, |l| l.num_batches()),
        }
    }
    fn train(&self, phase: u8, epoch: usize) -> Batches<'_> {
        match (phase, self.train_features) {
            (1, Some(f)) => boxed(feature_batches(f, self.batch_size, Some((self.seed, epoch)))),
            (1, None) => Box::new(std::iter::empty()),
            _ => loader_batches(self.train_loader, epoch as u64),
        }
    }
    fn val(&self, phase: u8, _epoch: usize) -> Batches<'_> {
        match (phase, self.val_features) {
            (1, Some(f)) => boxed(feature_batches(f, self.batch_size, None)),
            (1, None) => Box::new(std::iter::empty()),
            _ => loader_batches(self.val_loader, 0),
        }
    }
}

/// The library's progress as the CLI's: epochs and batches from 1, rows without validation figures when there is
/// no validation data, `metrics.csv` rows kept for the outcome.
struct Progress<'a> {
    observer: &'a mut dyn TrainObserver,
    epochs: usize,
    has_val: bool,
    batches: usize,
    rows: Vec<EpochRow>,
}

impl FitObserver for Progress<'_> {
    fn epoch_started(&mut self, epoch: usize, steps: usize) {
        self.batches = steps;
        self.observer.epoch_started(epoch + 1, self.epochs, steps);
    }
    fn batch(&mut self, p: &BatchProgress) {
        self.observer.batch(p, self.batches);
    }
    fn epoch_ended(&mut self, _phase: u8, r: &EpochRecord) -> training::Result<()> {
        let row = EpochRow::from_record(r, self.has_val);
        self.rows.push(row.clone());
        self.observer
            .epoch_ended(&row)
            .map_err(|e| training::Error::Config(format!("{e:#}")))
    }
}

/// Write `run.json`; with `--resume`, first check that the run folder's record has the same task, model, weights,
/// classes and mode (a usage error naming the folder otherwise).
pub fn write_run_info(cfg: &TrainConfig, run_dir: &Path, info: &RunInfo) -> anyhow::Result<()> {
    let info_path = run_info_path(run_dir);
    if let (Some(dir), Ok(bytes)) = (&cfg.resume, std::fs::read(&info_path)) {
        let old: RunInfo = serde_json::from_slice(&bytes)
            .with_context(|| format!("--resume {}: unreadable run.json", dir.display()))?;
        if old.model != info.model {
            return Err(UsageError(format!(
                "--resume {}: that run trained `{}`, not `{}`",
                dir.display(),
                old.model,
                info.model
            ))
            .into());
        }
        if old.task != info.task
            || old.weights.sha256 != info.weights.sha256
            || old.classes != info.classes
            || old.mode != info.mode
        {
            return Err(UsageError(format!(
                "--resume {}: the task, weights, classes or mode differ from the run's",
                dir.display()
            ))
            .into());
        }
    }
    data::fsutil::write_atomic(&info_path, serde_json::to_string_pretty(info)?.as_bytes())?;
    Ok(())
}

/// Read a run folder's `run.json`.
pub fn read_run_info(run_dir: &Path) -> anyhow::Result<RunInfo> {
    let path = run_info_path(run_dir);
    let bytes = std::fs::read(&path).map_err(|e| UsageError(format!("{}: {e} (not a run folder?)", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| UsageError(format!("{}: unreadable run.json: {e}", path.display())).into())
}

/// Train per `cfg` into `run_dir`: classification here, segmentation and detection in their modules.
pub fn train(cfg: &TrainConfig, run_dir: &Path, observer: &mut dyn TrainObserver) -> anyhow::Result<TrainOutcome> {
    match cfg.task {
        crate::spec::TaskKind::Classify => train_classifier(cfg, run_dir, observer),
        crate::spec::TaskKind::Segment => super::segment::train(cfg, run_dir, observer),
        crate::spec::TaskKind::Detect => super::detect::train(cfg, run_dir, observer),
    }
}

fn train_classifier(
    cfg: &TrainConfig,
    run_dir: &Path,
    observer: &mut dyn TrainObserver,
) -> anyhow::Result<TrainOutcome> {
    let spec = model_spec(&cfg.model)?;
    let device = device_of(cfg.device)?;
    let Sets { train, val } = inputs::open_sets(cfg)?;
    let (pretrained, weights) = pretrained(&cfg.model, cfg.weights.as_deref(), &device)?;
    let info = RunInfo {
        task: crate::spec::TaskKind::Classify,
        model: spec.name.clone(),
        weights: weights.clone(),
        mode: cfg.mode.to_string(),
        classes: train.classes.clone(),
    };
    write_run_info(cfg, run_dir, &info)?;

    let backbone = pretrained.backbone;
    let head_cfg = head_config(cfg, &spec, backbone.as_ref(), &train.classes, &weights, &device)?;
    let head = Head::seeded(head_cfg.clone(), &device, cfg.seed)?;
    let has_val = val.is_some();
    // Fine-tuning's `epochs` include the head-only ones (phase 1); the rest train unfrozen (phase 2).
    let freeze_epochs = match cfg.mode {
        Mode::FeatureExtract => cfg.epochs,
        Mode::FineTune => cfg.freeze_epochs.min(cfg.epochs),
    };
    let unfrozen_epochs = cfg.epochs - freeze_epochs;
    let fine_tuned = cfg.mode == Mode::FineTune && unfrozen_epochs > 0;
    let unfreeze = match (cfg.mode, cfg.unfreeze) {
        (Mode::FeatureExtract, _) => training::Unfreeze::None,
        (_, None | Some(Unfreeze::All)) => training::Unfreeze::All,
        (_, Some(Unfreeze::Last(n))) => training::Unfreeze::Last(n),
    };
    if cfg.layer_decay.is_some() && backbone.num_layers().is_none() {
        return Err(UsageError(format!(
            "--layer-decay: layer decay is not defined for {} (ViT, DINOv2 and ConvNeXt have it)",
            spec.name
        ))
        .into());
    }
    if fine_tuned {
        // A bad --unfreeze is the user's mistake: say so before any work.
        training::set_trainable(backbone.as_ref(), unfreeze, cfg.train_bn)
            .map_err(|e| UsageError(format!("--unfreeze: {e}")))?;
        training::set_trainable(backbone.as_ref(), training::Unfreeze::None, false)?;
    }
    let cache = inputs::cache_dir();

    // Phase 1's data (or all of feature extraction's): cached features of the frozen backbone.
    let (mut train_features, mut val_features) = (None, None);
    if freeze_epochs > 0 {
        let (name, pipeline, views) = match cfg.augment {
            Augment::None => (
                "eval".to_string(),
                data::transforms::Pipeline::eval(&spec.preprocess),
                1,
            ),
            a => (
                a.to_string(),
                inputs::train_pipeline(a, &spec.preprocess),
                cfg.aug_views,
            ),
        };
        let fspec = |pipeline_name: String, pipeline, views| FeatureSpec {
            backbone: backbone.as_ref(),
            model: &spec.name,
            weights_sha256: &weights.sha256,
            input: head_cfg.input,
            pipeline_name,
            pipeline,
            preprocess: &spec.preprocess,
            views,
            batch_size: cfg.batch_size,
            strict: cfg.strict,
            seed: cfg.seed,
        };
        let t0 = Instant::now();
        let mut progress = |task: &str, done: usize, total: usize| observer.progress(task, done, total);
        let tf = inputs::features(
            &cache,
            &train,
            fspec(name, pipeline, views),
            &device,
            "train",
            &mut progress,
        )?;
        let vf = match &val {
            Some(v) => Some(inputs::features(
                &cache,
                v,
                fspec("eval".into(), data::transforms::Pipeline::eval(&spec.preprocess), 1),
                &device,
                "val",
                &mut progress,
            )?),
            None => None,
        };
        let hit = tf.hit && vf.as_ref().is_none_or(|v| v.hit);
        observer.info(&format!(
            "feature cache: {} ({} train rows, {} val rows, {:.1} s, {})",
            if hit { "hit" } else { "miss" },
            tf.x.dim(0)?,
            vf.as_ref().map(|v| v.x.dim(0)).transpose()?.unwrap_or(0),
            t0.elapsed().as_secs_f64(),
            cache.display()
        ));
        train_features = Some(tf);
        val_features = vf;
    }

    // Phase 2's data: images.
    let (mut train_loader, mut val_loader) = (None, None);
    if fine_tuned {
        train_loader = Some(inputs::loader(
            &train,
            inputs::train_pipeline(cfg.augment, &spec.preprocess),
            cfg.batch_size,
            true,
            cfg.seed,
            cfg.strict,
            &device,
        )?);
        if let Some(v) = &val {
            val_loader = Some(inputs::loader(
                v,
                data::transforms::Pipeline::eval(&spec.preprocess),
                cfg.batch_size,
                false,
                cfg.seed,
                cfg.strict,
                &device,
            )?);
        }
    }
    let run_data = RunData {
        train_features: train_features.as_ref(),
        val_features: val_features.as_ref(),
        train_loader: train_loader.as_ref(),
        val_loader: val_loader.as_ref(),
        batch_size: cfg.batch_size,
        seed: cfg.seed,
    };
    // Feature extraction and fine-tuning without frozen epochs are plain fits with the chosen scheduler; otherwise
    // fastai's two phases.
    let (recipe, lr_mult) = match (cfg.mode, freeze_epochs) {
        (Mode::FeatureExtract, _) => (
            Recipe::Plain(schedule(cfg.scheduler, cfg.epochs, run_data.steps_per_epoch(1))),
            1.0,
        ),
        (Mode::FineTune, 0) => (
            Recipe::Plain(schedule(cfg.scheduler, unfrozen_epochs, run_data.steps_per_epoch(2))),
            1.0,
        ),
        (Mode::FineTune, _) => (Recipe::TwoPhase, 100.0),
    };
    let ft = FineTuneConfig {
        freeze_epochs,
        epochs: unfrozen_epochs,
        base_lr: cfg.lr,
        lr_mult,
        unfreeze,
        train_bn: cfg.train_bn,
        layer_decay: cfg.layer_decay,
        steps_per_epoch: 0,
        fit: FitConfig {
            epochs: cfg.epochs,
            patience: cfg.patience,
            seed: cfg.seed,
            checkpoint_dir: Some(run_dir.to_path_buf()),
            resume: cfg.resume.is_some(),
            loss: loss_config(cfg, &train),
            restore_best: true,
        },
    };
    let mut progress = Progress {
        observer,
        epochs: cfg.epochs,
        has_val,
        batches: 0,
        rows: Vec::new(),
    };
    let model = Model {
        backbone: Some(backbone.as_ref()),
        head: &head,
    };
    training::fine_tune_observed(
        model,
        &ft,
        &recipe,
        // timm's no-decay set: norms, biases, position embeddings, tokens and layer scales by parameter role.
        |groups| make_optimizer(cfg, training::split_model_groups(model, groups)),
        &run_data,
        &mut progress,
    )?;

    let scored = match (&val, &val_loader, &val_features) {
        (Some(v), Some(ld), _) if fine_tuned => Some(Scored::from_loader(model, ld, v)?),
        (Some(v), _, Some(vf)) => Some(Scored::from_features(&head, vf, v, cfg.batch_size)?),
        _ => None,
    };
    let meta = ModelMeta {
        model: spec.name.clone(),
        architecture: spec.architecture.clone(),
        classes: train.classes.clone(),
        preprocess: spec.preprocess.clone(),
        head: head_cfg,
        mode: cfg.mode.to_string(),
        weights: Some(weights),
        backbone_included: fine_tuned,
    };
    training::export::save(
        &best_path(run_dir),
        &meta,
        &head,
        fine_tuned.then_some(backbone.as_ref()),
    )?;
    let (eval, wrong) = match scored {
        Some(s) => {
            let (e, w) = summarize(&s, &train.classes)?;
            (Some(e), w)
        }
        None => (None, Vec::new()),
    };
    Ok(TrainOutcome {
        history: progress.rows,
        eval,
        wrong,
        dense: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use training::LrSchedule;

    #[test]
    fn feature_batches_cover_every_row_and_reshuffle_per_epoch() {
        let x = Tensor::arange(0f32, 10.0, &Device::Cpu)
            .unwrap()
            .reshape((10, 1))
            .unwrap();
        let labels = Tensor::arange(0u32, 10, &Device::Cpu).unwrap();
        let f = Features {
            x,
            labels,
            index: (0..10).collect(),
            hit: false,
        };
        let rows =
            |b: &[(Tensor, Tensor)]| -> Vec<u32> { b.iter().flat_map(|(_, y)| y.to_vec1::<u32>().unwrap()).collect() };
        let e0 = feature_batches(&f, 4, Some((1, 0))).unwrap();
        assert_eq!(e0.iter().map(|b| b.0.dim(0).unwrap()).collect::<Vec<_>>(), [4, 4, 2]);
        let mut sorted = rows(&e0);
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<u32>>());
        // Features stay with their labels.
        for (x, y) in &e0 {
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(
                xs,
                y.to_vec1::<u32>()
                    .unwrap()
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(
            rows(&e0),
            rows(&feature_batches(&f, 4, Some((1, 0))).unwrap()),
            "seeded"
        );
        assert_ne!(
            rows(&e0),
            rows(&feature_batches(&f, 4, Some((1, 1))).unwrap()),
            "per epoch"
        );
        assert_eq!(
            rows(&feature_batches(&f, 4, None).unwrap()),
            (0..10).collect::<Vec<u32>>()
        );
    }

    #[test]
    fn scheduler_flags_map_to_schedules_over_the_run() {
        let cos = schedule(SchedulerSpec::Cosine { warmup: 1 }, 4, 10);
        assert!(cos.multiplier(0) < 0.2 && (cos.multiplier(10) - 1.0).abs() < 1e-9);
        assert!(cos.multiplier(39) < 0.01);
        let step = schedule(SchedulerSpec::Step { step: 2, gamma: 0.1 }, 6, 5);
        assert_eq!((step.multiplier(9), step.multiplier(10)), (1.0, 0.1f64.powi(1)));
        assert_eq!(schedule(SchedulerSpec::None, 3, 3).multiplier(7), 1.0);
    }

    #[test]
    fn a_vit_pools_as_timm_and_rejects_a_flattened_token_map() {
        let Some(path) = ::tests::assets::require("parity/vit_tiny_patch16_224.weights.safetensors") else {
            return;
        };
        let name = "vit_tiny_patch16_224";
        let store = backbones::ParamStore::from_safetensors(&path, candle_core::DType::F32, &Device::Cpu).unwrap();
        let backbone = backbones::zoo::build(name, &store).unwrap();
        let spec = model_spec(name).unwrap();
        let weights = WeightsRef {
            path: path.clone(),
            sha256: "fixture".into(),
        };
        let classes = ["a".to_string(), "b".to_string(), "c".to_string()];
        let mut cfg = TrainConfig {
            model: name.into(),
            pool: Pooling::Flatten,
            ..TrainConfig::default()
        };
        let e = head_config(&cfg, &spec, backbone.as_ref(), &classes, &weights, &Device::Cpu).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2, "{e}");
        assert!(
            e.to_string().contains("--pool flatten") && e.to_string().contains("--pool avg"),
            "{e}"
        );

        cfg.pool = Pooling::Avg;
        let head_cfg = head_config(&cfg, &spec, backbone.as_ref(), &classes, &weights, &Device::Cpu).unwrap();
        assert_eq!(head_cfg.input, InputKind::Pooled { features: 192 });
        // The head sees timm's pre-logits features: the class token after the final norm.
        let x = Tensor::rand(-1f32, 1f32, (2, 3, 224, 224), &Device::Cpu).unwrap();
        let tokens = backbone.forward_features(&x, false).unwrap();
        assert_eq!(tokens.dims(), [2, 197, 192]);
        let cls = tokens.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
        let pooled = backbone.forward_pooled(&x, false).unwrap();
        let diff: f32 = (pooled - cls)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
        let head = Head::seeded(head_cfg, &Device::Cpu, 1).unwrap();
        let model = Model {
            backbone: Some(backbone.as_ref()),
            head: &head,
        };
        assert_eq!(model.forward(&x, None).unwrap().dims(), [2, 3]);
    }

    #[test]
    fn unknown_models_and_missing_weights_are_usage_errors() {
        let e = model_spec("resnet19").err().unwrap();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("resnet18"), "{e}");
        let spec = model_spec("resnet18").unwrap();
        let e = resolve_weights(&spec, Some(Path::new("/no/such/weights.safetensors")))
            .err()
            .unwrap();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(
            e.to_string().contains("--weights") && e.to_string().contains("/no/such"),
            "{e}"
        );
    }
}
