//! `Pipeline::eval` reproduces timm's preprocessed `input` tensors of the shared parity fixtures.

use data::transforms::Pipeline;
use data::{Interpolation, PreprocessConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Preprocess the fixture's four images with its own config and compare with the reference `input`.
/// Returns (mean absolute difference, max absolute difference).
fn parity(fixture: &str, expect_interp: Interpolation, expect_crop_pct: f32) -> Option<(f32, f32)> {
    let index_path = tests::assets::require("parity/index.json")?;
    let reference_path = tests::assets::require(&format!("parity/{fixture}.reference.safetensors"))?;
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(index_path).unwrap()).unwrap();
    let entry = &index[fixture];
    let pre = &entry["preprocess"];
    let f32s = |v: &serde_json::Value| -> [f32; 3] {
        let a: Vec<f32> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        [a[0], a[1], a[2]]
    };
    let size: Vec<usize> = pre["input_size"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let cfg = PreprocessConfig {
        input_size: [size[1], size[2]],
        interpolation: pre["interpolation"].as_str().unwrap().parse().unwrap(),
        crop_pct: pre["crop_pct"].as_f64().unwrap() as f32,
        mean: f32s(&pre["mean"]),
        std: f32s(&pre["std"]),
    };
    assert_eq!(cfg.interpolation, expect_interp, "{fixture}: interpolation");
    assert_eq!(cfg.crop_pct, expect_crop_pct, "{fixture}: crop_pct");

    let tensors = candle_core::safetensors::load(&reference_path, &candle_core::Device::Cpu).unwrap();
    let input = &tensors["input"];
    let images = entry["images"].as_array().unwrap();
    assert_eq!(input.dims(), &[images.len(), 3, cfg.input_size[0], cfg.input_size[1]]);
    let reference: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();

    let pipeline = Pipeline::eval(&cfg);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let per_image = 3 * cfg.input_size[0] * cfg.input_size[1];
    let (mut sum, mut max) = (0f64, 0f32);
    for (i, rel) in images.iter().enumerate() {
        let path = tests::assets::require(&format!("data/hymenoptera/{}", rel.as_str().unwrap()))?;
        let img = image::open(&path).unwrap().to_rgb8();
        let ours = pipeline.apply(img, &mut rng);
        assert_eq!(ours.len(), per_image);
        let theirs = &reference[i * per_image..(i + 1) * per_image];
        let (mut s, mut m) = (0f64, 0f32);
        for (a, b) in ours.iter().zip(theirs) {
            let d = (a - b).abs();
            s += d as f64;
            m = m.max(d);
        }
        println!(
            "{fixture} {}: MAD {:.5} max {:.4}",
            rel.as_str().unwrap(),
            s / per_image as f64,
            m
        );
        sum += s;
        max = max.max(m);
    }
    let mad = (sum / reference.len() as f64) as f32;
    println!("{fixture}: MAD {mad:.5} max abs diff {max:.4}");
    // The resize is PIL-exact; what remains are JPEG decoder differences of a few grey levels.
    let lsb = 1.0 / 255.0 / cfg.std.iter().cloned().fold(f32::INFINITY, f32::min);
    assert!(max <= 8.0 * lsb, "{fixture}: max abs diff {max} exceeds 8 grey levels");
    Some((mad, max))
}

#[test]
fn lite0_bicubic_matches_timm() {
    if let Some((mad, _)) = parity("tf_efficientnet_lite0", Interpolation::Bicubic, 0.875) {
        assert!(mad <= 0.01, "tf_efficientnet_lite0 MAD {mad} > 0.01");
    }
}

#[test]
fn vgg16_bilinear_matches_timm() {
    if let Some((mad, _)) = parity("vgg16_features", Interpolation::Bilinear, 0.875) {
        assert!(mad <= 0.01, "vgg16_features MAD {mad} > 0.01");
    }
}

#[test]
fn resnet18_crop_pct_095_matches_timm() {
    if let Some((mad, _)) = parity("resnet18", Interpolation::Bicubic, 0.95) {
        assert!(mad <= 0.01, "resnet18 MAD {mad} > 0.01");
    }
}

#[test]
fn imagenet_bicubic_fixtures_match_timm() {
    for fixture in ["efficientnet_b0", "mobilenetv3_large_100"] {
        if let Some((mad, _)) = parity(fixture, Interpolation::Bicubic, 0.875) {
            assert!(mad <= 0.01, "{fixture} MAD {mad} > 0.01");
        }
    }
}
