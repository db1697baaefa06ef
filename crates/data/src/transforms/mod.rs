//! Composable, seeded image transforms and the presets built from them.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use crate::config::PreprocessConfig;

/// One step on an RGB image; random steps draw only from `rng`, so a seed fixes the result.
pub trait ImageTransform: Send + Sync + std::fmt::Debug {
    /// Apply the step.
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage;
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
    /// Evaluation preprocessing from a model's config: resize shorter side to `size / crop_pct`, center-crop, normalise.
    pub fn eval(cfg: &PreprocessConfig) -> Self {
        let _ = cfg;
        unimplemented!("transforms are filled in by the transforms work")
    }

    /// Run the steps, then ToTensor + Normalize: CHW f32 of `3 × output_hw`.
    pub fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let mut img = img;
        for s in &self.steps {
            img = s.apply(img, rng);
        }
        let (w, h) = img.dimensions();
        let (w, h) = (w as usize, h as usize);
        let mut out = vec![0f32; 3 * h * w];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                out[c * h * w + i] = (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }
}
