//! Semantic segmentation metrics as mmsegmentation's `IoUMetric` defines them: one confusion matrix accumulated over
//! the whole validation set, then per-class IoU, Dice and accuracy with classes absent from both truth and prediction
//! left out of the means (mmseg's `nanmean`).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The label value that marks "not annotated" pixels in most segmentation datasets (VOC, ADE20K, Cityscapes).
pub const DEFAULT_IGNORE_INDEX: u32 = 255;

/// A confusion matrix of pixel counts, `[truth][prediction]`, accumulated over any number of images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    num_classes: usize,
    ignore_index: Option<u32>,
    counts: Vec<u64>,
    ignored: u64,
}

/// Everything [`ConfusionMatrix::metrics`] derives from the accumulated counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegMetrics {
    /// Mean IoU over the classes whose IoU is defined (0 when none is).
    pub miou: f64,
    /// IoU_c = TP/(TP+FP+FN); `None` when the class is absent from both truth and prediction.
    pub per_class_iou: Vec<Option<f64>>,
    /// Correct pixels / counted (non-ignored) pixels (0 when no pixel was counted).
    pub pixel_accuracy: f64,
    /// Mean of the defined per-class accuracies (0 when none is).
    pub mean_accuracy: f64,
    /// Accuracy (recall) of class c: TP/(TP+FN); `None` when the class is absent from the truth.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// Precision of class c: TP/(TP+FP); `None` when the class was never predicted.
    pub per_class_precision: Vec<Option<f64>>,
    /// Dice (F1) of class c: 2TP/(2TP+FP+FN); `None` when the class is absent from both truth and prediction.
    pub per_class_dice: Vec<Option<f64>>,
    /// Mean of the defined per-class Dice scores (0 when none is).
    pub mean_dice: f64,
    /// Frequency-weighted IoU: Σ_c (truth pixels of c / counted pixels) · IoU_c over the defined classes.
    pub fw_iou: f64,
    /// Truth pixels per class (TP+FN).
    pub support: Vec<u64>,
    /// Pixels counted (truth not the ignore index).
    pub pixels: u64,
    /// Pixels skipped because their truth is the ignore index.
    pub ignored_pixels: u64,
}

impl ConfusionMatrix {
    /// An empty matrix over `num_classes` classes; pixels whose truth equals `ignore_index` are skipped
    /// (pass `Some(DEFAULT_IGNORE_INDEX)` for the usual 255).
    pub fn new(num_classes: usize, ignore_index: Option<u32>) -> Self {
        Self {
            num_classes,
            ignore_index,
            counts: vec![0; num_classes * num_classes],
            ignored: 0,
        }
    }

    /// An empty matrix that skips pixels labelled [`DEFAULT_IGNORE_INDEX`] (255).
    pub fn with_default_ignore(num_classes: usize) -> Self {
        Self::new(num_classes, Some(DEFAULT_IGNORE_INDEX))
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The truth value that is skipped, if any.
    pub fn ignore_index(&self) -> Option<u32> {
        self.ignore_index
    }

    /// Adds one image (or any set of pixels): `pred` and `truth` hold one class index per pixel, in the same order.
    /// Pixels whose truth is the ignore index are skipped; any other value ≥ `num_classes` (in either) is an error,
    /// and then nothing of this call is counted.
    pub fn update(&mut self, pred: &[u32], truth: &[u32]) -> Result<()> {
        if pred.len() != truth.len() {
            return Err(Error::Config(format!(
                "segmentation metrics: prediction has {} pixels but the truth has {}",
                pred.len(),
                truth.len()
            )));
        }
        let n = self.num_classes;
        let mut local = vec![0u64; n * n];
        let mut ignored = 0u64;
        for (i, (&p, &t)) in pred.iter().zip(truth).enumerate() {
            if Some(t) == self.ignore_index {
                ignored += 1;
                continue;
            }
            if t as usize >= n {
                return Err(Error::Config(format!(
                    "segmentation metrics: truth value {t} at pixel {i} is not a class (num_classes {n}, ignore index {})",
                    self.ignore_label()
                )));
            }
            if p as usize >= n {
                return Err(Error::Config(format!(
                    "segmentation metrics: predicted value {p} at pixel {i} is not a class (num_classes {n})"
                )));
            }
            local[t as usize * n + p as usize] += 1;
        }
        for (c, l) in self.counts.iter_mut().zip(local) {
            *c += l;
        }
        self.ignored += ignored;
        Ok(())
    }

    /// Adds a batch of N×H×W class-index tensors (u32 or u8, same shape; any device).
    pub fn update_tensor(&mut self, pred: &Tensor, truth: &Tensor) -> Result<()> {
        let (p, t) = tensor_pair(pred, truth)?;
        self.update(&p, &t)
    }

    /// Adds the counts of `other` (e.g. from another worker); both must have the same classes and ignore index.
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<()> {
        if other.num_classes != self.num_classes || other.ignore_index != self.ignore_index {
            return Err(Error::Config(format!(
                "segmentation metrics: cannot merge a {}-class matrix (ignore {}) into a {}-class one (ignore {})",
                other.num_classes,
                other.ignore_label(),
                self.num_classes,
                self.ignore_label()
            )));
        }
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.ignored += other.ignored;
        Ok(())
    }

    /// The counts, row-major `num_classes × num_classes`: index `truth * num_classes + pred`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Pixels of true class `truth` predicted as `pred`.
    pub fn count(&self, truth: usize, pred: usize) -> u64 {
        self.counts[truth * self.num_classes + pred]
    }

    /// The counts as rows `[truth][pred]`.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.num_classes.max(1))
            .take(self.num_classes)
            .map(|r| r.to_vec())
            .collect()
    }

    /// Pixels counted so far (truth not the ignore index).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Pixels skipped so far because their truth was the ignore index.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// IoU, Dice, accuracies and their means from the accumulated counts.
    pub fn metrics(&self) -> SegMetrics {
        let n = self.num_classes;
        let total = self.total();
        let mut tp = vec![0u64; n];
        let mut support = vec![0u64; n];
        let mut predicted = vec![0u64; n];
        for (t, row) in self.counts.chunks(n.max(1)).take(n).enumerate() {
            tp[t] = row[t];
            support[t] = row.iter().sum();
            for (col, &v) in predicted.iter_mut().zip(row) {
                *col += v;
            }
        }
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        let per_class_iou: Vec<Option<f64>> = (0..n)
            .map(|c| ratio(tp[c], support[c] + predicted[c] - tp[c]))
            .collect();
        let per_class_dice: Vec<Option<f64>> = (0..n).map(|c| ratio(2 * tp[c], support[c] + predicted[c])).collect();
        let per_class_accuracy: Vec<Option<f64>> = (0..n).map(|c| ratio(tp[c], support[c])).collect();
        let per_class_precision: Vec<Option<f64>> = (0..n).map(|c| ratio(tp[c], predicted[c])).collect();
        let fw_iou = if total == 0 {
            0.0
        } else {
            per_class_iou
                .iter()
                .zip(&support)
                .filter_map(|(iou, &s)| iou.map(|v| v * s as f64 / total as f64))
                .sum()
        };
        SegMetrics {
            miou: nanmean(&per_class_iou),
            pixel_accuracy: ratio(tp.iter().sum(), total).unwrap_or(0.0),
            mean_accuracy: nanmean(&per_class_accuracy),
            mean_dice: nanmean(&per_class_dice),
            per_class_iou,
            per_class_accuracy,
            per_class_precision,
            per_class_dice,
            fw_iou,
            support,
            pixels: total,
            ignored_pixels: self.ignored,
        }
    }

    fn ignore_label(&self) -> String {
        self.ignore_index.map_or_else(|| "none".to_string(), |v| v.to_string())
    }
}

/// Mean of the defined values; 0 when none is defined.
fn nanmean(values: &[Option<f64>]) -> f64 {
    let defined: Vec<f64> = values.iter().flatten().copied().collect();
    if defined.is_empty() {
        0.0
    } else {
        defined.iter().sum::<f64>() / defined.len() as f64
    }
}

/// Mean IoU of one image, over the classes present in its truth or its prediction; `None` when every pixel is
/// ignored. For ranking the worst images of a validation set.
pub fn image_miou(pred: &[u32], truth: &[u32], num_classes: usize, ignore_index: Option<u32>) -> Result<Option<f64>> {
    let mut cm = ConfusionMatrix::new(num_classes, ignore_index);
    cm.update(pred, truth)?;
    Ok((cm.total() > 0).then(|| cm.metrics().miou))
}

/// [`image_miou`] of each image of a batch of N×H×W class-index tensors (u32 or u8, same shape).
pub fn image_mious_tensor(
    pred: &Tensor,
    truth: &Tensor,
    num_classes: usize,
    ignore_index: Option<u32>,
) -> Result<Vec<Option<f64>>> {
    if pred.rank() != 3 {
        return Err(Error::Config(format!(
            "segmentation metrics: expected N×H×W class maps, got shape {:?}",
            pred.dims()
        )));
    }
    let (p, t) = tensor_pair(pred, truth)?;
    let n = pred.dim(0)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let per = p.len() / n;
    if per == 0 {
        return Ok(vec![None; n]);
    }
    p.chunks(per)
        .zip(t.chunks(per))
        .map(|(p, t)| image_miou(p, t, num_classes, ignore_index))
        .collect()
}

/// Both tensors flattened to host u32 vectors, after checking shapes and dtypes.
fn tensor_pair(pred: &Tensor, truth: &Tensor) -> Result<(Vec<u32>, Vec<u32>)> {
    if pred.dims() != truth.dims() {
        return Err(Error::Config(format!(
            "segmentation metrics: prediction shape {:?} differs from truth shape {:?}",
            pred.dims(),
            truth.dims()
        )));
    }
    Ok((host_u32(pred, "prediction")?, host_u32(truth, "truth")?))
}

fn host_u32(t: &Tensor, what: &str) -> Result<Vec<u32>> {
    let flat = t.flatten_all()?;
    match t.dtype() {
        DType::U32 => Ok(flat.to_vec1::<u32>()?),
        DType::U8 => Ok(flat.to_vec1::<u8>()?.into_iter().map(u32::from).collect()),
        other => Err(Error::Config(format!(
            "segmentation metrics: {what} must hold u32 or u8 class indices, got {other:?}"
        ))),
    }
}
