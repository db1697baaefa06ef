//! Typed values of the command-line flags that are mini-languages (`--head mlp:128,64`, `--scheduler step:7,0.1`).
//!
//! Each parses with `FromStr` (clap uses it, so a bad value is one clear error naming the flag), prints back with
//! `Display` in the same syntax, and is stored in TOML as that string.

use std::fmt;
use std::str::FromStr;

/// Implements serde as the `Display`/`FromStr` string form.
macro_rules! string_serde {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Implements `FromStr`/`Display` for a fieldless enum from a table of spellings.
macro_rules! keyword_enum {
    ($t:ident, $what:literal, [$($v:ident => $s:literal),+ $(,)?]) => {
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($s => Ok(Self::$v),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " `{}` (expected {})"),
                        other,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$v => $s,)+ })
            }
        }
        string_serde!($t);
    };
}

/// Whether the backbone stays frozen or is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Frozen backbone, only the head learns.
    #[default]
    FeatureExtract,
    /// Some or all backbone stages learn too.
    FineTune,
}
keyword_enum!(Mode, "mode", [FeatureExtract => "feature-extract", FineTune => "fine-tune"]);

/// Optimiser family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptimizerKind {
    /// SGD with momentum.
    Sgd,
    /// Adam (L2 weight decay).
    Adam,
    /// AdamW (decoupled weight decay).
    #[default]
    AdamW,
}
keyword_enum!(OptimizerKind, "optimizer", [Sgd => "sgd", Adam => "adam", AdamW => "adamw"]);

/// Training-time augmentation preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Augment {
    /// Evaluation preprocessing only.
    None,
    /// Keras `ImageDataGenerator`-style shifts, zoom, flips.
    Keras,
    /// torchvision tutorial: RandomResizedCrop + horizontal flip.
    #[default]
    Torchvision,
    /// timm's `create_transform(is_training=True)` defaults.
    Timm,
}
keyword_enum!(Augment, "augmentation", [None => "none", Keras => "keras", Torchvision => "torchvision", Timm => "timm"]);

/// Per-class loss weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassWeights {
    /// All classes weigh 1.
    #[default]
    None,
    /// Inverse class frequency of the training set.
    Auto,
}
keyword_enum!(ClassWeights, "class weights", [None => "none", Auto => "auto"]);

/// How the backbone's feature map becomes the head's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Global average pooling (timm's pooled features).
    #[default]
    Avg,
    /// Flatten the whole feature map (Keras `Flatten()`).
    Flatten,
}
keyword_enum!(Pooling, "pooling", [Avg => "avg", Flatten => "flatten"]);

/// What a run learns to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskKind {
    /// One class (or a class set) per image.
    #[default]
    Classify,
    /// A class per pixel (semantic segmentation).
    Segment,
    /// Boxes with a class and a score (object detection).
    Detect,
}
keyword_enum!(TaskKind, "task", [Classify => "classify", Segment => "segment", Detect => "detect"]);

/// Segmentation loss terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegLossSpec {
    /// Cross-entropy with the ignore index.
    #[default]
    Ce,
    /// Soft Dice over the classes.
    Dice,
    /// The sum of both.
    CeDice,
}
keyword_enum!(SegLossSpec, "loss", [Ce => "ce", Dice => "dice", CeDice => "ce+dice"]);

/// A named bundle of flag values reproducing a well-known tutorial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// Keras blog: VGG16 features + Dense(128)-Dropout(0.5) + sigmoid, binary.
    KerasVgg16Binary,
    /// PyTorch transfer-learning tutorial: fine-tune all of ResNet18 with SGD + StepLR.
    TorchvisionResnet18,
}
keyword_enum!(Recipe, "recipe", [KerasVgg16Binary => "keras-vgg16-binary", TorchvisionResnet18 => "torchvision-resnet18"]);

/// How many backbone stages learn in fine-tune mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfreeze {
    /// Every stage.
    All,
    /// The last N stages (counted from the output).
    Last(usize),
}

impl FromStr for Unfreeze {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        s.parse::<usize>()
            .map(Self::Last)
            .map_err(|_| format!("invalid unfreeze `{s}` (expected a number of stages or `all`)"))
    }
}

impl fmt::Display for Unfreeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Last(n) => write!(f, "{n}"),
        }
    }
}
string_serde!(Unfreeze);

/// The classification head put on the pooled features.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HeadSpec {
    /// One linear layer.
    #[default]
    Linear,
    /// Hidden linear layers of these widths (ReLU + dropout each), then the output layer.
    Mlp(Vec<usize>),
    /// Segmentation: the Panoptic-FPN semantic branch on the backbone's multi-scale maps.
    Fpn,
    /// Segmentation: a U-Net decoder (segmentation_models_pytorch's).
    Unet,
    /// Detection: FCOS (FPN + shared anchor-free head).
    Fcos,
}

impl HeadSpec {
    /// The task this head belongs to.
    pub fn task(&self) -> TaskKind {
        match self {
            Self::Linear | Self::Mlp(_) => TaskKind::Classify,
            Self::Fpn | Self::Unet => TaskKind::Segment,
            Self::Fcos => TaskKind::Detect,
        }
    }

    /// The default head of `task`.
    pub fn default_for(task: TaskKind) -> Self {
        match task {
            TaskKind::Classify => Self::Linear,
            TaskKind::Segment => Self::Fpn,
            TaskKind::Detect => Self::Fcos,
        }
    }
}

impl FromStr for HeadSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        for (name, head) in [
            ("linear", Self::Linear),
            ("fpn", Self::Fpn),
            ("unet", Self::Unet),
            ("fcos", Self::Fcos),
        ] {
            if s.eq_ignore_ascii_case(name) {
                return Ok(head);
            }
        }
        let bad = || {
            format!(
                "invalid head `{s}` (expected `linear` or `mlp:WIDTH[,WIDTH...]` for classification, e.g. mlp:128,64; \
                 `fpn` or `unet` for segmentation; `fcos` for detection)"
            )
        };
        let widths = s.strip_prefix("mlp:").ok_or_else(bad)?;
        let widths: Vec<usize> = widths
            .split(',')
            .map(|w| w.trim().parse::<usize>().ok().filter(|&w| w > 0))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        Ok(Self::Mlp(widths))
    }
}

impl fmt::Display for HeadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linear => f.write_str("linear"),
            Self::Fpn => f.write_str("fpn"),
            Self::Unet => f.write_str("unet"),
            Self::Fcos => f.write_str("fcos"),
            Self::Mlp(w) => {
                let w: Vec<String> = w.iter().map(|w| w.to_string()).collect();
                write!(f, "mlp:{}", w.join(","))
            }
        }
    }
}
string_serde!(HeadSpec);

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SchedulerSpec {
    /// Constant learning rate.
    #[default]
    None,
    /// Multiply by `gamma` every `step` epochs (PyTorch `StepLR`).
    Step {
        /// Epochs between decays.
        step: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Linear warm-up for `warmup` epochs, then cosine decay to zero.
    Cosine {
        /// Warm-up epochs.
        warmup: usize,
    },
    /// One-cycle policy (PyTorch `OneCycleLR` defaults), `--lr` as the peak.
    OneCycle,
}

impl FromStr for SchedulerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        let bad =
            || format!("invalid scheduler `{s}` (expected none, step:STEP,GAMMA, cosine, cosine:WARMUP or onecycle)");
        match lower.as_str() {
            "none" => return Ok(Self::None),
            "cosine" => return Ok(Self::Cosine { warmup: 0 }),
            "onecycle" => return Ok(Self::OneCycle),
            _ => {}
        }
        if let Some(w) = lower.strip_prefix("cosine:") {
            let warmup = w.trim().parse().map_err(|_| bad())?;
            return Ok(Self::Cosine { warmup });
        }
        if let Some(rest) = lower.strip_prefix("step:") {
            let (step, gamma) = rest.split_once(',').ok_or_else(bad)?;
            let step: usize = step.trim().parse().map_err(|_| bad())?;
            let gamma: f64 = gamma.trim().parse().map_err(|_| bad())?;
            if step == 0 || !(gamma > 0.0 && gamma.is_finite()) {
                return Err(bad());
            }
            return Ok(Self::Step { step, gamma });
        }
        Err(bad())
    }
}

impl fmt::Display for SchedulerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Step { step, gamma } => write!(f, "step:{step},{gamma}"),
            Self::Cosine { warmup: 0 } => f.write_str("cosine"),
            Self::Cosine { warmup } => write!(f, "cosine:{warmup}"),
            Self::OneCycle => f.write_str("onecycle"),
        }
    }
}
string_serde!(SchedulerSpec);

/// Where to compute: the device parser is the backbones crate's (one for the workspace).
pub use backbones::device::DeviceSpec;

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: FromStr<Err: fmt::Debug> + fmt::Display + PartialEq + fmt::Debug>(s: &str) -> T {
        let v: T = s.parse().unwrap();
        assert_eq!(v.to_string().parse::<T>().unwrap(), v, "{s} does not round-trip");
        v
    }

    #[test]
    fn parses_and_prints_every_flag_language() {
        assert_eq!(roundtrip::<HeadSpec>("mlp:128,64"), HeadSpec::Mlp(vec![128, 64]));
        assert_eq!(roundtrip::<HeadSpec>("linear"), HeadSpec::Linear);
        assert_eq!(
            roundtrip::<SchedulerSpec>("step:7,0.1"),
            SchedulerSpec::Step { step: 7, gamma: 0.1 }
        );
        assert_eq!(
            roundtrip::<SchedulerSpec>("cosine:3"),
            SchedulerSpec::Cosine { warmup: 3 }
        );
        assert_eq!(
            roundtrip::<SchedulerSpec>("cosine"),
            SchedulerSpec::Cosine { warmup: 0 }
        );
        assert_eq!(roundtrip::<SchedulerSpec>("onecycle"), SchedulerSpec::OneCycle);
        assert_eq!(roundtrip::<Unfreeze>("all"), Unfreeze::All);
        assert_eq!(roundtrip::<Unfreeze>("2"), Unfreeze::Last(2));
        assert_eq!(roundtrip::<DeviceSpec>("cuda:1"), DeviceSpec::Cuda(1));
        assert_eq!(roundtrip::<DeviceSpec>("cuda"), DeviceSpec::Cuda(0));
        assert_eq!(roundtrip::<Mode>("fine-tune"), Mode::FineTune);
        assert_eq!(roundtrip::<OptimizerKind>("AdamW"), OptimizerKind::AdamW);
        assert_eq!(roundtrip::<Recipe>("keras-vgg16-binary"), Recipe::KerasVgg16Binary);
    }

    #[test]
    fn rejects_malformed_values_with_a_message_naming_the_value() {
        for bad in ["mlp:", "mlp:0", "mlp:12,x", "conv"] {
            let e = bad.parse::<HeadSpec>().unwrap_err();
            assert!(e.contains(bad) && e.contains("mlp:"), "{e}");
        }
        for bad in ["step:7", "step:0,0.1", "step:7,-1", "cosine:x", "linear"] {
            assert!(bad.parse::<SchedulerSpec>().unwrap_err().contains(bad));
        }
        assert!("tpu".parse::<DeviceSpec>().unwrap_err().to_string().contains("cuda:N"));
        assert!("rmsprop"
            .parse::<OptimizerKind>()
            .unwrap_err()
            .contains("sgd, adam, adamw"));
        assert!("some".parse::<Unfreeze>().is_err());
    }
}
