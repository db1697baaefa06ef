//! The mask side of the geometric steps: nearest-neighbour only, so a mask never holds a value it did not have.
//!
//! Each function mirrors the image operation of the same step pixel for pixel (same source-index tables, same
//! offsets); pixels that come from outside the source mask are [`IGNORE`].

use image::{GrayImage, Luma};

use crate::target::IGNORE;

/// Mirror a mask left-right.
pub fn hflip_mask(mask: &GrayImage) -> GrayImage {
    image::imageops::flip_horizontal(mask)
}

/// Crop `h × w` at (`top`, `left`); pixels outside the mask are [`IGNORE`].
pub fn crop_mask(mask: &GrayImage, top: i64, left: i64, h: usize, w: usize) -> GrayImage {
    let (mh, mw) = (mask.height() as i64, mask.width() as i64);
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let (sx, sy) = (left + x as i64, top + y as i64);
        if sx >= 0 && sy >= 0 && sx < mw && sy < mh {
            *mask.get_pixel(sx as u32, sy as u32)
        } else {
            Luma([IGNORE])
        }
    })
}

/// Nearest-neighbour resize to `h × w`, with PIL's source indices (`floor((i + 0.5) · in / out)`).
pub fn resize_mask(mask: &GrayImage, h: usize, w: usize) -> GrayImage {
    let (mh, mw) = (mask.height() as usize, mask.width() as usize);
    if (mh, mw) == (h, w) {
        return mask.clone();
    }
    if mh == 0 || mw == 0 {
        return GrayImage::from_pixel(w as u32, h as u32, Luma([IGNORE]));
    }
    let xs = super::resize::nearest_table(mw, w);
    let ys = super::resize::nearest_table(mh, h);
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        *mask.get_pixel(xs[x as usize] as u32, ys[y as usize] as u32)
    })
}

/// Paste `mask` at (`top`, `left`) on an `h × w` canvas of [`IGNORE`].
pub fn pad_mask(mask: &GrayImage, top: usize, left: usize, h: usize, w: usize) -> GrayImage {
    crop_mask(mask, -(top as i64), -(left as i64), h, w)
}

/// The mask side of [`super::affine::warp`]: output pixel `p = (row, col)` takes the source pixel nearest to
/// `m · (p - o) + o` (Keras' center `o`), [`IGNORE`] when that falls outside the mask.
pub fn warp_mask(mask: &GrayImage, m: [f64; 4]) -> GrayImage {
    let (h, w) = (mask.height() as usize, mask.width() as usize);
    let (or, oc) = (h as f64 / 2.0 + 0.5, w as f64 / 2.0 + 0.5);
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let (dy, dx) = (y as f64 - or, x as f64 - oc);
        let sr = (m[0] * dy + m[1] * dx + or).round();
        let sc = (m[2] * dy + m[3] * dx + oc).round();
        if sr >= 0.0 && sc >= 0.0 && sr < h as f64 && sc < w as f64 {
            *mask.get_pixel(sc as u32, sr as u32)
        } else {
            Luma([IGNORE])
        }
    })
}
