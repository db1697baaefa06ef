//! Random rotation about the image center.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::affine::{Fill, RandomAffine};
use super::{ImageTransform, TransformError};
use crate::target::Annotated;

/// Rotate by an angle uniform in `[-degrees, degrees]` about the center, bilinear (Keras `rotation_range`).
///
/// The output keeps the input size; corners mapped from outside are filled per [`Fill`] (Keras: nearest edge).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomRotation(RandomAffine);

impl RandomRotation {
    /// Rotation up to `degrees` with `fill`; errors when `degrees` is negative or not finite.
    pub fn new(degrees: f64, fill: Fill) -> Result<Self, TransformError> {
        Ok(Self(RandomAffine::new(degrees, (1.0, 1.0), fill)?))
    }

    /// Maximum rotation in degrees.
    pub fn degrees(&self) -> f64 {
        self.0.degrees
    }
}

impl ImageTransform for RandomRotation {
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        self.0.apply(img, rng)
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        self.0.apply_annotated(a, rng)
    }
}
