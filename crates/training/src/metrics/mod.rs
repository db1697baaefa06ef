//! Classification metrics on host values: accuracy, top-k, confusion matrix, precision/recall/F1, ROC-AUC.

use serde::{Deserialize, Serialize};

pub mod coco;
pub mod segmentation;

/// Index of the largest score in each row.
pub fn argmax_rows(scores: &[Vec<f32>]) -> Vec<usize> {
    scores
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0)
        })
        .collect()
}

/// Fraction of predictions equal to the labels (0 when empty).
pub fn accuracy(predictions: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    predictions.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// Fraction of rows whose label is among the `k` highest scores (ties broken by index).
pub fn top_k_accuracy(scores: &[Vec<f32>], labels: &[usize], k: usize) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let hits = scores
        .iter()
        .zip(labels)
        .filter(|&(row, &l)| {
            let s = row[l];
            let better = row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > s || (v == s && j < l))
                .count();
            better < k
        })
        .count();
    hits as f64 / labels.len() as f64
}

/// Confusion matrix `m[true][predicted]` over `n_classes`.
pub fn confusion_matrix(predictions: &[usize], labels: &[usize], n_classes: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; n_classes]; n_classes];
    for (&p, &l) in predictions.iter().zip(labels) {
        if p < n_classes && l < n_classes {
            m[l][p] += 1;
        }
    }
    m
}

/// ROC-AUC of `scores` for `positives` (rank-based, Mann–Whitney U with tied ranks averaged); `None` when only
/// one class is present.
pub fn roc_auc(scores: &[f32], positives: &[bool]) -> Option<f64> {
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += idx[i..=j].iter().filter(|&&k| positives[k]).count() as f64 * avg_rank;
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Mean negative log-likelihood of the true class over rows of class probabilities (cross-entropy; for a
/// binary task's two columns, BCE), probabilities floored at 1e-12; 0 when empty.
pub fn log_loss(probabilities: &[Vec<f32>], labels: &[usize]) -> f64 {
    let n = labels.len().max(1) as f64;
    probabilities
        .iter()
        .zip(labels)
        .map(|(p, &l)| -(p[l].max(1e-12) as f64).ln())
        .sum::<f64>()
        / n
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub name: String,
    /// TP / (TP + FP), 0 when nothing was predicted as the class.
    pub precision: f64,
    /// TP / (TP + FN), 0 when the class is absent.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Number of true samples of the class.
    pub support: usize,
}

/// Everything about a classifier's predictions on a labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Top-5 accuracy (when there are more than 5 classes).
    pub top5_accuracy: Option<f64>,
    /// Per-class metrics in class order.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean F1.
    pub macro_f1: f64,
    /// Support-weighted mean F1.
    pub weighted_f1: f64,
    /// Confusion matrix `[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// ROC-AUC of class 1's score, for two-class tasks with both classes present.
    pub roc_auc: Option<f64>,
    /// Number of samples.
    pub samples: usize,
}

/// Per-class precision/recall/F1 from a confusion matrix `[true][predicted]`.
pub fn per_class_metrics(confusion: &[Vec<usize>], class_names: &[String]) -> Vec<ClassMetrics> {
    let n = confusion.len();
    (0..n)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = (0..n).map(|r| confusion[r][c]).sum();
            let precision = if predicted == 0 { 0.0 } else { tp / predicted as f64 };
            let recall = if support == 0 { 0.0 } else { tp / support as f64 };
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            let name = class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
            ClassMetrics {
                name,
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect()
}

impl ClassificationReport {
    /// The report for per-class `scores` (N rows of C probabilities or logits) against `labels`.
    pub fn from_scores(scores: &[Vec<f32>], labels: &[usize], class_names: &[String]) -> Self {
        let n_classes = class_names.len().max(scores.first().map(|r| r.len()).unwrap_or(0));
        let preds = argmax_rows(scores);
        let confusion = confusion_matrix(&preds, labels, n_classes);
        let per_class = per_class_metrics(&confusion, class_names);
        let macro_f1 = if per_class.is_empty() {
            0.0
        } else {
            per_class.iter().map(|m| m.f1).sum::<f64>() / per_class.len() as f64
        };
        let total: usize = per_class.iter().map(|m| m.support).sum();
        let weighted_f1 = if total == 0 {
            0.0
        } else {
            per_class.iter().map(|m| m.f1 * m.support as f64).sum::<f64>() / total as f64
        };
        let roc_auc = if n_classes == 2 {
            let s: Vec<f32> = scores.iter().map(|r| r[1]).collect();
            let pos: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
            roc_auc(&s, &pos)
        } else {
            None
        };
        Self {
            accuracy: accuracy(&preds, labels),
            top5_accuracy: (n_classes > 5).then(|| top_k_accuracy(scores, labels, 5)),
            per_class,
            macro_f1,
            weighted_f1,
            confusion,
            roc_auc,
            samples: labels.len(),
        }
    }
}
