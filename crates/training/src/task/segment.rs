//! Semantic segmentation as a task: a backbone's multi-scale maps → a [`SegHead`] → per-pixel logits; targets are
//! N×H×W u32 masks (the ignore index, 255 by default, is skipped by the loss and the metrics); the score is mIoU
//! from one confusion matrix over the whole validation set.

use std::collections::{BTreeMap, HashMap};

use backbones::Backbone;
use candle_core::{DType, Tensor, Var};
use heads::SegHead;
use rand_chacha::ChaCha8Rng;

use super::{dense_state, load_dense_state, EvalSummary, Evaluator, ReportSection, StepLoss, Task};
use crate::error::{Error, Result};
use crate::loss::{segmentation_loss, SegLoss};
use crate::metrics::segmentation::ConfusionMatrix;

/// A backbone and a segmentation head trained per pixel.
#[derive(Clone, Copy)]
pub struct Segment<'a> {
    /// The encoder (frozen or partly trainable).
    pub backbone: &'a dyn Backbone,
    /// The decoder and classifier.
    pub head: &'a SegHead,
    /// Loss terms, ignore index and class weights.
    pub loss: &'a SegLoss,
}

impl Segment<'_> {
    /// Logits N×classes×H×W for images `x`; training mode when `rng` is given.
    pub fn logits(&self, x: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let feats = self
            .backbone
            .forward_multiscale(x, rng.is_some(), &self.head.config().out_indices)?;
        Ok(self.head.forward(&feats, (h, w), rng)?)
    }

    /// Class-index predictions N×H×W (u32) for images `x`.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.logits(x, None)?.argmax(1)?)
    }
}

/// Correct and counted (non-ignored) pixels of `pred` against `y`.
fn pixel_hits(pred: &Tensor, y: &Tensor, ignore: Option<u32>) -> Result<(usize, usize)> {
    let p: Vec<u32> = pred.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
    let t: Vec<u32> = y.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
    if p.len() != t.len() {
        return Err(Error::Config(format!(
            "{} predicted pixels for {} target pixels",
            p.len(),
            t.len()
        )));
    }
    let (mut hit, mut n) = (0, 0);
    for (a, b) in p.iter().zip(&t) {
        if Some(*b) != ignore {
            n += 1;
            hit += usize::from(a == b);
        }
    }
    Ok((hit, n))
}

impl Task for Segment<'_> {
    type Target = Tensor;
    /// The class mask H×W (u32) at the input's size.
    type Prediction = Tensor;

    fn name(&self) -> &'static str {
        "segment"
    }

    fn score_name(&self) -> &'static str {
        "miou"
    }

    fn train_step(&self, x: &Tensor, y: &Tensor, rng: &mut ChaCha8Rng) -> Result<StepLoss> {
        let logits = self.logits(x, Some(rng))?;
        let loss = segmentation_loss(&logits, y, self.loss)?;
        let (correct, count) = pixel_hits(&logits.detach().argmax(1)?, y, self.loss.ignore_index)?;
        Ok(StepLoss {
            loss,
            parts: Vec::new(),
            correct,
            count,
        })
    }

    fn evaluator(&self) -> Box<dyn Evaluator<Tensor> + '_> {
        Box::new(SegEval {
            task: *self,
            matrix: ConfusionMatrix::new(self.head.config().num_classes(), self.loss.ignore_index),
            loss: 0.0,
            samples: 0,
        })
    }

    fn backbone(&self) -> Option<&dyn Backbone> {
        Some(self.backbone)
    }

    fn head_vars(&self) -> Vec<(String, Var)> {
        self.head.vars()
    }

    fn state(&self) -> Result<HashMap<String, Tensor>> {
        dense_state(self.backbone, self.head.store())
    }

    fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        load_dense_state(self.backbone, self.head.store(), state)
    }

    fn predict(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let masks = Segment::predict(self, x)?;
        (0..masks.dim(0)?).map(|i| Ok(masks.get(i)?)).collect()
    }

    fn report_section(&self, summary: &EvalSummary) -> ReportSection {
        ReportSection::per_class(
            "Per-class IoU",
            "IoU",
            "iou",
            &self.head.config().class_names,
            &summary.metrics,
        )
    }
}

struct SegEval<'a> {
    task: Segment<'a>,
    matrix: ConfusionMatrix,
    loss: f64,
    samples: usize,
}

impl Evaluator<Tensor> for SegEval<'_> {
    fn add(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        let logits = self.task.logits(x, None)?.detach();
        let n = x.dim(0)?;
        let loss = segmentation_loss(&logits, y, self.task.loss)?;
        self.loss += loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64 * n as f64;
        self.samples += n;
        self.matrix.update_tensor(&logits.argmax(1)?, y)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<EvalSummary> {
        let m = self.matrix.metrics();
        let mut metrics = BTreeMap::from([
            ("miou".to_string(), m.miou),
            ("pixel_accuracy".to_string(), m.pixel_accuracy),
            ("mean_accuracy".to_string(), m.mean_accuracy),
            ("mean_dice".to_string(), m.mean_dice),
            ("fw_iou".to_string(), m.fw_iou),
        ]);
        for (name, iou) in self.task.head.config().class_names.iter().zip(&m.per_class_iou) {
            if let Some(v) = iou {
                metrics.insert(format!("iou/{name}"), *v);
            }
        }
        Ok(EvalSummary {
            loss: self.loss / self.samples.max(1) as f64,
            accuracy: m.pixel_accuracy,
            score: m.miou,
            metrics,
        })
    }
}
