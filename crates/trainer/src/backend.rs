//! The seam to the libraries: what the CLI asks of data loading, models and training. [`crate::engine::Graft`]
//! implements [`Backend`] on top of the `data`, `backbones`, `heads` and `training` crates; the CLI's own tests use
//! a stub.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use crate::config::TrainConfig;
use crate::predict_out::FilePrediction;
use crate::spec::{DeviceSpec, TaskKind};
use crate::summary::{EpochRow, EvalSummary, TrainOutcome, WrongExample};

/// Receives progress while training; the CLI prints it and rewrites `metrics.csv` after every epoch.
pub trait TrainObserver {
    /// An epoch of `batches` batches begins.
    fn epoch_started(&mut self, epoch: usize, epochs: usize, batches: usize);
    /// A training batch of an epoch of `batches` finished (the library's figures; epochs and batches from 0).
    fn batch(&mut self, progress: &training::BatchProgress, batches: usize);
    /// `done` of `total` images of a long task (e.g. `extracting features (train)`) are processed; called with
    /// `done == 0` when it starts and `done == total` when it ends.
    fn progress(&mut self, _task: &str, _done: usize, _total: usize) {}
    /// An epoch finished; an error (e.g. the run folder vanished) should stop training.
    fn epoch_ended(&mut self, row: &EpochRow) -> anyhow::Result<()>;
    /// A note for the user (e.g. whether the feature cache was hit).
    fn info(&mut self, _message: &str) {}
}

/// Where `predict` takes its model from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A run folder written by `train`.
    Run(PathBuf),
    /// A file written by `export`.
    File(PathBuf),
}

/// What `data inspect` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatasetReport {
    /// `imagefolder` or `csv`.
    pub kind: String,
    /// Class names and image counts, in class-index order.
    pub classes: Vec<(String, usize)>,
    /// Files that were skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// What makes the dataset unusable for training (an empty class, a class without a readable image, fewer than
    /// two classes), one line each; empty when it is usable.
    pub problems: Vec<String>,
}

/// Settings shared by every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Compute device.
    pub device: DeviceSpec,
    /// Random seed.
    pub seed: u64,
}

/// `predict`'s options for segmentation and detection models.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DensePredictOptions {
    /// Segmentation: folder for the mask PNGs (and overlays).
    pub out_dir: PathBuf,
    /// Segmentation: also write the image blended with its coloured mask.
    pub overlay: bool,
    /// Detection: folder for images with their boxes drawn.
    pub draw: Option<PathBuf>,
    /// Detection: confidence threshold (default: the run's).
    pub conf: Option<f32>,
    /// Detection: NMS IoU threshold (default: the run's).
    pub iou: Option<f32>,
    /// Detection: most boxes per image (default: the run's).
    pub max_det: Option<usize>,
}

/// One detected object, in the original image's pixels.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BoxPrediction {
    /// Class name.
    pub class: String,
    /// Class index.
    pub class_id: usize,
    /// Confidence.
    pub score: f32,
    /// `[x0, y0, x1, y1]` in pixels of the original image.
    pub bbox: [f32; 4],
}

/// What a segmentation or detection model predicted for one file.
#[derive(Debug, Clone, PartialEq)]
pub enum DenseOutput {
    /// A class mask at the original size, written as a palette PNG.
    Mask {
        /// The mask PNG written.
        mask: PathBuf,
        /// The overlay PNG written (with `--overlay`).
        overlay: Option<PathBuf>,
        /// Fraction of the image's pixels per class, in class order.
        class_fractions: Vec<(String, f64)>,
    },
    /// Detected boxes, best first.
    Boxes {
        /// The boxes.
        boxes: Vec<BoxPrediction>,
        /// The image with its boxes drawn (with `--draw`).
        drawn: Option<PathBuf>,
    },
}

/// One input file's dense prediction, or why it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct DensePrediction {
    /// The input file.
    pub path: PathBuf,
    /// Its prediction, or a one-line reason.
    pub result: Result<DenseOutput, String>,
}

/// `evaluate` of a segmentation or detection run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DenseEvaluation {
    /// `segment` or `detect`.
    pub task: String,
    /// Images evaluated.
    pub images: usize,
    /// Every metric by name (`miou`, `iou/<class>`, `pixel_accuracy`, … or COCO's `map`, `map50`, …, `ap/<class>`).
    pub metrics: BTreeMap<String, f64>,
}

/// The work the libraries do for the CLI.
pub trait Backend {
    /// Train per `cfg`, saving checkpoints in `run_dir`, reporting through `observer`.
    fn train(
        &self,
        cfg: &TrainConfig,
        run_dir: &Path,
        observer: &mut dyn TrainObserver,
    ) -> anyhow::Result<TrainOutcome>;
    /// Evaluate the run's model on labelled data; also the most confidently wrong images.
    fn evaluate(&self, ctx: Context, run_dir: &Path, data: &Path) -> anyhow::Result<(EvalSummary, Vec<WrongExample>)>;
    /// Top-`top_k` classes for each file (all exist and are files); per-file failures go in the result.
    fn predict(
        &self,
        ctx: Context,
        model: &ModelSource,
        files: &[PathBuf],
        top_k: usize,
        tta: bool,
    ) -> anyhow::Result<Vec<FilePrediction>>;
    /// Write the run's model to `out`.
    fn export(&self, run_dir: &Path, out: &Path) -> anyhow::Result<()>;
    /// Scan a dataset.
    fn inspect(&self, data: &Path, strict: bool) -> anyhow::Result<DatasetReport>;
    /// An exponential learning-rate sweep: each step's rate and loss, and the suggestion.
    fn lr_find(&self, ctx: Context, args: &crate::cli::LrFindArgs) -> anyhow::Result<training::LrFinderResult>;
    /// The task of a run folder or exported model (which `predict`/`evaluate` path it takes).
    fn task_of(&self, _model: &ModelSource) -> anyhow::Result<TaskKind> {
        Ok(TaskKind::Classify)
    }
    /// Evaluate a segmentation or detection run on labelled data.
    fn evaluate_dense(&self, _ctx: Context, _run_dir: &Path, _data: &Path) -> anyhow::Result<DenseEvaluation> {
        anyhow::bail!("this backend has no segmentation or detection")
    }
    /// Masks or boxes for each file (all exist and are files); per-file failures go in the result.
    fn predict_dense(
        &self,
        _ctx: Context,
        _model: &ModelSource,
        _files: &[PathBuf],
        _opts: &DensePredictOptions,
    ) -> anyhow::Result<Vec<DensePrediction>> {
        anyhow::bail!("this backend has no segmentation or detection")
    }
}
