//! Random horizontal flip.

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{ImageTransform, TransformError};

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
