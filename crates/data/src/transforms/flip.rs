//! Random horizontal flip.

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::mask::hflip_mask;
use super::{ImageTransform, TransformError};
use crate::target::{Affine, Annotated};

/// Mirror the image left-right with probability `p` (torchvision `RandomHorizontalFlip`, Keras `horizontal_flip`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomHorizontalFlip {
    /// Probability of flipping.
    pub p: f64,
}

impl RandomHorizontalFlip {
    /// A flip with probability `p`; errors unless `0 <= p <= 1`.
    pub fn new(p: f64) -> Result<Self, TransformError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(TransformError::Invalid(format!(
                "flip probability must be in [0, 1], got {p}"
            )));
        }
        Ok(Self { p })
    }
}

impl Default for RandomHorizontalFlip {
    fn default() -> Self {
        Self { p: 0.5 }
    }
}

impl ImageTransform for RandomHorizontalFlip {
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        // Always draw, so the random stream does not depend on `p`.
        let draw: f64 = rng.gen();
        if draw < self.p {
            hflip(img)
        } else {
            img
        }
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        let draw: f64 = rng.gen();
        if draw >= self.p {
            return Ok(a);
        }
        let w = a.image.width() as f64;
        Ok(a.moved(&Affine::scale_translate(-1.0, 1.0, w, 0.0), hflip, |m| hflip_mask(&m)))
    }
}

/// Mirror `img` left-right.
pub fn hflip(mut img: RgbImage) -> RgbImage {
    let w = img.width() as usize;
    if w == 0 {
        return img;
    }
    for row in img.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            let (a, b) = (x * 3, (w - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
    img
}
