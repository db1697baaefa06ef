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

/// A preprocessing config whose values cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of range; the message names it.
    #[error("invalid preprocessing config: {0}")]
    Invalid(String),
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
    /// Check the values (positive sizes, `0 < crop_pct <= 2`, finite mean, positive finite std).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.input_size.contains(&0) {
            return bad(format!("input_size must be positive, got {:?}", self.input_size));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 2.0) {
            return bad(format!("crop_pct must be in (0, 2], got {}", self.crop_pct));
        }
        if !self.mean.iter().all(|m| m.is_finite()) {
            return bad(format!("mean must be finite, got {:?}", self.mean));
        }
        if !self.std.iter().all(|s| s.is_finite() && *s > 0.0) {
            return bad(format!("std must be positive, got {:?}", self.std));
        }
        Ok(())
    }

    /// The shorter-side size the image is resized to before the center crop (timm's `scale_size`).
    pub fn resize_size(&self) -> usize {
        let size = self.input_size[0].max(self.input_size[1]);
        (size as f64 / self.crop_pct as f64).floor() as usize
    }
}
