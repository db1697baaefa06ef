//! `trainer train --task segment`: segmentation on a pretrained backbone's multi-scale features, through
//! `training::fit_task` with `training::Segment`; `evaluate` and `predict` for its runs and exported models.
//!
//! Inputs: training crops are `--imgsz`² (a joint random resized crop, scale 0.25–1, and a horizontal flip; masks
//! nearest-neighbour; `--augment none`: the validation resize only). Validation during training resizes every image
//! to `--imgsz`² and counts the confusion matrix at that resolution. `evaluate` and `predict` resize the shorter side
//! to `--imgsz`, pad to the decoder's stride, and bring the logits back to the original size
//! (`Placement::to_original_logits`) before the argmax: their masks and metrics are at the original resolution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use backbones::Backbone;
use candle_core::{DType, Device, Tensor};
use data::segment::SegDataset;
use data::transforms::{
    to_tensor_normalized, ImageTransform, Pipeline, RandomHorizontalFlip, RandomResizedCrop, Resize, ResizeShorterPad,
    ResizeSize,
};
use data::{Annotated, DecodePolicy, Interpolation, Loader, LoaderConfig, PreprocessConfig, SegOptions, Targets};
use heads::{Decoder, SegHead, SegHeadConfig};
use image::{GrayImage, RgbImage};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use training::export::{DenseHead, DenseMeta};
use training::metrics::segmentation::{image_mious_tensor, ConfusionMatrix, DEFAULT_IGNORE_INDEX};
use training::{SegLoss, Segment, Task};

use super::dense::{self, EpochData};
use super::train::{best_path, device_of, pretrained, write_run_info, RunInfo};
use crate::backend::{DenseEvaluation, DenseOutput, DensePredictOptions, DensePrediction, ModelSource, TrainObserver};
use crate::config::TrainConfig;
use crate::error::UsageError;
use crate::seg_viz::{self, SampleRow};
use crate::spec::{Augment, ClassWeights, HeadSpec, Mode, SegLossSpec, TaskKind};
use crate::summary::{DenseOutcome, EpochRow, TrainOutcome};

/// `--imgsz` of a segmentation run when none is given.
pub const DEFAULT_IMGSZ: usize = 256;

/// Validation images shown in `val_samples.png` (the first ones of the set).
pub const SAMPLE_IMAGES: usize = 4;

/// Worst validation images (by per-image mIoU) listed in the report.
pub const WORST_IMAGES: usize = 8;

/// The dataset options of `--classes` and `--value-map`.
fn seg_options(classes: Option<Vec<String>>, value_map: Option<&str>) -> anyhow::Result<SegOptions> {
    let value_map = value_map
        .map(|m| m.parse().map_err(|e| UsageError(format!("--value-map: {e}"))))
        .transpose()?;
    Ok(SegOptions { classes, value_map })
}

fn usage(flag: &str, e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(format!("{flag}: {}", data::text::one_line(&e.to_string()))).into()
}

/// Whether `path` is a root with `train/` (and `val/`) sets rather than one set.
fn is_split_root(path: &Path) -> bool {
    path.is_dir() && !path.join("images").is_dir() && path.join("train").is_dir()
}

/// Open `--data` and `--val` / `--val-split` (or a root's `train/` + `val/`); validation is optional.
pub fn open_sets(cfg: &TrainConfig) -> anyhow::Result<(SegDataset, Option<SegDataset>)> {
    let data = cfg
        .data
        .as_deref()
        .ok_or_else(|| UsageError("--data is required".into()))?;
    if !data.exists() {
        return Err(UsageError(format!("--data {}: no such file or folder", data.display())).into());
    }
    let opts = seg_options(cfg.classes.clone(), cfg.value_map.as_deref())?;
    if let Some(val) = &cfg.val {
        if !val.exists() {
            return Err(UsageError(format!("--val {}: no such file or folder", val.display())).into());
        }
        let train = data::segment::open(data, &opts).map_err(|e| usage("--data", e))?;
        let val_set = data::segment::open(val, &opts).map_err(|e| usage("--val", e))?;
        if val_set.classes != train.classes {
            return Err(UsageError(format!(
                "--val: its classes ({}) differ from --data's ({})",
                val_set.classes.join(","),
                train.classes.join(",")
            ))
            .into());
        }
        return Ok((train, Some(val_set)));
    }
    if is_split_root(data) {
        if cfg.val_split.is_some() {
            return Err(UsageError(format!(
                "--val-split: {} already has train/ and val/ sets",
                data.display()
            ))
            .into());
        }
        let (train, val) = data::segment::open_train_val(data, &opts).map_err(|e| usage("--data", e))?;
        return Ok((train, Some(val)));
    }
    let all = data::segment::open(data, &opts).map_err(|e| usage("--data", e))?;
    match cfg.val_split {
        Some(f) => {
            let (train, val) = all.split(f as f64, cfg.seed).map_err(|e| usage("--val-split", e))?;
            Ok((train, Some(val)))
        }
        None => Ok((all, None)),
    }
}

/// Decode every mask of `ds` once, before training: a value outside the classes, an RGB mask without a palette or
/// value map, or a mask whose size is not its image's is a usage error naming `flag` and the file. Returns the
/// pixels of each class (ignored pixels and undecodable masks, which the loader skips, not counted).
pub fn scan_masks(
    ds: &SegDataset,
    flag: &str,
    strict: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Vec<u64>> {
    let mut counts = vec![0u64; ds.classes.len()];
    let n = ds.len();
    progress(0, n);
    for (i, s) in ds.samples.iter().enumerate() {
        let mask = match ds.read_mask(i).map_err(|e| usage(flag, e))? {
            Ok(m) => m,
            Err(reason) if strict => {
                return Err(usage(flag, format!("mask {}: {reason}", s.mask.display())));
            }
            Err(_) => continue,
        };
        if let Ok((w, h)) = image::image_dimensions(&s.image) {
            // An EXIF rotation swaps the decoded image's sides: the loader checks those cases after decoding.
            if mask.dimensions() != (w, h) && mask.dimensions() != (h, w) {
                return Err(usage(
                    flag,
                    format!(
                        "mask {} is {}×{} but its image {} is {w}×{h} (width×height)",
                        s.mask.display(),
                        mask.width(),
                        mask.height(),
                        s.image.display()
                    ),
                ));
            }
        }
        add_pixel_counts(&mut counts, &mask);
        progress(i + 1, n);
    }
    Ok(counts)
}

/// Add the pixels of each class of `mask` to `counts` (values beyond the classes, the ignore index, not counted).
pub fn add_pixel_counts(counts: &mut [u64], mask: &GrayImage) {
    for &v in mask.as_raw() {
        if let Some(c) = counts.get_mut(v as usize) {
            *c += 1;
        }
    }
}

/// `--class-weights auto` of a segmentation run: inverse pixel frequency over the training masks, sklearn's
/// "balanced" (`pixels / (classes · pixels of c)`, 0 for a class without pixels).
pub fn pixel_class_weights(counts: &[u64]) -> Vec<f32> {
    let counts: Vec<usize> = counts.iter().map(|&c| c as usize).collect();
    training::class_weights_auto(&counts)
}

/// The loss of `--loss` with the ignore index 255 and the given class weights.
pub fn seg_loss(spec: SegLossSpec, class_weights: Option<Vec<f32>>) -> SegLoss {
    let (ce, dice) = match spec {
        SegLossSpec::Ce => (1.0, 0.0),
        SegLossSpec::Dice => (0.0, 1.0),
        SegLossSpec::CeDice => (1.0, 1.0),
    };
    SegLoss {
        ce,
        dice,
        ignore_index: Some(DEFAULT_IGNORE_INDEX),
        class_weights,
    }
}

fn boxed<T: ImageTransform + 'static>(t: T) -> Box<dyn ImageTransform> {
    Box::new(t)
}

/// Validation during training: every image resized to `imgsz`² (bilinear; masks nearest), normalised.
pub fn val_pipeline(imgsz: usize, pp: &PreprocessConfig) -> Pipeline {
    Pipeline {
        steps: vec![boxed(Resize {
            size: ResizeSize::Exact { h: imgsz, w: imgsz },
            interpolation: Interpolation::Bilinear,
        })],
        mean: pp.mean,
        std: pp.std,
        output_hw: (imgsz, imgsz),
    }
}

/// Training crops: a joint random resized crop to `imgsz`² (area 25–100 %, aspect 3/4–4/3) and a horizontal
/// flip; `--augment none` gives [`val_pipeline`].
pub fn train_pipeline(augment: Augment, imgsz: usize, pp: &PreprocessConfig) -> Pipeline {
    if augment == Augment::None {
        return val_pipeline(imgsz, pp);
    }
    Pipeline {
        steps: vec![
            boxed(RandomResizedCrop {
                h: imgsz,
                w: imgsz,
                scale: (0.25, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
                interpolation: Interpolation::Bilinear,
            }),
            boxed(RandomHorizontalFlip { p: 0.5 }),
        ],
        mean: pp.mean,
        std: pp.std,
        output_hw: (imgsz, imgsz),
    }
}

fn loader(
    ds: &SegDataset,
    pipeline: Pipeline,
    cfg: &TrainConfig,
    shuffle: bool,
    device: &Device,
) -> anyhow::Result<Loader<SegDataset>> {
    let config = LoaderConfig {
        batch_size: cfg.batch_size,
        shuffle,
        seed: cfg.seed,
        policy: if cfg.strict {
            DecodePolicy::Strict
        } else {
            DecodePolicy::Skip
        },
        cache: false,
        pre_resize_shorter: None,
    };
    Ok(Loader::new(ds.clone(), pipeline, config, device.clone())?)
}

/// The (images, masks) batches of `loader`'s `epoch`.
fn mask_batches(
    loader: &Loader<SegDataset>,
    epoch: u64,
) -> impl Iterator<Item = training::Result<(Tensor, Tensor)>> + '_ {
    loader.epoch(epoch).map(|b| {
        let b = b.map_err(|e| training::Error::Config(e.to_string()))?;
        match b.targets {
            Targets::Masks(m) => Ok((b.images, m)),
            _ => Err(training::Error::Config("a segmentation batch without masks".into())),
        }
    })
}

/// The un-normalised RGB image of one CHW input tensor.
fn denormalize(x: &Tensor, mean: [f32; 3], std: [f32; 3]) -> anyhow::Result<RgbImage> {
    let (_, h, w) = x.dims3()?;
    let v: Vec<f32> = x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    let n = h * w;
    Ok(RgbImage::from_fn(w as u32, h as u32, |px, py| {
        let i = py as usize * w + px as usize;
        image::Rgb(std::array::from_fn(|c| {
            ((v[c * n + i] * std[c] + mean[c]) * 255.0).round().clamp(0.0, 255.0) as u8
        }))
    }))
}

/// An H×W u32 class map as a gray image.
fn to_gray(m: &Tensor) -> anyhow::Result<GrayImage> {
    let (h, w) = m.dims2()?;
    let v: Vec<u32> = m
        .to_device(&Device::Cpu)?
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_vec1()?;
    let bytes = v.into_iter().map(|c| c.min(255) as u8).collect();
    GrayImage::from_raw(w as u32, h as u32, bytes).ok_or_else(|| anyhow::anyhow!("mask buffer size"))
}

/// An image and its score (per-image mIoU).
type Scored = (PathBuf, f64);

/// One pass of the kept model over the validation loader: the sample rows of `val_samples.png` (the first
/// [`SAMPLE_IMAGES`] images) and every image's mIoU, worst first.
fn validation_pictures(
    task: &Segment<'_>,
    loader: &Loader<SegDataset>,
    pp: &PreprocessConfig,
) -> anyhow::Result<(Vec<SampleRow>, Vec<Scored>)> {
    let ds = loader.dataset();
    let k = ds.classes.len();
    let (mut rows, mut scored) = (Vec::new(), Vec::new());
    for b in loader.epoch(0) {
        let b = b?;
        let Targets::Masks(masks) = &b.targets else {
            anyhow::bail!("a segmentation batch without masks");
        };
        let pred = task.predict(&b.images)?;
        let ious = image_mious_tensor(&pred, masks, k, Some(DEFAULT_IGNORE_INDEX))?;
        for (j, (&index, iou)) in b.indices.iter().zip(ious).enumerate() {
            let path = ds.samples[index].image.clone();
            if rows.len() < SAMPLE_IMAGES {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                rows.push(SampleRow {
                    image: denormalize(&b.images.get(j)?, pp.mean, pp.std)?,
                    truth: to_gray(&masks.get(j)?)?,
                    pred: to_gray(&pred.get(j)?)?,
                    caption: match iou {
                        Some(v) => format!("{name}  mIoU {v:.3}"),
                        None => format!("{name}  (all ignored)"),
                    },
                });
            }
            if let Some(v) = iou {
                scored.push((path, v));
            }
        }
    }
    scored.sort_by(|a, b| a.1.total_cmp(&b.1));
    scored.truncate(WORST_IMAGES);
    Ok((rows, scored))
}

/// Train a segmentation model per `cfg` into `run_dir`.
pub fn train(cfg: &TrainConfig, run_dir: &Path, observer: &mut dyn TrainObserver) -> anyhow::Result<TrainOutcome> {
    let device = device_of(cfg.device)?;
    let (train, val) = open_sets(cfg)?;
    let classes = train.classes.clone();
    let counts = scan_masks(&train, "--data", cfg.strict, &mut |d, t| {
        observer.progress("checking masks (train)", d, t)
    })?;
    if let Some(v) = &val {
        let flag = if cfg.val.is_some() { "--val" } else { "--data" };
        scan_masks(v, flag, cfg.strict, &mut |d, t| {
            observer.progress("checking masks (val)", d, t)
        })?;
    }
    let (pre, weights) = pretrained(&cfg.model, cfg.weights.as_deref(), &device)?;
    let spec = pre.spec.clone();
    let backbone = pre.backbone;
    write_run_info(
        cfg,
        run_dir,
        &RunInfo {
            task: TaskKind::Segment,
            model: spec.name.clone(),
            weights: weights.clone(),
            mode: cfg.mode.to_string(),
            classes: classes.clone(),
        },
    )?;
    let decoder = match cfg.head {
        HeadSpec::Unet => Decoder::Unet,
        _ => Decoder::Fpn,
    };
    let head_cfg = SegHeadConfig::for_encoder(decoder, classes.clone(), &backbone.feature_info())
        .map_err(|e| usage("--head", e))?;
    let stride = head_cfg.stride();
    let imgsz = cfg.imgsz.unwrap_or(DEFAULT_IMGSZ);
    if imgsz % stride != 0 {
        return Err(UsageError(format!(
            "--imgsz {imgsz}: must be a multiple of {stride} (the {} decoder's stride on {})",
            cfg.head, spec.name
        ))
        .into());
    }
    let head = SegHead::new(head_cfg.clone(), &device, cfg.seed)?;
    dense::apply_mode(cfg, backbone.as_ref())?;
    let class_weights = match cfg.class_weights {
        ClassWeights::None => None,
        ClassWeights::Auto => Some(pixel_class_weights(&counts)),
    };
    if let Some(w) = &class_weights {
        let shown: Vec<String> = classes.iter().zip(w).map(|(c, w)| format!("{c} {w:.3}")).collect();
        observer.info(&format!(
            "class weights (inverse pixel frequency): {}",
            shown.join(", ")
        ));
    }
    let loss = seg_loss(cfg.loss, class_weights);
    let task = Segment {
        backbone: backbone.as_ref(),
        head: &head,
        loss: &loss,
    };
    observer.info(&format!(
        "segment: {} training and {} validation images, {} classes ({}), {imgsz}px inputs",
        train.len(),
        val.as_ref().map_or(0, |v| v.len()),
        classes.len(),
        classes.join(", ")
    ));
    let pp = &spec.preprocess;
    let train_loader = loader(&train, train_pipeline(cfg.augment, imgsz, pp), cfg, true, &device)?;
    let val_loader = val
        .as_ref()
        .map(|v| loader(v, val_pipeline(imgsz, pp), cfg, false, &device))
        .transpose()?;
    let has_val = val_loader.is_some();
    let (result, rows) = dense::fit(
        &task,
        cfg,
        run_dir,
        observer,
        EpochData {
            steps: train_loader.num_batches(),
            has_val,
            train: |e: usize| mask_batches(&train_loader, e as u64),
            val: |_| val_loader.iter().flat_map(|l| mask_batches(l, 0)),
        },
    )?;

    // The fit loop restored the best epoch's weights: save them, and draw the validation pictures from them.
    let fine_tuned = cfg.mode == Mode::FineTune;
    let meta = DenseMeta {
        task: "segment".into(),
        model: spec.name.clone(),
        architecture: spec.architecture.clone(),
        classes: classes.clone(),
        preprocess: spec.preprocess.clone(),
        imgsz,
        head: serde_json::to_value(&head_cfg)?,
        post: None,
        mode: cfg.mode.to_string(),
        weights: Some(weights),
        backbone_included: fine_tuned,
    };
    training::export::save_dense(
        &best_path(run_dir),
        &meta,
        head.store(),
        fine_tuned.then_some(backbone.as_ref()),
    )?;
    let best = result
        .history
        .get(result.best_epoch)
        .map(|r| EpochRow::from_task_record(r, has_val));
    let metrics: BTreeMap<String, f64> = best
        .as_ref()
        .map(|r| {
            r.metrics
                .iter()
                .filter(|(k, _)| !k.starts_with("train/"))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        })
        .unwrap_or_default();
    let summary = training::EvalSummary {
        loss: best.as_ref().and_then(|r| r.val_loss).unwrap_or(0.0),
        accuracy: best.as_ref().and_then(|r| r.val_acc).unwrap_or(0.0),
        score: best.as_ref().and_then(|r| r.score).unwrap_or(0.0),
        metrics: metrics.clone(),
    };
    let (mut figures, mut worst) = (Vec::new(), Vec::new());
    if let Some(vl) = &val_loader {
        let (samples, w) = validation_pictures(&task, vl, pp)?;
        let png = crate::plots::encode_png(&seg_viz::render_samples(&samples, &classes)?)?;
        figures.push(("val_samples.png".to_string(), png));
        worst = w;
    }
    Ok(TrainOutcome {
        history: rows,
        eval: None,
        wrong: Vec::new(),
        dense: Some(DenseOutcome {
            task: TaskKind::Segment,
            score_name: task.score_name().to_string(),
            metrics,
            section: task.report_section(&summary),
            figures,
            worst,
        }),
    })
}

/// A saved segmentation model ready to predict.
pub struct SegModel {
    /// What it was saved with.
    pub meta: DenseMeta,
    /// The encoder (eval mode).
    pub backbone: Box<dyn Backbone>,
    /// The decoder.
    pub head: SegHead,
    loss: SegLoss,
}

impl SegModel {
    /// Load the segmentation model in `path` (a run's `best.safetensors` or an exported file).
    pub fn load(path: &Path, device: &Device) -> anyhow::Result<Self> {
        let m = training::export::load_dense(path, device)?;
        let DenseHead::Segment(head) = m.head else {
            return Err(UsageError(format!(
                "{}: a `{}` model, not a segmentation model",
                path.display(),
                m.meta.task
            ))
            .into());
        };
        Ok(Self {
            meta: m.meta,
            backbone: m.backbone,
            head,
            loss: SegLoss::default(),
        })
    }

    /// The class mask of `image` at its own size: the shorter side resized to the model's `imgsz`, padded to the
    /// decoder's stride, logits brought back to the original pixels (bilinear), then the argmax.
    pub fn predict_image(&self, image: RgbImage, device: &Device) -> anyhow::Result<GrayImage> {
        let rsp =
            ResizeShorterPad::new(self.meta.imgsz, self.head.config().stride()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let a = rsp
            .apply_annotated(Annotated::new(image), &mut ChaCha8Rng::seed_from_u64(0))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (h, w) = (a.image.height() as usize, a.image.width() as usize);
        let pp = &self.meta.preprocess;
        let x = Tensor::from_vec(to_tensor_normalized(&a.image, pp.mean, pp.std), (1, 3, h, w), device)?;
        let task = Segment {
            backbone: self.backbone.as_ref(),
            head: &self.head,
            loss: &self.loss,
        };
        let logits = task.logits(&x, None)?.get(0)?;
        let original = a.placement.to_original_logits(&logits)?;
        to_gray(&original.argmax(0)?)
    }
}

/// The value map the run was trained with (its `config.toml`), so `evaluate` reads masks the same way.
fn run_value_map(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join("config.toml")).ok()?;
    toml::from_str::<TrainConfig>(&text).ok()?.value_map
}

/// The labelled set `evaluate --data` names: one set, or the `val/` set of a root with `train/` and `val/`.
fn open_eval_set(path: &Path, opts: &SegOptions) -> anyhow::Result<SegDataset> {
    let dir = if is_split_root(path) {
        ["val", "valid"]
            .iter()
            .map(|v| path.join(v))
            .find(|p| p.is_dir())
            .unwrap_or_else(|| path.to_path_buf())
    } else {
        path.to_path_buf()
    };
    data::segment::open(&dir, opts).map_err(|e| usage("--data", e))
}

/// Evaluate the segmentation run in `run_dir` on the labelled data at `data`.
pub fn evaluate(device: &Device, run_dir: &Path, data: &Path) -> anyhow::Result<DenseEvaluation> {
    let model = SegModel::load(&best_path(run_dir), device)?;
    let classes = model.meta.classes.clone();
    let opts = seg_options(Some(classes.clone()), run_value_map(run_dir).as_deref())?;
    let ds = open_eval_set(data, &opts)?;
    let mut cm = ConfusionMatrix::new(classes.len(), Some(DEFAULT_IGNORE_INDEX));
    let mut images = 0;
    for (i, s) in ds.samples.iter().enumerate() {
        let truth = ds
            .read_mask(i)
            .map_err(|e| usage("--data", e))?
            .map_err(|r| usage("--data", format!("mask {}: {r}", s.mask.display())))?;
        let img = data::decode_image(&s.image).map_err(|e| usage("--data", e))?;
        if img.dimensions() != truth.dimensions() {
            return Err(usage(
                "--data",
                format!(
                    "mask {} is {}×{} but its image {} is {}×{} (width×height)",
                    s.mask.display(),
                    truth.width(),
                    truth.height(),
                    s.image.display(),
                    img.width(),
                    img.height()
                ),
            ));
        }
        let pred = model.predict_image(img, device)?;
        let p: Vec<u32> = pred.as_raw().iter().map(|&v| v as u32).collect();
        let t: Vec<u32> = truth.as_raw().iter().map(|&v| v as u32).collect();
        cm.update(&p, &t)?;
        images += 1;
    }
    Ok(DenseEvaluation {
        task: "segment".into(),
        images,
        metrics: evaluation_metrics(&cm, &classes),
    })
}

/// Every figure of one confusion matrix: mIoU, pixel accuracy, mean accuracy, mean Dice (= mean F1),
/// frequency-weighted IoU and per-class IoU / Dice (classes absent from truth and prediction left out).
pub fn evaluation_metrics(cm: &ConfusionMatrix, classes: &[String]) -> BTreeMap<String, f64> {
    let m = cm.metrics();
    let mut out = BTreeMap::from([
        ("miou".to_string(), m.miou),
        ("pixel_accuracy".to_string(), m.pixel_accuracy),
        ("mean_accuracy".to_string(), m.mean_accuracy),
        ("mean_dice".to_string(), m.mean_dice),
        ("mean_f1".to_string(), m.mean_dice),
        ("fw_iou".to_string(), m.fw_iou),
    ]);
    for (c, (iou, dice)) in classes.iter().zip(m.per_class_iou.iter().zip(&m.per_class_dice)) {
        if let Some(v) = iou {
            out.insert(format!("iou/{c}"), *v);
        }
        if let Some(v) = dice {
            out.insert(format!("dice/{c}"), *v);
        }
    }
    out
}

/// The model file of a run folder or an exported model.
fn model_file(model: &ModelSource) -> PathBuf {
    match model {
        ModelSource::Run(dir) => best_path(dir),
        ModelSource::File(f) => f.clone(),
    }
}

/// Predict one file: its mask (and overlay) written into `opts.out_dir`.
fn predict_file(
    model: &SegModel,
    device: &Device,
    path: &Path,
    opts: &DensePredictOptions,
) -> anyhow::Result<DenseOutput> {
    let img = data::decode_image(path)?;
    let mask = model.predict_image(img.clone(), device)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mask".into());
    let mask_path = opts.out_dir.join(format!("{stem}.png"));
    data::fsutil::write_atomic(&mask_path, &seg_viz::mask_png(&mask)?)?;
    let overlay = if opts.overlay {
        let p = opts.out_dir.join(format!("{stem}_overlay.png"));
        let png = crate::plots::encode_png(&seg_viz::overlay(&img, &mask))?;
        data::fsutil::write_atomic(&p, &png)?;
        Some(p)
    } else {
        None
    };
    Ok(DenseOutput::Mask {
        mask: mask_path,
        overlay,
        class_fractions: seg_viz::class_fractions(&mask, &model.meta.classes),
    })
}

/// Predict every file with the segmentation model of `model`: a palette PNG of class indices per file at its
/// original size, `<stem>.png` in `opts.out_dir` (and `<stem>_overlay.png` with `opts.overlay`).
pub fn predict(
    device: &Device,
    model: &ModelSource,
    files: &[PathBuf],
    opts: &DensePredictOptions,
) -> anyhow::Result<Vec<DensePrediction>> {
    let flag = match model {
        ModelSource::Run(_) => "--run",
        ModelSource::File(_) => "--model",
    };
    let file = model_file(model);
    let m = SegModel::load(&file, device).map_err(|e| usage(flag, format!("{e:#}")))?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| usage("--out", format!("{}: {e}", opts.out_dir.display())))?;
    Ok(files
        .iter()
        .map(|f| DensePrediction {
            path: f.clone(),
            result: predict_file(&m, device, f, opts).map_err(|e| data::text::one_line(&format!("{e:#}"))),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use data::Placement;
    use image::Luma;

    #[test]
    fn class_weights_auto_is_inverse_pixel_frequency() {
        let mut counts = vec![0u64; 3];
        let m = GrayImage::from_fn(4, 4, |x, y| {
            Luma([if y == 0 {
                255
            } else if x == 0 {
                1
            } else {
                0
            }])
        });
        add_pixel_counts(&mut counts, &m);
        // 4 ignored pixels, 3 of class 1, 9 of class 0, none of class 2.
        assert_eq!(counts, [9, 3, 0]);
        let w = pixel_class_weights(&counts);
        assert!(
            (w[0] - 12.0 / 27.0).abs() < 1e-6 && (w[1] - 12.0 / 9.0).abs() < 1e-6,
            "{w:?}"
        );
        assert_eq!(w[2], 0.0);
        assert!(w[1] > w[0], "the rarer class weighs more");
    }

    #[test]
    fn loss_flags_map_to_loss_terms_with_the_ignore_index() {
        let l = seg_loss(SegLossSpec::CeDice, Some(vec![1.0, 2.0]));
        assert_eq!((l.ce, l.dice, l.ignore_index), (1.0, 1.0, Some(255)));
        assert_eq!(l.class_weights, Some(vec![1.0, 2.0]));
        let d = seg_loss(SegLossSpec::Dice, None);
        assert_eq!((d.ce, d.dice), (0.0, 1.0));
    }

    #[test]
    fn eval_input_maps_back_to_the_original_size() {
        // A 90×50 image (w×h): shorter side 64, padded to 32 → the input is 64×128 (h×w); logits whose argmax is
        // "column in the left half of the resized image" come back as the left half of the original.
        let rsp = ResizeShorterPad::new(64, 32).unwrap();
        let img = RgbImage::new(90, 50);
        let a = rsp
            .apply_annotated(Annotated::new(img), &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(a.image.dimensions(), (128, 64));
        let p: Placement = a.placement;
        let (h, w) = (64usize, 128usize);
        let resized_w = 115; // round(90 · 64/50)
        let mut v = vec![0f32; 2 * h * w];
        for y in 0..h {
            for x in 0..w {
                let left = x < resized_w / 2;
                v[y * w + x] = if left { 1.0 } else { -1.0 };
                v[h * w + y * w + x] = -v[y * w + x];
            }
        }
        let logits = Tensor::from_vec(v, (2, h, w), &Device::Cpu).unwrap();
        let back = p.to_original_logits(&logits).unwrap();
        assert_eq!(back.dims(), [2, 50, 90]);
        let mask = to_gray(&back.argmax(0).unwrap()).unwrap();
        assert_eq!(mask.dimensions(), (90, 50));
        for x in 0..90u32 {
            let expected = u8::from(x >= 45);
            if x.abs_diff(45) > 1 {
                assert_eq!(mask.get_pixel(x, 25).0[0], expected, "column {x}");
            }
        }
    }

    #[test]
    fn evaluation_metrics_come_from_one_confusion_matrix() {
        let mut cm = ConfusionMatrix::new(3, Some(255));
        cm.update(&[0, 0, 1, 1, 0], &[0, 1, 1, 1, 255]).unwrap();
        let classes = vec!["a".to_string(), "b".into(), "c".into()];
        let m = evaluation_metrics(&cm, &classes);
        // a: tp 1, fp 1, fn 0 → IoU 1/2; b: tp 2, fn 1 → IoU 2/3; c absent from both: left out of the mean.
        assert!((m["iou/a"] - 0.5).abs() < 1e-12 && (m["iou/b"] - 2.0 / 3.0).abs() < 1e-12);
        assert!(!m.contains_key("iou/c"));
        assert!((m["miou"] - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((m["pixel_accuracy"] - 0.75).abs() < 1e-12);
        assert_eq!(m["mean_f1"], m["mean_dice"]);
    }
}
