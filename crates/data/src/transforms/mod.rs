//! Composable, seeded image transforms and the presets built from them.
//!
//! Every step maps an [`RgbImage`] to an [`RgbImage`] and draws randomness only from the given
//! [`ChaCha8Rng`], so a seed fixes the result. [`Pipeline::apply`] ends with ToTensor + Normalize.

pub mod affine;
pub mod color;
pub mod crop;
pub mod flip;
pub mod presets;
pub mod resize;
pub mod rotate;
pub mod zoom;

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub use affine::{Fill, RandomAffine};
pub use color::ColorJitter;
pub use crop::{CenterCrop, RandomResizedCrop};
pub use flip::RandomHorizontalFlip;
pub use presets::Preset;
pub use resize::{Resize, ResizeCenterCrop, ResizeSize};
pub use rotate::RandomRotation;
pub use zoom::RandomZoom;

/// Invalid transform parameters or preset names.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TransformError {
    /// A parameter is out of range; the message names it.
    #[error("invalid transform parameter: {0}")]
    Invalid(String),
    /// A preset name that is not `keras`, `torchvision` or `timm`.
    #[error("unknown preset `{0}` (expected keras, torchvision or timm)")]
    UnknownPreset(String),
}

/// One step on an RGB image; random steps draw only from `rng`, so a seed fixes the result.
pub trait ImageTransform: Send + Sync + std::fmt::Debug {
    /// Apply the step.
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage;
}

/// Uniform in `[lo, hi)` (`lo` when the range is empty), like `torch.empty(1).uniform_(lo, hi)`.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

/// A sequence of image steps followed by ToTensor (CHW f32 in [0, 1]) and Normalize(mean, std).
#[derive(Debug)]
pub struct Pipeline {
    /// Image steps, applied in order.
    pub steps: Vec<Box<dyn ImageTransform>>,
    /// Channel means subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Channel standard deviations divided by.
    pub std: [f32; 3],
    /// Output height and width (every step sequence must end at this size).
    pub output_hw: (usize, usize),
}

impl Pipeline {
    /// Run only the image steps (no tensor conversion): useful to inspect or save augmented images.
    pub fn apply_image(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        self.steps.iter().fold(img, |img, s| s.apply(img, rng))
    }

    /// Run the steps, then ToTensor + Normalize: CHW f32 of `3 × output_hw`.
    pub fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let img = self.apply_image(img, rng);
        debug_assert_eq!(
            (img.height() as usize, img.width() as usize),
            self.output_hw,
            "pipeline steps must end at output_hw"
        );
        to_tensor_normalized(&img, self.mean, self.std)
    }
}

/// ToTensor + Normalize: CHW f32 with `(v / 255 - mean) / std` per channel.
pub fn to_tensor_normalized(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    // A lookup table per channel, computed with exactly torchvision's float operations.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, t) in table.iter_mut().enumerate() {
            *t = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    let n = img.width() as usize * img.height() as usize;
    let mut out = vec![0f32; 3 * n];
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = lut[0][p[0] as usize];
        g[i] = lut[1][p[1] as usize];
        b[i] = lut[2][p[2] as usize];
    }
    out
}
