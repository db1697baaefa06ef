//! Helpers shared by the data crate's tests: a small pipeline and image writers.
#![allow(dead_code)]

use std::path::Path;

use data::transforms::{ImageTransform, Pipeline};
use image::{Rgb, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Exact resize to `w×h` (bilinear).
#[derive(Debug)]
pub struct ExactResize(pub u32, pub u32);

impl ImageTransform for ExactResize {
    fn apply(&self, img: RgbImage, _rng: &mut ChaCha8Rng) -> RgbImage {
        image::imageops::resize(&img, self.0, self.1, image::imageops::FilterType::Triangle)
    }
}

/// Random horizontal flip plus a random brightness shift: makes results depend on the RNG.
#[derive(Debug)]
pub struct RandomJitter;

impl ImageTransform for RandomJitter {
    fn apply(&self, mut img: RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        if rng.gen_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut img);
        }
        let shift: u8 = rng.gen_range(0..40);
        for p in img.pixels_mut() {
            for c in 0..3 {
                p[c] = p[c].saturating_add(shift);
            }
        }
        img
    }
}

/// A pipeline producing `3×h×w`, with random augmentation when `augment`.
pub fn pipeline(h: u32, w: u32, augment: bool) -> Pipeline {
    let mut steps: Vec<Box<dyn ImageTransform>> = vec![Box::new(ExactResize(w, h))];
    if augment {
        steps.push(Box::new(RandomJitter));
    }
    Pipeline {
        steps,
        mean: [0.5; 3],
        std: [0.25; 3],
        output_hw: (h as usize, w as usize),
    }
}

/// A `w×h` RGB image with a gradient depending on `seed`.
pub fn gradient(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 7 + seed as u32 * 31) as u8,
            (y * 5) as u8,
            ((x + y) * 3 + seed as u32) as u8,
        ])
    })
}

/// Writes a gradient image to `path` (format from the extension).
pub fn write_image(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    gradient(w, h, seed).save(path).unwrap();
}

/// Flattens a tensor to f32 values.
pub fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}
