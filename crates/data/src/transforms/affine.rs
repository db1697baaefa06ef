//! Keras-style random affine warp (rotation and zoom in one resampling, as `ImageDataGenerator` does).

use image::RgbImage;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::mask::warp_mask;
use super::{uniform, ImageTransform, TransformError};
use crate::target::{Affine, Annotated};

/// How pixels that map outside the source image are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fill {
    /// Repeat the nearest edge pixel (Keras' default `fill_mode='nearest'`).
    #[default]
    Nearest,
    /// Black (torchvision's default `fill=0`).
    Zero,
}

/// Random rotation and per-axis zoom applied as one bilinear warp (Keras `ImageDataGenerator`).
///
/// Keras semantics: angle uniform in `[-degrees, degrees]`, zoom factors `zx`, `zy` drawn independently and
/// uniformly from `zoom` (a factor above 1 zooms out), the source coordinate of an output pixel is
/// `R(angle) · diag(z_row, z_col) · (p - o) + o` with Keras' center `o = (size / 2 + 0.5)` per axis, bilinear sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomAffine {
    /// Maximum rotation in degrees (0 disables rotation).
    pub degrees: f64,
    /// Range of the zoom factors (`(1, 1)` disables zoom).
    pub zoom: (f64, f64),
    /// Fill for pixels mapped from outside the image.
    pub fill: Fill,
}

impl RandomAffine {
    /// A warp with rotation up to `degrees` and zoom factors in `zoom`; errors on negative or non-finite values.
    pub fn new(degrees: f64, zoom: (f64, f64), fill: Fill) -> Result<Self, TransformError> {
        if !(degrees.is_finite() && degrees >= 0.0) {
            return Err(TransformError::Invalid(format!(
                "rotation degrees must be >= 0, got {degrees}"
            )));
        }
        if !(zoom.0 > 0.0 && zoom.0 <= zoom.1 && zoom.1.is_finite()) {
            return Err(TransformError::Invalid(format!(
                "zoom range must satisfy 0 < min <= max, got ({}, {})",
                zoom.0, zoom.1
            )));
        }
        Ok(Self { degrees, zoom, fill })
    }

    /// Draw `(angle in degrees, zoom along rows, zoom along columns)` as Keras does.
    pub fn params(&self, rng: &mut ChaCha8Rng) -> (f64, f64, f64) {
        let theta = if self.degrees > 0.0 {
            uniform(rng, -self.degrees, self.degrees)
        } else {
            0.0
        };
        let (zr, zc) = if self.zoom == (1.0, 1.0) {
            (1.0, 1.0)
        } else {
            (
                uniform(rng, self.zoom.0, self.zoom.1),
                uniform(rng, self.zoom.0, self.zoom.1),
            )
        };
        (theta, zr, zc)
    }
}

impl ImageTransform for RandomAffine {
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        let (theta, zr, zc) = self.params(rng);
        if theta == 0.0 && zr == 1.0 && zc == 1.0 {
            return img;
        }
        let (s, c) = theta.to_radians().sin_cos();
        // Keras: transform = rotation · zoom, on (row, col) coordinates.
        let m = [c * zr, -s * zc, s * zr, c * zc];
        warp(&img, m, self.fill)
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        let (theta, zr, zc) = self.params(rng);
        if theta == 0.0 && zr == 1.0 && zc == 1.0 {
            return Ok(a);
        }
        let (s, c) = theta.to_radians().sin_cos();
        let m = [c * zr, -s * zc, s * zr, c * zc];
        let (h, w) = (a.image.height() as usize, a.image.width() as usize);
        let fill = self.fill;
        Ok(a.moved(
            &warp_affine(m, h, w),
            |img| warp(&img, m, fill),
            |mask| warp_mask(&mask, m),
        ))
    }
}

/// Where [`warp`] moves continuous pixel coordinates of an `h × w` image: the inverse of its sampling map.
///
/// `warp` samples output index `p` at source index `m · (p - o) + o`; with pixel centers at `index + 0.5` that is
/// `m · (p' - o') + o'` on continuous coordinates, `o' = o + 0.5`, so a source point moves to `m⁻¹ · (s - o') + o'`.
pub fn warp_affine(m: [f64; 4], h: usize, w: usize) -> Affine {
    let (orr, oc) = (h as f64 / 2.0 + 1.0, w as f64 / 2.0 + 1.0);
    // `m` acts on (row, col); in (x, y) = (col, row) order it is [[m3, m2], [m1, m0]].
    let sample = Affine {
        m: [
            m[3],
            m[2],
            oc - m[3] * oc - m[2] * orr,
            m[1],
            m[0],
            orr - m[1] * oc - m[0] * orr,
        ],
    };
    sample.inverse()
}

/// Resample `img` at `src = m · (p - o) + o` for each output pixel `p = (row, col)`, `m` row-major 2×2.
pub fn warp(img: &RgbImage, m: [f64; 4], fill: Fill) -> RgbImage {
    let (h, w) = (img.height() as usize, img.width() as usize);
    if h == 0 || w == 0 {
        return img.clone();
    }
    let (or, oc) = (h as f64 / 2.0 + 0.5, w as f64 / 2.0 + 0.5);
    let src = img.as_raw();
    let mut out = vec![0u8; h * w * 3];
    let fetch = |r: i64, c: i64| -> Option<[f32; 3]> {
        let (r, c) = match fill {
            Fill::Nearest => (r.clamp(0, h as i64 - 1), c.clamp(0, w as i64 - 1)),
            Fill::Zero => {
                if r < 0 || c < 0 || r >= h as i64 || c >= w as i64 {
                    return None;
                }
                (r, c)
            }
        };
        let i = (r as usize * w + c as usize) * 3;
        Some([src[i] as f32, src[i + 1] as f32, src[i + 2] as f32])
    };
    out.par_chunks_mut(w * 3)
        .with_min_len(8)
        .enumerate()
        .for_each(|(y, orow)| {
            let dy = y as f64 - or;
            for x in 0..w {
                let dx = x as f64 - oc;
                let mut sr = m[0] * dy + m[1] * dx + or;
                let mut sc = m[2] * dy + m[3] * dx + oc;
                if fill == Fill::Nearest {
                    sr = sr.clamp(0.0, (h - 1) as f64);
                    sc = sc.clamp(0.0, (w - 1) as f64);
                }
                let (r0, c0) = (sr.floor(), sc.floor());
                let (fr, fc) = ((sr - r0) as f32, (sc - c0) as f32);
                let (r0, c0) = (r0 as i64, c0 as i64);
                let mut acc = [0f32; 3];
                for (dr, wr) in [(0, 1.0 - fr), (1, fr)] {
                    for (dc, wc) in [(0, 1.0 - fc), (1, fc)] {
                        let wgt = wr * wc;
                        if wgt == 0.0 {
                            continue;
                        }
                        if let Some(p) = fetch(r0 + dr, c0 + dc) {
                            for k in 0..3 {
                                acc[k] += wgt * p[k];
                            }
                        }
                    }
                }
                for k in 0..3 {
                    orow[x * 3 + k] = acc[k].round().clamp(0.0, 255.0) as u8;
                }
            }
        });
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer matches dimensions")
}
