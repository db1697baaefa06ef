//! The command line: global flags and subcommands (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::events::LogFormat;
use crate::predict_out::PredictFormat;
use crate::spec::{
    Augment, ClassWeights, DeviceSpec, HeadSpec, Mode, OptimizerKind, Pooling, Recipe, SchedulerSpec, SegLossSpec,
    TaskKind, Unfreeze,
};

const ROOT_AFTER: &str = "\
With no arguments, runs the PyTorch transfer-learning tutorial (hymenoptera ants/bees + resnet18), fetching the
data into $XDG_CACHE_HOME/graft (or ~/.cache/graft) when it is not there yet.

Examples:
  trainer train --data data/flowers --model resnet18 --epochs 5 --project runs --name flowers
  trainer predict --run runs/flowers image.jpg --top-k 3";

/// Transfer learning for image classification, semantic segmentation and object detection.
#[derive(Debug, Parser)]
#[command(name = "trainer", version, about, after_help = ROOT_AFTER)]
pub struct Cli {
    /// Compute device: cpu, cuda, cuda:N, metal or auto.
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
    /// Random seed (data order, augmentation, head initialisation).
    #[arg(long, global = true, value_name = "N")]
    pub seed: Option<u64>,
    /// Print nothing but errors (and requested output such as predictions).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Progress output style.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do (default: the tutorial job).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a classifier, a segmenter or a detector (--task) on a pretrained backbone; writes a run folder.
    #[command(after_help = TRAIN_AFTER)]
    Train(Box<TrainArgs>),
    /// Evaluate a trained run on labelled data (accuracy and per-class metrics, mIoU, or COCO mAP), as JSON.
    #[command(after_help = "Example:\n  trainer evaluate --run runs/train --data data/hymenoptera/val")]
    Evaluate(EvaluateArgs),
    /// Predict with a trained run or an exported model: classes, mask PNGs or boxes, per the model's task.
    #[command(after_help = PREDICT_AFTER)]
    Predict(PredictArgs),
    /// Export a run's model as one safetensors file (weights, classes, preprocessing).
    #[command(after_help = "Example:\n  trainer export --run runs/train --out ants_bees.safetensors")]
    Export(ExportArgs),
    /// List the available backbones.
    #[command(after_help = "Example:\n  trainer models")]
    Models,
    /// Dataset tools.
    #[command(subcommand, after_help = "Example:\n  trainer data inspect data/hymenoptera/train")]
    Data(DataCommand),
    /// Sweep the learning rate over one short run and suggest a value.
    #[command(after_help = "Example:\n  trainer lr-find --data data/hymenoptera/train --model resnet18 --plot lr.png")]
    LrFind(LrFindArgs),
}

const TRAIN_AFTER: &str = "\
Precedence: recipe < --config file < flags typed here. The resolved settings are saved as RUN_DIR/config.toml.

Examples:
  trainer train --data data/hymenoptera/train --val data/hymenoptera/val --model resnet18 \\
      --mode fine-tune --unfreeze 2 --epochs 10 --project runs --name ants
  trainer train --recipe torchvision-resnet18 --data data/hymenoptera/train --val data/hymenoptera/val
  trainer train --config my.toml --lr 3e-4 --out runs/sweep1
  trainer train --task segment --data data/seg --val-split 0.2 --model tf_efficientnet_lite0 --head fpn \\
      --loss ce+dice --imgsz 256 --augment torchvision --epochs 20

Segmentation (--task segment): --data is images/ + masks/ (paired by stem), a CSV `image,mask`, or a root with
train/ and val/; masks hold class indices (255 = ignore) or go through --value-map; class names come from
--classes or classes.txt. Training crops are --imgsz² (with any --augment preset: a joint random resized crop of
25-100 % of the area and a horizontal flip, masks nearest; --augment none: the validation resize only). Validation
during training resizes each image to --imgsz² and counts its confusion matrix at that size; `evaluate` and
`predict` resize the shorter side to --imgsz, pad to the decoder's stride and map the logits back, so their masks
and metrics are at the original resolution. mIoU is the mean over classes present in the truth or the prediction
(classes absent from both are left out, as mmseg and torchmetrics do).";

const PREDICT_AFTER: &str = "\
Output (stdout): CSV `path,rank,class,probability`, one row per file and rank (rank 1 is the best), or with
--format jsonl one object per file. Files that fail are reported on stderr; the others are still predicted.

Example:
  trainer predict --run runs/train img1.jpg img2.jpg --top-k 2 --format jsonl";

/// `trainer train` flags; field names are the `config.toml` keys.
#[derive(Debug, Clone, Args, Serialize)]
pub struct TrainArgs {
    /// What to learn: classify (images), segment (a class per pixel) or detect (boxes).
    #[arg(long, value_name = "TASK")]
    pub task: Option<TaskKind>,
    /// Training data: an ImageFolder directory (class sub-folders) or a CSV file (path,label).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Validation data (ImageFolder or CSV).
    #[arg(long, value_name = "PATH", conflicts_with = "val_split")]
    pub val: Option<PathBuf>,
    /// Hold out this fraction of --data for validation.
    #[arg(long, value_name = "F")]
    pub val_split: Option<f32>,
    /// Backbone name (see `trainer models`).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Pretrained weights file (safetensors) instead of downloading from the Hub.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// feature-extract (frozen backbone) or fine-tune.
    #[arg(long, value_name = "MODE")]
    pub mode: Option<Mode>,
    /// Backbone stages to unfreeze from the top in fine-tune mode: a number or `all`.
    #[arg(long, value_name = "N|all")]
    pub unfreeze: Option<Unfreeze>,
    /// Fine-tune mode: how many of --epochs train only the head (on cached features) before unfreezing (default 1;
    /// 0 = one phase).
    #[arg(long, value_name = "N")]
    pub freeze_epochs: Option<usize>,
    /// fastai's train_bn: norm layers (BatchNorm, LayerNorm) train in frozen stages too; BatchNorm also uses batch
    /// statistics (ConvNeXt, ViT: their LayerNorms).
    #[arg(long)]
    pub train_bn: bool,
    /// Fine-tune mode: layer-wise learning-rate decay X in (0, 1] (timm/BEiT; ViT, DINOv2, ConvNeXt) instead of the
    /// discriminative rates: layer i of L trains at lr·X^(L+1−i).
    #[arg(long, value_name = "X")]
    pub layer_decay: Option<f64>,
    /// Head: `linear` or `mlp:W1[,W2...]` (classify); `fpn` (default) or `unet` (segment); `fcos` (detect).
    #[arg(long, value_name = "HEAD")]
    pub head: Option<HeadSpec>,
    /// Segment/detect: square input size in pixels, a multiple of 32 (training crops, evaluation letterbox;
    /// default: segment 256, detect 320).
    #[arg(long, value_name = "PX")]
    pub imgsz: Option<usize>,
    /// Segment: loss, `ce` (cross-entropy, ignore index 255), `dice` or `ce+dice`.
    #[arg(long, value_name = "LOSS")]
    pub loss: Option<SegLossSpec>,
    /// Segment/detect: class names in index order, comma-separated (instead of classes.txt / data.yaml names).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Segment: map mask values to classes, e.g. `1=pet,2=background,3=ignore` (Oxford-IIIT Pet trimaps).
    #[arg(long, value_name = "V=NAME,...")]
    pub value_map: Option<String>,
    /// Detect: confidence threshold of saved predictions (validation mAP scores every box, as COCO does).
    #[arg(long, value_name = "X")]
    pub conf: Option<f32>,
    /// Detect: IoU threshold of class-wise NMS.
    #[arg(long, value_name = "X")]
    pub iou: Option<f32>,
    /// Detect: most boxes kept per image.
    #[arg(long, value_name = "N")]
    pub max_det: Option<usize>,
    /// Detect: FPN levels, 3 (P3-P5) or 5 (P3-P7 as FCOS).
    #[arg(long, value_name = "N")]
    pub levels: Option<usize>,
    /// Feature pooling before the head: avg or flatten.
    #[arg(long, value_name = "POOL")]
    pub pool: Option<Pooling>,
    /// Two classes as one sigmoid output (binary cross-entropy).
    #[arg(long)]
    pub binary: bool,
    /// Dropout before each head layer.
    #[arg(long, value_name = "F")]
    pub dropout: Option<f32>,
    /// Training epochs, exactly (default 10; feature-extract with validation data: up to 200, stopping when val
    /// accuracy has not improved for --patience epochs, default 10, best epoch kept).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Images per batch.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Optimiser: sgd, adam or adamw.
    #[arg(long, value_name = "OPT")]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate (peak rate for schedules).
    #[arg(long, value_name = "X")]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long, value_name = "X")]
    pub momentum: Option<f64>,
    /// Weight decay.
    #[arg(long, value_name = "X")]
    pub weight_decay: Option<f64>,
    /// LR schedule: none, step:STEP,GAMMA, cosine[:WARMUP] or onecycle.
    #[arg(long, value_name = "SCHED")]
    pub scheduler: Option<SchedulerSpec>,
    /// Augmentation preset: none, keras, torchvision or timm (segment: any preset = joint random resized crop + flip;
    /// detect: any but none = flip, zoom ±25 %, colour jitter).
    #[arg(long, value_name = "PRESET")]
    pub augment: Option<Augment>,
    /// Augmented views of each image per epoch.
    #[arg(long, value_name = "K")]
    pub aug_views: Option<usize>,
    /// Label smoothing.
    #[arg(long, value_name = "X")]
    pub label_smoothing: Option<f32>,
    /// Class weights: none or auto (inverse frequency; segment: of the training masks' pixels).
    #[arg(long, value_name = "W")]
    pub class_weights: Option<ClassWeights>,
    /// Early stopping: epochs without a better validation accuracy (feature-extract default without --epochs: 10).
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// Fail on unreadable images instead of skipping them.
    #[arg(long)]
    pub strict: bool,
    /// Drop validation images of classes absent from training.
    #[arg(long)]
    pub drop_unknown_val_classes: bool,
    /// Run folder (used as is).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["project", "name"])]
    pub out: Option<PathBuf>,
    /// Parent folder of auto-numbered runs.
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Run name under --project (train, train2, ...).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Reuse an existing run folder.
    #[arg(long)]
    pub exist_ok: bool,
    /// TOML file with any of these settings (keys as flag names with `_`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Start from a recipe: keras-vgg16-binary or torchvision-resnet18.
    #[arg(long, value_name = "RECIPE")]
    pub recipe: Option<Recipe>,
    /// Continue an interrupted run (its config.toml is the base, flags typed here override it).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
}

/// `trainer evaluate` flags.
#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    /// Run folder of a trained model.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// Labelled data (ImageFolder or CSV).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
}

/// `trainer predict` flags.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Run folder of a trained model.
    #[arg(
        long,
        value_name = "RUN_DIR",
        required_unless_present = "model",
        conflicts_with = "model"
    )]
    pub run: Option<PathBuf>,
    /// Exported model file.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Image files or folders.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Classes per file.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub top_k: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PredictFormat::Csv)]
    pub format: PredictFormat,
    /// Test-time augmentation (average with the horizontal flip).
    #[arg(long)]
    pub tta: bool,
    /// Segment/detect: write mask PNGs (segment: `<stem>.png`, palette PNG of class indices at the original size)
    /// here; default `predictions/` in the current folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Segment: also write `<stem>_overlay.png`, the image blended with its coloured mask.
    #[arg(long)]
    pub overlay: bool,
    /// Detect: write each image with its boxes drawn into DIR.
    #[arg(long, value_name = "DIR")]
    pub draw: Option<PathBuf>,
    /// Detect: confidence threshold (default: the run's --conf).
    #[arg(long, value_name = "X")]
    pub conf: Option<f32>,
    /// Detect: NMS IoU threshold (default: the run's --iou).
    #[arg(long, value_name = "X")]
    pub iou: Option<f32>,
    /// Detect: most boxes per image (default: the run's --max-det).
    #[arg(long, value_name = "N")]
    pub max_det: Option<usize>,
}

/// `trainer export` flags.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Run folder of a trained model.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// Output file (.safetensors).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `trainer data …`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Count classes and images, list unreadable or odd files.
    #[command(after_help = "Example:\n  trainer data inspect data/hymenoptera/train --strict")]
    Inspect {
        /// ImageFolder directory or CSV file.
        path: PathBuf,
        /// Exit with an error if any file is unreadable.
        #[arg(long)]
        strict: bool,
    },
}

/// `trainer lr-find` flags.
#[derive(Debug, Clone, Args)]
pub struct LrFindArgs {
    /// Training data (ImageFolder or CSV).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Backbone name.
    #[arg(long, value_name = "NAME", default_value = "resnet18")]
    pub model: String,
    /// Pretrained weights file.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Images per batch.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch_size: usize,
    /// First learning rate of the sweep.
    #[arg(long, value_name = "X", default_value_t = 1e-7)]
    pub start_lr: f64,
    /// Last learning rate of the sweep.
    #[arg(long, value_name = "X", default_value_t = 10.0)]
    pub end_lr: f64,
    /// Steps (batches) of the sweep.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub steps: usize,
    /// Write the loss-vs-LR curve here (PNG).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Optimizer of the sweep's steps (as `train --optimizer`).
    #[arg(long, value_name = "NAME", default_value = "adamw")]
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    #[arg(long, value_name = "X", default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw).
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub weight_decay: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent_and_every_subcommand_has_an_example() {
        Cli::command().debug_assert();
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let after = sub.get_after_help().map(|s| s.to_string()).unwrap_or_default();
            assert!(
                after.contains("trainer "),
                "`{}` --help shows no example",
                sub.get_name()
            );
        }
    }

    #[test]
    fn parses_a_full_train_line() {
        let cli = Cli::try_parse_from([
            "trainer",
            "--device",
            "cuda:1",
            "train",
            "--data",
            "d",
            "--head",
            "mlp:128,64",
            "--scheduler",
            "step:7,0.1",
            "--unfreeze",
            "all",
            "--mode",
            "fine-tune",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(cli.device, Some(DeviceSpec::Cuda(1)));
        assert_eq!(cli.seed, Some(7));
        let Some(Command::Train(t)) = cli.command else {
            panic!("not train")
        };
        assert_eq!(t.head, Some(HeadSpec::Mlp(vec![128, 64])));
        assert_eq!(t.unfreeze, Some(Unfreeze::All));
    }

    #[test]
    fn lr_find_takes_the_optimizer_and_its_settings() {
        let cli = Cli::try_parse_from([
            "trainer",
            "lr-find",
            "--data",
            "d",
            "--optimizer",
            "sgd",
            "--momentum",
            "0.8",
            "--weight-decay",
            "1e-4",
        ])
        .unwrap();
        let Some(Command::LrFind(a)) = cli.command else {
            panic!("not lr-find")
        };
        assert_eq!(
            (a.optimizer, a.momentum, a.weight_decay),
            (OptimizerKind::Sgd, 0.8, 1e-4)
        );
        let Some(Command::LrFind(d)) = Cli::try_parse_from(["trainer", "lr-find", "--data", "d"])
            .unwrap()
            .command
        else {
            panic!("not lr-find")
        };
        assert_eq!(
            (d.optimizer, d.weight_decay),
            (OptimizerKind::AdamW, 0.0),
            "train's defaults"
        );
    }

    #[test]
    fn layer_decay_parses_and_a_bad_value_is_exit_code_2() {
        let cli = Cli::try_parse_from(["trainer", "train", "--mode", "fine-tune", "--layer-decay", "0.75"]).unwrap();
        let Some(Command::Train(t)) = cli.command else {
            panic!("not train")
        };
        assert_eq!(t.layer_decay, Some(0.75));
        let e = Cli::try_parse_from(["trainer", "train", "--layer-decay", "steep"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn conflicting_or_bad_flags_are_usage_errors() {
        for line in [
            &["trainer", "train", "--val", "v", "--val-split", "0.2"][..],
            &["trainer", "train", "--out", "o", "--name", "n"],
            &["trainer", "train", "--head", "conv"],
            &["trainer", "predict", "x.jpg"],
            &["trainer", "predict", "--run", "r"],
        ] {
            let e = Cli::try_parse_from(line).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{line:?}");
        }
    }
}
