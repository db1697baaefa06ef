//! The classic recipes (Keras, torchvision) and timm's config-driven ones.

use super::affine::{Fill, RandomAffine};
use super::crop::RandomResizedCrop;
use super::flip::RandomHorizontalFlip;
use super::resize::{Resize, ResizeCenterCrop, ResizeSize};
use super::{ImageTransform, Pipeline, TransformError};
use crate::config::{Interpolation, PreprocessConfig, IMAGENET_MEAN, IMAGENET_STD};

/// A named augmentation recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// Keras `ImageDataGenerator(rescale=1/255, rotation_range=20, zoom_range=0.2, horizontal_flip=True)`.
    Keras,
    /// torchvision's ImageNet recipe (RandomResizedCrop + flip; Resize 256 + CenterCrop 224), ImageNet statistics.
    Torchvision,
    /// timm's defaults from the backbone's own config (`train_from_config` / `eval`).
    #[default]
    Timm,
}

impl std::str::FromStr for Preset {
    type Err = TransformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "keras" => Ok(Self::Keras),
            "torchvision" => Ok(Self::Torchvision),
            "timm" => Ok(Self::Timm),
            _ => Err(TransformError::UnknownPreset(s.to_string())),
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Keras => "keras",
            Self::Torchvision => "torchvision",
            Self::Timm => "timm",
        })
    }
}

impl Preset {
    /// The training pipeline; Keras and torchvision take only `cfg.input_size` (224 in their recipes).
    pub fn train(&self, cfg: &PreprocessConfig) -> Pipeline {
        let [h, w] = cfg.input_size;
        match self {
            Self::Keras => keras_train(h, w),
            Self::Torchvision => torchvision_train(h, w),
            Self::Timm => Pipeline::train_from_config(cfg),
        }
    }

    /// The evaluation pipeline; Keras and torchvision take only `cfg.input_size` (224 in their recipes).
    pub fn eval(&self, cfg: &PreprocessConfig) -> Pipeline {
        let [h, w] = cfg.input_size;
        match self {
            Self::Keras => keras_eval(h, w),
            Self::Torchvision => torchvision_eval(h, w),
            Self::Timm => Pipeline::eval(cfg),
        }
    }
}

fn boxed<T: ImageTransform + 'static>(t: T) -> Box<dyn ImageTransform> {
    Box::new(t)
}

/// Keras loads with `target_size` using PIL nearest (`load_img`'s default interpolation).
fn keras_resize(h: usize, w: usize) -> Resize {
    Resize {
        size: ResizeSize::Exact { h, w },
        interpolation: Interpolation::Nearest,
    }
}

fn keras_train(h: usize, w: usize) -> Pipeline {
    Pipeline {
        steps: vec![
            boxed(keras_resize(h, w)),
            boxed(RandomAffine {
                degrees: 20.0,
                zoom: (0.8, 1.2),
                fill: Fill::Nearest,
            }),
            boxed(RandomHorizontalFlip { p: 0.5 }),
        ],
        mean: [0.0; 3],
        std: [1.0; 3],
        output_hw: (h, w),
    }
}

fn keras_eval(h: usize, w: usize) -> Pipeline {
    Pipeline {
        steps: vec![boxed(keras_resize(h, w))],
        mean: [0.0; 3],
        std: [1.0; 3],
        output_hw: (h, w),
    }
}

fn torchvision_train(h: usize, w: usize) -> Pipeline {
    let mut rrc = RandomResizedCrop::square(h);
    rrc.w = w;
    Pipeline {
        steps: vec![boxed(rrc), boxed(RandomHorizontalFlip { p: 0.5 })],
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        output_hw: (h, w),
    }
}

fn torchvision_eval(h: usize, w: usize) -> Pipeline {
    // Resize(256) before CenterCrop(224), scaled to other sizes.
    let short = (h.max(w) * 256) / 224;
    Pipeline {
        steps: vec![boxed(ResizeCenterCrop {
            resize: Resize {
                size: ResizeSize::Shorter(short),
                interpolation: Interpolation::Bilinear,
            },
            h,
            w,
        })],
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        output_hw: (h, w),
    }
}

impl Pipeline {
    /// Keras training recipe at 224×224: nearest resize, rotation ±20°, zoom [0.8, 1.2], flip, rescale 1/255.
    pub fn keras_train() -> Self {
        keras_train(224, 224)
    }

    /// Keras evaluation recipe: nearest resize to 224×224, rescale 1/255.
    pub fn keras_eval() -> Self {
        keras_eval(224, 224)
    }

    /// torchvision training recipe: RandomResizedCrop(224) bilinear, flip, ImageNet normalisation.
    pub fn torchvision_train() -> Self {
        torchvision_train(224, 224)
    }

    /// torchvision evaluation recipe: Resize(256) bilinear, CenterCrop(224), ImageNet normalisation.
    pub fn torchvision_eval() -> Self {
        torchvision_eval(224, 224)
    }

    /// timm's eval transform: resize shorter side to `cfg.resize_size()`, center-crop `input_size`, normalise.
    ///
    /// A non-square `input_size` resizes to cover `input_size / crop_pct` keeping the aspect (timm `ResizeKeepRatio`).
    /// Check an untrusted config with [`PreprocessConfig::validate`] first.
    pub fn eval(cfg: &PreprocessConfig) -> Self {
        let [h, w] = cfg.input_size;
        let size = if h == w {
            ResizeSize::Shorter(cfg.resize_size())
        } else {
            let scale = |v: usize| (v as f64 / cfg.crop_pct as f64).floor() as usize;
            ResizeSize::Cover {
                h: scale(h),
                w: scale(w),
            }
        };
        Pipeline {
            steps: vec![boxed(ResizeCenterCrop {
                resize: Resize {
                    size,
                    interpolation: cfg.interpolation,
                },
                h,
                w,
            })],
            mean: cfg.mean,
            std: cfg.std,
            output_hw: (h, w),
        }
    }

    /// timm's default train transform: RandomResizedCrop(input_size, scale (0.08, 1)) with the config's
    /// interpolation, horizontal flip, normalise.
    pub fn train_from_config(cfg: &PreprocessConfig) -> Self {
        let [h, w] = cfg.input_size;
        let rrc = RandomResizedCrop {
            h,
            w,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            interpolation: cfg.interpolation,
        };
        Pipeline {
            steps: vec![boxed(rrc), boxed(RandomHorizontalFlip { p: 0.5 })],
            mean: cfg.mean,
            std: cfg.std,
            output_hw: (h, w),
        }
    }
}
