//! Training for transfer learning: optimizers, schedules, losses, metrics, the fit loop, feature caching and
//! checkpoints. Every random choice draws from a seeded host RNG, so a seed reproduces a run.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod error;
pub mod loss;
pub mod lr_finder;
pub mod metrics;
pub mod optim;
pub mod schedule;
pub mod task;

pub use error::{Error, Result};
pub use loss::{
    bce_with_logits, class_weights_auto, cross_entropy, fcos_loss, giou_loss, log_softmax, segmentation_loss,
    sigmoid_focal_loss, CrossEntropy, FcosLossParts, SegLoss,
};
pub use lr_finder::{lr_find, LrFinderConfig, LrFinderResult};
pub use metrics::coco::{CocoDet, CocoGt, CocoStats};
pub use metrics::segmentation::SegMetrics;
pub use metrics::{ClassMetrics, ClassificationReport};
pub use optim::{
    split_no_decay, Adam, AdamConfig, GroupDecay, OptimState, Optimizer, ParamGroup, ParamRole, Sgd, SgdConfig,
};
pub use schedule::{LrSchedule, Schedule};
pub mod cache;
pub mod checkpoint;
pub mod export;
pub mod finetune;
pub mod fit;

pub use cache::{extract_features, load_or_compute, CacheKey, CacheStatus, CachedFeatures};
pub use checkpoint::{Checkpoint, CheckpointMeta, RngState};
pub use export::{ExportedModel, ModelMeta, WeightsRef};
pub use finetune::{
    discriminative_groups, fine_tune, fine_tune_observed, fit_phase, layer_decay_groups, set_trainable,
    split_model_groups, Batches, FineTuneConfig, FitObserver, Phase, PhaseData, Recipe, Unfreeze,
};
pub use fit::{
    batch_loss, fit, fit_observed, fit_task, BatchProgress, EpochRecord, FitConfig, FitResult, LossConfig, Model,
};
pub use task::{Classify, Detect, EvalSummary, Evaluator, ImageBoxes, ReportSection, Segment, StepLoss, Task};
