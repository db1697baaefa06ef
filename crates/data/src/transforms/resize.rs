//! Resizing with PIL's exact resampling (`ImagingResample`): separable, antialiased when shrinking.

use image::RgbImage;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::mask::{crop_mask, resize_mask};
use super::{ImageTransform, TransformError};
use crate::config::Interpolation;
use crate::target::{Affine, Annotated};

/// Fixed-point precision of PIL's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Target size of a [`Resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeSize {
    /// Shorter side to this many pixels, long side `int(size * long / short)` (torchvision `Resize(int)`).
    Shorter(usize),
    /// Exactly `h × w`, ignoring the aspect ratio.
    Exact {
        /// Output height.
        h: usize,
        /// Output width.
        w: usize,
    },
    /// Keep the aspect ratio so that the image covers `h × w` (timm `ResizeKeepRatio`, longest = 0).
    Cover {
        /// Height to cover.
        h: usize,
        /// Width to cover.
        w: usize,
    },
}

impl ResizeSize {
    /// Output `(height, width)` for an input of `h × w`.
    pub fn output_hw(&self, h: usize, w: usize) -> (usize, usize) {
        match *self {
            ResizeSize::Shorter(size) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((size * long) as f64 / short as f64) as usize;
                if w <= h {
                    (new_long, size)
                } else {
                    (size, new_long)
                }
            }
            ResizeSize::Exact { h: th, w: tw } => (th, tw),
            ResizeSize::Cover { h: th, w: tw } => {
                let ratio = (h as f64 / th as f64).min(w as f64 / tw as f64);
                let round = |v: f64| (v / ratio).round_ties_even().max(1.0) as usize;
                (round(h as f64), round(w as f64))
            }
        }
    }
}

/// Resize (torchvision `Resize` on a PIL image): bit-exact with PIL for bilinear, bicubic and nearest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resize {
    /// Target size.
    pub size: ResizeSize,
    /// Resampling filter.
    pub interpolation: Interpolation,
}

impl Resize {
    /// A resize to `size` with `interpolation`; errors when a target dimension is zero.
    pub fn new(size: ResizeSize, interpolation: Interpolation) -> Result<Self, TransformError> {
        let zero = match size {
            ResizeSize::Shorter(s) => s == 0,
            ResizeSize::Exact { h, w } | ResizeSize::Cover { h, w } => h == 0 || w == 0,
        };
        if zero {
            return Err(TransformError::Invalid("resize size must be positive".into()));
        }
        Ok(Self { size, interpolation })
    }
}

impl ImageTransform for Resize {
    fn apply(&self, img: RgbImage, _rng: &mut ChaCha8Rng) -> RgbImage {
        let (h, w) = (img.height() as usize, img.width() as usize);
        let (oh, ow) = self.size.output_hw(h, w);
        resize(img, oh, ow, self.interpolation)
    }

    fn apply_annotated(&self, a: Annotated, _rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        let (h, w) = (a.image.height() as usize, a.image.width() as usize);
        let (oh, ow) = self.size.output_hw(h, w);
        Ok(resized(a, oh, ow, self.interpolation))
    }
}

/// The scale of a resize from `h × w` to `oh × ow` (the identity for empty images).
pub(crate) fn scale(h: usize, w: usize, oh: usize, ow: usize) -> Affine {
    let ratio = |o: usize, i: usize| if i == 0 { 1.0 } else { o as f64 / i as f64 };
    Affine::scale_translate(ratio(ow, w), ratio(oh, h), 0.0, 0.0)
}

/// `a` resized to `oh × ow`: the image with `interpolation`, the mask nearest, the boxes scaled.
pub(crate) fn resized(a: Annotated, oh: usize, ow: usize, interpolation: Interpolation) -> Annotated {
    let (h, w) = (a.image.height() as usize, a.image.width() as usize);
    a.moved(
        &scale(h, w, oh, ow),
        |img| resize(img, oh, ow, interpolation),
        |m| resize_mask(&m, oh, ow),
    )
}

/// Resize `img` to `h × w` exactly as PIL's `Image.resize((w, h), filter)` does (returns `img` when the size matches).
pub fn resize(img: RgbImage, h: usize, w: usize, interpolation: Interpolation) -> RgbImage {
    let (ih, iw) = (img.height() as usize, img.width() as usize);
    if (ih, iw) == (h, w) || h == 0 || w == 0 || ih == 0 || iw == 0 {
        return if h == 0 || w == 0 {
            RgbImage::new(w as u32, h as u32)
        } else {
            img
        };
    }
    match interpolation {
        Interpolation::Nearest => resize_nearest(&img, h, w),
        Interpolation::Bilinear => resample(&img, h, w, [0, 0, h, w], 1.0, bilinear_filter),
        Interpolation::Bicubic => resample(&img, h, w, [0, 0, h, w], 2.0, bicubic_filter),
    }
}

/// Resize then center-crop (torchvision `Resize` + `CenterCrop`, timm's eval transform) computing only the pixels
/// the crop keeps: identical to the two steps, without resampling the discarded border.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeCenterCrop {
    /// The resize.
    pub resize: Resize,
    /// Crop height.
    pub h: usize,
    /// Crop width.
    pub w: usize,
}

impl ImageTransform for ResizeCenterCrop {
    fn apply(&self, img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        let (ih, iw) = (img.height() as usize, img.width() as usize);
        let (oh, ow) = self.resize.size.output_hw(ih, iw);
        let top = super::crop::center_offset(oh as i64, self.h as i64);
        let left = super::crop::center_offset(ow as i64, self.w as i64);
        let inside = top >= 0 && left >= 0 && top as usize + self.h <= oh && left as usize + self.w <= ow;
        let filter: Option<(f64, Filter)> = match self.resize.interpolation {
            Interpolation::Bilinear => Some((1.0, bilinear_filter)),
            Interpolation::Bicubic => Some((2.0, bicubic_filter)),
            Interpolation::Nearest => None,
        };
        match filter {
            Some((support, filter)) if inside && (oh, ow) != (ih, iw) && ih > 0 && iw > 0 => {
                let window = [top as usize, left as usize, self.h, self.w];
                resample(&img, oh, ow, window, support, filter)
            }
            _ => {
                let resized = self.resize.apply(img, rng);
                super::CenterCrop { h: self.h, w: self.w }.apply(resized, rng)
            }
        }
    }

    fn apply_annotated(&self, a: Annotated, rng: &mut ChaCha8Rng) -> Result<Annotated, TransformError> {
        let (ih, iw) = (a.image.height() as usize, a.image.width() as usize);
        let (oh, ow) = self.resize.size.output_hw(ih, iw);
        let top = super::crop::center_offset(oh as i64, self.h as i64);
        let left = super::crop::center_offset(ow as i64, self.w as i64);
        let step = scale(ih, iw, oh, ow).then(&Affine::scale_translate(1.0, 1.0, -left as f64, -top as f64));
        let (h, w) = (self.h, self.w);
        Ok(a.moved(
            &step,
            |img| self.apply(img, rng),
            |m| crop_mask(&resize_mask(&m, oh, ow), top, left, h, w),
        ))
    }
}

/// A resampling filter's kernel.
type Filter = fn(f64) -> f64;

/// PIL's triangle filter.
fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// PIL's bicubic filter with a = -0.5.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per-output-pixel source window and fixed-point weights (PIL `precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Coeffs {
    /// First source index of each output pixel.
    start: Vec<usize>,
    /// Number of source pixels of each output pixel.
    len: Vec<usize>,
    /// `ksize` weights per output pixel (only the first `len` are used).
    weights: Vec<i32>,
    /// Stride of `weights`.
    ksize: usize,
}

fn precompute_coeffs(in_size: usize, out_size: usize, support: f64, filter: fn(f64) -> f64) -> Coeffs {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero; clamping to 0 makes that irrelevant for negative values.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize).saturating_sub(xmin);
        let xmax = xmax.min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let v = filter(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = v;
            ww += v;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for x in 0..xmax {
            let v = if ww != 0.0 { k[x] / ww } else { k[x] };
            let scaled = v * (1u32 << PRECISION_BITS) as f64;
            row[x] = if v < 0.0 {
                (scaled - 0.5) as i32
            } else {
                (scaled + 0.5) as i32
            };
        }
        start.push(xmin);
        len.push(xmax);
    }
    Coeffs {
        start,
        len,
        weights,
        ksize,
    }
}

/// PIL's `clip8`: fixed-point accumulator to u8.
#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Rows of this many pixels or more are split across rayon tasks.
const MIN_ROWS_PER_TASK: usize = 8;

/// PIL's resampling of `img` to `h × w`, computing only the output window `[top, left, height, width]`.
fn resample(img: &RgbImage, h: usize, w: usize, window: [usize; 4], support: f64, filter: fn(f64) -> f64) -> RgbImage {
    let (ih, iw) = (img.height() as usize, img.width() as usize);
    let [top, left, oh, ow] = window;
    let src = img.as_raw();
    let half = 1i32 << (PRECISION_BITS - 1);

    // Horizontal pass (only over the source rows the vertical pass reads, only the window's columns).
    let vert = precompute_coeffs(ih, h, support, filter);
    let (y_first, y_last) = if h != ih {
        let last = top + oh - 1;
        (vert.start[top], vert.start[last] + vert.len[last])
    } else {
        (top, top + oh)
    };
    let tmp_rows = y_last - y_first;
    let horizontal: Vec<u8>;
    let tmp: &[u8] = if w != iw {
        let hc = precompute_coeffs(iw, w, support, filter);
        let mut out = vec![0u8; tmp_rows * ow * 3];
        out.par_chunks_mut(ow * 3)
            .with_min_len(MIN_ROWS_PER_TASK)
            .enumerate()
            .for_each(|(r, orow)| {
                let y = r + y_first;
                let srow = &src[y * iw * 3..(y + 1) * iw * 3];
                for (o, xx) in orow.chunks_exact_mut(3).zip(left..left + ow) {
                    let k = &hc.weights[xx * hc.ksize..xx * hc.ksize + hc.len[xx]];
                    let base = hc.start[xx] * 3;
                    let (mut s0, mut s1, mut s2) = (half, half, half);
                    for (x, &kx) in k.iter().enumerate() {
                        let p = base + x * 3;
                        s0 += srow[p] as i32 * kx;
                        s1 += srow[p + 1] as i32 * kx;
                        s2 += srow[p + 2] as i32 * kx;
                    }
                    o[0] = clip8(s0);
                    o[1] = clip8(s1);
                    o[2] = clip8(s2);
                }
            });
        horizontal = out;
        &horizontal
    } else if (left, ow) == (0, iw) {
        &src[y_first * iw * 3..y_last * iw * 3]
    } else {
        horizontal = (y_first..y_last)
            .flat_map(|y| &src[(y * iw + left) * 3..(y * iw + left + ow) * 3])
            .copied()
            .collect();
        &horizontal
    };

    if h == ih {
        return RgbImage::from_raw(ow as u32, oh as u32, tmp.to_vec()).expect("buffer matches dimensions");
    }

    // Vertical pass over contiguous rows.
    let row_len = ow * 3;
    let mut out = vec![0u8; oh * row_len];
    out.par_chunks_mut(row_len)
        .with_min_len(MIN_ROWS_PER_TASK)
        .enumerate()
        .for_each_init(
            || vec![0i32; row_len],
            |acc, (r, orow)| {
                let yy = top + r;
                acc.fill(half);
                let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + vert.len[yy]];
                let first = vert.start[yy] - y_first;
                for (y, &ky) in k.iter().enumerate() {
                    let srow = &tmp[(first + y) * row_len..(first + y + 1) * row_len];
                    for (a, &s) in acc.iter_mut().zip(srow) {
                        *a += s as i32 * ky;
                    }
                }
                for (o, &a) in orow.iter_mut().zip(acc.iter()) {
                    *o = clip8(a);
                }
            },
        );
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("buffer matches dimensions")
}

/// PIL's nearest-neighbour source index of each of `out_size` output pixels.
pub(crate) fn nearest_table(in_size: usize, out_size: usize) -> Vec<usize> {
    let a = in_size as f32 as f64 / out_size as f64;
    let mut o = a * 0.5;
    (0..out_size)
        .map(|_| {
            let i = (o as usize).min(in_size - 1);
            o += a;
            i
        })
        .collect()
}

/// PIL's nearest-neighbour resize (`ImagingScaleAffine`): source index `floor((i + 0.5) * in / out)`.
fn resize_nearest(img: &RgbImage, h: usize, w: usize) -> RgbImage {
    let (ih, iw) = (img.height() as usize, img.width() as usize);
    let xs = nearest_table(iw, w);
    let ys = nearest_table(ih, h);
    let src = img.as_raw();
    let mut out = vec![0u8; h * w * 3];
    for (orow, &y) in out.chunks_exact_mut(w * 3).zip(&ys) {
        let srow = &src[y * iw * 3..(y + 1) * iw * 3];
        for (o, &x) in orow.chunks_exact_mut(3).zip(&xs) {
            o.copy_from_slice(&srow[x * 3..x * 3 + 3]);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer matches dimensions")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn noise(h: u32, w: u32, seed: u64) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let raw: Vec<u8> = (0..h * w * 3).map(|_| rng.gen()).collect();
        RgbImage::from_raw(w, h, raw).unwrap()
    }

    #[test]
    fn resize_center_crop_equals_resize_then_crop() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let sizes = [
            (375, 500),
            (500, 375),
            (300, 300),
            (257, 256),
            (256, 400),
            (300, 256),
            (37, 1000),
            (2000, 1500),
        ];
        for (i, &(ih, iw)) in sizes.iter().enumerate() {
            let img = noise(ih, iw, i as u64);
            for interpolation in [Interpolation::Bilinear, Interpolation::Bicubic, Interpolation::Nearest] {
                for (size, h, w) in [
                    (ResizeSize::Shorter(256), 224, 224),
                    (ResizeSize::Cover { h: 256, w: 320 }, 224, 280),
                    (ResizeSize::Shorter(224), 224, 224),
                    (ResizeSize::Shorter(100), 120, 90),
                ] {
                    let resize = Resize { size, interpolation };
                    let two = super::super::CenterCrop { h, w }.apply(resize.apply(img.clone(), &mut rng), &mut rng);
                    let one = ResizeCenterCrop { resize, h, w }.apply(img.clone(), &mut rng);
                    assert_eq!(
                        one.dimensions(),
                        two.dimensions(),
                        "{ih}×{iw} {size:?} {interpolation:?}"
                    );
                    assert!(
                        one == two,
                        "{ih}×{iw} {size:?} {interpolation:?} {h}×{w}: pixels differ"
                    );
                }
            }
        }
    }
}
