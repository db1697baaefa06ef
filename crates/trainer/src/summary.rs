//! The seam with the training library: plain records of epochs and evaluations, and the `metrics.*` writers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use training::{ClassificationReport, EpochRecord};

use data::fsutil::write_atomic;

/// One epoch of training (a row of `metrics.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy in [0, 1].
    pub train_acc: f64,
    /// Validation loss, when there is validation data.
    pub val_loss: Option<f64>,
    /// Validation accuracy in [0, 1].
    pub val_acc: Option<f64>,
    /// Learning rate used in this epoch.
    pub lr: f64,
    /// Wall-clock seconds of the epoch.
    pub seconds: f64,
    /// Segmentation/detection: the validation score that picks the best epoch (mIoU, AP@[.5:.95]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Segmentation/detection: every validation metric (`miou`, `iou/<class>`, `map50`, …) and the training
    /// loss parts (`train/<part>`), as extra `metrics.csv` columns.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

impl EpochRow {
    /// The row of a dense task's record: [`Self::from_record`] plus its score, metrics and loss parts.
    pub fn from_task_record(r: &EpochRecord, has_val: bool) -> Self {
        let mut row = Self::from_record(r, has_val);
        if has_val {
            row.score = r.score;
            row.metrics = r.metrics.clone();
        }
        for (k, v) in &r.loss_parts {
            row.metrics.insert(format!("train/{k}"), *v);
        }
        row
    }

    /// The number that ranks epochs: the task's score, else the validation accuracy.
    pub fn rank(&self) -> Option<f64> {
        self.score.or(self.val_acc)
    }

    /// The row of the library's record (epochs from 1; no validation figures without validation data).
    pub fn from_record(r: &EpochRecord, has_val: bool) -> Self {
        Self {
            epoch: r.epoch + 1,
            train_loss: r.train_loss,
            train_acc: r.train_acc,
            val_loss: has_val.then_some(r.val_loss),
            val_acc: has_val.then_some(r.val_acc),
            lr: r.lr,
            seconds: r.seconds,
            score: None,
            metrics: BTreeMap::new(),
        }
    }
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Of the images predicted as this class, the fraction that are.
    pub precision: f64,
    /// Of the images of this class, the fraction predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Images of this class.
    pub support: u64,
}

/// An evaluation on a labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Mean loss, when known.
    pub loss: Option<f64>,
    /// Class names in index order.
    pub classes: Vec<String>,
    /// `confusion[true][pred]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Metrics per class, in class order.
    pub per_class: Vec<ClassMetrics>,
    /// ROC-AUC of class 1's probability, for two classes (when both are present).
    #[serde(default)]
    pub roc_auc: Option<f64>,
}

impl EvalSummary {
    /// Accuracy and per-class metrics (`training::metrics`) from a square confusion matrix (`confusion[true][pred]`).
    pub fn from_confusion(classes: Vec<String>, confusion: Vec<Vec<u64>>, loss: Option<f64>) -> Self {
        let counts: Vec<Vec<usize>> = confusion
            .iter()
            .map(|r| r.iter().map(|&c| c as usize).collect())
            .collect();
        let total: u64 = confusion.iter().flatten().sum();
        let correct: u64 = (0..confusion.len())
            .map(|i| confusion[i].get(i).copied().unwrap_or(0))
            .sum();
        let per_class = training::metrics::per_class_metrics(&counts, &classes);
        Self {
            accuracy: if total == 0 { 0.0 } else { correct as f64 / total as f64 },
            loss,
            classes,
            confusion,
            per_class: per_class.iter().map(ClassMetrics::from).collect(),
            roc_auc: None,
        }
    }

    /// The CLI's record of the library's report.
    pub fn from_report(classes: Vec<String>, report: &ClassificationReport, loss: Option<f64>) -> Self {
        Self {
            accuracy: report.accuracy,
            loss,
            classes,
            confusion: report
                .confusion
                .iter()
                .map(|r| r.iter().map(|&c| c as u64).collect())
                .collect(),
            per_class: report.per_class.iter().map(ClassMetrics::from).collect(),
            roc_auc: report.roc_auc,
        }
    }
}

impl From<&training::ClassMetrics> for ClassMetrics {
    fn from(m: &training::ClassMetrics) -> Self {
        Self {
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
            support: m.support as u64,
        }
    }
}

/// A misclassified image, for the report's gallery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrongExample {
    /// Image file.
    pub path: PathBuf,
    /// True class name.
    pub true_class: String,
    /// Predicted class name.
    pub pred_class: String,
    /// Probability of the predicted class.
    pub prob: f32,
}

/// What a finished training run hands back to the CLI.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Every epoch run.
    pub history: Vec<EpochRow>,
    /// Evaluation of the kept (best) model on the validation set, if there is one.
    pub eval: Option<EvalSummary>,
    /// Most confidently wrong validation images, most confident first.
    pub wrong: Vec<WrongExample>,
    /// Segmentation/detection: what the task adds to the run folder and the report.
    pub dense: Option<DenseOutcome>,
}

/// What a segmentation or detection run adds to the run folder and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseOutcome {
    /// `segment` or `detect`.
    pub task: crate::spec::TaskKind,
    /// Name of the score that picked the best epoch (`miou`, `map`).
    pub score_name: String,
    /// Validation metrics of the kept model, by name (`miou`, `iou/<class>`, `map50`, `ap/<class>`, …).
    pub metrics: BTreeMap<String, f64>,
    /// The task's report table (per-class IoU or AP), from `training::Task::report_section`.
    pub section: training::ReportSection,
    /// Figures written into the run folder and shown in the report: a relative file name (`val_samples.png`,
    /// `pr_curves/ant.png`) and its PNG bytes.
    pub figures: Vec<(String, Vec<u8>)>,
    /// Worst validation images by the task's per-image score (segmentation: IoU), worst first.
    pub worst: Vec<(PathBuf, f64)>,
}

/// The epoch with the best validation score ([`EpochRow::rank`]: accuracy, mIoU or mAP; earliest on ties), or the
/// last epoch without validation.
pub fn best_epoch(history: &[EpochRow]) -> Option<&EpochRow> {
    let with_val = history.iter().filter(|r| r.rank().is_some());
    let best = with_val.fold(None::<&EpochRow>, |best, r| match best {
        Some(b) if b.rank() >= r.rank() => Some(b),
        _ => Some(r),
    });
    best.or(history.last())
}

/// `metrics.csv`: a header and one row per epoch (empty cells where there is no validation); dense tasks add a
/// column per metric (the union of the rows' [`EpochRow::metrics`] keys, sorted).
pub fn metrics_csv(history: &[EpochRow]) -> String {
    let extra: std::collections::BTreeSet<&String> = history.iter().flat_map(|r| r.metrics.keys()).collect();
    let mut out = String::from("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds");
    for k in &extra {
        out.push(',');
        out.push_str(&csv_field(k));
    }
    out.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for r in history {
        out.push_str(&format!(
            "{},{:.6},{:.6},{},{},{:e},{:.3}",
            r.epoch,
            r.train_loss,
            r.train_acc,
            opt(r.val_loss),
            opt(r.val_acc),
            r.lr,
            r.seconds
        ));
        for k in &extra {
            out.push(',');
            out.push_str(&opt(r.metrics.get(*k).copied()));
        }
        out.push('\n');
    }
    out
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `metrics.json`: best and final figures, classes, per-class metrics and the history; dense tasks add their
/// task, score name and the kept model's validation metrics.
pub fn metrics_json(
    history: &[EpochRow],
    eval: Option<&EvalSummary>,
    dense: Option<&DenseOutcome>,
) -> serde_json::Value {
    let best = best_epoch(history);
    if let Some(d) = dense {
        return serde_json::json!({
            "task": d.task.to_string(),
            "score_name": d.score_name,
            "score": best.and_then(|b| b.score),
            "best_epoch": best.map(|b| b.epoch),
            "best": best,
            "final": history.last(),
            "metrics": d.metrics,
            "history": history,
        });
    }
    let classes = eval.map(|e| e.classes.clone()).unwrap_or_default();
    serde_json::json!({
        "val_accuracy": best.and_then(|b| b.val_acc),
        "best_epoch": best.map(|b| b.epoch),
        "best": best,
        "final": history.last(),
        "classes": classes,
        "eval": eval,
        "history": history,
    })
}

/// Write `metrics.csv` into the run folder (atomically; called after every epoch).
pub fn write_metrics_csv(run_dir: &Path, history: &[EpochRow]) -> data::Result<()> {
    write_atomic(&run_dir.join("metrics.csv"), metrics_csv(history).as_bytes())
}

/// Write `metrics.json` into the run folder (atomically).
pub fn write_metrics_json(
    run_dir: &Path,
    history: &[EpochRow],
    eval: Option<&EvalSummary>,
    dense: Option<&DenseOutcome>,
) -> data::Result<()> {
    // Invariant: the value holds only finite-or-null numbers and strings.
    let text = serde_json::to_string_pretty(&metrics_json(history, eval, dense)).expect("metrics serialise to JSON");
    write_atomic(&run_dir.join("metrics.json"), text.as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plausible history for tests of the writers, plots and report.
    pub fn history(n: usize, with_val: bool) -> Vec<EpochRow> {
        (1..=n)
            .map(|e| {
                let t = e as f64;
                EpochRow {
                    epoch: e,
                    train_loss: 1.0 / t,
                    train_acc: 1.0 - 0.5 / t,
                    val_loss: with_val.then(|| 1.2 / t + if e == 3 { -0.3 } else { 0.0 }),
                    val_acc: with_val.then(|| if e == 3 { 0.95 } else { 0.9 - 0.4 / t }),
                    lr: 0.001 * 0.5f64.powi(e as i32),
                    seconds: 2.5,
                    score: None,
                    metrics: BTreeMap::new(),
                }
            })
            .collect()
    }

    #[test]
    fn per_class_metrics_from_confusion() {
        // 10 ants: 8 right, 2 called bees; 5 bees: 4 right, 1 called ant.
        let s = EvalSummary::from_confusion(vec!["ants".into(), "bees".into()], vec![vec![8, 2], vec![1, 4]], None);
        assert!((s.accuracy - 12.0 / 15.0).abs() < 1e-12);
        let a = s.per_class[0];
        assert!((a.precision - 8.0 / 9.0).abs() < 1e-12 && (a.recall - 0.8).abs() < 1e-12);
        assert!((a.f1 - 2.0 * (8.0 / 9.0) * 0.8 / (8.0 / 9.0 + 0.8)).abs() < 1e-12);
        assert_eq!((a.support, s.per_class[1].support), (10, 5));
        // A class never predicted and never present: zeros, not NaN.
        let z = EvalSummary::from_confusion(vec!["a".into(), "b".into()], vec![vec![3, 0], vec![0, 0]], None);
        assert_eq!(z.per_class[1].f1, 0.0);
    }

    #[test]
    fn best_epoch_is_highest_val_acc_or_last() {
        let h = history(5, true);
        assert_eq!(best_epoch(&h).unwrap().epoch, 3);
        assert_eq!(best_epoch(&history(4, false)).unwrap().epoch, 4);
        assert!(best_epoch(&[]).is_none());
    }

    #[test]
    fn csv_has_one_row_per_epoch_and_blank_missing_cells() {
        let csv = metrics_csv(&history(3, true));
        let mut rdr = csv::Reader::from_reader(csv.as_bytes());
        let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(
            header,
            [
                "epoch",
                "train_loss",
                "train_acc",
                "val_loss",
                "val_acc",
                "lr",
                "seconds"
            ]
        );
        let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2][0].parse::<usize>().unwrap(), 3);
        assert!((rows[1][5].parse::<f64>().unwrap() - 0.00025).abs() < 1e-12);
        let no_val = metrics_csv(&history(1, false));
        assert!(no_val.lines().nth(1).unwrap().contains(",,"), "{no_val}");
    }

    #[test]
    fn dense_rows_rank_by_score_and_add_metric_columns() {
        let mut h = history(3, true);
        for (r, miou) in h.iter_mut().zip([0.2, 0.6, 0.4]) {
            r.score = Some(miou);
            r.metrics = BTreeMap::from([("miou".to_string(), miou), ("iou/a,b".to_string(), miou / 2.0)]);
        }
        // val_acc peaks at epoch 3, the score at epoch 2: the score wins.
        assert_eq!(best_epoch(&h).unwrap().epoch, 2);
        let csv = metrics_csv(&h);
        let mut rdr = csv::Reader::from_reader(csv.as_bytes());
        let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(&header[7..], ["iou/a,b", "miou"]);
        let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows[1][8].parse::<f64>().unwrap(), 0.6);
        assert_eq!(rows[1][7].parse::<f64>().unwrap(), 0.3);
    }

    #[test]
    fn json_reports_best_epoch_and_classes() {
        let dir = tempfile::tempdir().unwrap();
        let eval = EvalSummary::from_confusion(vec!["a".into(), "b".into()], vec![vec![5, 0], vec![1, 4]], Some(0.3));
        write_metrics_json(dir.path(), &history(4, true), Some(&eval), None).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap()).unwrap();
        assert_eq!(v["best_epoch"], 3);
        assert_eq!(v["val_accuracy"], 0.95);
        assert_eq!(v["classes"], serde_json::json!(["a", "b"]));
        assert_eq!(v["history"].as_array().unwrap().len(), 4);
        assert_eq!(v["final"]["epoch"], 4);
        assert_eq!(v["eval"]["confusion"][1][0], 1);
    }
}
