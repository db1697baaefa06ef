//! Unit tests of the image transforms and presets on synthetic images.

use data::transforms::color::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation};
use data::transforms::crop::crop;
use data::transforms::flip::hflip;
use data::transforms::resize::resize;
use data::transforms::{
    CenterCrop, ColorJitter, Fill, ImageTransform, Pipeline, Preset, RandomAffine, RandomHorizontalFlip,
    RandomResizedCrop, RandomRotation, RandomZoom, Resize, ResizeSize, TransformError,
};
use data::{Interpolation, PreprocessConfig};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A seeded random-noise image plus a smooth gradient, so geometric transforms change it visibly.
fn test_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut r = rng(seed);
    RgbImage::from_fn(w, h, |x, y| {
        let n: u8 = r.gen_range(0..64);
        Rgb([
            (x * 190 / w) as u8 + n,
            (y * 190 / h) as u8 + n,
            ((x + y) * 95 / (w + h)) as u8 + n,
        ])
    })
}

const INTERPS: [Interpolation; 3] = [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic];

#[test]
fn resize_of_constant_image_stays_constant() {
    let img = RgbImage::from_pixel(97, 61, Rgb([12, 200, 255]));
    for interp in INTERPS {
        for (h, w) in [(224, 224), (20, 33), (300, 97), (61, 10)] {
            let out = resize(img.clone(), h, w, interp);
            assert_eq!(out.dimensions(), (w as u32, h as u32));
            assert!(out.pixels().all(|p| *p == Rgb([12, 200, 255])), "{interp:?} {h}x{w}");
        }
    }
}

#[test]
fn resize_same_size_is_identity_and_nearest_upscale_duplicates() {
    let img = test_image(40, 30, 1);
    for interp in INTERPS {
        assert_eq!(resize(img.clone(), 30, 40, interp), img);
    }
    let up = resize(img.clone(), 60, 80, Interpolation::Nearest);
    for (x, y, p) in up.enumerate_pixels() {
        assert_eq!(p, img.get_pixel(x / 2, y / 2));
    }
}

#[test]
fn resize_downscale_antialiases_and_preserves_mean() {
    // A 1-pixel checkerboard shrunk 4x averages to mid grey when antialiased (nearest keeps the extremes).
    let img = RgbImage::from_fn(
        128,
        128,
        |x, y| {
            if (x + y) % 2 == 0 {
                Rgb([0; 3])
            } else {
                Rgb([255; 3])
            }
        },
    );
    for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
        let out = resize(img.clone(), 32, 32, interp);
        assert!(
            out.iter().all(|&v| (120..=135).contains(&v)),
            "{interp:?} not antialiased"
        );
    }
    let nearest = resize(img, 32, 32, Interpolation::Nearest);
    assert!(nearest.iter().all(|&v| v == 0 || v == 255));
}

#[test]
fn resize_bilinear_upscale_interpolates_between_neighbours() {
    let img = RgbImage::from_fn(2, 1, |x, _| Rgb([if x == 0 { 0 } else { 200 }; 3]));
    let out = resize(img, 1, 4, Interpolation::Bilinear);
    let row: Vec<u8> = out.pixels().map(|p| p[0]).collect();
    // PIL: centers at 0.25 and 0.75 of a pixel -> 0, 50, 150, 200.
    assert_eq!(row, vec![0, 50, 150, 200]);
}

#[test]
fn resize_shorter_side_follows_torchvision() {
    assert_eq!(ResizeSize::Shorter(256).output_hw(375, 500), (256, 341));
    assert_eq!(ResizeSize::Shorter(256).output_hw(500, 375), (341, 256));
    assert_eq!(ResizeSize::Shorter(235).output_hw(333, 500), (235, 352));
    assert_eq!(ResizeSize::Exact { h: 10, w: 20 }.output_hw(375, 500), (10, 20));
    let r = Resize::new(ResizeSize::Shorter(64), Interpolation::Bicubic).unwrap();
    assert_eq!(r.apply(test_image(150, 100, 2), &mut rng(0)).dimensions(), (96, 64));
    assert!(Resize::new(ResizeSize::Shorter(0), Interpolation::Bicubic).is_err());
}

#[test]
fn center_crop_uses_torchvision_rounding_and_pads() {
    let img = test_image(11, 9, 3);
    let out = CenterCrop::new(4, 6).unwrap().apply(img.clone(), &mut rng(0));
    // top = round(5 / 2) = 2 (ties to even), left = round(5 / 2) = 2.
    assert_eq!(out, crop(&img, 2, 2, 4, 6));
    assert_eq!(out.get_pixel(0, 0), img.get_pixel(2, 2));
    let out = CenterCrop::new(3, 4).unwrap().apply(img.clone(), &mut rng(0));
    // top = round(3.0) = 3, left = round(3.5) = 4.
    assert_eq!(out.get_pixel(0, 0), img.get_pixel(4, 3));
    let padded = CenterCrop::new(13, 11).unwrap().apply(img.clone(), &mut rng(0));
    assert_eq!(padded.dimensions(), (11, 13));
    assert_eq!(*padded.get_pixel(0, 0), Rgb([0, 0, 0]));
    assert_eq!(padded.get_pixel(0, 2), img.get_pixel(0, 0));
    // Odd padding puts the extra row at the bottom: top offset -(3 / 2) = -1.
    let odd = CenterCrop::new(12, 11).unwrap().apply(img.clone(), &mut rng(0));
    assert_eq!(odd.get_pixel(0, 1), img.get_pixel(0, 0));
}

#[test]
fn flip_is_exact_and_involutive() {
    let img = test_image(13, 7, 4);
    let f = hflip(img.clone());
    for (x, y, p) in f.enumerate_pixels() {
        assert_eq!(p, img.get_pixel(12 - x, y));
    }
    assert_eq!(hflip(f), img);
    let always = RandomHorizontalFlip::new(1.0).unwrap();
    let never = RandomHorizontalFlip::new(0.0).unwrap();
    assert_eq!(always.apply(img.clone(), &mut rng(1)), hflip(img.clone()));
    assert_eq!(never.apply(img.clone(), &mut rng(1)), img);
    assert!(RandomHorizontalFlip::new(1.5).is_err());
}

#[test]
fn flip_half_the_time() {
    let img = test_image(5, 3, 5);
    let flip = RandomHorizontalFlip::default();
    let mut r = rng(7);
    let flipped = (0..400).filter(|_| flip.apply(img.clone(), &mut r) != img).count();
    assert!((150..250).contains(&flipped), "flipped {flipped}/400");
}

/// Every random transform under test, with its expected output size for a 64×48 input.
fn random_transforms() -> Vec<(Box<dyn ImageTransform>, (u32, u32))> {
    vec![
        (Box::new(RandomResizedCrop::square(32)), (32, 32)),
        (Box::new(RandomHorizontalFlip::default()), (64, 48)),
        (Box::new(RandomRotation::new(30.0, Fill::Nearest).unwrap()), (64, 48)),
        (Box::new(RandomRotation::new(30.0, Fill::Zero).unwrap()), (64, 48)),
        (Box::new(RandomZoom::new(0.2, Fill::Nearest).unwrap()), (64, 48)),
        (
            Box::new(RandomAffine::new(20.0, (0.8, 1.2), Fill::Nearest).unwrap()),
            (64, 48),
        ),
        (Box::new(ColorJitter::new(0.4, 0.4, 0.4, 0.1).unwrap()), (64, 48)),
    ]
}

#[test]
fn random_transforms_are_deterministic_per_seed_and_vary_across_seeds() {
    let img = test_image(64, 48, 6);
    for (t, dims) in random_transforms() {
        let a = t.apply(img.clone(), &mut rng(42));
        let b = t.apply(img.clone(), &mut rng(42));
        assert_eq!(a, b, "{t:?} not deterministic");
        assert_eq!(a.dimensions(), dims, "{t:?} size");
        let distinct: std::collections::HashSet<Vec<u8>> =
            (0..8).map(|s| t.apply(img.clone(), &mut rng(s)).into_raw()).collect();
        assert!(distinct.len() >= 2, "{t:?} gives the same output for 8 seeds");
    }
}

#[test]
fn random_resized_crop_params_are_valid_and_follow_scale() {
    let rrc = RandomResizedCrop::new(224, 224, (0.5, 0.5), (1.0, 1.0), Interpolation::Bilinear).unwrap();
    let mut r = rng(3);
    for _ in 0..50 {
        let (i, j, h, w) = rrc.params(100, 200, &mut r);
        assert_eq!((h, w), (100, 100)); // sqrt(0.5 * 20000)
        assert!(i + h <= 100 && j + w <= 200);
    }
    let rrc = RandomResizedCrop::square(16);
    for _ in 0..200 {
        let (i, j, h, w) = rrc.params(40, 300, &mut r);
        assert!(h > 0 && w > 0 && i + h <= 40 && j + w <= 300);
        let ratio = w as f64 / h as f64;
        assert!((0.6..=1.6).contains(&ratio), "ratio {ratio}");
    }
    // An impossible aspect falls back to the central crop with the max ratio.
    let rrc = RandomResizedCrop::new(8, 8, (0.99, 1.0), (1.0, 1.0), Interpolation::Nearest).unwrap();
    assert_eq!(rrc.params(10, 100, &mut r), (0, 45, 10, 10));
    let out = RandomResizedCrop::square(24).apply(test_image(100, 70, 8), &mut rng(9));
    assert_eq!(out.dimensions(), (24, 24));
    assert!(RandomResizedCrop::new(8, 8, (0.5, 0.2), (1.0, 1.0), Interpolation::Nearest).is_err());
}

#[test]
fn rotation_and_zoom_at_identity_leave_image_unchanged() {
    let img = test_image(30, 20, 10);
    assert_eq!(
        RandomRotation::new(0.0, Fill::Nearest)
            .unwrap()
            .apply(img.clone(), &mut rng(0)),
        img
    );
    assert_eq!(
        RandomZoom::new(0.0, Fill::Nearest)
            .unwrap()
            .apply(img.clone(), &mut rng(0)),
        img
    );
    assert!(RandomZoom::new(1.5, Fill::Nearest).is_err());
    assert!(RandomRotation::new(-1.0, Fill::Zero).is_err());
}

#[test]
fn rotation_by_180_degrees_about_keras_center() {
    // A 180° rotation maps (r, c) to (2 o_r - r, 2 o_c - c) with Keras' o = size / 2 + 0.5: a mirror shifted by 2.
    let img = test_image(10, 8, 11);
    let m = [-1.0, 0.0, 0.0, -1.0];
    let out = data::transforms::affine::warp(&img, m, Fill::Nearest);
    for (x, y, p) in out.enumerate_pixels() {
        let (sx, sy) = ((11 - x as i64).clamp(0, 9), (9 - y as i64).clamp(0, 7));
        let q = img.get_pixel(sx as u32, sy as u32);
        for c in 0..3 {
            assert!((p[c] as i32 - q[c] as i32).abs() <= 1, "({x},{y})");
        }
    }
    let zero = data::transforms::affine::warp(&img, m, Fill::Zero);
    assert_eq!(*zero.get_pixel(0, 0), Rgb([0, 0, 0]));
    assert_eq!(zero.get_pixel(5, 4), out.get_pixel(5, 4));
}

#[test]
fn color_jitter_with_zero_strengths_is_identity() {
    let img = test_image(20, 20, 12);
    let cj = ColorJitter::new(0.0, 0.0, 0.0, 0.0).unwrap();
    assert_eq!(cj.apply(img.clone(), &mut rng(5)), img);
    assert!(ColorJitter::new(-0.1, 0.0, 0.0, 0.0).is_err());
    assert!(ColorJitter::new(0.0, 0.0, 0.0, 0.6).is_err());
}

#[test]
fn color_adjustments_follow_pil_semantics() {
    let img = test_image(16, 16, 13);
    assert_eq!(adjust_brightness(img.clone(), 1.0), img);
    assert_eq!(adjust_contrast(img.clone(), 1.0), img);
    assert_eq!(adjust_saturation(img.clone(), 1.0), img);
    assert_eq!(adjust_hue(img.clone(), 0.0).dimensions(), img.dimensions());
    assert!(adjust_brightness(img.clone(), 0.0).iter().all(|&v| v == 0));
    // Zero saturation gives grey pixels; zero contrast a single grey level.
    assert!(adjust_saturation(img.clone(), 0.0)
        .pixels()
        .all(|p| p[0] == p[1] && p[1] == p[2]));
    let flat = adjust_contrast(img.clone(), 0.0);
    assert!(flat.pixels().all(|p| p == flat.get_pixel(0, 0)));
    // Brightness 0.5 halves with truncation.
    let half = adjust_brightness(RgbImage::from_pixel(1, 1, Rgb([201, 100, 3])), 0.5);
    assert_eq!(*half.get_pixel(0, 0), Rgb([100, 50, 1]));
    // A hue shift of 1/3 turn maps pure red to (nearly) pure green.
    let red = RgbImage::from_pixel(1, 1, Rgb([255, 0, 0]));
    let g = adjust_hue(red, 1.0 / 3.0);
    let p = g.get_pixel(0, 0);
    assert!(p[1] == 255 && p[0] <= 8 && p[2] <= 8, "{p:?}");
}

#[test]
fn pipeline_normalises_chw() {
    let img = RgbImage::from_fn(3, 2, |x, y| Rgb([(x * 50) as u8, (y * 100) as u8, 255]));
    let p = Pipeline {
        steps: vec![],
        mean: [0.5, 0.25, 0.0],
        std: [0.5, 0.25, 2.0],
        output_hw: (2, 3),
    };
    let t = p.apply(img.clone(), &mut rng(0));
    assert_eq!(t.len(), 18);
    for (x, y, px) in img.enumerate_pixels() {
        let i = (y * 3 + x) as usize;
        for c in 0..3 {
            let expect = (px[c] as f32 / 255.0 - p.mean[c]) / p.std[c];
            assert_eq!(t[c * 6 + i], expect);
        }
    }
}

#[test]
fn presets_produce_their_output_size_and_statistics() {
    let cfg = PreprocessConfig::default();
    let img = test_image(120, 90, 14);
    for preset in ["keras", "Torchvision", "timm"] {
        let preset: Preset = preset.parse().unwrap();
        for p in [preset.train(&cfg), preset.eval(&cfg)] {
            assert_eq!(p.output_hw, (224, 224));
            let a = p.apply(img.clone(), &mut rng(1));
            assert_eq!(a.len(), 3 * 224 * 224);
            assert_eq!(a, p.apply(img.clone(), &mut rng(1)));
        }
    }
    assert!(matches!(
        "caffe".parse::<Preset>(),
        Err(TransformError::UnknownPreset(_))
    ));
    let keras = Pipeline::keras_eval().apply(img.clone(), &mut rng(0));
    assert!(keras.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(Pipeline::keras_train().steps.len(), 3);
    assert_eq!(Pipeline::torchvision_eval().mean, data::IMAGENET_MEAN);
    assert_eq!(
        Pipeline::torchvision_train().apply(img, &mut rng(2)).len(),
        3 * 224 * 224
    );
}

#[test]
fn eval_from_config_resizes_then_center_crops() {
    let cfg = PreprocessConfig {
        input_size: [32, 32],
        interpolation: Interpolation::Bicubic,
        crop_pct: 0.5,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    let img = test_image(90, 60, 15);
    let p = Pipeline::eval(&cfg);
    let got = p.apply_image(img.clone(), &mut rng(0));
    let resized = resize(img, 64, 96, Interpolation::Bicubic);
    assert_eq!(got, crop(&resized, 16, 32, 32, 32));
    let t = p.apply(test_image(90, 60, 15), &mut rng(0));
    assert!(t.iter().all(|v| (-1.0..=1.0).contains(v)));
    // A non-square input size still ends at that size.
    let cfg = PreprocessConfig {
        input_size: [24, 40],
        ..cfg
    };
    assert_eq!(
        Pipeline::eval(&cfg).apply(test_image(50, 70, 16), &mut rng(0)).len(),
        3 * 24 * 40
    );
}

#[test]
fn config_validation_names_the_bad_field() {
    assert!(PreprocessConfig::default().validate().is_ok());
    let bad = PreprocessConfig {
        crop_pct: 0.0,
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("crop_pct"));
    let bad = PreprocessConfig {
        std: [0.5, 0.0, 0.5],
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("std"));
    let bad = PreprocessConfig {
        input_size: [0, 224],
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("input_size"));
    assert_eq!(
        PreprocessConfig {
            crop_pct: 0.95,
            ..Default::default()
        }
        .resize_size(),
        235
    );
}

// ---- Joint transforms: image, mask and boxes move together. ----

use data::target::{Annotated, BoxTarget, IGNORE};
use data::transforms::{Letterbox, ResizeCenterCrop, ResizeShorterPad};
use image::{GrayImage, Luma};

const QUADRANT: [[u8; 3]; 4] = [[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]];

/// A 64×48 image of four solid quadrants (split at x = 40, y = 20) and the mask of quadrant indices.
fn quadrants() -> (RgbImage, GrayImage) {
    let class = |x: u32, y: u32| (x >= 40) as u8 + 2 * (y >= 20) as u8;
    let img = RgbImage::from_fn(64, 48, |x, y| Rgb(QUADRANT[class(x, y) as usize]));
    let mask = GrayImage::from_fn(64, 48, |x, y| Luma([class(x, y)]));
    (img, mask)
}

/// Every step of the crate, each with a name and whether it is geometric.
fn every_step() -> Vec<(&'static str, Box<dyn ImageTransform>, bool)> {
    let rc = ResizeCenterCrop {
        resize: Resize {
            size: ResizeSize::Shorter(40),
            interpolation: Interpolation::Bicubic,
        },
        h: 36,
        w: 36,
    };
    vec![
        ("flip", Box::new(RandomHorizontalFlip::default()), true),
        ("center crop (pads)", Box::new(CenterCrop::new(40, 70).unwrap()), true),
        ("random resized crop", Box::new(RandomResizedCrop::square(32)), true),
        (
            "resize shorter bilinear",
            Box::new(Resize::new(ResizeSize::Shorter(30), Interpolation::Bilinear).unwrap()),
            true,
        ),
        (
            "resize exact nearest",
            Box::new(Resize::new(ResizeSize::Exact { h: 100, w: 70 }, Interpolation::Nearest).unwrap()),
            true,
        ),
        ("resize center crop", Box::new(rc), true),
        (
            "rotation nearest fill",
            Box::new(RandomRotation::new(30.0, Fill::Nearest).unwrap()),
            true,
        ),
        (
            "rotation zero fill",
            Box::new(RandomRotation::new(30.0, Fill::Zero).unwrap()),
            true,
        ),
        ("zoom", Box::new(RandomZoom::new(0.3, Fill::Zero).unwrap()), true),
        (
            "affine",
            Box::new(RandomAffine::new(20.0, (0.8, 1.2), Fill::Nearest).unwrap()),
            true,
        ),
        ("letterbox", Box::new(Letterbox::new(80, 80).unwrap()), true),
        (
            "resize shorter + pad",
            Box::new(ResizeShorterPad::new(40, 32).unwrap()),
            true,
        ),
        (
            "color jitter",
            Box::new(ColorJitter::new(0.4, 0.4, 0.4, 0.1).unwrap()),
            false,
        ),
    ]
}

#[test]
fn flipped_mask_is_the_flipped_mask_pixel_for_pixel() {
    let (img, mask) = quadrants();
    let flip = RandomHorizontalFlip::new(1.0).unwrap();
    let out = flip
        .apply_annotated(Annotated::new(img.clone()).with_mask(mask.clone()), &mut rng(0))
        .unwrap();
    assert_eq!(out.image, hflip(img));
    let m = out.mask.unwrap();
    for (x, y, p) in m.enumerate_pixels() {
        assert_eq!(p, mask.get_pixel(63 - x, y), "({x},{y})");
    }
}

#[test]
fn every_step_keeps_the_mask_consistent_with_the_image() {
    let (img, mask) = quadrants();
    for (name, step, geometric) in every_step() {
        for seed in 0..6 {
            let a = Annotated::new(img.clone()).with_mask(mask.clone());
            let out = step.apply_annotated(a, &mut rng(seed)).unwrap();
            // The image path is the one `apply` takes for the same random numbers.
            assert_eq!(
                out.image,
                step.apply(img.clone(), &mut rng(seed)),
                "{name}: image differs from apply"
            );
            let m = out.mask.as_ref().unwrap();
            assert_eq!(m.dimensions(), out.image.dimensions(), "{name}");
            assert!(
                m.pixels().all(|p| p[0] < 4 || p[0] == IGNORE),
                "{name}: a mask value that was not there before"
            );
            if !geometric {
                assert_eq!(m, &mask, "{name}: photometric step moved the mask");
                continue;
            }
            let (w, h) = m.dimensions();
            let (mut checked, mut bad) = (0, 0);
            for y in 2..h.saturating_sub(2) {
                for x in 2..w.saturating_sub(2) {
                    let c = m.get_pixel(x, y)[0];
                    let uniform = (y - 2..=y + 2).all(|yy| (x - 2..=x + 2).all(|xx| m.get_pixel(xx, yy)[0] == c));
                    if c == IGNORE || !uniform {
                        continue;
                    }
                    checked += 1;
                    let p = out.image.get_pixel(x, y);
                    if (0..3).any(|k| (p[k] as i32 - QUADRANT[c as usize][k] as i32).abs() > 12) {
                        bad += 1;
                    }
                }
            }
            assert!(
                checked as u32 * 5 >= w * h,
                "{name} seed {seed}: only {checked} pixels checked"
            );
            assert_eq!(
                bad, 0,
                "{name} seed {seed}: {bad}/{checked} pixels disagree with their mask class"
            );
        }
    }
}

/// Bounding box of the bright pixels of `img`.
fn bright_bbox(img: &RgbImage) -> Option<[f32; 4]> {
    let mut b: Option<[f32; 4]> = None;
    for (x, y, p) in img.enumerate_pixels() {
        if p[0] > 128 {
            let (x, y) = (x as f32, y as f32);
            b = Some(match b {
                None => [x, y, x + 1.0, y + 1.0],
                Some([a, c, d, e]) => [a.min(x), c.min(y), d.max(x + 1.0), e.max(y + 1.0)],
            });
        }
    }
    b
}

#[test]
fn every_step_moves_boxes_with_the_pixels() {
    // A white rectangle on black, and its box.
    let xyxy = [24.0, 16.0, 40.0, 30.0];
    let img = RgbImage::from_fn(64, 48, |x, y| {
        let inside = (x as f32) >= xyxy[0] && (x as f32) < xyxy[2] && (y as f32) >= xyxy[1] && (y as f32) < xyxy[3];
        Rgb(if inside { [255; 3] } else { [0; 3] })
    });
    let mut kept = 0;
    for (name, step, geometric) in every_step() {
        for seed in 0..8 {
            let a = Annotated::new(img.clone()).with_boxes(vec![BoxTarget::new(xyxy, 3)]);
            let filtered = step.apply_annotated(a.clone(), &mut rng(seed)).unwrap();
            let mut a = a;
            a.box_filter = data::BoxFilter {
                min_size: 0.0,
                min_visible: 0.0,
            };
            let out = step.apply_annotated(a, &mut rng(seed)).unwrap();
            assert!(
                filtered.boxes.is_empty() || filtered.boxes == out.boxes,
                "{name}: the filter changes a kept box"
            );
            if !geometric {
                assert_eq!(out.boxes, vec![BoxTarget::new(xyxy, 3)], "{name}");
                continue;
            }
            let Some(b) = out.boxes.first().filter(|b| b.width() >= 3.0 && b.height() >= 3.0) else {
                // Cropped away (or to a sliver): the default filter drops it.
                assert!(
                    filtered.boxes.is_empty(),
                    "{name} seed {seed}: kept a sliver {:?}",
                    filtered.boxes
                );
                continue;
            };
            kept += 1;
            assert_eq!(b.class, 3);
            let bright =
                bright_bbox(&out.image).unwrap_or_else(|| panic!("{name} seed {seed}: rectangle gone, box kept"));
            for k in 0..4 {
                assert!(
                    (bright[k] - b.xyxy[k]).abs() <= 2.0,
                    "{name} seed {seed}: box {:?} but the rectangle spans {bright:?}",
                    b.xyxy
                );
            }
            // The box's center pixel is on the rectangle.
            let (cx, cy) = ((b.xyxy[0] + b.xyxy[2]) / 2.0, (b.xyxy[1] + b.xyxy[3]) / 2.0);
            assert!(out.image.get_pixel(cx as u32, cy as u32)[0] > 128, "{name} seed {seed}");
        }
    }
    assert!(kept > 50, "only {kept} boxes kept");
}

#[test]
fn a_step_without_a_joint_path_refuses_targets() {
    #[derive(Debug)]
    struct Shift;
    impl ImageTransform for Shift {
        fn apply(&self, img: RgbImage, _rng: &mut ChaCha8Rng) -> RgbImage {
            crop(&img, 0, 3, img.height() as usize, img.width() as usize)
        }
    }
    let (img, mask) = quadrants();
    let err = Shift
        .apply_annotated(Annotated::new(img.clone()).with_mask(mask), &mut rng(0))
        .unwrap_err();
    assert!(matches!(err, TransformError::NoTargetSupport(_)), "{err}");
    assert!(err.to_string().contains("Shift"), "{err}");
    // Without targets the image alone is fine.
    let plain = Shift.apply_annotated(Annotated::new(img.clone()), &mut rng(0)).unwrap();
    assert_eq!(plain.image, Shift.apply(img, &mut rng(0)));
}

/// Whether pixel (x, y) of `mask` is within 1 px of a different value.
fn near_boundary(mask: &GrayImage, x: u32, y: u32) -> bool {
    let c = mask.get_pixel(x, y)[0];
    let (w, h) = mask.dimensions();
    (y.saturating_sub(1)..(y + 2).min(h))
        .any(|yy| (x.saturating_sub(1)..(x + 2).min(w)).any(|xx| mask.get_pixel(xx, yy)[0] != c))
}

#[test]
fn letterbox_and_pad_inverses_map_back_to_the_original() {
    let (img, mask) = quadrants();
    let boxes = vec![
        BoxTarget::new([5.0, 3.0, 30.0, 17.0], 0),
        BoxTarget::new([41.5, 22.0, 63.0, 47.0], 3),
    ];
    let steps: Vec<(&str, Box<dyn ImageTransform>)> = vec![
        ("letterbox square", Box::new(Letterbox::new(96, 96).unwrap())),
        ("letterbox wide", Box::new(Letterbox::new(40, 100).unwrap())),
        ("letterbox shrink", Box::new(Letterbox::new(32, 32).unwrap())),
        ("resize shorter + pad", Box::new(ResizeShorterPad::new(37, 32).unwrap())),
    ];
    for (name, step) in steps {
        let a = Annotated::new(img.clone())
            .with_mask(mask.clone())
            .with_boxes(boxes.clone());
        let mut a = a;
        a.box_filter.min_size = 0.0;
        let out = step.apply_annotated(a, &mut rng(0)).unwrap();
        let p = out.placement;
        assert_eq!(p.original_hw, (48, 64), "{name}");
        assert_eq!(p.hw, (out.image.height() as usize, out.image.width() as usize));
        assert!(p.scale_offset().is_some(), "{name}: axis-aligned");
        let back = p.to_original_boxes(&out.boxes);
        assert_eq!(back.len(), 2, "{name}");
        for (b, o) in back.iter().zip(&boxes) {
            for k in 0..4 {
                assert!(
                    (b.xyxy[k] - o.xyxy[k]).abs() <= 1.0,
                    "{name}: {:?} vs {:?}",
                    b.xyxy,
                    o.xyxy
                );
            }
        }
        let m = p.to_original_mask(out.mask.as_ref().unwrap());
        assert_eq!(m.dimensions(), mask.dimensions());
        for (x, y, v) in m.enumerate_pixels() {
            if v != mask.get_pixel(x, y) {
                assert!(
                    near_boundary(&mask, x, y),
                    "{name}: ({x},{y}) is {} not {}",
                    v[0],
                    mask.get_pixel(x, y)[0]
                );
            }
        }
        // Logit maps come back too: one-hot logits of the transformed mask, argmax in original pixels.
        let om = out.mask.unwrap();
        let (w, h) = (om.width() as usize, om.height() as usize);
        let mut logits = vec![0f32; 4 * h * w];
        for (x, y, v) in om.enumerate_pixels() {
            if v[0] < 4 {
                logits[(v[0] as usize * h + y as usize) * w + x as usize] = 1.0;
            }
        }
        let t = candle_core::Tensor::from_vec(logits, (4, h, w), &candle_core::Device::Cpu).unwrap();
        let back = p.to_original_logits(&t).unwrap();
        assert_eq!(back.dims(), &[4, 48, 64]);
        let arg: Vec<u32> = back.argmax(0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let agree = arg.iter().zip(mask.as_raw()).filter(|(a, b)| **a == **b as u32).count();
        assert!(
            agree * 100 >= 95 * arg.len(),
            "{name}: logits agree on {agree}/{}",
            arg.len()
        );
    }
    // Letterbox geometry follows Ultralytics: 64×48 into 96×96 scales by 1.5 to 96×72, 12 px above and below.
    let lb = Letterbox::new(96, 96).unwrap();
    assert_eq!(lb.layout(48, 64), (72, 96, 12, 0));
    let out = lb.apply(img, &mut rng(0));
    assert_eq!(*out.get_pixel(0, 0), Rgb([114; 3]));
    assert_eq!(ResizeShorterPad::new(37, 32).unwrap().layout(48, 64), (37, 49, 64, 64));
}
