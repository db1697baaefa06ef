//! `trainer train`: the head on cached features of the frozen backbone (feature extraction), or fine-tuning
//! (fastai's two phases by default: the head on frozen features, then unfrozen stages at lower rates), with
//! per-epoch atomic checkpoints and exact resume.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use backbones::{Backbone, ModelSpec};
use candle_core::{Device, Tensor};
use heads::{Head, HeadConfig, InputKind, Task};
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use training::{EpochRecord, FitConfig, FitResult, LossConfig, Model, Optimizer, ParamGroup, Schedule};

use super::evaluate::{summarize, Scored};
use super::inputs::{self, FeatureSpec, Features, Sets};
use super::model::{save_model, ModelMeta, WeightsRef};
use crate::backend::{BatchStats, TrainObserver};
use crate::config::TrainConfig;
use crate::error::UsageError;
use crate::spec::{Augment, HeadSpec, Mode, OptimizerKind, Pooling, SchedulerSpec, Unfreeze};
use crate::summary::{EpochRow, TrainOutcome};

/// The run folder's record of what was trained on (checked by `--resume`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
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

/// Resolve the pretrained weights (explicit file, Hub cache or download) and hash them.
pub fn resolve_weights(spec: &ModelSpec, explicit: Option<&Path>) -> anyhow::Result<WeightsRef> {
    let opts = backbones::hub::DownloadOptions::from_env();
    let path = backbones::weights::resolve(spec, explicit, &opts).map_err(|e| -> anyhow::Error {
        if explicit.is_some() {
            UsageError(format!("--weights: {e}")).into()
        } else {
            e.into()
        }
    })?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let sha256 = backbones::weights::file_sha256(&path)?;
    Ok(WeightsRef { path, sha256 })
}

/// The device of `cfg`.
pub fn device_of(spec: crate::spec::DeviceSpec) -> anyhow::Result<Device> {
    spec.open()
        .map_err(|e| UsageError(format!("--device {spec}: {}", data::text::one_line(&e.to_string()))).into())
}

/// The optimizer `cfg` names over `groups`.
pub fn make_optimizer(cfg: &TrainConfig, groups: Vec<ParamGroup>) -> training::Result<Box<dyn Optimizer>> {
    Ok(match cfg.optimizer {
        OptimizerKind::Sgd => Box::new(training::Sgd::new(
            groups,
            training::SgdConfig {
                momentum: cfg.momentum,
                nesterov: false,
                weight_decay: cfg.weight_decay,
            },
        )?),
        OptimizerKind::Adam => Box::new(training::Adam::new(
            groups,
            training::AdamConfig {
                weight_decay: cfg.weight_decay,
                ..training::AdamConfig::adam()
            },
        )?),
        OptimizerKind::AdamW => Box::new(training::Adam::new(
            groups,
            training::AdamConfig {
                weight_decay: cfg.weight_decay,
                ..training::AdamConfig::adamw()
            },
        )?),
    })
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
            let (_, c, fh, fw) = backbone.forward_features(&probe, false)?.dims4()?;
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
            HeadSpec::Linear => Vec::new(),
            HeadSpec::Mlp(w) => w.clone(),
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

fn row(r: &EpochRecord, offset: usize, has_val: bool) -> EpochRow {
    EpochRow {
        epoch: r.epoch + 1 + offset,
        train_loss: r.train_loss,
        train_acc: r.train_acc,
        val_loss: has_val.then_some(r.val_loss),
        val_acc: has_val.then_some(r.val_acc),
        lr: r.lr,
        seconds: r.seconds,
    }
}

/// Epochs already recorded by the checkpoint in `dir` (for replaying them to the observer on resume).
fn checkpointed_history(dir: &Path) -> Vec<EpochRecord> {
    std::fs::read(training::checkpoint::meta_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<training::CheckpointMeta>(&b).ok())
        .map(|m| m.history)
        .unwrap_or_default()
}

/// Everything a phase of training shares.
struct Job<'a> {
    cfg: &'a TrainConfig,
    has_val: bool,
    total_epochs: usize,
    observer: RefCell<&'a mut dyn TrainObserver>,
    rows: RefCell<Vec<EpochRow>>,
}

impl Job<'_> {
    fn info(&self, message: &str) {
        self.observer.borrow_mut().info(message);
    }

    /// Run `fit` for a phase whose epochs are numbered from `offset + 1`, checkpointing in `dir`.
    #[allow(clippy::too_many_arguments)]
    fn fit_phase<TB, TI, VB, VI>(
        &self,
        model: Model<'_>,
        optimizer: &mut dyn Optimizer,
        schedule: &Schedule,
        epochs: usize,
        offset: usize,
        seed: u64,
        dir: PathBuf,
        loss: &LossConfig,
        batches_per_epoch: usize,
        mut train: TB,
        val: VB,
    ) -> anyhow::Result<FitResult>
    where
        TB: FnMut(usize) -> TI,
        TI: IntoIterator<Item = training::Result<(Tensor, Tensor)>>,
        VB: FnMut(usize) -> VI,
        VI: IntoIterator<Item = training::Result<(Tensor, Tensor)>>,
    {
        let resume = self.cfg.resume.is_some();
        if resume {
            for r in checkpointed_history(&dir) {
                let row = row(&r, offset, self.has_val);
                self.rows.borrow_mut().push(row.clone());
                self.observer.borrow_mut().epoch_ended(&row)?;
            }
        }
        let fit_cfg = FitConfig {
            epochs,
            patience: self.cfg.patience,
            seed,
            checkpoint_dir: Some(dir),
            resume,
            loss: loss.clone(),
            restore_best: true,
        };
        let total = self.total_epochs;
        let result = training::fit_observed(
            model,
            optimizer,
            schedule,
            &fit_cfg,
            |epoch| {
                self.observer
                    .borrow_mut()
                    .epoch_started(epoch + 1 + offset, total, batches_per_epoch);
                train(epoch)
            },
            val,
            |r| {
                let row = row(r, offset, self.has_val);
                self.rows.borrow_mut().push(row.clone());
                self.observer
                    .borrow_mut()
                    .epoch_ended(&row)
                    .map_err(|e| training::Error::Config(format!("{e:#}")))
            },
            &mut |p| {
                self.observer.borrow_mut().batch(&BatchStats {
                    epoch: p.epoch + 1 + offset,
                    batch: p.batch + 1,
                    batches: batches_per_epoch,
                    loss: p.mean_loss,
                    accuracy: p.accuracy,
                    samples: p.samples,
                })
            },
        )?;
        Ok(result)
    }
}

/// Train per `cfg` into `run_dir`.
pub fn train(cfg: &TrainConfig, run_dir: &Path, observer: &mut dyn TrainObserver) -> anyhow::Result<TrainOutcome> {
    let spec = model_spec(&cfg.model)?;
    let device = device_of(cfg.device)?;
    let Sets { train, val } = inputs::open_sets(cfg)?;
    let weights = resolve_weights(&spec, cfg.weights.as_deref())?;
    let info = RunInfo {
        model: spec.name.clone(),
        weights: weights.clone(),
        mode: cfg.mode.to_string(),
        classes: train.classes.clone(),
    };
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
        if old.weights.sha256 != info.weights.sha256 || old.classes != info.classes || old.mode != info.mode {
            return Err(UsageError(format!(
                "--resume {}: the weights, classes or mode differ from the run's",
                dir.display()
            ))
            .into());
        }
    }
    data::fsutil::write_atomic(&info_path, serde_json::to_string_pretty(&info)?.as_bytes())?;

    let backbone = super::model::load_pretrained(&spec, &weights.path, &device)?;
    let head_cfg = head_config(cfg, &spec, backbone.as_ref(), &train.classes, &weights, &device)?;
    let head = Head::seeded(head_cfg.clone(), &device, cfg.seed)?;
    let loss = loss_config(cfg, &train);
    let has_val = val.is_some();
    // Fine-tuning's `epochs` include the head-only ones (phase 1); the rest train unfrozen (phase 2).
    let freeze_epochs = match cfg.mode {
        Mode::FeatureExtract => cfg.epochs,
        Mode::FineTune => cfg.freeze_epochs.min(cfg.epochs),
    };
    let unfrozen_epochs = cfg.epochs - freeze_epochs;
    let job = Job {
        cfg,
        has_val,
        total_epochs: cfg.epochs,
        observer: RefCell::new(observer),
        rows: RefCell::new(Vec::new()),
    };
    let cache = inputs::cache_dir();
    let head_model = Model {
        backbone: None,
        head: &head,
    };

    // Phase 1 (or all of feature extraction): the head on cached features of the frozen backbone.
    let mut val_features = None;
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
        let mut progress =
            |task: &str, done: usize, total: usize| job.observer.borrow_mut().progress(task, done, total);
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
        job.info(&format!(
            "feature cache: {} ({} train rows, {} val rows, {:.1} s, {})",
            if hit { "hit" } else { "miss" },
            tf.x.dim(0)?,
            vf.as_ref().map(|v| v.x.dim(0)).transpose()?.unwrap_or(0),
            t0.elapsed().as_secs_f64(),
            cache.display()
        ));
        let steps = tf.x.dim(0)?.div_ceil(cfg.batch_size);
        let mut opt = make_optimizer(cfg, vec![ParamGroup::new("head", head.vars(), cfg.lr)])?;
        let (sched, dir) = match cfg.mode {
            Mode::FeatureExtract => (schedule(cfg.scheduler, cfg.epochs, steps), run_dir.to_path_buf()),
            // fastai's phase 1: one cycle on the head (pct_start 0.99).
            Mode::FineTune => (
                Schedule::OneCycle {
                    total_steps: (freeze_epochs * steps).max(1),
                    pct_start: 0.99,
                    div: 25.0,
                    final_div: 1e5,
                },
                run_dir.join("phase1"),
            ),
        };
        let (seed, bs) = (cfg.seed, cfg.batch_size);
        job.fit_phase(
            head_model,
            opt.as_mut(),
            &sched,
            freeze_epochs,
            0,
            seed,
            dir,
            &loss,
            steps,
            |epoch| {
                feature_batches(&tf, bs, Some((seed, epoch)))
                    .map_or_else(|e| vec![Err(e)], |v| v.into_iter().map(Ok).collect())
            },
            |_| match &vf {
                Some(vf) => {
                    feature_batches(vf, bs, None).map_or_else(|e| vec![Err(e)], |v| v.into_iter().map(Ok).collect())
                }
                None => Vec::new(),
            },
        )?;
        val_features = vf;
    }

    // Phase 2 of fine-tuning: unfreeze and train on images.
    let fine_tuned = cfg.mode == Mode::FineTune && unfrozen_epochs > 0;
    let model = Model {
        backbone: Some(backbone.as_ref()),
        head: &head,
    };
    let mut scored = None;
    if fine_tuned {
        let unfreeze = match cfg.unfreeze {
            None | Some(Unfreeze::All) => training::Unfreeze::All,
            Some(Unfreeze::Last(n)) => training::Unfreeze::Last(n),
        };
        training::set_trainable(backbone.as_ref(), unfreeze, cfg.train_bn)
            .map_err(|e| UsageError(format!("--unfreeze: {e}")))?;
        let two_phase = freeze_epochs > 0;
        let (head_lr, mult) = if two_phase {
            (cfg.lr / 2.0, 100.0)
        } else {
            (cfg.lr, 1.0)
        };
        let mut groups = training::discriminative_groups(model, head_lr, mult);
        // Stage names may clash with the head's group (EfficientNet has a `head` stage).
        let last = groups.len() - 1;
        for g in &mut groups[..last] {
            g.name = format!("backbone.{}", g.name);
        }
        let mut opt = make_optimizer(cfg, groups)?;
        let train_ld = inputs::loader(
            &train,
            inputs::train_pipeline(cfg.augment, &spec.preprocess),
            cfg.batch_size,
            true,
            cfg.seed,
            cfg.strict,
            &device,
        )?;
        let val_ld = match &val {
            Some(v) => Some(inputs::loader(
                v,
                data::transforms::Pipeline::eval(&spec.preprocess),
                cfg.batch_size,
                false,
                cfg.seed,
                cfg.strict,
                &device,
            )?),
            None => None,
        };
        let steps = train_ld.num_batches();
        let sched = match (two_phase, cfg.scheduler) {
            // fastai's phase 2: one cycle (pct_start 0.3, div 5).
            (true, _) => Schedule::OneCycle {
                total_steps: (unfrozen_epochs * steps).max(1),
                pct_start: 0.3,
                div: 5.0,
                final_div: 1e5,
            },
            (false, s) => schedule(s, unfrozen_epochs, steps),
        };
        let offset = freeze_epochs;
        let to_pair = |b: data::Result<data::Batch>| {
            b.map(|b| (b.images, b.labels))
                .map_err(|e| training::Error::Config(e.to_string()))
        };
        job.fit_phase(
            model,
            opt.as_mut(),
            &sched,
            unfrozen_epochs,
            offset,
            cfg.seed.wrapping_add(1),
            run_dir.to_path_buf(),
            &loss,
            steps,
            |epoch| train_ld.epoch((offset + epoch) as u64).map(to_pair),
            |_| val_ld.iter().flat_map(|l| l.epoch(0)).map(to_pair).collect::<Vec<_>>(),
        )?;
        training::set_trainable(backbone.as_ref(), training::Unfreeze::None, false)?;
        if let (Some(v), Some(ld)) = (&val, &val_ld) {
            scored = Some(Scored::from_loader(model, ld, v)?);
        }
    } else if let (Some(v), Some(vf)) = (&val, &val_features) {
        scored = Some(Scored::from_features(&head, vf, v, cfg.batch_size)?);
    }

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
    save_model(
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
    let history = job.rows.into_inner();
    Ok(TrainOutcome { history, eval, wrong })
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
