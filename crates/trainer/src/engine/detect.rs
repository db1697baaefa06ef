//! `trainer train --task detect`: detection on a pretrained backbone's multi-scale features, through
//! `training::fit_task` with `training::Detect`; `evaluate` and `predict` for its runs and exported models.
//!
//! Data: a YOLO root (a folder with `data.yaml`, or the yaml file itself; splits `train` and `val`) or a COCO JSON
//! file (images beside it), told apart by the path. Training letterboxes to `--imgsz` (default
//! [`DEFAULT_IMGSZ`], small enough for CPUs) after box-aware augmentation (flip, random scale with crop or pad,
//! colour jitter; `--augment none`: letterbox only). Validation scores every box above [`EVAL_CONF`] (as COCO
//! does); the run's `--conf/--iou/--max-det` are saved for `predict`. Evaluation and predictions map boxes back to
//! the original pixels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use backbones::Backbone;
use candle_core::{Device, Tensor};
use data::detect::DetDataset;
use data::transforms::{ColorJitter, Fill, ImageTransform, Letterbox, Pipeline, RandomHorizontalFlip, RandomZoom};
use data::{Annotated, BoxTarget, DecodePolicy, Loader, LoaderConfig, Placement, PreprocessConfig, Targets};
use heads::detect::boxes::iou;
use heads::{DetHead, DetHeadConfig, PostProcess};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use training::export::{DenseHead, DenseMeta};
use training::metrics::coco::{self, BoxFormat, CocoDet, CocoGt, CocoStats, DetBox, GtBox};
use training::{ImageBoxes, Task};

use super::dense::{apply_mode, fit, EpochData};
use super::train::{best_path, model_spec, pretrained, read_run_info, write_run_info, RunInfo};
use super::EVAL_BATCH;
use crate::backend::{
    BoxPrediction, DenseEvaluation, DenseOutput, DensePredictOptions, DensePrediction, ModelSource, TrainObserver,
};
use crate::config::TrainConfig;
use crate::det_viz;
use crate::error::UsageError;
use crate::plots::encode_png;
use crate::spec::{Augment, Mode, TaskKind};
use crate::summary::{DenseOutcome, TrainOutcome};

/// Input size (square) when `--imgsz` is not given: small enough to train on a CPU in minutes.
pub const DEFAULT_IMGSZ: usize = 320;

/// Confidence threshold of validation and `evaluate`: every box counts, as COCO's evaluation expects.
pub const EVAL_CONF: f32 = 0.001;

/// Detections per image of validation and `evaluate` (COCO's maxDets 100).
pub const EVAL_MAX_DET: usize = 100;

/// Validation images drawn in `val_samples.png` (the first ones, in dataset order).
pub const VAL_SAMPLES: usize = 8;

/// Width of the FPN and the towers: half of torchvision's 256, which suits the narrow maps of CPU-sized
/// backbones (Lite0's 40/112/320 channels) at an eighth of the towers' cost.
pub const HEAD_CHANNELS: usize = 128;

/// Convolutions per tower (torchvision: 4).
pub const HEAD_TOWER_CONVS: usize = 2;

/// Label problems listed one line each before the rest are summarised in one line.
const MAX_NOTES: usize = 20;

/// Worst validation images listed in the report.
const WORST: usize = 8;

/// The layout of a detection dataset, decided from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A YOLO root: its folder or its `data.yaml`.
    Yolo(PathBuf),
    /// A COCO JSON file.
    Coco(PathBuf),
}

/// The layout of `path` (named `flag` in errors): a `.json` file is COCO, a folder with `_annotations.coco.json`
/// (Roboflow's export) is COCO, a `.yaml`/`.yml` file or a folder with `data.yaml` (or `dataset.yaml`, `data.yml`) is
/// YOLO; anything else is a usage error.
pub fn layout_of(path: &Path, flag: &str) -> Result<Layout, UsageError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if path.is_file() {
        return match ext.as_str() {
            "json" => Ok(Layout::Coco(path.to_path_buf())),
            "yaml" | "yml" => Ok(Layout::Yolo(path.to_path_buf())),
            _ => Err(UsageError(format!(
                "{flag} {}: not a detection dataset (expected a COCO .json file, a YOLO data.yaml or a folder \
                 holding one)",
                path.display()
            ))),
        };
    }
    if !path.is_dir() {
        return Err(UsageError(format!("{flag} {}: no such file or folder", path.display())));
    }
    if ["data.yaml", "dataset.yaml", "data.yml"]
        .iter()
        .any(|n| path.join(n).is_file())
    {
        return Ok(Layout::Yolo(path.to_path_buf()));
    }
    let roboflow = path.join("_annotations.coco.json");
    if roboflow.is_file() {
        return Ok(Layout::Coco(roboflow));
    }
    Err(UsageError(format!(
        "{flag} {}: a folder without data.yaml (YOLO: data.yaml, images/<split>, labels/<split>) or \
         _annotations.coco.json (COCO); pass the COCO .json file itself",
        path.display()
    )))
}

/// Open the `split` of `layout` (YOLO; a COCO file is one split), its errors as usage errors naming `flag`.
fn open_layout(layout: &Layout, split: &str, flag: &str) -> anyhow::Result<DetDataset> {
    let r = match layout {
        Layout::Yolo(root) => data::detect::open_yolo(root, split),
        Layout::Coco(json) => data::detect::open_coco(json, None),
    };
    r.map_err(|e| UsageError(format!("{flag}: {}", data::text::one_line(&e.to_string()))).into())
}

/// Whether YOLO `root` has a `val` split (its image folder exists).
fn yolo_has_split(root: &Path, split: &str) -> bool {
    match data::detect::open_yolo(root, split) {
        Err(data::DataError::Empty { message, .. }) => !message.contains("no such image folder"),
        _ => true,
    }
}

/// Training and (optional) validation sets of a detection run.
#[derive(Debug, Clone)]
pub struct DetSets {
    /// Training set.
    pub train: DetDataset,
    /// Validation set: `--val`, the YOLO root's `val` split, or `--val-split` of the training set.
    pub val: Option<DetDataset>,
}

/// Open `--data` and `--val` (or the YOLO `val` split, or `--val-split`), apply `--classes`, check that the sets
/// share classes.
pub fn open_sets(cfg: &TrainConfig) -> anyhow::Result<DetSets> {
    let data = cfg
        .data
        .as_deref()
        .ok_or_else(|| UsageError("--data is required".into()))?;
    let layout = layout_of(data, "--data")?;
    let mut train = open_layout(&layout, "train", "--data")?;
    let mut val = match (&cfg.val, &layout) {
        (Some(v), _) => Some(open_layout(&layout_of(v, "--val")?, "val", "--val")?),
        (None, Layout::Yolo(root)) if cfg.val_split.is_none() && yolo_has_split(root, "val") => {
            Some(open_layout(&layout, "val", "--data")?)
        }
        _ => None,
    };
    if let Some(f) = cfg.val_split {
        let (t, v) = split(train, f, cfg.seed)?;
        train = t;
        val = Some(v);
    }
    if let Some(names) = &cfg.classes {
        for (ds, flag) in std::iter::once((&mut train, "--data")).chain(val.as_mut().map(|v| (v, "--val"))) {
            if names.len() != ds.classes.len() {
                return Err(UsageError(format!(
                    "--classes names {} classes but {flag} has {} ({})",
                    names.len(),
                    ds.classes.len(),
                    ds.classes.join(", ")
                ))
                .into());
            }
            ds.classes = names.clone();
        }
    }
    if let Some(v) = &val {
        if v.classes != train.classes {
            return Err(UsageError(format!(
                "--val: its classes ({}) differ from the training data's ({})",
                v.classes.join(", "),
                train.classes.join(", ")
            ))
            .into());
        }
    }
    Ok(DetSets { train, val })
}

/// Hold out `fraction` of `ds`'s images (seeded shuffle) as validation.
fn split(ds: DetDataset, fraction: f32, seed: u64) -> anyhow::Result<(DetDataset, DetDataset)> {
    let n = ds.samples.len();
    let k = ((n as f64 * fraction as f64).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    if n < 2 {
        return Err(UsageError(format!("--val-split: {} has only {n} image", ds.source.display())).into());
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut is_val = vec![false; n];
    for &i in &order[..k] {
        is_val[i] = true;
    }
    let (mut t, mut v) = (ds.clone(), ds);
    t.samples = t
        .samples
        .into_iter()
        .zip(&is_val)
        .filter(|(_, &x)| !x)
        .map(|(s, _)| s)
        .collect();
    v.samples = v
        .samples
        .into_iter()
        .zip(&is_val)
        .filter(|(_, &x)| x)
        .map(|(s, _)| s)
        .collect();
    v.issues = Default::default();
    Ok((t, v))
}

/// One line per label problem of `ds` (up to [`MAX_NOTES`], then a count), after a summary line.
pub fn issue_lines(name: &str, ds: &DetDataset) -> Vec<String> {
    let i = &ds.issues;
    let mut lines = vec![format!(
        "{name}: {} images, {} boxes ({}), {} background images",
        ds.len(),
        ds.num_boxes(),
        ds.classes
            .iter()
            .zip(ds.class_counts())
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        i.background
    )];
    if i.clipped + i.degenerate > 0 {
        lines.push(format!(
            "warning: {name}: {} boxes clipped to their image, {} skipped (zero or negative size, or outside the image)",
            i.clipped, i.degenerate
        ));
    }
    for n in i.notes.iter().take(MAX_NOTES) {
        lines.push(format!("warning: {}: {}", n.path.display(), n.reason));
    }
    if i.notes.len() > MAX_NOTES {
        lines.push(format!(
            "warning: {name}: {} more label problems",
            i.notes.len() - MAX_NOTES
        ));
    }
    lines
}

/// The input size: `--imgsz` or [`DEFAULT_IMGSZ`], a multiple of 32 (the backbone's coarsest reduction).
pub fn imgsz_of(cfg: &TrainConfig) -> anyhow::Result<usize> {
    let s = cfg.imgsz.unwrap_or(DEFAULT_IMGSZ);
    if s % 32 != 0 {
        return Err(UsageError(format!("--imgsz must be a multiple of 32 for --task detect, got {s}")).into());
    }
    Ok(s)
}

/// Evaluation's input: a letterbox to `imgsz × imgsz` (grey padding), normalised with the backbone's statistics.
pub fn eval_pipeline(imgsz: usize, pp: &PreprocessConfig) -> Pipeline {
    Pipeline {
        // Invariant: `imgsz` is positive (`imgsz_of`, the saved model's meta).
        steps: vec![Box::new(Letterbox::new(imgsz, imgsz).expect("positive size"))],
        mean: pp.mean,
        std: pp.std,
        output_hw: (imgsz, imgsz),
    }
}

/// Training's input: `--augment none` is the evaluation letterbox; any other value flips (p 0.5), letterboxes,
/// zooms by a factor in [0.75, 1.25] (crop or black pad; boxes clipped, mostly-cropped ones dropped) and jitters
/// brightness, contrast and saturation by ±30 % and hue by ±0.02.
pub fn train_pipeline(augment: Augment, imgsz: usize, pp: &PreprocessConfig) -> Pipeline {
    if augment == Augment::None {
        return eval_pipeline(imgsz, pp);
    }
    // Invariant: the parameters are constants in range.
    let steps: Vec<Box<dyn ImageTransform>> = vec![
        Box::new(RandomHorizontalFlip::new(0.5).expect("valid p")),
        Box::new(Letterbox::new(imgsz, imgsz).expect("positive size")),
        Box::new(RandomZoom::new(0.25, Fill::Zero).expect("valid range")),
        Box::new(ColorJitter::new(0.3, 0.3, 0.3, 0.02).expect("valid jitter")),
    ];
    Pipeline {
        steps,
        mean: pp.mean,
        std: pp.std,
        output_hw: (imgsz, imgsz),
    }
}

/// The images and boxes of a loader batch as the task's input.
fn to_task_batch(b: data::Result<data::Batch>) -> training::Result<(Tensor, Vec<ImageBoxes>)> {
    let b = b.map_err(|e| training::Error::Config(e.to_string()))?;
    let Targets::Boxes(boxes) = b.targets else {
        return Err(training::Error::Config("a detection loader gave no boxes".into()));
    };
    let y = boxes
        .into_iter()
        .map(|bs| ImageBoxes {
            boxes: bs.iter().map(|b| b.xyxy).collect(),
            classes: bs.iter().map(|b| b.class as usize).collect(),
            iscrowd: bs.iter().map(|b| b.iscrowd).collect(),
        })
        .collect();
    Ok((b.images, y))
}

type TaskBatches<'a> = Box<dyn Iterator<Item = training::Result<(Tensor, Vec<ImageBoxes>)>> + 'a>;

fn epoch_batches(loader: Option<&Loader<DetDataset>>, epoch: usize) -> TaskBatches<'_> {
    Box::new(
        loader
            .into_iter()
            .flat_map(move |l| l.epoch(epoch as u64))
            .map(to_task_batch),
    )
}

/// A backbone and detection head with their input settings, for inference at original resolution.
pub struct Detector<'a> {
    /// The encoder.
    pub backbone: &'a dyn Backbone,
    /// The head.
    pub head: &'a DetHead,
    /// The letterbox size.
    pub imgsz: usize,
    /// The backbone's preprocessing (mean and std).
    pub preprocess: &'a PreprocessConfig,
    /// Where the tensors live.
    pub device: &'a Device,
}

impl Detector<'_> {
    /// Boxes in original pixels for each image, best first, after `post`.
    pub fn detect(&self, images: &[RgbImage], post: &PostProcess) -> anyhow::Result<Vec<Vec<BoxPrediction>>> {
        let pipeline = eval_pipeline(self.imgsz, self.preprocess);
        let names = &self.head.config().class_names;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(EVAL_BATCH) {
            let mut values = Vec::new();
            let mut placements: Vec<Placement> = Vec::new();
            for img in chunk {
                // The letterbox draws no random numbers.
                let mut rng = ChaCha8Rng::seed_from_u64(0);
                let a = pipeline.apply_annotated(Annotated::new(img.clone()), &mut rng)?;
                values.extend(data::transforms::to_tensor_normalized(
                    &a.image,
                    pipeline.mean,
                    pipeline.std,
                ));
                placements.push(a.placement);
            }
            let x = Tensor::from_vec(values, (chunk.len(), 3, self.imgsz, self.imgsz), self.device)?;
            let task = training::Detect {
                backbone: self.backbone,
                head: self.head,
                post: *post,
            };
            for (dets, placement) in task.predict(&x, post)?.into_iter().zip(placements) {
                let targets: Vec<BoxTarget> = dets.iter().map(|d| BoxTarget::new(d.bbox, d.class as u32)).collect();
                let back = placement.to_original_boxes(&targets);
                out.push(
                    dets.iter()
                        .zip(back)
                        .map(|(d, b)| BoxPrediction {
                            class: names.get(d.class).cloned().unwrap_or_default(),
                            class_id: d.class,
                            score: d.score,
                            bbox: b.xyxy,
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// COCO evaluation of `ds` at original resolution (every box above [`EVAL_CONF`], at most [`EVAL_MAX_DET`] per
    /// image, NMS at `iou`), with each image's predictions.
    pub fn evaluate(&self, ds: &DetDataset, iou: f32) -> anyhow::Result<(CocoStats, Vec<Vec<BoxPrediction>>)> {
        let post = PostProcess {
            conf: EVAL_CONF,
            iou,
            max_det: EVAL_MAX_DET,
            ..PostProcess::default()
        };
        let mut preds = Vec::with_capacity(ds.len());
        for chunk in ds.samples.chunks(EVAL_BATCH) {
            let images = chunk
                .iter()
                .map(|s| data::decode_image(&s.image))
                .collect::<data::Result<Vec<_>>>()?;
            preds.extend(self.detect(&images, &post)?);
        }
        let gt: Vec<Vec<GtBox>> = ds
            .samples
            .iter()
            .map(|s| {
                s.boxes
                    .iter()
                    .map(|b| GtBox {
                        category_id: b.class as u64,
                        bbox: b.xyxy.map(|v| v as f64),
                        iscrowd: b.iscrowd,
                    })
                    .collect()
            })
            .collect();
        let dets: Vec<Vec<DetBox>> = preds
            .iter()
            .map(|p| {
                p.iter()
                    .map(|b| DetBox {
                        category_id: b.class_id as u64,
                        bbox: b.bbox.map(|v| v as f64),
                        score: b.score as f64,
                    })
                    .collect()
            })
            .collect();
        let names = &self.head.config().class_names;
        let stats = coco::evaluate(
            &CocoGt::from_image_boxes(&gt, BoxFormat::Xyxy, names),
            &CocoDet::from_image_boxes(&dets, BoxFormat::Xyxy),
        )?;
        Ok((stats, preds))
    }
}

/// COCO's 12 numbers by name (`map`, `map50`, `map75`, `map_small`, `map_medium`, `map_large`, `ar1`, `ar10`,
/// `ar100`, `ar_small`, `ar_medium`, `ar_large`) and per class `ap/<class>`, `ap50/<class>`.
pub fn stats_metrics(s: &CocoStats) -> BTreeMap<String, f64> {
    const NAMES: [&str; 12] = [
        "map",
        "map50",
        "map75",
        "map_small",
        "map_medium",
        "map_large",
        "ar1",
        "ar10",
        "ar100",
        "ar_small",
        "ar_medium",
        "ar_large",
    ];
    let mut m: BTreeMap<String, f64> = NAMES.iter().map(|n| n.to_string()).zip(s.as_array()).collect();
    for c in &s.per_category {
        if let Some(ap) = c.ap {
            m.insert(format!("ap/{}", c.name), ap);
        }
        if let Some(ap) = c.ap50 {
            m.insert(format!("ap50/{}", c.name), ap);
        }
    }
    m
}

/// An image's F1 at IoU 0.5 of its predictions scoring at least `conf` (greedy by score, same class); 1 for an image
/// without objects or predictions.
pub fn image_f1(truth: &[([f32; 4], usize)], preds: &[BoxPrediction], conf: f32) -> f64 {
    let mut kept: Vec<&BoxPrediction> = preds.iter().filter(|p| p.score >= conf).collect();
    if truth.is_empty() && kept.is_empty() {
        return 1.0;
    }
    kept.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut used = vec![false; truth.len()];
    let mut tp = 0usize;
    for p in &kept {
        let best = truth
            .iter()
            .enumerate()
            .filter(|(i, (_, c))| !used[*i] && *c == p.class_id)
            .map(|(i, (b, _))| (i, iou(b, &p.bbox)))
            .filter(|(_, v)| *v >= 0.5)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, _)) = best {
            used[i] = true;
            tp += 1;
        }
    }
    2.0 * tp as f64 / (truth.len() + kept.len()) as f64
}

fn truth_of(s: &data::DetSample) -> Vec<([f32; 4], usize)> {
    s.boxes.iter().map(|b| (b.xyxy, b.class as usize)).collect()
}

/// The post-processing saved with a model (`conf`, `iou`, `max_det`), as in [`DenseMeta::post`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedPost {
    /// Confidence threshold.
    pub conf: f32,
    /// NMS IoU threshold.
    pub iou: f32,
    /// Most boxes per image.
    pub max_det: usize,
}

/// Train a detection model per `cfg` into `run_dir`.
pub fn train(cfg: &TrainConfig, run_dir: &Path, observer: &mut dyn TrainObserver) -> anyhow::Result<TrainOutcome> {
    let spec = model_spec(&cfg.model)?;
    let device = super::train::device_of(cfg.device)?;
    let imgsz = imgsz_of(cfg)?;
    let DetSets { train, val } = open_sets(cfg)?;
    for line in issue_lines("train", &train) {
        observer.info(&line);
    }
    if let Some(v) = &val {
        for line in issue_lines("val", v) {
            observer.info(&line);
        }
    }
    let classes = train.classes.clone();
    let (pretrained, weights) = pretrained(&cfg.model, cfg.weights.as_deref(), &device)?;
    let info = RunInfo {
        task: TaskKind::Detect,
        model: spec.name.clone(),
        weights: weights.clone(),
        mode: cfg.mode.to_string(),
        classes: classes.clone(),
    };
    write_run_info(cfg, run_dir, &info)?;
    let backbone = pretrained.backbone;
    apply_mode(cfg, backbone.as_ref())?;
    let head_cfg = DetHeadConfig {
        channels: HEAD_CHANNELS,
        tower_convs: HEAD_TOWER_CONVS,
        ..DetHeadConfig::for_encoder(classes.clone(), &backbone.feature_info(), cfg.levels)
            .map_err(|e| UsageError(format!("--levels {} with --model {}: {e}", cfg.levels, cfg.model)))?
    };
    let head = DetHead::new(head_cfg, &device, cfg.seed)?;
    let task = training::Detect {
        backbone: backbone.as_ref(),
        head: &head,
        post: PostProcess {
            conf: EVAL_CONF,
            iou: cfg.iou,
            max_det: EVAL_MAX_DET,
            ..PostProcess::default()
        },
    };
    let loader_cfg = |shuffle: bool, n: usize| LoaderConfig {
        batch_size: cfg.batch_size,
        shuffle,
        seed: cfg.seed,
        policy: if cfg.strict {
            DecodePolicy::Strict
        } else {
            DecodePolicy::Skip
        },
        // Decoded originals stay in memory across epochs for small sets.
        cache: n <= 2000,
        pre_resize_shorter: None,
    };
    let train_loader = Loader::new(
        train.clone(),
        train_pipeline(cfg.augment, imgsz, &spec.preprocess),
        loader_cfg(true, train.len()),
        device.clone(),
    )?;
    let val_loader = val
        .as_ref()
        .map(|v| {
            Loader::new(
                v.clone(),
                eval_pipeline(imgsz, &spec.preprocess),
                loader_cfg(false, v.len()),
                device.clone(),
            )
        })
        .transpose()?;
    let data = EpochData {
        steps: train_loader.num_batches(),
        has_val: val.is_some(),
        train: |e| epoch_batches(Some(&train_loader), e),
        val: |_| epoch_batches(val_loader.as_ref(), 0),
    };
    let (_result, _rows) = fit(&task, cfg, run_dir, observer, data)?;
    let history = _rows;

    let fine_tuned = cfg.mode == Mode::FineTune;
    let post = SavedPost {
        conf: cfg.conf,
        iou: cfg.iou,
        max_det: cfg.max_det,
    };
    let meta = DenseMeta {
        task: TaskKind::Detect.to_string(),
        model: spec.name.clone(),
        architecture: spec.architecture.clone(),
        classes: classes.clone(),
        preprocess: spec.preprocess.clone(),
        imgsz,
        head: serde_json::to_value(head.config())?,
        post: Some(serde_json::to_value(post)?),
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

    let detector = Detector {
        backbone: backbone.as_ref(),
        head: &head,
        imgsz,
        preprocess: &spec.preprocess,
        device: &device,
    };
    let dense = match &val {
        Some(v) => dense_outcome(&detector, &task, v, cfg)?,
        None => DenseOutcome {
            task: TaskKind::Detect,
            score_name: task.score_name().into(),
            metrics: BTreeMap::new(),
            section: task.report_section(&training::EvalSummary {
                loss: 0.0,
                accuracy: 0.0,
                score: 0.0,
                metrics: BTreeMap::new(),
            }),
            figures: Vec::new(),
            worst: Vec::new(),
        },
    };
    Ok(TrainOutcome {
        history,
        eval: None,
        wrong: Vec::new(),
        dense: Some(dense),
    })
}

/// The kept model's validation at original resolution: metrics, the per-class AP table, `pr_curves/<class>.png`,
/// `val_samples.png` and the images with the lowest F1 (at the run's `--conf`).
fn dense_outcome(
    detector: &Detector,
    task: &training::Detect,
    val: &DetDataset,
    cfg: &TrainConfig,
) -> anyhow::Result<DenseOutcome> {
    let (stats, preds) = detector.evaluate(val, cfg.iou)?;
    let metrics = stats_metrics(&stats);
    let section = task.report_section(&training::EvalSummary {
        loss: 0.0,
        accuracy: stats.ap50.max(0.0),
        score: stats.ap,
        metrics: metrics.clone(),
    });
    let mut figures = Vec::new();
    for c in &stats.per_category {
        let img = det_viz::render_pr_curve(&c.name, &c.pr_curve, c.ap50, 480, 360)?;
        figures.push((format!("pr_curves/{}.png", file_safe(&c.name)), encode_png(&img)?));
    }
    let names = &detector.head.config().class_names;
    let mut tiles = Vec::new();
    for (s, p) in val.samples.iter().zip(&preds).take(VAL_SAMPLES) {
        let img = data::decode_image(&s.image)?;
        let shown: Vec<BoxPrediction> = p.iter().filter(|b| b.score >= cfg.conf).cloned().collect();
        tiles.push(det_viz::sample_tile(&img, &truth_of(s), &shown, names, 320)?);
    }
    if !tiles.is_empty() {
        figures.push(("val_samples.png".into(), encode_png(&det_viz::sheet(&tiles, 4))?));
    }
    let mut worst: Vec<(PathBuf, f64)> = val
        .samples
        .iter()
        .zip(&preds)
        .map(|(s, p)| (s.image.clone(), image_f1(&truth_of(s), p, cfg.conf)))
        .filter(|(_, f)| *f < 1.0)
        .collect();
    worst.sort_by(|a, b| a.1.total_cmp(&b.1));
    worst.truncate(WORST);
    Ok(DenseOutcome {
        task: TaskKind::Detect,
        score_name: task.score_name().into(),
        metrics,
        section,
        figures,
        worst,
    })
}

/// A class name as a file name: path separators and odd characters become `_`.
pub fn file_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_. ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_matches('.') {
        "" => "_".into(),
        t => t.to_string(),
    }
}

/// A saved detection model ready for inference.
struct Loaded {
    model: training::export::DenseModel,
    post: SavedPost,
}

impl Loaded {
    fn head(&self) -> &DetHead {
        match &self.model.head {
            DenseHead::Detect(h) => h,
            // Invariant: `load` accepts detection models only.
            DenseHead::Segment(_) => unreachable!("checked in load"),
        }
    }

    fn detector<'a>(&'a self, device: &'a Device) -> Detector<'a> {
        Detector {
            backbone: self.model.backbone.as_ref(),
            head: self.head(),
            imgsz: self.model.meta.imgsz,
            preprocess: &self.model.meta.preprocess,
            device,
        }
    }
}

fn load(model: &ModelSource, device: &Device) -> anyhow::Result<Loaded> {
    let (file, flag) = match model {
        ModelSource::Run(dir) => (best_path(dir), "--run"),
        ModelSource::File(f) => (f.clone(), "--model"),
    };
    if !file.is_file() {
        return Err(UsageError(format!(
            "{flag}: {} does not exist (not a finished run?)",
            file.display()
        ))
        .into());
    }
    let m = training::export::load_dense(&file, device)
        .map_err(|e| UsageError(format!("{flag} {}: {e}", file.display())))?;
    if !matches!(m.head, DenseHead::Detect(_)) || m.meta.imgsz == 0 {
        return Err(UsageError(format!("{flag} {}: not a detection model", file.display())).into());
    }
    let post = m
        .meta
        .post
        .clone()
        .and_then(|p| serde_json::from_value(p).ok())
        .unwrap_or(SavedPost {
            conf: 0.25,
            iou: 0.6,
            max_det: 100,
        });
    Ok(Loaded { model: m, post })
}

/// Evaluate the detection run in `run_dir` on the labelled data at `data` (a YOLO root's `val` split, or its
/// `train` split when it has none; or a COCO JSON file).
pub fn evaluate(device: &Device, run_dir: &Path, data: &Path) -> anyhow::Result<DenseEvaluation> {
    let info = read_run_info(run_dir)?;
    let loaded = load(&ModelSource::Run(run_dir.to_path_buf()), device)?;
    let layout = layout_of(data, "--data")?;
    let split = match &layout {
        Layout::Yolo(root) if !yolo_has_split(root, "val") => "train",
        _ => "val",
    };
    let mut ds = open_layout(&layout, split, "--data")?;
    let classes = &loaded.model.meta.classes;
    if ds.classes.len() != classes.len() {
        return Err(UsageError(format!(
            "--data: {} classes ({}) but the run {} trained {} ({})",
            ds.classes.len(),
            ds.classes.join(", "),
            run_dir.display(),
            info.classes.len(),
            classes.join(", ")
        ))
        .into());
    }
    ds.classes = classes.clone();
    let (stats, _) = loaded.detector(device).evaluate(&ds, loaded.post.iou)?;
    Ok(DenseEvaluation {
        task: TaskKind::Detect.to_string(),
        images: ds.len(),
        metrics: stats_metrics(&stats),
    })
}

/// Predict every file with the detection model of `model`; with `opts.draw`, write each image with its boxes.
pub fn predict(
    device: &Device,
    model: &ModelSource,
    files: &[PathBuf],
    opts: &DensePredictOptions,
) -> anyhow::Result<Vec<DensePrediction>> {
    let loaded = load(model, device)?;
    let post = PostProcess {
        conf: opts.conf.unwrap_or(loaded.post.conf),
        iou: opts.iou.unwrap_or(loaded.post.iou),
        max_det: opts.max_det.unwrap_or(loaded.post.max_det),
        ..PostProcess::default()
    };
    if let Some(dir) = &opts.draw {
        std::fs::create_dir_all(dir).map_err(|e| UsageError(format!("--draw {}: {e}", dir.display())))?;
    }
    let detector = loaded.detector(device);
    let mut out = Vec::with_capacity(files.len());
    for chunk in files.chunks(EVAL_BATCH) {
        let decoded: Vec<Result<RgbImage, String>> = chunk
            .iter()
            .map(|f| data::decode_image(f).map_err(|e| data::text::one_line(&e.to_string())))
            .collect();
        let images: Vec<RgbImage> = decoded.iter().filter_map(|d| d.as_ref().ok().cloned()).collect();
        let mut boxes = detector.detect(&images, &post)?.into_iter();
        let mut images = images.into_iter();
        for (path, d) in chunk.iter().zip(decoded) {
            let result = match d {
                Err(e) => Err(e),
                Ok(_) => {
                    // Invariant: one result per decoded image, in order.
                    let (b, img) = (
                        boxes.next().expect("one result per image"),
                        images.next().expect("image"),
                    );
                    match &opts.draw {
                        Some(dir) => draw_file(dir, path, img, &b).map(|drawn| DenseOutput::Boxes {
                            boxes: b,
                            drawn: Some(drawn),
                        }),
                        None => Ok(DenseOutput::Boxes { boxes: b, drawn: None }),
                    }
                }
            };
            out.push(DensePrediction {
                path: path.clone(),
                result,
            });
        }
    }
    Ok(out)
}

/// Write `img` with `boxes` drawn as `dir/<file stem>.png` (atomically).
fn draw_file(dir: &Path, path: &Path, mut img: RgbImage, boxes: &[BoxPrediction]) -> Result<PathBuf, String> {
    det_viz::draw_predictions(&mut img, boxes).map_err(|e| e.to_string())?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = dir.join(format!("{}.png", file_safe(&stem)));
    let png = encode_png(&img).map_err(|e| e.to_string())?;
    data::fsutil::write_atomic(&target, &png).map_err(|e| e.to_string())?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_comes_from_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("train.json"), "{}").unwrap();
        assert_eq!(
            layout_of(&d.join("train.json"), "--data").unwrap(),
            Layout::Coco(d.join("train.json"))
        );
        let yolo = d.join("yolo");
        std::fs::create_dir(&yolo).unwrap();
        std::fs::write(yolo.join("data.yaml"), "names: [a]\n").unwrap();
        assert_eq!(layout_of(&yolo, "--data").unwrap(), Layout::Yolo(yolo.clone()));
        assert_eq!(
            layout_of(&yolo.join("data.yaml"), "--data").unwrap(),
            Layout::Yolo(yolo.join("data.yaml"))
        );
        let rf = d.join("roboflow");
        std::fs::create_dir(&rf).unwrap();
        std::fs::write(rf.join("_annotations.coco.json"), "{}").unwrap();
        assert_eq!(
            layout_of(&rf, "--val").unwrap(),
            Layout::Coco(rf.join("_annotations.coco.json"))
        );
        let empty = d.join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = layout_of(&empty, "--data").unwrap_err().to_string();
        assert!(
            e.starts_with("--data ") && e.contains("data.yaml") && !e.contains('\n'),
            "{e}"
        );
        std::fs::write(d.join("labels.csv"), "a").unwrap();
        let e = layout_of(&d.join("labels.csv"), "--val").unwrap_err().to_string();
        assert!(e.starts_with("--val ") && e.contains("COCO"), "{e}");
        assert!(layout_of(&d.join("missing"), "--data")
            .unwrap_err()
            .0
            .contains("no such"));
    }

    #[test]
    fn image_f1_matches_same_class_boxes_at_iou_half() {
        let p = |c: usize, s: f32, b: [f32; 4]| BoxPrediction {
            class: String::new(),
            class_id: c,
            score: s,
            bbox: b,
        };
        let truth = [([0.0, 0.0, 10.0, 10.0], 0), ([20.0, 20.0, 30.0, 30.0], 1)];
        assert_eq!(
            image_f1(
                &truth,
                &[p(0, 0.9, [0.0, 0.0, 10.0, 10.0]), p(1, 0.8, [20.0, 20.0, 30.0, 30.0])],
                0.5
            ),
            1.0
        );
        // Wrong class, or below the threshold, or a box shifted by half its size: no match.
        assert_eq!(image_f1(&truth, &[p(1, 0.9, [0.0, 0.0, 10.0, 10.0])], 0.5), 0.0);
        assert_eq!(image_f1(&truth, &[p(0, 0.3, [0.0, 0.0, 10.0, 10.0])], 0.5), 0.0);
        assert_eq!(image_f1(&truth, &[p(0, 0.9, [5.0, 0.0, 15.0, 10.0])], 0.5), 0.0);
        // One of two found, one false positive: F1 = 2·1 / (2 + 2).
        let f = image_f1(
            &truth,
            &[p(0, 0.9, [1.0, 0.0, 10.0, 10.0]), p(0, 0.8, [50.0, 50.0, 60.0, 60.0])],
            0.5,
        );
        assert!((f - 0.5).abs() < 1e-12);
        assert_eq!(image_f1(&[], &[], 0.5), 1.0);
        assert_eq!(image_f1(&[], &[p(0, 0.9, [0.0, 0.0, 1.0, 1.0])], 0.5), 0.0);
    }

    #[test]
    fn imgsz_defaults_for_cpus_and_must_fit_the_strides() {
        let mut cfg = TrainConfig::default();
        assert_eq!(imgsz_of(&cfg).unwrap(), DEFAULT_IMGSZ);
        cfg.imgsz = Some(100);
        let e = imgsz_of(&cfg).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("--imgsz"));
    }

    #[test]
    fn class_names_become_safe_file_names() {
        assert_eq!(file_safe("ant"), "ant");
        assert_eq!(file_safe("traffic light"), "traffic light");
        assert_eq!(file_safe("a/b\\c"), "a_b_c");
        assert_eq!(file_safe(".."), "_");
    }

    #[test]
    fn coco_stats_become_twelve_named_metrics_and_per_class_ap() {
        let names = vec!["ant".to_string(), "bee".to_string()];
        let gt = vec![vec![GtBox {
            category_id: 0,
            bbox: [0.0, 0.0, 50.0, 50.0],
            iscrowd: false,
        }]];
        let dets = vec![vec![DetBox {
            category_id: 0,
            bbox: [0.0, 0.0, 50.0, 50.0],
            score: 0.9,
        }]];
        let s = coco::evaluate(
            &CocoGt::from_image_boxes(&gt, BoxFormat::Xyxy, &names),
            &CocoDet::from_image_boxes(&dets, BoxFormat::Xyxy),
        )
        .unwrap();
        let m = stats_metrics(&s);
        assert!((m["map"] - 1.0).abs() < 1e-9 && (m["map50"] - 1.0).abs() < 1e-9);
        assert_eq!(m.keys().filter(|k| !k.contains('/')).count(), 12);
        assert!((m["ap/ant"] - 1.0).abs() < 1e-9);
        assert!(!m.contains_key("ap/bee"), "no ground truth: no AP");
        // The PR curve COCO gives is bounded and non-increasing.
        let curve = &s.per_category[0].pr_curve;
        assert_eq!(curve.len(), 101);
        assert!(curve.windows(2).all(|w| w[1].1 <= w[0].1 + 1e-12 && w[1].0 > w[0].0));
        assert!(curve
            .iter()
            .all(|(r, p)| (0.0..=1.0).contains(r) && (0.0..=1.0).contains(p)));
    }
}
