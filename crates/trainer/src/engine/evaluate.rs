//! Scoring a labelled set with a model and summarising it: accuracy, per-class metrics, confusion matrix,
//! ROC-AUC (two classes), loss and the most confidently wrong images; `trainer evaluate`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use candle_core::Device;
use data::transforms::Pipeline;
use heads::Head;
use training::{ClassificationReport, Model};

use super::inputs::{self, FeatureSpec, Features};
use super::train::best_path;
use crate::error::UsageError;
use crate::summary::{EvalSummary, WrongExample};

/// How many wrong images the report shows.
pub const WRONG_SHOWN: usize = 12;

/// Class probabilities of each image of a labelled set.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Probabilities per image (classes in order).
    pub scores: Vec<Vec<f32>>,
    /// True class per image.
    pub labels: Vec<usize>,
    /// Image file per image.
    pub paths: Vec<PathBuf>,
}

impl Scored {
    /// Scores of the head on cached features of `dataset`.
    pub fn from_features(
        head: &Head,
        f: &Features,
        dataset: &data::Dataset,
        batch_size: usize,
    ) -> anyhow::Result<Self> {
        let n = f.x.dim(0)?;
        let mut scores = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = batch_size.max(1).min(n - start);
            let p = head.predict_proba(&f.x.narrow(0, start, len)?)?;
            scores.extend(p.to_device(&Device::Cpu)?.to_vec2::<f32>()?);
            start += len;
        }
        let labels: Vec<u32> = f.labels.to_device(&Device::Cpu)?.to_vec1()?;
        Ok(Self {
            scores,
            labels: labels.into_iter().map(|l| l as usize).collect(),
            paths: f.index.iter().map(|&i| dataset.samples[i].path.clone()).collect(),
        })
    }

    /// Scores of the whole model over a loader of `dataset` (eval mode).
    pub fn from_loader(model: Model<'_>, loader: &data::Loader, dataset: &data::Dataset) -> anyhow::Result<Self> {
        let mut out = Self {
            scores: Vec::new(),
            labels: Vec::new(),
            paths: Vec::new(),
        };
        for batch in loader.epoch(0) {
            let b = batch?;
            let backbone = model.backbone.context("scoring images needs a backbone")?;
            let features = training::export::head_input(backbone, model.head, &b.images)?;
            let p = model.head.predict_proba(&features)?;
            out.scores.extend(p.to_device(&Device::Cpu)?.to_vec2::<f32>()?);
            for &i in &b.indices {
                out.labels.push(dataset.samples[i].label);
                out.paths.push(dataset.samples[i].path.clone());
            }
        }
        Ok(out)
    }
}

/// The evaluation summary and the most confidently wrong images (most confident first).
pub fn summarize(s: &Scored, classes: &[String]) -> anyhow::Result<(EvalSummary, Vec<WrongExample>)> {
    let report = ClassificationReport::from_scores(&s.scores, &s.labels, classes);
    // Mean negative log-likelihood of the true class (cross-entropy; for one sigmoid output, BCE).
    let loss = training::metrics::log_loss(&s.scores, &s.labels);
    let eval = EvalSummary::from_report(classes.to_vec(), &report, Some(loss));
    let mut wrong: Vec<WrongExample> = s
        .scores
        .iter()
        .zip(&s.labels)
        .zip(&s.paths)
        .filter_map(|((p, &l), path)| {
            let pred = training::metrics::argmax_rows(std::slice::from_ref(p))[0];
            (pred != l).then(|| WrongExample {
                path: path.clone(),
                true_class: classes[l].clone(),
                pred_class: classes[pred].clone(),
                prob: p[pred],
            })
        })
        .collect();
    wrong.sort_by(|a, b| b.prob.total_cmp(&a.prob));
    wrong.truncate(WRONG_SHOWN);
    Ok((eval, wrong))
}

/// Evaluate a run's best model on the labelled data at `data_path`.
pub fn evaluate(
    device: &Device,
    run_dir: &Path,
    data_path: &Path,
    batch_size: usize,
) -> anyhow::Result<(EvalSummary, Vec<WrongExample>)> {
    let best = best_path(run_dir);
    if !best.is_file() {
        return Err(UsageError(format!(
            "--run {}: no best.safetensors (training did not finish an epoch)",
            run_dir.display()
        ))
        .into());
    }
    let model = training::export::load(&best, device)?;
    let classes = model.meta.classes.clone();
    let dataset = data::open(data_path).map_err(|e| UsageError(format!("--data: {e}")))?;
    let (dataset, dropped) = dataset
        .relabel(&classes, false)
        .map_err(|e| UsageError(format!("--data: {e} (the model knows {})", classes.join(", "))))?;
    debug_assert_eq!(dropped, 0);
    let pipeline = Pipeline::eval(&model.meta.preprocess);
    let scored = match (&model.meta.weights, model.meta.backbone_included) {
        // Frozen pretrained backbone: its features may already be in the cache.
        (Some(w), false) => {
            let f = inputs::features(
                &inputs::cache_dir(),
                &dataset,
                FeatureSpec {
                    backbone: model.backbone.as_ref(),
                    model: &model.meta.model,
                    weights_sha256: &w.sha256,
                    input: model.head.config().input,
                    pipeline_name: "eval".into(),
                    pipeline,
                    preprocess: &model.meta.preprocess,
                    views: 1,
                    batch_size,
                    strict: false,
                    seed: 0,
                },
                device,
                "eval",
                &mut |_, _, _| {},
            )?;
            Scored::from_features(&model.head, &f, &dataset, batch_size)?
        }
        _ => {
            let ld = inputs::loader(&dataset, pipeline, batch_size, false, 0, false, device)?;
            Scored::from_loader(model.model(), &ld, &dataset)?
        }
    };
    summarize(&scored, &classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_confusion_and_ranks_confident_mistakes() {
        let classes = vec!["ants".to_string(), "bees".to_string()];
        let s = Scored {
            scores: vec![
                vec![0.9, 0.1],
                vec![0.2, 0.8],
                vec![0.4, 0.6],
                vec![0.05, 0.95],
                vec![0.7, 0.3],
            ],
            labels: vec![0, 1, 0, 0, 1],
            paths: ["a1", "b1", "a2", "a3", "b2"].iter().map(PathBuf::from).collect(),
        };
        let (eval, wrong) = summarize(&s, &classes).unwrap();
        assert_eq!(eval.confusion, vec![vec![1, 2], vec![1, 1]]);
        assert!((eval.accuracy - 0.4).abs() < 1e-12);
        let expected_loss = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln() + 0.05f64.ln() + 0.3f64.ln()) / 5.0;
        assert!((eval.loss.unwrap() - expected_loss).abs() < 1e-6);
        assert!(eval.roc_auc.is_some());
        let order: Vec<&str> = wrong.iter().map(|w| w.path.to_str().unwrap()).collect();
        assert_eq!(order, ["a3", "b2", "a2"]);
        assert_eq!(
            (wrong[0].true_class.as_str(), wrong[0].pred_class.as_str()),
            ("ants", "bees")
        );
        assert!((wrong[0].prob - 0.95).abs() < 1e-6);
    }
}
