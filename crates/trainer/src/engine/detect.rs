//! `trainer train --task detect`: detection on a pretrained backbone's multi-scale features, through
//! `training::fit_task` with `training::Detect`; `evaluate` and `predict` for its runs and exported models.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::backend::{DenseEvaluation, DensePredictOptions, DensePrediction, ModelSource, TrainObserver};
use crate::config::TrainConfig;
use crate::error::UsageError;
use crate::summary::TrainOutcome;

/// Train a detection model per `cfg` into `run_dir`.
pub fn train(_cfg: &TrainConfig, _run_dir: &Path, _observer: &mut dyn TrainObserver) -> anyhow::Result<TrainOutcome> {
    Err(UsageError("--task detect is not wired yet".into()).into())
}

/// Evaluate the detection run in `run_dir` on the labelled data at `data`.
pub fn evaluate(_device: &Device, _run_dir: &Path, _data: &Path) -> anyhow::Result<DenseEvaluation> {
    Err(UsageError("--task detect is not wired yet".into()).into())
}

/// Predict every file with the detection model of `model`.
pub fn predict(
    _device: &Device,
    _model: &ModelSource,
    _files: &[PathBuf],
    _opts: &DensePredictOptions,
) -> anyhow::Result<Vec<DensePrediction>> {
    Err(UsageError("--task detect is not wired yet".into()).into())
}
