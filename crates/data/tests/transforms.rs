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
