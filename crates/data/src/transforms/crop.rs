//! Center crop and torchvision's RandomResizedCrop.

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::mask::{crop_mask, resize_mask};
use super::resize::{resize, scale};
use super::{uniform, ImageTransform, TransformError};
use crate::config::Interpolation;
use crate::target::{Affine, Annotated};

/// The translation of a crop at (`top`, `left`).
fn shift(top: i64, left: i64) -> Affine {
    Affine::scale_translate(1.0, 1.0, -left as f64, -top as f64)
}

/// Crop `h × w` at (`top`, `left`); the parts outside the image are filled with zeros (as torchvision pads).
pub fn crop(img: &RgbImage, top: i64, left: i64, h: usize, w: usize) -> RgbImage {
    let (ih, iw) = (img.height() as i64, img.width() as i64);
    if top >= 0 && left >= 0 && top + h as i64 <= ih && left + w as i64 <= iw {
        return image::imageops::crop_imm(img, left as u32, top as u32, w as u32, h as u32).to_image();
    }
    let mut out = RgbImage::new(w as u32, h as u32);
    for y in 0..h as i64 {
        let sy = top + y;
        if sy < 0 || sy >= ih {
            continue;
        }
        for x in 0..w as i64 {
            let sx = left + x;
            if sx >= 0 && sx < iw {
                out.put_pixel(x as u32, y as u32, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

/// Center crop to `h × w` (torchvision `CenterCrop`: top = round((H - h) / 2), zero padding when larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CenterCrop {
    /// Output height.
    pub h: usize,
    /// Output width.
    pub w: usize,
}

impl CenterCrop {
    /// A center crop to `h × w`; errors when a dimension is zero.
    pub fn new(h: usize, w: usize) -> Result<Self, TransformError> {
        if h == 0 || w == 0 {
            return Err(TransformError::Invalid("center crop size must be positive".into()));
        }
        Ok(Self { h, w })
    }
}

impl ImageTransform for CenterCrop {
    fn apply(&self, img: RgbImage, _rng: &mut ChaCha8Rng) -> RgbImage {
        let (ih, iw) = (img.height() as i64, img.width() as i64);
        if (ih, iw) == (self.h as i64, self.w as i64) {
            return img;
        }
        let top = center_offset(ih, self.h as i64);
        let left = center_offset(iw, self.w as i64);
        crop(&img, top, left, self.h, self.w)
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        let (ih, iw) = (a.image.height() as i64, a.image.width() as i64);
        let top = center_offset(ih, self.h as i64);
        let left = center_offset(iw, self.w as i64);
        let (h, w) = (self.h, self.w);
        Ok(a.moved(
            &shift(top, left),
            |img| self.apply(img, rng),
            |m| crop_mask(&m, top, left, h, w),
        ))
    }
}

/// torchvision's crop offset: `round((size - crop) / 2)` (ties to even), or `-((crop - size) / 2)` when it pads.
pub(crate) fn center_offset(size: i64, crop: i64) -> i64 {
    if crop > size {
        -((crop - size) / 2)
    } else {
        ((size - crop) as f64 / 2.0).round_ties_even() as i64
    }
}

/// torchvision `RandomResizedCrop(size, scale, ratio)`: a random area/aspect crop resized to `h × w`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    /// Output height.
    pub h: usize,
    /// Output width.
    pub w: usize,
    /// Range of the crop area as a fraction of the image area.
    pub scale: (f64, f64),
    /// Range of the crop aspect ratio (width / height), sampled log-uniformly.
    pub ratio: (f64, f64),
    /// Resampling filter of the final resize.
    pub interpolation: Interpolation,
}

impl RandomResizedCrop {
    /// torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3), bilinear, output `size × size`.
    pub fn square(size: usize) -> Self {
        Self {
            h: size,
            w: size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            interpolation: Interpolation::Bilinear,
        }
    }

    /// A crop with explicit parameters; errors on empty sizes or invalid ranges.
    pub fn new(
        h: usize,
        w: usize,
        scale: (f64, f64),
        ratio: (f64, f64),
        interpolation: Interpolation,
    ) -> Result<Self, TransformError> {
        if h == 0 || w == 0 {
            return Err(TransformError::Invalid(
                "random resized crop size must be positive".into(),
            ));
        }
        if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1.is_finite()) {
            return Err(TransformError::Invalid(format!(
                "random resized crop scale must satisfy 0 < min <= max, got ({}, {})",
                scale.0, scale.1
            )));
        }
        if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
            return Err(TransformError::Invalid(format!(
                "random resized crop ratio must satisfy 0 < min <= max, got ({}, {})",
                ratio.0, ratio.1
            )));
        }
        Ok(Self {
            h,
            w,
            scale,
            ratio,
            interpolation,
        })
    }

    /// The crop `(top, left, height, width)` for an image of `height × width` (torchvision `get_params`).
    pub fn params(&self, height: usize, width: usize, rng: &mut ChaCha8Rng) -> (usize, usize, usize, usize) {
        let area = (height * width) as f64;
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_lo, log_hi).exp();
            let w = (target_area * aspect).sqrt().round_ties_even() as usize;
            let h = (target_area / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let i = rng.gen_range(0..=height - h);
                let j = rng.gen_range(0..=width - w);
                return (i, j, h, w);
            }
        }
        // Fallback to a central crop.
        let in_ratio = width as f64 / height as f64;
        let (h, w) = if in_ratio < self.ratio.0 {
            (((width as f64) / self.ratio.0).round_ties_even() as usize, width)
        } else if in_ratio > self.ratio.1 {
            (height, ((height as f64) * self.ratio.1).round_ties_even() as usize)
        } else {
            (height, width)
        };
        let (h, w) = (h.clamp(1, height.max(1)), w.clamp(1, width.max(1)));
        ((height - h) / 2, (width - w) / 2, h, w)
    }
}

impl ImageTransform for RandomResizedCrop {
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        let (height, width) = (img.height() as usize, img.width() as usize);
        if height == 0 || width == 0 {
            return RgbImage::new(self.w as u32, self.h as u32);
        }
        let (i, j, h, w) = self.params(height, width, rng);
        let cropped = crop(&img, i as i64, j as i64, h, w);
        resize(cropped, self.h, self.w, self.interpolation)
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        let (height, width) = (a.image.height() as usize, a.image.width() as usize);
        let (oh, ow) = (self.h, self.w);
        if height == 0 || width == 0 {
            let step = Affine::scale_translate(1.0, 1.0, 0.0, 0.0);
            return Ok(a.moved(
                &step,
                |_| RgbImage::new(ow as u32, oh as u32),
                |m| resize_mask(&m, oh, ow),
            ));
        }
        let (i, j, h, w) = self.params(height, width, rng);
        let step = shift(i as i64, j as i64).then(&scale(h, w, oh, ow));
        let interpolation = self.interpolation;
        Ok(a.moved(
            &step,
            |img| resize(crop(&img, i as i64, j as i64, h, w), oh, ow, interpolation),
            |m| resize_mask(&crop_mask(&m, i as i64, j as i64, h, w), oh, ow),
        ))
    }
}
