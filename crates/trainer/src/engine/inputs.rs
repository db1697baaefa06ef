//! Datasets, preprocessing pipelines and the on-disk feature cache as the engine uses them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use backbones::Backbone;
use candle_core::{DType, Device, Tensor};
use data::transforms::{Pipeline, Preset};
use data::{CsvOptions, Dataset, DecodePolicy, Loader, LoaderConfig, PreprocessConfig, TrainVal};
use heads::InputKind;

use crate::config::TrainConfig;
use crate::error::UsageError;
use crate::spec::Augment;

/// Training and (optional) validation sets with the training class list.
pub struct Sets {
    /// Training samples.
    pub train: Dataset,
    /// Validation samples, relabelled with the training classes.
    pub val: Option<Dataset>,
}

/// Open `--data` and `--val` / `--val-split` (no validation when neither is given).
pub fn open_sets(cfg: &TrainConfig) -> anyhow::Result<Sets> {
    let data = cfg
        .data
        .as_deref()
        .ok_or_else(|| UsageError("--data is required".into()))?;
    require_path(data, "--data")?;
    let csv = CsvOptions::default();
    let sets = if let Some(val) = &cfg.val {
        require_path(val, "--val")?;
        let tv = TrainVal::open(data, val, &csv, cfg.drop_unknown_val_classes).map_err(|e| {
            let msg = e.to_string();
            if matches!(e, data::DataError::UnknownClass { .. }) {
                // The library names its option; the CLI names the flag instead.
                let msg = msg.replace(
                    "set drop_unknown_val_classes to drop such samples",
                    "pass --drop-unknown-val-classes to ignore such images",
                );
                UsageError(format!("--val: {msg}"))
            } else {
                UsageError(msg)
            }
        })?;
        if tv.dropped_val > 0 {
            eprintln!(
                "warning: dropped {} validation images of classes absent from training",
                tv.dropped_val
            );
        }
        Sets {
            train: tv.train,
            val: Some(tv.val),
        }
    } else {
        let all = data::open(data).map_err(|e| UsageError(format!("--data: {e}")))?;
        match cfg.val_split {
            Some(f) => {
                let tv =
                    TrainVal::split(all, f as f64, cfg.seed).map_err(|e| UsageError(format!("--val-split: {e}")))?;
                Sets {
                    train: tv.train,
                    val: Some(tv.val),
                }
            }
            None => Sets { train: all, val: None },
        }
    };
    sets.train
        .check_trainable()
        .map_err(|e| UsageError(format!("--data: {e}")))?;
    if sets.val.as_ref().is_some_and(|v| v.is_empty()) {
        return Err(UsageError("--val: no validation images".into()).into());
    }
    Ok(sets)
}

fn require_path(path: &Path, flag: &str) -> anyhow::Result<()> {
    if !path.exists() {
        return Err(UsageError(format!("{flag} {}: no such file or folder", path.display())).into());
    }
    Ok(())
}

/// The training-time pipeline of an augmentation preset, normalised with the backbone's statistics.
pub fn train_pipeline(augment: Augment, pp: &PreprocessConfig) -> Pipeline {
    let mut p = match augment {
        Augment::None => return Pipeline::eval(pp),
        Augment::Keras => Preset::Keras.train(pp),
        Augment::Torchvision => Preset::Torchvision.train(pp),
        Augment::Timm => Pipeline::train_from_config(pp),
    };
    // The pretrained weights expect their own normalisation whatever the geometric augmentation.
    p.mean = pp.mean;
    p.std = pp.std;
    p
}

/// A loader over `dataset`.
pub fn loader(
    dataset: &Dataset,
    pipeline: Pipeline,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    strict: bool,
    device: &Device,
) -> anyhow::Result<Loader> {
    let cfg = LoaderConfig {
        batch_size,
        shuffle,
        seed,
        policy: if strict {
            DecodePolicy::Strict
        } else {
            DecodePolicy::Skip
        },
        cache: false,
        pre_resize_shorter: None,
    };
    Ok(Loader::new(dataset.clone(), pipeline, cfg, device.clone())?)
}

/// The feature cache folder: `$GRAFT_CACHE_DIR`, else `$XDG_CACHE_HOME/graft/features`, else
/// `~/.cache/graft/features`.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("GRAFT_CACHE_DIR") {
        return d;
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return d.join("graft").join("features");
    }
    var("HOME")
        .map(|h| h.join(".cache"))
        .unwrap_or_else(std::env::temp_dir)
        .join("graft")
        .join("features")
}

/// Features of a dataset: rows, their labels and the dataset index of each row.
pub struct Features {
    /// N×F pooled features or N×C×h×w feature maps (float32).
    pub x: Tensor,
    /// N labels (u32).
    pub labels: Tensor,
    /// Dataset index of each row.
    pub index: Vec<usize>,
    /// Whether they came from the cache.
    pub hit: bool,
}

/// What the frozen backbone's features of `dataset` depend on, besides files and weights.
pub struct FeatureSpec<'a> {
    /// The backbone.
    pub backbone: &'a dyn Backbone,
    /// Registry name of the backbone.
    pub model: &'a str,
    /// Sha256 of its weights.
    pub weights_sha256: &'a str,
    /// What the head consumes.
    pub input: InputKind,
    /// A name for the pipeline (`eval`, `torchvision`, …).
    pub pipeline_name: String,
    /// The pipeline.
    pub pipeline: Pipeline,
    /// The backbone's preprocessing config.
    pub preprocess: &'a PreprocessConfig,
    /// Passes over the dataset (augmented views).
    pub views: usize,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Fail on undecodable files.
    pub strict: bool,
    /// Seed of the augmentation.
    pub seed: u64,
}

/// A long task's progress: `(task, images done, images in all)`, from `done == 0` to `done == total`.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// The task name of feature extraction over the `label` set (`train`, `val`), per view when there are several.
pub fn extraction_task(label: &str, view: usize, views: usize) -> String {
    if views > 1 {
        format!("extracting features ({label}, view {}/{views})", view + 1)
    } else {
        format!("extracting features ({label})")
    }
}

/// The frozen backbone's features of `dataset`, from the cache in `dir` or computed (and cached); a computation
/// reports its progress per batch to `progress` under [`extraction_task`]`(label, …)`.
pub fn features(
    dir: &Path,
    dataset: &Dataset,
    spec: FeatureSpec<'_>,
    device: &Device,
    label: &str,
    progress: Progress<'_>,
) -> anyhow::Result<Features> {
    let files: Vec<PathBuf> = dataset.samples.iter().map(|s| s.path.clone()).collect();
    let labels: Vec<usize> = dataset.samples.iter().map(|s| s.label).collect();
    let pooled = matches!(spec.input, InputKind::Pooled { .. });
    let desc = serde_json::json!({
        "pipeline": spec.pipeline_name,
        "preprocess": spec.preprocess,
        "output": if pooled { "pooled" } else { "feature_map" },
        "labels": labels,
        "seed": if spec.pipeline_name == "eval" { 0 } else { spec.seed },
    })
    .to_string();
    let key = training::CacheKey::new(&files, spec.model, spec.weights_sha256, &desc, spec.views)?;
    let backbone = spec.backbone;
    let views = spec.views;
    let ld = loader(
        dataset,
        spec.pipeline,
        spec.batch_size,
        false,
        spec.seed,
        spec.strict,
        device,
    )?;
    let cached = training::load_or_compute(dir, &key, device, || {
        let (mut feats, mut rows) = (Vec::new(), Vec::new());
        let total = dataset.len();
        for view in 0..views {
            let task = extraction_task(label, view, views);
            let mut done = 0;
            progress(&task, 0, total);
            for batch in ld.epoch(view as u64) {
                let b = batch.map_err(|e| training::Error::Config(e.to_string()))?;
                // Skipped (undecodable) images count as done: the loader has moved past them.
                done = b.indices.iter().map(|&i| i + 1).max().unwrap_or(done).max(done);
                let f = if pooled {
                    backbone.forward_pooled(&b.images, false)?
                } else {
                    backbone.forward_features(&b.images, false)?
                };
                feats.push(f.detach().to_dtype(DType::F32)?);
                for &i in &b.indices {
                    rows.push(dataset.samples[i].label as u32);
                    rows.push(i as u32);
                }
                if done < total {
                    progress(&task, done, total);
                }
            }
            progress(&task, total, total);
        }
        if feats.is_empty() {
            return Err(training::Error::Config("no readable images".into()));
        }
        let n = rows.len() / 2;
        Ok((Tensor::cat(&feats, 0)?, Tensor::from_vec(rows, (n, 2), device)?))
    })
    .with_context(|| format!("feature extraction of {}", dataset.source.display()))?;
    let rows: Vec<Vec<u32>> = cached.labels.to_device(&Device::Cpu)?.to_vec2()?;
    let labels = Tensor::from_vec(rows.iter().map(|r| r[0]).collect::<Vec<u32>>(), rows.len(), device)?;
    Ok(Features {
        x: cached.features.to_device(device)?,
        labels,
        index: rows.iter().map(|r| r[1] as usize).collect(),
        hit: cached.status == training::CacheStatus::Hit,
    })
}
