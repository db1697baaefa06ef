//! Aspect-preserving input steps for detection and segmentation, whose map back to the original is recorded in the
//! sample's [`crate::target::Placement`].

use image::{Rgb, RgbImage};
use rand_chacha::ChaCha8Rng;

use super::mask::{pad_mask, resize_mask};
use super::resize::{resize, scale, ResizeSize};
use super::{ImageTransform, TransformError};
use crate::config::Interpolation;
use crate::target::{Affine, Annotated};

/// Paste `img` at (`top`, `left`) on an `h × w` canvas of `fill`.
fn pad(img: &RgbImage, top: usize, left: usize, h: usize, w: usize, fill: [u8; 3]) -> RgbImage {
    let mut out = RgbImage::from_pixel(w as u32, h as u32, Rgb(fill));
    image::imageops::replace(&mut out, img, left as i64, top as i64);
    out
}

/// Ultralytics' `LetterBox`: scale to fit `h × w` keeping the aspect ratio, center, pad with `fill`.
///
/// Scale `r = min(h / H, w / W)` (capped at 1 unless `scale_up`), resized size `round(W r) × round(H r)`, offsets
/// `round(pad / 2 - 0.1)` as Ultralytics places them; masks are padded with [`crate::target::IGNORE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Output height.
    pub h: usize,
    /// Output width.
    pub w: usize,
    /// Resampling filter of the image.
    pub interpolation: Interpolation,
    /// Padding colour (Ultralytics: 114 grey).
    pub fill: [u8; 3],
    /// Enlarge images smaller than the output (Ultralytics' default `scaleup=True`).
    pub scale_up: bool,
}

impl Letterbox {
    /// A letterbox to `h × w` with bilinear resampling, grey 114 padding, enlarging allowed; errors on empty sizes.
    pub fn new(h: usize, w: usize) -> Result<Self, TransformError> {
        if h == 0 || w == 0 {
            return Err(TransformError::Invalid("letterbox size must be positive".into()));
        }
        Ok(Self {
            h,
            w,
            interpolation: Interpolation::Bilinear,
            fill: [114; 3],
            scale_up: true,
        })
    }

    /// `(resized height, resized width, top, left)` for an input of `ih × iw`.
    pub fn layout(&self, ih: usize, iw: usize) -> (usize, usize, usize, usize) {
        if ih == 0 || iw == 0 {
            return (0, 0, self.h / 2, self.w / 2);
        }
        let mut r = (self.h as f64 / ih as f64).min(self.w as f64 / iw as f64);
        if !self.scale_up {
            r = r.min(1.0);
        }
        let nh = ((ih as f64 * r).round() as usize).clamp(1, self.h);
        let nw = ((iw as f64 * r).round() as usize).clamp(1, self.w);
        let (dh, dw) = ((self.h - nh) as f64 / 2.0, (self.w - nw) as f64 / 2.0);
        let top = (dh - 0.1).round().max(0.0) as usize;
        let left = (dw - 0.1).round().max(0.0) as usize;
        (nh, nw, top, left)
    }
}

impl ImageTransform for Letterbox {
    fn apply(&self, img: RgbImage, _rng: &mut ChaCha8Rng) -> RgbImage {
        let (nh, nw, top, left) = self.layout(img.height() as usize, img.width() as usize);
        pad(
            &resize(img, nh, nw, self.interpolation),
            top,
            left,
            self.h,
            self.w,
            self.fill,
        )
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        let (ih, iw) = (a.image.height() as usize, a.image.width() as usize);
        let (nh, nw, top, left) = self.layout(ih, iw);
        let step = scale(ih, iw, nh, nw).then(&Affine::scale_translate(1.0, 1.0, left as f64, top as f64));
        let (h, w) = (self.h, self.w);
        Ok(a.moved(
            &step,
            |img| self.apply(img, rng),
            |m| pad_mask(&resize_mask(&m, nh, nw), top, left, h, w),
        ))
    }
}

/// Segmentation evaluation input (mmseg's `Resize(keep_ratio)` + `Pad(size_divisor)`): resize the shorter side to
/// `shorter` (torchvision `Resize(int)` sizes), then pad bottom and right to a multiple of `stride`.
///
/// The output size depends on the image's aspect ratio: batch such samples one at a time unless all images share
/// one size. Masks are padded with [`crate::target::IGNORE`], images with `fill`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeShorterPad {
    /// Shorter side after resizing.
    pub shorter: usize,
    /// The output height and width are multiples of this (the backbone's total stride, e.g. 32).
    pub stride: usize,
    /// Resampling filter of the image.
    pub interpolation: Interpolation,
    /// Padding colour.
    pub fill: [u8; 3],
}

impl ResizeShorterPad {
    /// Shorter side `shorter`, padded to a multiple of `stride`, bilinear, black padding; errors on zeros.
    pub fn new(shorter: usize, stride: usize) -> Result<Self, TransformError> {
        if shorter == 0 || stride == 0 {
            return Err(TransformError::Invalid(
                "resize-and-pad needs a positive shorter side and stride".into(),
            ));
        }
        Ok(Self {
            shorter,
            stride,
            interpolation: Interpolation::Bilinear,
            fill: [0; 3],
        })
    }

    /// `(resized height, resized width, padded height, padded width)` for an input of `ih × iw`.
    pub fn layout(&self, ih: usize, iw: usize) -> (usize, usize, usize, usize) {
        let (nh, nw) = if ih == 0 || iw == 0 {
            (0, 0)
        } else {
            ResizeSize::Shorter(self.shorter).output_hw(ih, iw)
        };
        let up = |v: usize| v.div_ceil(self.stride).max(1) * self.stride;
        (nh, nw, up(nh), up(nw))
    }
}

impl ImageTransform for ResizeShorterPad {
    fn apply(&self, img: RgbImage, _rng: &mut ChaCha8Rng) -> RgbImage {
        let (nh, nw, ph, pw) = self.layout(img.height() as usize, img.width() as usize);
        pad(&resize(img, nh, nw, self.interpolation), 0, 0, ph, pw, self.fill)
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        let (ih, iw) = (a.image.height() as usize, a.image.width() as usize);
        let (nh, nw, ph, pw) = self.layout(ih, iw);
        Ok(a.moved(
            &scale(ih, iw, nh, nw),
            |img| self.apply(img, rng),
            |m| pad_mask(&resize_mask(&m, nh, nw), 0, 0, ph, pw),
        ))
    }
}
