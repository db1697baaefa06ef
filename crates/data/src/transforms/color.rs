//! torchvision `ColorJitter` with PIL's arithmetic (`ImageEnhance` blends, HSV hue rotation).

use image::RgbImage;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{uniform, ImageTransform, TransformError};
use crate::target::Annotated;

/// Randomly change brightness, contrast, saturation and hue, in a random order (torchvision `ColorJitter`).
///
/// Factors are uniform in `[max(0, 1 - s), 1 + s]` for the first three and the hue shift in `[-h, h]`; a strength
/// of zero disables that adjustment (and draws nothing for it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    /// Brightness factor range, `None` when disabled.
    pub brightness: Option<(f64, f64)>,
    /// Contrast factor range, `None` when disabled.
    pub contrast: Option<(f64, f64)>,
    /// Saturation factor range, `None` when disabled.
    pub saturation: Option<(f64, f64)>,
    /// Hue shift range (fraction of a full turn), `None` when disabled.
    pub hue: Option<(f64, f64)>,
}

impl ColorJitter {
    /// Jitter with torchvision's scalar strengths; errors on negative values or `hue > 0.5`.
    pub fn new(brightness: f64, contrast: f64, saturation: f64, hue: f64) -> Result<Self, TransformError> {
        let around_one = |name: &str, v: f64| -> Result<Option<(f64, f64)>, TransformError> {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TransformError::Invalid(format!(
                    "color jitter {name} must be >= 0, got {v}"
                )));
            }
            Ok((v > 0.0).then(|| ((1.0 - v).max(0.0), 1.0 + v)))
        };
        if !(0.0..=0.5).contains(&hue) {
            return Err(TransformError::Invalid(format!(
                "color jitter hue must be in [0, 0.5], got {hue}"
            )));
        }
        Ok(Self {
            brightness: around_one("brightness", brightness)?,
            contrast: around_one("contrast", contrast)?,
            saturation: around_one("saturation", saturation)?,
            hue: (hue > 0.0).then_some((-hue, hue)),
        })
    }
}

impl ImageTransform for ColorJitter {
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let draw = |r: Option<(f64, f64)>, rng: &mut ChaCha8Rng| r.map(|(lo, hi)| uniform(rng, lo, hi));
        let b = draw(self.brightness, rng);
        let c = draw(self.contrast, rng);
        let s = draw(self.saturation, rng);
        let h = draw(self.hue, rng);
        let mut img = img;
        for i in order {
            img = match (i, b, c, s, h) {
                (0, Some(f), ..) => adjust_brightness(img, f as f32),
                (1, _, Some(f), ..) => adjust_contrast(img, f as f32),
                (2, _, _, Some(f), _) => adjust_saturation(img, f as f32),
                (3, .., Some(f)) => adjust_hue(img, f),
                _ => img,
            };
        }
        img
    }

    /// Photometric: the image changes, the targets stay.
    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        Ok(a.map_image(|img| self.apply(img, rng)))
    }
}

/// PIL `Image.blend(degenerate, img, alpha)` for one value: `degenerate + alpha * (img - degenerate)`, truncated.
#[inline]
fn blend(degenerate: u8, value: u8, alpha: f32) -> u8 {
    let t = degenerate as f32 + alpha * (value as i32 - degenerate as i32) as f32;
    if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
}

/// PIL's RGB to L conversion (ITU-R 601-2 luma, fixed point).
#[inline]
fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Scale brightness by `factor` (blend with black).
pub fn adjust_brightness(mut img: RgbImage, factor: f32) -> RgbImage {
    for v in img.iter_mut() {
        *v = blend(0, *v, factor);
    }
    img
}

/// Scale contrast by `factor` (blend with the rounded mean grey level).
pub fn adjust_contrast(mut img: RgbImage, factor: f32) -> RgbImage {
    let n = (img.width() as u64 * img.height() as u64).max(1);
    let sum: u64 = img.chunks_exact(3).map(|p| luma(p) as u64).sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    for v in img.iter_mut() {
        *v = blend(mean, *v, factor);
    }
    img
}

/// Scale saturation by `factor` (blend with the pixel's grey level).
pub fn adjust_saturation(mut img: RgbImage, factor: f32) -> RgbImage {
    for p in img.chunks_exact_mut(3) {
        let l = luma(p);
        for v in p.iter_mut() {
            *v = blend(l, *v, factor);
        }
    }
    img
}

/// Rotate hue by `shift` of a full turn through PIL's 8-bit HSV (torchvision's PIL `adjust_hue`).
pub fn adjust_hue(mut img: RgbImage, shift: f64) -> RgbImage {
    let delta = (shift * 255.0) as i32 as u8;
    for p in img.chunks_exact_mut(3) {
        let [h, s, v] = rgb_to_hsv(p[0], p[1], p[2]);
        let rgb = hsv_to_rgb(h.wrapping_add(delta), s, v);
        p.copy_from_slice(&rgb);
    }
    img
}

/// PIL's `rgb2hsv` (all channels 0..=255).
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let rc = (maxc - r) as f32 / cr;
    let gc = (maxc - g) as f32 / cr;
    let bc = (maxc - b) as f32 / cr;
    let h = if r == maxc {
        bc - gc
    } else if g == maxc {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    let clip = |v: f32| (v * 255.0).clamp(0.0, 255.0) as i32 as u8;
    [clip(h), clip(s), maxc]
}

/// PIL's `hsv2rgb`.
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let hf = h as f32 * 6.0 / 255.0;
    let i = hf.floor() as i32;
    let f = hf - i as f32;
    let fs = s as f32 / 255.0;
    let vf = v as f32;
    let clip = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    let p = clip(vf * (1.0 - fs));
    let q = clip(vf * (1.0 - fs * f));
    let t = clip(vf * (1.0 - fs * (1.0 - f)));
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}
