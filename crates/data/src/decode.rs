//! Decoding any supported image file to RGB8, safely.
//!
//! - Formats: JPEG, PNG, GIF (first frame), BMP, WebP, recognised from the file's content (the extension is only a
//!   fallback), so a PNG named `.jpg` decodes and a text file named `.jpg` is refused.
//! - Colour: grayscale, gray+alpha, RGBA, CMYK (converted by the JPEG decoder) and 16-bit inputs become RGB8; alpha is
//!   **dropped** (not composited), as PIL's `convert("RGB")` does in torchvision's loader.
//! - EXIF orientation is applied, so a portrait photo stored sideways comes out upright.
//! - [`image::Limits`] cap the size: at most [`MAX_SIDE`] pixels a side and [`MAX_ALLOC`] bytes, checked from the
//!   header before any pixel buffer is allocated, so a decompression bomb is refused cheaply.
//! - Nothing here panics on bad input: every failure is a [`DataError::Decode`] naming the file and the reason.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use crate::error::{DataError, Result};

/// Largest accepted width or height in pixels.
pub const MAX_SIDE: u32 = 16384;
/// Largest accepted decoder allocation in bytes (512 MiB).
pub const MAX_ALLOC: u64 = 512 * 1024 * 1024;

/// What to do with a file that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodePolicy {
    /// Skip it and report it to the caller (the default; nothing is printed).
    #[default]
    Skip,
    /// Fail with [`DataError::Decode`].
    Strict,
}

/// A file that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be used.
    pub reason: String,
}

/// The decoder limits used by [`decode_image`].
pub fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    limits
}

fn decode_inner(path: &Path) -> std::result::Result<RgbImage, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Err("empty file".into());
    }
    let mut reader = ImageReader::new(BufReader::new(file));
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let mut reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("unrecognised image format".into());
    }
    let mut lim = limits();
    reader.limits(lim.clone());
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    // A malformed EXIF block must not make a readable image unusable: fall back to no rotation.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    lim.reserve(decoder.total_bytes()).map_err(|e| e.to_string())?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// Decodes `path` to RGB8 (see the module notes); errors name the file and the reason.
pub fn decode_image(path: &Path) -> Result<RgbImage> {
    decode_inner(path).map_err(|reason| DataError::Decode {
        path: path.to_path_buf(),
        reason: crate::text::one_line(&reason),
    })
}

/// Decodes `path` under `policy`: `Ok(Some)` on success, `Ok(None)` when skipped (see [`decode_or_skip`] for the
/// reason), `Err` when strict.
pub fn decode_with_policy(path: &Path, policy: DecodePolicy) -> Result<Option<RgbImage>> {
    Ok(decode_or_skip(path, policy)?.ok())
}

/// Decodes `path` under `policy`: `Ok(Ok)` on success, `Ok(Err(skipped))` with the reason when skipped (for the
/// caller to report; nothing is printed), `Err` when strict.
pub fn decode_or_skip(path: &Path, policy: DecodePolicy) -> Result<std::result::Result<RgbImage, SkippedFile>> {
    match decode_image(path) {
        Ok(img) => Ok(Ok(img)),
        Err(DataError::Decode { path, reason }) if policy == DecodePolicy::Skip => {
            Ok(Err(SkippedFile { path, reason }))
        }
        Err(e) => Err(e),
    }
}

/// The `(height, width)` that [`decode_image`] will produce for `path` (EXIF rotation included), read from the
/// header without decoding the pixels.
pub fn image_hw(path: &Path) -> Result<(usize, usize)> {
    let inner = || -> std::result::Result<(usize, usize), String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let mut reader = ImageReader::new(BufReader::new(file));
        if let Ok(format) = image::ImageFormat::from_path(path) {
            reader.set_format(format);
        }
        let mut reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
        reader.limits(limits());
        let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
        let (w, h) = decoder.dimensions();
        use image::metadata::Orientation::*;
        let swap = matches!(
            decoder.orientation().unwrap_or(NoTransforms),
            Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH
        );
        Ok(if swap {
            (w as usize, h as usize)
        } else {
            (h as usize, w as usize)
        })
    };
    inner().map_err(|reason| DataError::Decode {
        path: path.to_path_buf(),
        reason: crate::text::one_line(&reason),
    })
}
