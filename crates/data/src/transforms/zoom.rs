//! Random per-axis zoom (Keras `zoom_range`).

use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::affine::{Fill, RandomAffine};
use super::{ImageTransform, TransformError};
use crate::target::Annotated;

/// Zoom each axis by a factor uniform in `[1 - range, 1 + range]`, about the center (Keras `zoom_range`).
///
/// As in Keras a factor above 1 zooms out (the output shows more of the image), bilinear, size unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomZoom(RandomAffine);

impl RandomZoom {
    /// Zoom factors in `[1 - range, 1 + range]` with `fill`; errors unless `0 <= range < 1`.
    pub fn new(range: f64, fill: Fill) -> Result<Self, TransformError> {
        if !(0.0..1.0).contains(&range) {
            return Err(TransformError::Invalid(format!(
                "zoom range must be in [0, 1), got {range}"
            )));
        }
        Self::with_factors((1.0 - range, 1.0 + range), fill)
    }

    /// Zoom factors in `[lo, hi]` (Keras `zoom_range=[lo, hi]`); errors unless `0 < lo <= hi`.
    pub fn with_factors(factors: (f64, f64), fill: Fill) -> Result<Self, TransformError> {
        Ok(Self(RandomAffine::new(0.0, factors, fill)?))
    }

    /// Range of the zoom factors.
    pub fn factors(&self) -> (f64, f64) {
        self.0.zoom
    }
}

impl ImageTransform for RandomZoom {
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        self.0.apply(img, rng)
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        self.0.apply_annotated(a, rng)
    }
}
