//! The task seam: what the shared fit loop needs from a task (classification, segmentation, detection, …).
//!
//! A task owns its target type, its loss, its metrics and the number that picks the best epoch. The fit loop
//! ([`crate::fit::fit_task`]), checkpoints, resume, progress and early stopping are shared by every task.

use std::collections::{BTreeMap, HashMap};

use backbones::Backbone;
use candle_core::{DType, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::fit::{batch_loss, LossConfig, Model};

pub mod detect;
pub mod segment;

pub use detect::{Detect, ImageBoxes};
pub use segment::Segment;

/// The backbone's part of a task's state: its trainable parameters and every buffer, under `backbone/`.
pub(crate) fn backbone_state(backbone: Option<&dyn Backbone>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    if let Some(b) = backbone {
        let store = b.store();
        for p in store.params().into_iter().filter(|p| p.is_trainable()) {
            out.insert(format!("backbone/{}", p.name()), p.tensor().detach().copy()?);
        }
        for buf in store.buffers() {
            out.insert(format!("backbone/{}", buf.name()), buf.tensor().copy()?);
        }
    }
    Ok(out)
}

/// A dense task's state: the backbone's part ([`backbone_state`]) and every tensor of the head's store under `head/`.
pub(crate) fn dense_state(backbone: &dyn Backbone, head: &backbones::ParamStore) -> Result<HashMap<String, Tensor>> {
    let mut out = backbone_state(Some(backbone))?;
    for (k, v) in head.state_dict() {
        out.insert(format!("head/{k}"), v.detach().copy()?);
    }
    Ok(out)
}

/// Restore what [`dense_state`] saved: the head's store strictly (every tensor present), then the backbone.
pub(crate) fn load_dense_state(
    backbone: &dyn Backbone,
    head: &backbones::ParamStore,
    state: &HashMap<String, Tensor>,
) -> Result<()> {
    let sub: HashMap<String, Tensor> = state
        .iter()
        .filter_map(|(k, t)| k.strip_prefix("head/").map(|n| (n.to_string(), t.clone())))
        .map(|(k, t)| t.copy().map(|t| (k, t)))
        .collect::<candle_core::Result<_>>()?;
    head.load_state_dict(&sub, true)?;
    load_backbone_state(Some(backbone), state)
}

/// Restore the `backbone/` tensors of `state` (a copy, so later updates do not alias them).
pub(crate) fn load_backbone_state(backbone: Option<&dyn Backbone>, state: &HashMap<String, Tensor>) -> Result<()> {
    if let Some(b) = backbone {
        let sub: HashMap<String, Tensor> = state
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("backbone/").map(|n| (n.to_string(), t.clone())))
            .map(|(k, t)| t.copy().map(|t| (k, t)))
            .collect::<candle_core::Result<_>>()?;
        b.store().load_state_dict(&sub, false)?;
    }
    Ok(())
}

/// The loss of one training batch and the figures the progress display shows.
#[derive(Debug, Clone)]
pub struct StepLoss {
    /// The scalar loss, still attached to the graph (the loop calls `backward` on it).
    pub loss: Tensor,
    /// Named parts of the loss (e.g. `box`, `cls`, `centerness`), as plain numbers; empty for single-part losses.
    pub parts: Vec<(String, f64)>,
    /// Correct predictions in the batch, for a running training accuracy (0 with `count` 0 when not meaningful).
    pub correct: usize,
    /// Predictions counted for `correct`.
    pub count: usize,
}

/// The result of a validation pass: its mean loss, the score that picks the best epoch and every metric by name.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSummary {
    /// Mean validation loss per sample.
    pub loss: f64,
    /// Accuracy (classification), pixel accuracy (segmentation) or the task's nearest equivalent.
    pub accuracy: f64,
    /// The number that picks the best epoch (higher is better): accuracy, mIoU, AP@[.5:.95].
    pub score: f64,
    /// Every metric the task computed (`accuracy`, `miou`, `ap50`, …).
    pub metrics: BTreeMap<String, f64>,
}

/// Accumulates one validation pass batch by batch (metrics are computed over the whole set, not averaged per batch).
pub trait Evaluator<T> {
    /// Forward `x` in eval mode and accumulate the batch against its targets.
    fn add(&mut self, x: &Tensor, y: &T) -> Result<()>;
    /// The pass's summary.
    fn finish(self: Box<Self>) -> Result<EvalSummary>;
}

/// A table for a run's report, owned by the task (per-class IoU, per-class AP, …); the CLI renders it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportSection {
    /// Heading of the section.
    pub title: String,
    /// Column headings.
    pub columns: Vec<String>,
    /// Rows of cells, already formatted.
    pub rows: Vec<Vec<String>>,
}

impl ReportSection {
    /// A `class | <metric>` table of the `<prefix>/<class>` entries of `metrics`, in `classes` order; classes
    /// without an entry (absent from truth and prediction) show `-`.
    pub fn per_class(
        title: &str,
        metric: &str,
        prefix: &str,
        classes: &[String],
        metrics: &BTreeMap<String, f64>,
    ) -> Self {
        Self {
            title: title.to_string(),
            columns: vec!["class".into(), metric.into()],
            rows: classes
                .iter()
                .map(|c| {
                    let v = metrics.get(&format!("{prefix}/{c}"));
                    vec![c.clone(), v.map_or("-".into(), |v| format!("{v:.4}"))]
                })
                .collect(),
        }
    }
}

/// A model trained by the shared fit loop for one task.
pub trait Task {
    /// The targets of a batch (class ids N, masks N×H×W, boxes per image, …).
    type Target;

    /// What the model predicts for one image (class probabilities, a class mask, boxes).
    type Prediction;

    /// The task's name (`classify`, `segment`, `detect`).
    fn name(&self) -> &'static str;

    /// The name of the metric in [`EvalSummary::score`] (`accuracy`, `miou`, `map`).
    fn score_name(&self) -> &'static str;

    /// Forward `x` in training mode (dropout and batch statistics drawn from `rng`) and the loss against `y`.
    fn train_step(&self, x: &Tensor, y: &Self::Target, rng: &mut ChaCha8Rng) -> Result<StepLoss>;

    /// A fresh evaluator for one validation pass.
    fn evaluator(&self) -> Box<dyn Evaluator<Self::Target> + '_>;

    /// The backbone, when the task trains through one (absent when batches already hold features).
    fn backbone(&self) -> Option<&dyn Backbone>;

    /// The head's trainable variables by name.
    fn head_vars(&self) -> Vec<(String, Var)>;

    /// A copy of every trainable tensor and every backbone buffer, by name (`head/…`, `backbone/…`).
    fn state(&self) -> Result<HashMap<String, Tensor>>;

    /// Restore tensors saved by [`Task::state`].
    fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()>;

    /// Predictions for images `x` (eval mode), one per image in batch order.
    fn predict(&self, x: &Tensor) -> Result<Vec<Self::Prediction>>;

    /// The task's section of a run's report from a validation summary.
    fn report_section(&self, summary: &EvalSummary) -> ReportSection;
}

/// Image classification (binary, multi-class, multi-label) with a [`heads::Head`]: targets are u32 class ids (N)
/// or multi-hot rows (N×C); the score is accuracy.
#[derive(Clone)]
pub struct Classify<'a> {
    /// Backbone (optional) and head.
    pub model: Model<'a>,
    /// Loss options.
    pub loss: LossConfig,
}

impl Task for Classify<'_> {
    type Target = Tensor;
    /// Class probabilities (softmax; sigmoid per class for binary and multi-label heads).
    type Prediction = Vec<f32>;

    fn name(&self) -> &'static str {
        "classify"
    }

    fn score_name(&self) -> &'static str {
        "accuracy"
    }

    fn train_step(&self, x: &Tensor, y: &Tensor, rng: &mut ChaCha8Rng) -> Result<StepLoss> {
        let logits = self.model.forward(x, Some(rng))?;
        let (loss, correct, count) = batch_loss(self.model.head.config().task, &logits, y, &self.loss)?;
        Ok(StepLoss {
            loss,
            parts: Vec::new(),
            correct,
            count,
        })
    }

    fn evaluator(&self) -> Box<dyn Evaluator<Tensor> + '_> {
        Box::new(ClassifyEval {
            task: self,
            loss: 0.0,
            samples: 0,
            correct: 0,
            count: 0,
        })
    }

    fn backbone(&self) -> Option<&dyn Backbone> {
        self.model.backbone
    }

    fn head_vars(&self) -> Vec<(String, Var)> {
        self.model.head.vars()
    }

    fn state(&self) -> Result<HashMap<String, Tensor>> {
        self.model.state()
    }

    fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.model.load_state(state)
    }

    fn predict(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        let features = match self.model.backbone {
            Some(b) => crate::export::head_input(b, self.model.head, x)?,
            None => x.clone(),
        };
        let probs = self.model.head.predict_proba(&features)?;
        Ok(probs
            .to_dtype(DType::F32)?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec2()?)
    }

    fn report_section(&self, summary: &EvalSummary) -> ReportSection {
        ReportSection {
            title: "Validation".into(),
            columns: vec!["metric".into(), "value".into()],
            rows: summary
                .metrics
                .iter()
                .map(|(k, v)| vec![k.clone(), format!("{v:.4}")])
                .collect(),
        }
    }
}

struct ClassifyEval<'a, 'm> {
    task: &'a Classify<'m>,
    loss: f64,
    samples: usize,
    correct: usize,
    count: usize,
}

impl Evaluator<Tensor> for ClassifyEval<'_, '_> {
    fn add(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        let logits = self.task.model.forward(x, None)?.detach();
        let (loss, c, k) = batch_loss(self.task.model.head.config().task, &logits, y, &self.task.loss)?;
        let n = x.dim(0)?;
        self.loss += loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64 * n as f64;
        self.samples += n;
        self.correct += c;
        self.count += k;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<EvalSummary> {
        let accuracy = self.correct as f64 / self.count.max(1) as f64;
        Ok(EvalSummary {
            loss: self.loss / self.samples.max(1) as f64,
            accuracy,
            score: accuracy,
            metrics: BTreeMap::from([("accuracy".to_string(), accuracy)]),
        })
    }
}
