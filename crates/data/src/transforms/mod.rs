//! Composable, seeded image transforms and the presets built from them.
//!
//! Every step maps an [`RgbImage`] to an [`RgbImage`] and draws randomness only from the given
//! [`ChaCha8Rng`], so a seed fixes the result. [`Pipeline::apply`] ends with ToTensor + Normalize.
//!
//! Every step also maps an [`Annotated`] image (image + mask + boxes + placement record) with
//! [`ImageTransform::apply_annotated`], drawing the same random numbers as `apply` (so the image comes out the same):
//! geometric steps move the mask (nearest neighbour only, [`crate::target::IGNORE`] where they fill) and the boxes
//! with the image and record their map in the [`crate::target::Placement`]; photometric steps leave targets alone. A
//! step that does not implement the joint path refuses a sample with targets
//! ([`TransformError::NoTargetSupport`]) instead of silently moving the image alone.

pub mod affine;
pub mod color;
pub mod crop;
pub mod flip;
pub mod letterbox;
pub mod mask;
pub mod presets;
pub mod resize;
pub mod rotate;
pub mod zoom;

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::target::Annotated;

pub use affine::{Fill, RandomAffine};
pub use color::ColorJitter;
pub use crop::{CenterCrop, RandomResizedCrop};
pub use flip::RandomHorizontalFlip;
pub use letterbox::{Letterbox, ResizeShorterPad};
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
    /// A step without a joint path was given an image with a mask or boxes; the string is the step.
    #[error("transform step {0} cannot move masks or boxes (implement ImageTransform::apply_annotated)")]
    NoTargetSupport(String),
}

/// One step on an RGB image; random steps draw only from `rng`, so a seed fixes the result.
pub trait ImageTransform: Send + Sync + std::fmt::Debug {
    /// Apply the step.
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage;

    /// Apply the step to an image and its targets, drawing the same random numbers as [`ImageTransform::apply`].
    ///
    /// The default serves only samples without targets (it applies `apply` to the image): with a mask or boxes it
    /// is [`TransformError::NoTargetSupport`]. Every step of this crate overrides it.
    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        if a.has_targets() {
            return Err(TransformError::NoTargetSupport(format!("{self:?}")));
        }
        Ok(a.map_image(|img| self.apply(img, rng)))
    }
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

    /// Run the steps on an image and its targets (no tensor conversion; see [`to_tensor_normalized`]).
    ///
    /// The image comes out as [`Pipeline::apply_image`] makes it for the same RNG; errors when a step has no joint
    /// path and the sample has targets.
    pub fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        self.steps.iter().try_fold(a, |a, s| s.apply_annotated(a, rng))
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
