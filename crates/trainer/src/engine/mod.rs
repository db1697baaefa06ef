//! The real backend: the CLI's [`Backend`] on the `data`, `backbones`, `heads` and `training` crates.

pub mod dense;
pub mod detect;
pub mod evaluate;
pub mod export;
pub mod inputs;
pub mod lr_find;
pub mod predict;
pub mod segment;
pub mod train;

use std::path::{Path, PathBuf};

use crate::backend::{
    Backend, Context, DatasetReport, DenseEvaluation, DensePredictOptions, DensePrediction, ModelSource, TrainObserver,
};
use crate::cli::LrFindArgs;
use crate::config::TrainConfig;
use crate::error::UsageError;
use crate::predict_out::FilePrediction;
use crate::spec::TaskKind;
use crate::summary::{EvalSummary, TrainOutcome, WrongExample};

/// Images per forward pass for evaluation and prediction.
pub const EVAL_BATCH: usize = 32;

/// The backend built on graft's libraries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Graft;

impl Backend for Graft {
    fn train(
        &self,
        cfg: &TrainConfig,
        run_dir: &Path,
        observer: &mut dyn TrainObserver,
    ) -> anyhow::Result<TrainOutcome> {
        train::train(cfg, run_dir, observer)
    }

    fn evaluate(&self, ctx: Context, run_dir: &Path, data: &Path) -> anyhow::Result<(EvalSummary, Vec<WrongExample>)> {
        let device = train::device_of(ctx.device)?;
        evaluate::evaluate(&device, run_dir, data, EVAL_BATCH)
    }

    fn predict(
        &self,
        ctx: Context,
        model: &ModelSource,
        files: &[PathBuf],
        top_k: usize,
        tta: bool,
    ) -> anyhow::Result<Vec<FilePrediction>> {
        let device = train::device_of(ctx.device)?;
        let loaded = predict::load_source(model, &device)?;
        predict::predict(&loaded, &device, files, top_k, tta, EVAL_BATCH)
    }

    fn export(&self, run_dir: &Path, out: &Path) -> anyhow::Result<()> {
        export::export(run_dir, out)
    }

    fn inspect(&self, data_path: &Path, _strict: bool) -> anyhow::Result<DatasetReport> {
        let report = data::inspect(data_path).map_err(|e| UsageError(e.to_string()))?;
        let is_csv = data_path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        Ok(DatasetReport {
            kind: if is_csv { "csv" } else { "imagefolder" }.into(),
            classes: report
                .classes
                .iter()
                .cloned()
                .zip(report.counts.iter().copied())
                .collect(),
            skipped: report
                .unreadable
                .iter()
                .map(|s| (s.path.clone(), s.reason.clone()))
                .collect(),
            problems: report.problems(),
        })
    }

    fn lr_find(&self, ctx: Context, args: &LrFindArgs) -> anyhow::Result<training::LrFinderResult> {
        lr_find::lr_find(ctx, args)
    }

    fn task_of(&self, model: &ModelSource) -> anyhow::Result<TaskKind> {
        match model {
            ModelSource::Run(dir) => Ok(train::read_run_info(dir)?.task),
            ModelSource::File(file) => {
                let task = training::export::task_of_file(file).map_err(|e| UsageError(format!("--model: {e}")))?;
                task.parse()
                    .map_err(|e| UsageError(format!("--model {}: {e}", file.display())).into())
            }
        }
    }

    fn evaluate_dense(&self, ctx: Context, run_dir: &Path, data: &Path) -> anyhow::Result<DenseEvaluation> {
        let device = train::device_of(ctx.device)?;
        match train::read_run_info(run_dir)?.task {
            TaskKind::Segment => segment::evaluate(&device, run_dir, data),
            TaskKind::Detect => detect::evaluate(&device, run_dir, data),
            TaskKind::Classify => {
                Err(UsageError("--run: a classification run (use evaluate's classifier path)".into()).into())
            }
        }
    }

    fn predict_dense(
        &self,
        ctx: Context,
        model: &ModelSource,
        files: &[PathBuf],
        opts: &DensePredictOptions,
    ) -> anyhow::Result<Vec<DensePrediction>> {
        let device = train::device_of(ctx.device)?;
        match self.task_of(model)? {
            TaskKind::Segment => segment::predict(&device, model, files, opts),
            TaskKind::Detect => detect::predict(&device, model, files, opts),
            TaskKind::Classify => Err(UsageError("a classification model has no masks or boxes".into()).into()),
        }
    }
}
