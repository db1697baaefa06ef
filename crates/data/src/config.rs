//! Preprocessing configuration in timm's `pretrained_cfg` vocabulary.

use serde::{Deserialize, Serialize};

/// Resampling filter used when resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle filter), antialiased when shrinking as PIL does.
    #[default]
    Bilinear,
    /// Bicubic (a = -0.5, PIL's), antialiased when shrinking as PIL does.
    Bicubic,
}

impl std::str::FromStr for Interpolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "nearest" => Ok(Self::Nearest),
            "bilinear" => Ok(Self::Bilinear),
            "bicubic" => Ok(Self::Bicubic),
            other => Err(format!(
                "unknown interpolation `{other}` (expected nearest, bilinear or bicubic)"
            )),
        }
    }
}

/// How a model expects its input: timm's `pretrained_cfg` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Input height and width in pixels.
    pub input_size: [usize; 2],
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Fraction of the resized image kept by the center crop (timm: resize to `size / crop_pct`, then crop `size`).
    pub crop_pct: f32,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
}

/// ImageNet channel means (torchvision).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (torchvision).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            input_size: [224, 224],
            interpolation: Interpolation::Bilinear,
            crop_pct: 0.875,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

impl PreprocessConfig {
    /// The shorter-side size the image is resized to before the center crop (timm's `scale_size`).
    pub fn resize_size(&self) -> usize {
        let size = self.input_size[0].max(self.input_size[1]);
        (size as f64 / self.crop_pct as f64).floor() as usize
    }
}
