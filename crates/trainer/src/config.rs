//! The fully resolved training configuration and how it is assembled: defaults < recipe < `--config` file < flags.

use std::path::{Path, PathBuf};

use data::text::one_line;
use serde::{Deserialize, Serialize};

use crate::error::UsageError;
use crate::spec::{
    Augment, ClassWeights, DeviceSpec, HeadSpec, Mode, OptimizerKind, Pooling, Recipe, SchedulerSpec, SegLossSpec,
    TaskKind, Unfreeze,
};

/// Every setting of `trainer train`; the TOML keys are the flag names with `_` for `-`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Recipe the values started from.
    pub recipe: Option<Recipe>,
    /// What the run learns: classify, segment or detect.
    pub task: TaskKind,
    /// Training data: an ImageFolder directory or a CSV file.
    pub data: Option<PathBuf>,
    /// Validation data (ImageFolder or CSV).
    pub val: Option<PathBuf>,
    /// Fraction of `data` held out for validation when `val` is not given.
    pub val_split: Option<f32>,
    /// Backbone name from the registry.
    pub model: String,
    /// Local pretrained weights (safetensors) instead of the Hub download.
    pub weights: Option<PathBuf>,
    /// Feature extraction or fine-tuning.
    pub mode: Mode,
    /// Stages unfrozen in fine-tune mode (default: all).
    pub unfreeze: Option<Unfreeze>,
    /// Fine-tune mode: of `epochs`, how many train only the head (on cached features) before unfreezing
    /// (fastai's `fine_tune`); 0 trains in one phase.
    pub freeze_epochs: usize,
    /// fastai's `train_bn`: norm layers train in frozen stages too, BatchNorm with batch statistics.
    pub train_bn: bool,
    /// Fine-tune mode: layer-wise learning-rate decay in (0, 1] instead of discriminative rates.
    pub layer_decay: Option<f64>,
    /// Head on the features.
    pub head: HeadSpec,
    /// Average-pool or flatten the feature map.
    pub pool: Pooling,
    /// Two classes as one sigmoid output with binary cross-entropy.
    pub binary: bool,
    /// Dropout before each head layer.
    pub dropout: f32,
    /// Training epochs.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// (Peak) learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub scheduler: SchedulerSpec,
    /// Augmentation preset.
    pub augment: Augment,
    /// Augmented views per image per epoch.
    pub aug_views: usize,
    /// Label smoothing factor.
    pub label_smoothing: f32,
    /// Per-class loss weights.
    pub class_weights: ClassWeights,
    /// Stop after this many epochs without validation improvement.
    pub patience: Option<usize>,
    /// Fail on unreadable or unexpected files instead of skipping them.
    pub strict: bool,
    /// Drop validation images whose class is absent from training.
    pub drop_unknown_val_classes: bool,
    /// Run folder, used as is.
    pub out: Option<PathBuf>,
    /// Parent of auto-named run folders.
    pub project: PathBuf,
    /// Base name of auto-named run folders (`train`, `train2`, ...).
    pub name: String,
    /// Reuse an existing run folder.
    pub exist_ok: bool,
    /// Continue the run in this folder.
    pub resume: Option<PathBuf>,
    /// Random seed.
    pub seed: u64,
    /// Compute device.
    pub device: DeviceSpec,
    /// Segmentation/detection: square input size in pixels (training crops and evaluation's letterbox/pad);
    /// absent: the task's default.
    pub imgsz: Option<usize>,
    /// Segmentation: loss terms.
    pub loss: SegLossSpec,
    /// Segmentation/detection: class names in index order (instead of `classes.txt` / `data.yaml`).
    pub classes: Option<Vec<String>>,
    /// Segmentation: mask value map, e.g. `1=pet,2=background,3=ignore`.
    pub value_map: Option<String>,
    /// Detection: confidence threshold of predictions (validation scores every box, as COCO does).
    pub conf: f32,
    /// Detection: IoU threshold of class-wise NMS.
    pub iou: f32,
    /// Detection: most boxes kept per image.
    pub max_det: usize,
    /// Detection: FPN levels, 3 (P3–P5) or 5 (P3–P7 as FCOS).
    pub levels: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            recipe: None,
            data: None,
            val: None,
            val_split: None,
            model: "resnet18".into(),
            weights: None,
            mode: Mode::FeatureExtract,
            unfreeze: None,
            freeze_epochs: 1,
            train_bn: false,
            layer_decay: None,
            head: HeadSpec::Linear,
            pool: Pooling::Avg,
            binary: false,
            dropout: 0.0,
            epochs: 10,
            batch_size: 32,
            optimizer: OptimizerKind::AdamW,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            scheduler: SchedulerSpec::Cosine { warmup: 0 },
            augment: Augment::None,
            aug_views: 1,
            label_smoothing: 0.0,
            class_weights: ClassWeights::None,
            patience: None,
            strict: false,
            drop_unknown_val_classes: false,
            out: None,
            project: PathBuf::from("runs"),
            name: "train".into(),
            exist_ok: false,
            resume: None,
            seed: 42,
            device: DeviceSpec::Auto,
            task: TaskKind::Classify,
            imgsz: None,
            loss: SegLossSpec::Ce,
            classes: None,
            value_map: None,
            conf: 0.25,
            iou: 0.6,
            max_det: 100,
            levels: 3,
        }
    }
}

/// The values a recipe sets (everything else keeps its default).
pub fn recipe_config(recipe: Recipe) -> TrainConfig {
    let base = TrainConfig {
        recipe: Some(recipe),
        ..TrainConfig::default()
    };
    match recipe {
        // Keras blog "Building powerful image classification models using very little data": VGG16 conv trunk,
        // Flatten, Dense(256/128)-ReLU-Dropout(0.5), Dense(1, sigmoid). Keras used RMSprop; we use Adam at 1e-4,
        // which behaves alike on this head and is what our optimiser set offers.
        Recipe::KerasVgg16Binary => TrainConfig {
            model: "vgg16".into(),
            mode: Mode::FeatureExtract,
            head: HeadSpec::Mlp(vec![128]),
            pool: Pooling::Flatten,
            binary: true,
            dropout: 0.5,
            augment: Augment::Keras,
            optimizer: OptimizerKind::Adam,
            lr: 1e-4,
            epochs: 20,
            batch_size: 32,
            ..base
        },
        // PyTorch "Transfer Learning for Computer Vision" tutorial, fine-tuning the whole ResNet18.
        Recipe::TorchvisionResnet18 => TrainConfig {
            model: "resnet18".into(),
            mode: Mode::FineTune,
            unfreeze: Some(Unfreeze::All),
            freeze_epochs: 0,
            train_bn: true,
            head: HeadSpec::Linear,
            optimizer: OptimizerKind::Sgd,
            lr: 0.001,
            momentum: 0.9,
            scheduler: SchedulerSpec::Step { step: 7, gamma: 0.1 },
            epochs: 25,
            batch_size: 4,
            augment: Augment::Torchvision,
            ..base
        },
    }
}

/// Keys of which at most one may be set; a higher layer setting one clears the other from lower layers.
const EXCLUSIVE: &[(&str, &str)] = &[("val", "val_split")];

/// A TOML table of settings (a layer of the configuration).
pub type Layer = toml::Table;

/// The keys of `cfg` whose values differ from the default, as a layer.
pub fn non_default_layer(cfg: &TrainConfig) -> Layer {
    let all = to_table(cfg);
    let default = to_table(&TrainConfig::default());
    all.into_iter().filter(|(k, v)| default.get(k) != Some(v)).collect()
}

fn to_table(cfg: &TrainConfig) -> Layer {
    // Invariant: every field serialises to a TOML scalar.
    toml::Table::try_from(cfg).expect("TrainConfig serialises to a TOML table")
}

/// Read a `--config` TOML file as a layer, rejecting unknown keys and bad values with the file's name.
pub fn read_config_file(path: &Path) -> Result<Layer, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read config file {}: {e}", path.display())))?;
    let layer: Layer = text
        .parse()
        .map_err(|e: toml::de::Error| UsageError(format!("{}: {}", path.display(), one_line(&e.to_string()))))?;
    for (a, b) in EXCLUSIVE {
        if layer.contains_key(*a) && layer.contains_key(*b) {
            return Err(UsageError(format!(
                "{}: `{a}` and `{b}` cannot both be set",
                path.display()
            )));
        }
    }
    // Validate keys and value types now, so the error names this file.
    let mut probe = to_table(&TrainConfig::default());
    overlay(&mut probe, layer.clone());
    from_table(probe).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    Ok(layer)
}

/// Put `top` over `base`: its keys win, and set keys clear their exclusive partners below.
pub fn overlay(base: &mut Layer, top: Layer) {
    for (a, b) in EXCLUSIVE {
        if top.contains_key(*a) && !top.contains_key(*b) {
            base.remove(*b);
        }
        if top.contains_key(*b) && !top.contains_key(*a) {
            base.remove(*a);
        }
    }
    base.extend(top);
}

/// Feature extraction's epoch budget when no layer sets `epochs` and there is validation data: the head trains on
/// cached features (milliseconds an epoch) until validation accuracy plateaus ([`PLATEAU_PATIENCE`]).
pub const PLATEAU_EPOCHS: usize = 200;

/// Feature extraction's default patience under [`PLATEAU_EPOCHS`]: epochs without a better validation accuracy.
pub const PLATEAU_PATIENCE: usize = 10;

/// Build the configuration from layers listed lowest precedence first (defaults fill the rest).
///
/// Classification by feature extraction with validation data and no `epochs` in any layer trains to its plateau: up to
/// [`PLATEAU_EPOCHS`] epochs with early stopping after `patience` (default [`PLATEAU_PATIENCE`]) epochs without a
/// better validation accuracy, the best epoch restored. A typed `epochs` (flag, file, recipe, resumed run) is exact.
pub fn resolve(layers: Vec<Layer>) -> Result<TrainConfig, UsageError> {
    let mut merged = Layer::new();
    for layer in layers {
        overlay(&mut merged, layer);
    }
    let epochs_set = merged.contains_key("epochs");
    let mut cfg = from_table(merged).map_err(UsageError)?;
    // Only classification caches features; a dense task's epoch runs the backbone on every image.
    if !epochs_set
        && cfg.task == TaskKind::Classify
        && cfg.mode == Mode::FeatureExtract
        && (cfg.val.is_some() || cfg.val_split.is_some())
    {
        cfg.epochs = PLATEAU_EPOCHS;
        cfg.patience = cfg.patience.or(Some(PLATEAU_PATIENCE));
    }
    Ok(cfg)
}

fn from_table(table: Layer) -> Result<TrainConfig, String> {
    TrainConfig::deserialize(toml::Value::Table(table)).map_err(|e| one_line(&e.to_string()))
}

impl TrainConfig {
    /// The configuration as TOML text (what `config.toml` in a run folder holds).
    pub fn to_toml(&self) -> String {
        // Invariant: every field is a TOML scalar.
        toml::to_string(self).expect("TrainConfig serialises to TOML")
    }

    /// Give a dense task its default head when the head is still the classification default (`linear`).
    pub fn normalize(&mut self) {
        if self.task != TaskKind::Classify && self.head == HeadSpec::Linear {
            self.head = HeadSpec::default_for(self.task);
        }
    }

    /// Check values that flags cannot check one at a time; the message names the flag.
    pub fn validate(&self) -> Result<(), UsageError> {
        let fail = |m: String| Err(UsageError(m));
        if self.head.task() != self.task {
            return fail(format!(
                "--head {} is a {} head; --task {} takes {}",
                self.head,
                self.head.task(),
                self.task,
                match self.task {
                    TaskKind::Classify => "linear or mlp:W1[,W2...]",
                    TaskKind::Segment => "fpn or unet",
                    TaskKind::Detect => "fcos",
                }
            ));
        }
        if self.task == TaskKind::Classify {
            let dense_only = [
                ("--imgsz", self.imgsz.is_some()),
                ("--loss", self.loss != SegLossSpec::Ce),
                ("--classes", self.classes.is_some()),
                ("--value-map", self.value_map.is_some()),
            ];
            if let Some((flag, _)) = dense_only.iter().find(|(_, set)| *set) {
                return fail(format!("{flag} needs --task segment or --task detect"));
            }
        }
        if self.task != TaskKind::Segment && self.value_map.is_some() {
            return fail("--value-map needs --task segment".into());
        }
        if self.task != TaskKind::Segment && self.loss != SegLossSpec::Ce {
            return fail("--loss needs --task segment".into());
        }
        if let Some(n) = self.imgsz {
            if !(32..=4096).contains(&n) {
                return fail(format!("--imgsz must be between 32 and 4096, got {n}"));
            }
        }
        if !(0.0..=1.0).contains(&self.conf) {
            return fail(format!("--conf must be in [0, 1], got {}", self.conf));
        }
        if !(self.iou > 0.0 && self.iou <= 1.0) {
            return fail(format!("--iou must be in (0, 1], got {}", self.iou));
        }
        if self.max_det == 0 {
            return fail("--max-det must be at least 1".into());
        }
        if !matches!(self.levels, 3 | 5) {
            return fail(format!("--levels must be 3 (P3-P5) or 5 (P3-P7), got {}", self.levels));
        }
        if self.data.is_none() {
            return fail("--data is required (an ImageFolder directory or a CSV file)".into());
        }
        if self.epochs == 0 {
            return fail("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return fail("--batch-size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return fail(format!("--lr must be a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return fail(format!("--momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return fail(format!("--weight-decay must be >= 0, got {}", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("--dropout must be in [0, 1), got {}", self.dropout));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return fail(format!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        if let Some(f) = self.val_split {
            if !(f > 0.0 && f < 1.0) {
                return fail(format!("--val-split must be between 0 and 1 (exclusive), got {f}"));
            }
        }
        if self.aug_views == 0 {
            return fail("--aug-views must be at least 1".into());
        }
        if self.unfreeze.is_some() && self.mode == Mode::FeatureExtract {
            return fail("--unfreeze needs --mode fine-tune".into());
        }
        if let Some(x) = self.layer_decay {
            if !(x > 0.0 && x <= 1.0) {
                return fail(format!("--layer-decay must be in (0, 1], got {x}"));
            }
            if self.mode != Mode::FineTune {
                return fail("--layer-decay needs --mode fine-tune".into());
            }
        }
        if self.patience == Some(0) {
            return fail("--patience must be at least 1".into());
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return fail(format!("--name must be a plain folder name, got `{}`", self.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(text: &str) -> Layer {
        text.parse().unwrap()
    }

    #[test]
    fn layer_decay_is_a_config_key_checked_with_its_flag_name() {
        let cfg = resolve(vec![layer("data = \"d\"\nmode = \"fine-tune\"\nlayer_decay = 0.65\n")]).unwrap();
        assert_eq!(cfg.layer_decay, Some(0.65));
        cfg.validate().unwrap();
        assert!(cfg.to_toml().contains("layer_decay = 0.65"));
        for (x, mode, flag) in [
            (1.5, Mode::FineTune, "(0, 1]"),
            (0.0, Mode::FineTune, "(0, 1]"),
            (0.7, Mode::FeatureExtract, "--mode fine-tune"),
        ] {
            let bad = TrainConfig {
                layer_decay: Some(x),
                mode,
                ..cfg.clone()
            };
            let e: anyhow::Error = bad.validate().unwrap_err().into();
            assert_eq!(crate::error::exit_code(&e), 2);
            assert!(
                e.to_string().contains("--layer-decay") && e.to_string().contains(flag),
                "{e}"
            );
        }
    }

    #[test]
    fn recipes_hold_the_tutorial_values() {
        let k = recipe_config(Recipe::KerasVgg16Binary);
        assert_eq!(
            (k.model.as_str(), k.mode, k.binary, k.pool),
            ("vgg16", Mode::FeatureExtract, true, Pooling::Flatten)
        );
        assert_eq!(
            (k.head.clone(), k.dropout, k.augment),
            (HeadSpec::Mlp(vec![128]), 0.5, Augment::Keras)
        );
        assert_eq!(
            (k.optimizer, k.lr, k.epochs, k.batch_size),
            (OptimizerKind::Adam, 1e-4, 20, 32)
        );

        let t = recipe_config(Recipe::TorchvisionResnet18);
        assert_eq!(
            (t.model.as_str(), t.mode, t.unfreeze),
            ("resnet18", Mode::FineTune, Some(Unfreeze::All))
        );
        assert_eq!((t.optimizer, t.lr, t.momentum), (OptimizerKind::Sgd, 0.001, 0.9));
        assert_eq!(t.scheduler, SchedulerSpec::Step { step: 7, gamma: 0.1 });
        assert_eq!((t.epochs, t.batch_size, t.augment), (25, 4, Augment::Torchvision));
    }

    #[test]
    fn later_layers_win_and_clear_exclusive_partners() {
        let recipe = non_default_layer(&recipe_config(Recipe::TorchvisionResnet18));
        let file = layer("lr = 0.01\nepochs = 3\nval_split = 0.2\n");
        let cli = layer("epochs = 5\nval = \"v\"\n");
        let cfg = resolve(vec![recipe, file, cli]).unwrap();
        assert_eq!(cfg.lr, 0.01, "file beats recipe");
        assert_eq!(cfg.epochs, 5, "flag beats file");
        assert_eq!(cfg.batch_size, 4, "recipe beats default");
        assert_eq!(cfg.val, Some(PathBuf::from("v")));
        assert_eq!(cfg.val_split, None, "--val clears a lower val_split");
    }

    #[test]
    fn feature_extraction_without_epochs_trains_to_its_plateau() {
        let val = layer("data = \"d\"\nval = \"v\"\n");
        let cfg = resolve(vec![val.clone()]).unwrap();
        assert_eq!((cfg.epochs, cfg.patience), (PLATEAU_EPOCHS, Some(PLATEAU_PATIENCE)));
        let cfg = resolve(vec![layer("data = \"d\"\nval_split = 0.2\npatience = 3\n")]).unwrap();
        assert_eq!(
            (cfg.epochs, cfg.patience),
            (PLATEAU_EPOCHS, Some(3)),
            "a typed patience is kept"
        );
        let cfg = resolve(vec![val.clone(), layer("epochs = 10\n")]).unwrap();
        assert_eq!((cfg.epochs, cfg.patience), (10, None), "a typed --epochs is exact");
        let cfg = resolve(vec![layer("data = \"d\"\n")]).unwrap();
        assert_eq!(
            (cfg.epochs, cfg.patience),
            (10, None),
            "no validation data: a fixed count"
        );
        let cfg = resolve(vec![val.clone(), layer("mode = \"fine-tune\"\n")]).unwrap();
        assert_eq!((cfg.epochs, cfg.patience), (10, None), "fine-tuning keeps its default");
        let cfg = resolve(vec![val.clone(), layer("task = \"segment\"\n")]).unwrap();
        assert_eq!((cfg.epochs, cfg.patience), (10, None), "dense tasks cache no features");
        let keras = non_default_layer(&recipe_config(Recipe::KerasVgg16Binary));
        assert_eq!(
            resolve(vec![keras, val.clone()]).unwrap().epochs,
            20,
            "a recipe's epochs are exact"
        );
        // The resolved budget is written to config.toml, so a resumed run keeps it.
        let first = resolve(vec![val]).unwrap();
        let resumed = resolve(vec![layer(&first.to_toml())]).unwrap();
        assert_eq!((resumed.epochs, resumed.patience), (first.epochs, first.patience));
    }

    #[test]
    fn config_toml_round_trips() {
        let mut cfg = recipe_config(Recipe::KerasVgg16Binary);
        cfg.data = Some("d".into());
        cfg.patience = Some(3);
        cfg.scheduler = SchedulerSpec::Cosine { warmup: 2 };
        let back: TrainConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn bad_config_files_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "epochz = 3\n").unwrap();
        let e = read_config_file(&p).unwrap_err().0;
        assert!(e.contains("c.toml") && e.contains("epochz") && !e.contains('\n'), "{e}");
        std::fs::write(&p, "head = \"mlp:x\"\n").unwrap();
        let e = read_config_file(&p).unwrap_err().0;
        assert!(e.contains("c.toml") && e.contains("mlp:x"), "{e}");
        std::fs::write(&p, "val = \"a\"\nval_split = 0.1\n").unwrap();
        assert!(read_config_file(&p).unwrap_err().0.contains("cannot both"));
        let e = read_config_file(&dir.path().join("missing.toml")).unwrap_err().0;
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn validation_names_the_flag() {
        let ok = TrainConfig {
            data: Some("d".into()),
            ..TrainConfig::default()
        };
        ok.validate().unwrap();
        let e = TrainConfig::default().validate().unwrap_err().0;
        assert!(e.contains("--data"));
        let e = TrainConfig { lr: 0.0, ..ok.clone() }.validate().unwrap_err().0;
        assert!(e.contains("--lr"));
        let e = TrainConfig {
            unfreeze: Some(Unfreeze::Last(2)),
            ..ok.clone()
        }
        .validate()
        .unwrap_err()
        .0;
        assert!(e.contains("--unfreeze") && e.contains("fine-tune"));
        let e = TrainConfig {
            val_split: Some(1.5),
            ..ok
        }
        .validate()
        .unwrap_err()
        .0;
        assert!(e.contains("--val-split"));
    }
}
